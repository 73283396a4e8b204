"""Training chips (image + label rasters + index) from scenes and their labels.

Why: training must see exactly what inference sees — same tiling, same uint8
normalisation, same working GSD — and must know where every chip came from so the
splits stay by area. Writes the chip directory format of docs/ARCHITECTURE.md:
``images/<id>.tif``, ``labels/<id>.tif`` and ``index.geojson``. Every grid window is
recorded: ``status`` "ok" (has objects), "empty" (valid imagery, no labelled object:
written, kept for negatives) or "skipped" (valid fraction below the threshold, or with a
mapped area (``--coverage``, ``tiles.mapped_area``) no valid pixel inside it: not written,
``image``/``label`` null).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from tiles.classes import find_classes_file, read_classes
from tiles.errors import UnsupportedRaster
from tiles.grid import Tile, tile_grid
from tiles.labels import LabelIndex, grid_bounds, window_labels
from tiles.landcover_vectors import ClassPolygons
from tiles.mapped_area import MappedArea
from tiles.masks import valid_fraction
from tiles.rasterpath import is_hidden
from tiles.source import Scene

LANDCOVER_UNLABELED = 0


@dataclass(frozen=True)
class ChipOptions:
    """How chips are cut: size and overlap in working-grid pixels, optional target GSD."""

    size: int = 512
    overlap: int = 0
    gsd: float | None = None
    min_valid: float = 0.5
    bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        """From Python, ``min_valid=2`` skipped every window and a negative overlap or GSD failed deep
        in the grid or the warper; ``geoseg tile`` checks its options first, with their flags' names."""
        if not self.size >= 1:
            raise ValueError(f"ChipOptions.size must be at least 1 pixel, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"ChipOptions.overlap must be in [0, size), got {self.overlap} for size {self.size}")
        if self.gsd is not None and not (math.isfinite(self.gsd) and self.gsd > 0):
            raise ValueError(f"ChipOptions.gsd must be a positive number of metres or None, got {self.gsd}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise ValueError(f"ChipOptions.min_valid is a fraction of a window, in [0, 1], got {self.min_valid}")


@dataclass
class ChipRecord:
    """One grid window of one scene, as listed in ``index.geojson``."""

    chip_id: str
    scene: str
    area: str
    split: str
    target: str
    status: str
    valid_fraction: float
    n_objects: int
    gsd: float | None
    image: str | None
    label: str | None
    row: int
    col: int
    window: list[int]
    geometry: dict | None = field(default=None, repr=False)
    #: the 1-based bands read as red, green, blue when they were requested (``--bands``); None: the
    #: raster's own choice. Why: ``geoseg train`` writes them into the model card, which ``geoseg
    #: predict`` follows (a model trained on bands 4,3,2 was fed 1,2,3)
    bands: list[int] | None = None
    #: with a mapped area (``--coverage``): the share of the window's pixels that are valid and inside
    #: it (the rest is labelled 255 / 0, ignored); None (and not listed): no mapped area given, or a
    #: window skipped below ``min_valid`` before it was looked at
    mapped_fraction: float | None = None

    def to_feature(self) -> dict:
        props = asdict(self)
        if props["mapped_fraction"] is None:  # chips cut without --coverage list what they always did
            del props["mapped_fraction"]
        geometry = props.pop("geometry")
        return {"type": "Feature", "geometry": geometry, "properties": props}


def footprint_lonlat(crs: CRS | None, transform: Affine, width: int, height: int) -> dict | None:
    """RFC 7946 Polygon (lon/lat, counter-clockwise) of a window's footprint, None if no CRS."""
    if crs is None:
        return None
    cols = [0, width, width, 0, 0]
    rows = [height, height, 0, 0, height]
    xs, ys = zip(*(transform @ (c, r) for c, r in zip(cols, rows)))
    lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    ring = [[round(x, 8), round(y, 8)] for x, y in zip(lon, lat)]
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring[:-1], ring[1:]))
    if area2 < 0:
        ring.reverse()
    return {"type": "Polygon", "coordinates": [ring]}


def write_chip(path: Path, data: np.ndarray, crs: CRS | None, transform: Affine | None) -> None:
    """Write a small uint8 GeoTIFF (bands, h, w), georeferenced when ``crs`` is known."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype="uint8", compress="deflate", predictor=2)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _record(chip_id: str, scene: Scene, scene_name: str, area: str, split: str, target: str, tile: Tile,
            frac: float, n_objects: int, written: bool, mapped: float | None = None) -> ChipRecord:
    win = tile.read
    status = "skipped" if not written else ("ok" if n_objects else "empty")
    w_transform = scene.window_transform(win)
    return ChipRecord(
        chip_id=chip_id, scene=scene_name, area=area, split=split, target=target, status=status,
        valid_fraction=round(frac, 4), n_objects=n_objects, gsd=scene.gsd,
        image=f"images/{chip_id}.tif" if written else None,
        label=f"labels/{chip_id}.tif" if written else None,
        row=tile.row, col=tile.col,
        window=[int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
        geometry=footprint_lonlat(scene.crs, w_transform, int(win.width), int(win.height)),
        bands=list(scene.bands) if scene.band_choice.source == "requested" else None,
        mapped_fraction=None if mapped is None else round(mapped, 4),
    )


def check_scene_options(scene: Scene, opts: ChipOptions) -> None:
    """Refuse a scene opened otherwise than ``opts`` say (``Scene(path, gsd=opts.gsd, bands=opts.bands)``).

    Why: ``gsd`` and ``bands`` act when the scene is opened, before the chip functions see it; a
    ``ChipOptions(gsd=0.3)`` with a scene opened at its own GSD cut chips at that GSD without a word.
    """
    if scene.target_gsd != opts.gsd:
        raise ValueError(f"{scene.name}: opened with gsd={scene.target_gsd} but the chip options say gsd={opts.gsd}: "
                         f"open it as Scene(path, gsd=opts.gsd, bands=opts.bands)")
    if opts.bands is not None and tuple(scene.bands) != tuple(opts.bands):
        raise ValueError(f"{scene.name}: reads bands {scene.bands} but the chip options say bands={opts.bands}: "
                         f"open it as Scene(path, gsd=opts.gsd, bands=opts.bands)")


def building_chips(scene: Scene, labels: LabelIndex, out_dir: str | Path, opts: ChipOptions, scene_name: str,
                   area: str, split: str, chip_prefix: str | None = None,
                   mapped: MappedArea | None = None) -> Iterator[ChipRecord]:
    """Cut one scene into building chips (0/1/2 + 255 ignore), yielding a record per window, its
    files named ``<chip_prefix>_rNNN_cNNN`` (default: ``scene_name``'s stem; the subdatasets of one
    file, ``a.tif:1`` and ``a.tif:2``, need prefixes of their own).

    ``mapped``: the area where the labels are complete (``--coverage``, in the scene's CRS): pixels
    outside it are 255 (ignore) and windows without a valid pixel inside it are skipped.
    ``scene`` must be opened as ``opts`` say (``check_scene_options``), with a CRS, and ``labels`` must
    meet it: from Python, labels of another place (or in the wrong CRS) cut a full set of all-background
    chips without a word, where ``geoseg tile`` refuses the scene."""
    check_scene_options(scene, opts)
    if scene.crs is None:
        raise ValueError(f"{scene.name} has no CRS: vector labels cannot be placed")
    if not labels.meets(grid_bounds(scene.transform, scene.width, scene.height)):
        raise ValueError(f"no label polygon overlaps {scene.name} ({labels.in_files} polygons, their extent misses "
                         f"the scene: another place, or labels read into another CRS than the scene's)")

    def label_of(w: Window, valid: np.ndarray, inside: np.ndarray | None) -> tuple[np.ndarray, int]:
        return window_labels(labels, scene.window_transform(w), valid.shape, valid, mapped=inside)

    yield from _chip_windows(scene, label_of, Path(out_dir), opts, scene_name, chip_prefix or Path(scene_name).stem,
                             area, split, "buildings", mapped)


def landcover_chips(scene: Scene, label_path: str | Path, out_dir: str | Path, opts: ChipOptions, scene_name: str,
                    *, chip_prefix: str, area: str, split: str) -> Iterator[ChipRecord]:
    """Cut an image + class-index mask pair into land-cover chips (0 = unlabeled/ignore), at native
    resolution (``opts.gsd`` must be None). ``chip_prefix``, ``area`` and ``split`` are named: in
    ``building_chips``'s order (area, split, then an optional prefix) they shifted silently."""
    if opts.gsd is not None:
        raise ValueError(f"{scene.name}: land-cover pairs are cut at native resolution: ChipOptions.gsd must be None")
    check_scene_options(scene, opts)
    out_dir, label_path = Path(out_dir), Path(label_path)
    with rasterio.open(label_path) as mask_file, ExitStack() as stack:
        mask_ds = mask_file
        if scene.is_warped:
            raise UnsupportedRaster(f"{scene.name}: land-cover pairs are cut at native resolution")
        if mask_file.crs is not None and scene.crs is not None and not _same_grid(mask_file, scene):
            # a class raster on another grid (another CRS, pixel size or extent), read onto the image's
            # by nearest neighbour: it was refused for its size or, of the same size, cut misaligned
            mask_ds = stack.enter_context(WarpedVRT(
                mask_file, crs=scene.crs, transform=scene.src_transform, width=scene.src_width,
                height=scene.src_height, resampling=Resampling.nearest))
        elif (mask_file.width, mask_file.height) != (scene.src_width, scene.src_height):
            raise UnsupportedRaster(
                f"{label_path.name}: label size {mask_file.width}x{mask_file.height} does not match image "
                f"{scene.src_width}x{scene.src_height} (land-cover pairs are cut at native resolution; give both "
                f"a CRS to have the mask read onto the image's grid)")
        check_landcover_mask(mask_ds, label_path)

        def mask_window(w: Window) -> np.ndarray:
            label = np.full((int(w.height), int(w.width)), LANDCOVER_UNLABELED, dtype=np.uint8)
            x0, y0 = max(int(w.col_off), 0), max(int(w.row_off), 0)
            x1 = min(int(w.col_off + w.width), scene.width)
            y1 = min(int(w.row_off + w.height), scene.height)
            inner = unlabel_nodata(mask_ds.read(1, window=Window(x0, y0, x1 - x0, y1 - y0)), mask_ds.nodata)
            label[y0 - int(w.row_off):y1 - int(w.row_off), x0 - int(w.col_off):x1 - int(w.col_off)] = inner
            return label

        yield from _landcover_windows(scene, mask_window, out_dir, opts, scene_name, chip_prefix, area, split)


def vector_landcover_chips(scene: Scene, polygons: ClassPolygons, out_dir: str | Path, opts: ChipOptions,
                           scene_name: str, chip_prefix: str, area: str, split: str,
                           mapped: MappedArea | None = None) -> Iterator[ChipRecord]:
    """Cut a georeferenced image into land-cover chips whose masks are rasterised from class polygons
    (``tiles.landcover_vectors``; ``geoseg tile --target landcover --labels-class-field``) on the
    scene's working grid: native, or resampled to ``opts.gsd`` when the scene was opened at it (the
    polygons have no resolution of their own, unlike a class mask). ``mapped`` (``--coverage``): 0,
    unlabeled, outside it, as ``building_chips``."""
    if scene.crs is None:
        raise UnsupportedRaster(f"{scene.name} has no CRS: vector land-cover labels cannot be placed on it")
    check_scene_options(scene, opts)
    yield from _landcover_windows(scene, lambda w: polygons.mask(scene.window_transform(w), (int(w.height), int(w.width))),
                                  Path(out_dir), opts, scene_name, chip_prefix, area, split, mapped)


def _landcover_windows(scene: Scene, label_of: Callable[[Window], np.ndarray], out_dir: Path, opts: ChipOptions,
                       scene_name: str, chip_prefix: str, area: str, split: str,
                       mapped: MappedArea | None = None) -> Iterator[ChipRecord]:
    """The land-cover chips of a scene's grid: ``label_of(window)`` gives each window's class indices
    (a class mask read, or polygons rasterised); invalid image pixels (and those outside ``mapped``)
    become unlabeled, and a chip counts the classes it holds."""

    def classes(window: Window, valid: np.ndarray, inside: np.ndarray | None) -> tuple[np.ndarray, int]:
        label = label_of(window)
        label[~valid] = LANDCOVER_UNLABELED
        if inside is not None:
            label[~inside] = LANDCOVER_UNLABELED
        return label, int(np.unique(label[label != LANDCOVER_UNLABELED]).size)

    yield from _chip_windows(scene, classes, out_dir, opts, scene_name, chip_prefix, area, split, "landcover", mapped)


def _chip_windows(scene: Scene, label_of: Callable[[Window, np.ndarray, np.ndarray | None], tuple[np.ndarray, int]],
                  out_dir: Path, opts: ChipOptions, scene_name: str, chip_prefix: str, area: str, split: str,
                  target: str, mapped: MappedArea | None = None) -> Iterator[ChipRecord]:
    """Every grid window of a scene as a record; those valid enough (and, with ``mapped``, holding a
    valid pixel inside the mapped area) written as image + label chips. ``label_of(window, valid,
    inside)`` gives the window's label raster and its count of objects (buildings) or classes (land
    cover); ``inside``: the window's pixels inside the mapped area, None without one."""
    for tile in tile_grid(scene.width, scene.height, opts.size, opts.overlap):
        chip_id = f"{chip_prefix}_r{tile.row:03d}_c{tile.col:03d}"  # is_chip_file knows chips by it
        rgb, valid = scene.read(tile.read)
        frac = valid_fraction(valid)
        if frac < opts.min_valid:
            yield _record(chip_id, scene, scene_name, area, split, target, tile, frac, 0, False)
            continue
        inside, share = None, None
        if mapped is not None:  # a window with no labelled pixel teaches nothing: not written
            inside = mapped.mask(scene.window_transform(tile.read), valid.shape)
            share = valid_fraction(inside & valid)
            if share == 0:  # its files from a cut with another mapped area go: no chip lies about it
                for folder in CHIP_FOLDERS:
                    (out_dir / folder / f"{chip_id}.tif").unlink(missing_ok=True)
                yield _record(chip_id, scene, scene_name, area, split, target, tile, frac, 0, False, share)
                continue
        label, count = label_of(tile.read, valid, inside)
        transform = scene.window_transform(tile.read) if scene.crs is not None else None
        image_dir, label_dir = CHIP_FOLDERS
        write_chip(out_dir / image_dir / f"{chip_id}.tif", rgb, scene.crs, transform)
        write_chip(out_dir / label_dir / f"{chip_id}.tif", label[None], scene.crs, transform)
        yield _record(chip_id, scene, scene_name, area, split, target, tile, frac, count, True, share)


def _same_grid(mask_ds, scene: Scene) -> bool:
    """Whether a georeferenced mask lies on the scene's own pixel grid (CRS, size, transform within
    1e-6 of a pixel)."""
    if mask_ds.crs != scene.crs or (mask_ds.width, mask_ds.height) != (scene.src_width, scene.src_height):
        return False
    tolerance = 1e-6 * max(abs(scene.src_transform.a), abs(scene.src_transform.e))
    return all(abs(a - b) <= tolerance for a, b in zip(mask_ds.transform[:6], scene.src_transform[:6]))


def unlabel_nodata(mask: np.ndarray, nodata: float | None) -> np.ndarray:
    """A class mask with its declared nodata value as ``LANDCOVER_UNLABELED`` (0, ignored in training).

    Why: class rasters exported from GIS tools mark unlabelled ground with a nodata value (often
    255) rather than with class 0; it was read as a class and the mask refused ("values 255 are not
    classes"), although GDAL says those pixels hold no label.
    """
    if nodata is None:
        return mask
    return np.where(mask == nodata, LANDCOVER_UNLABELED, mask).astype(mask.dtype, copy=False)


def check_landcover_mask(mask_ds: DatasetReader | WarpedVRT, label_path: Path) -> None:
    """Refuse masks that are not one band of class indices of ``classes.json`` (the mask's nodata
    value aside: it reads as unlabeled).

    Why: a colour (RGB) mask used to be accepted with only band 1 read, so chips got
    colour values (60, 110, ...) as classes.
    """
    if mask_ds.count != 1:
        raise UnsupportedRaster(f"{label_path.name}: {mask_ds.count} bands; a land-cover mask must be one band "
                                f"of class indices (convert a colour mask first)")
    classes_path = find_classes_file(label_path)
    if classes_path is None:
        return
    classes = {c["index"] for c in read_classes(classes_path)}
    bad = sorted(set(np.unique(unlabel_nodata(mask_ds.read(1), mask_ds.nodata)).tolist()) - classes)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise UnsupportedRaster(f"{label_path.name}: values {shown} are not classes of {classes_path} "
                                f"({min(classes)}..{max(classes)})")


#: a land-cover image ``X.<image suffix>`` and its class mask ``X_label.<mask suffix>`` (PNG, or a
#: GeoTIFF class raster on the image's grid)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


def landcover_mask_path(image: Path) -> Path:
    """The class mask beside a land-cover image: ``X_label.png``, ``.tif`` or ``.tiff`` (the PNG
    name when there is none, for the error that follows)."""
    candidates = [image.with_name(f"{image.stem}_label{suffix}") for suffix in MASK_SUFFIXES]
    found = [p for p in candidates if p.is_file()]
    if len(found) > 1:
        raise FileNotFoundError(f"{image}: two masks beside it ({', '.join(p.name for p in found)}): keep one")
    return found[0] if found else candidates[0]


def landcover_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs under ``root``: ``X.jpg|jpeg|png|tif|tiff`` beside ``X_label.png|tif|tiff``.

    Two images of one mask (``X.tif`` and its ``X.jpg`` preview) are refused: the first by name was
    taken, the preview without georeferencing, and the other was left out unseen."""
    pairs = []
    for label in sorted(p for p in root.rglob("*_label.*")
                        if p.suffix.lower() in MASK_SUFFIXES and not is_hidden(p, root)):
        stem = label.name[: -len("_label" + label.suffix)]
        images = sorted(p for p in label.parent.glob(stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"{label}: no image {stem}.jpg/.png/.tif beside it")
        if len(images) > 1:
            raise FileNotFoundError(f"{label}: two images beside it ({', '.join(p.name for p in images)}): keep one")
        if landcover_mask_path(images[0]) == label:
            pairs.append((images[0], label))
    return pairs


#: the folders of a chip folder that hold its chip files (``images/<id>.tif``, ``labels/<id>.tif``)
CHIP_FOLDERS = ("images", "labels")


#: how a chip file is named: ``<prefix>_rNNN_cNNN.tif`` (``_landcover_windows``)
_CHIP_NAME = re.compile(r"_r\d{3,}_c\d{3,}\.tif$")


def is_chip_file(path: Path, out_dir: Path) -> bool:
    """Whether ``path`` is a chip a run into ``out_dir`` wrote, no scene: named as chips are, in one of
    its chip folders (``CHIP_FOLDERS``). Only those: ``--out`` may be the scene folder itself, which may
    hold scenes in an ``images/`` folder of its own."""
    real = path.resolve()
    return bool(_CHIP_NAME.search(real.name)) and real.parent in {out_dir.resolve() / f for f in CHIP_FOLDERS}


def images_without_masks(root: Path) -> list[Path]:
    """The images under ``root`` (``X.jpg|jpeg|png|tif|tiff``, not hidden, no mask ``X_label.*``
    themselves) with no class mask ``X_label.png|tif|tiff`` beside them: what ``landcover_pairs``
    leaves out.

    Why: an image whose mask is named otherwise (``X_mask.png``, ``X_labels.png``) was left out of
    the chips with no word, and a folder of only such images was 'no input rasters found'."""
    masks = {label for _, label in landcover_pairs(root)}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not is_hidden(p, root) and p not in masks and not p.stem.endswith("_label")
                  and not landcover_mask_path(p).is_file())


def write_index(out_dir: str | Path, features: list[dict]) -> Path:
    """Write ``index.geojson`` from chip features (``ChipRecord.to_feature()``).

    Entries of earlier runs for other scenes are kept; those of the same scenes are
    replaced, so several runs into one folder merge.
    """
    out_dir = Path(out_dir)
    path = out_dir / "index.geojson"
    scenes = {f["properties"]["scene"] for f in features}
    kept = []
    if path.exists():
        old = json.loads(path.read_text())
        kept = [f for f in old.get("features", []) if f["properties"].get("scene") not in scenes]
    merged = kept + list(features)
    merged.sort(key=lambda f: f["properties"]["chip_id"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".geojson.tmp")
    try:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": merged}))
        tmp.replace(path)
    except OSError as exc:  # a full disk: no half-written index left, and the file named
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

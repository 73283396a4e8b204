"""`geoseg tile`: cut scenes (+ labels) into training chips; see tiles.chips for the format.

One batch job per scene (or per image + mask pair) via ``tiles.batch``: a progress bar,
resumable (each finished scene leaves a record in ``OUT/parts/<options-hash>/``; a re-run
with the same options skips it unless its scene, labels or chips changed), and
``--scheduler`` to use a Dask cluster.

An OUT folder holds ONE chip set: chip files are named by scene and grid cell only, so a
run with other options would overwrite files that the first run's records still point
at. Such a run is refused; ``tiles.chipset`` keeps that bookkeeping. User errors are one
line, exit 1.
"""
from __future__ import annotations

import json
import math
from contextlib import ExitStack
from enum import Enum
from functools import partial
from pathlib import Path

import typer

from geoseg import __version__
from geoseg.commands.outdir import check_not_another_commands_out
from geoseg.commands.outlock import hold_out_folder
from geoseg.commands.termination import TERMINATED_EXIT, Terminated, sigterm_interrupts
from geoseg.commands.usage import UsageError, usage_errors
from geoseg.commands.warning_lines import warnings_as_lines
from tiles.batch import failure_line, parse_scheduler, run_batch
from tiles.batch_summary import SUMMARY_NAME, BatchSummary, command_line
from tiles.classes import CLASSES_FILE, find_classes_file, read_classes
from tiles.hashing_progress import hashing_progress
from tiles.rasterpath import (
    RasterPath,
    absolute_raster_path,
    as_raster_path,
    beside,
    is_hidden,
    is_virtual,
    location_exists,
    not_found,
    raster_exists,
    raster_name,
    sidecar_of,
    split_sidecars,
    virtual_folder_files,
    vrts_over_inputs,
)
from tiles.splits import check_held_out_folders, name_split_note

# rasterio, numpy, geopandas and scipy (tiles.chips, tiles.labels, tiles.scene_chips, ...) are imported
# where they are used, when the command runs: `geoseg --help`, `geoseg serve` and the other commands
# import this module to build the command line (tests/test_cli_imports.py)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


class Target(str, Enum):
    buildings = "buildings"
    landcover = "landcover"


def expand_inputs(paths: list[RasterPath], target: Target, chips_dir: Path | None = None) -> list[RasterPath]:
    """Scene files (folders expanded) or, for land cover, the images of image + mask pairs.

    A location GDAL reads that is no local file (``/vsizip//a.zip/b.tif``, a subdataset name
    ``GTIFF_DIR:2:b.tif``: ``tiles.rasterpath``) is a scene as ``geoseg predict`` takes it, checked by
    opening it (one line when GDAL finds nothing there); an archive, or a folder in one
    (``/vsizip//a.zip``), stands for the rasters under it as a local folder does.

    A folder's chip files in ``chips_dir`` (the ``--out`` folder, when it lies inside a scene folder) are
    not scenes: a re-run of ``geoseg tile scenes/ --out scenes/chips`` took the chips for scenes and
    was refused ('... would both write chips named ...'). Its other files are: with ``--out scenes``
    (or a folder above it) every scene was dropped as a chip ('no input rasters found')."""
    from tiles.chips import is_chip_file, landcover_pairs

    out: list[RasterPath] = []
    for p in paths:
        if is_virtual(p):
            out += _virtual_scenes(p, target)
            continue
        if not p.exists():
            raise ValueError(f"{p}: no such file or directory")
        if target is Target.landcover:
            found = [img for img, _ in landcover_pairs(p)] if p.is_dir() else [p]
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in RASTER_SUFFIXES and not is_hidden(q, p))
        else:
            found = [p]
        if p.is_dir() and chips_dir is not None:
            found = [q for q in found if not is_chip_file(q, chips_dir)]
        out += found
    if not out and target is Target.landcover:
        unpaired = unpaired_images(paths, chips_dir)
        raise ValueError("no land-cover image + mask pairs found (an image X.jpg|png|tif beside its class mask "
                         "X_label.png|tif)" + (f"; {_named(unpaired)} without such a mask" if unpaired else ""))
    if not out:
        pictures = pictures_in_folders(paths, chips_dir)
        raise ValueError(f"no input rasters found ({' '.join(RASTER_SUFFIXES)})"
                         + (f"; {_named(pictures)} {PICTURES_BY_NAME}" if pictures else ""))
    return out


def _virtual_scenes(location: str, target: Target) -> list[RasterPath]:
    """The scenes a virtual location given as SCENE stands for: the rasters under an archive or a
    folder in one (hidden files and macOS's ``__MACOSX/`` aside), else the location itself when GDAL
    opens it. Land-cover image + mask pairs are local files (their mask and ``classes.json`` are found
    beside them): refused in one line."""
    if target is Target.landcover:
        raise ValueError(f"{location}: land-cover image + mask pairs are read from local files (the mask and "
                         f"classes.json beside each image): extract them first (a scene GDAL reads from an "
                         f"archive is cut with --target buildings, or with --labels-class-field polygons)")
    listed = virtual_folder_files(location)
    if listed is None:
        if not raster_exists(location):
            raise ValueError(not_found(location))
        return [location]
    top = location.rstrip("/")
    return [name for name in listed if name.lower().endswith(RASTER_SUFFIXES)
            and not any(part.startswith(".") or part == "__MACOSX" for part in name[len(top):].split("/"))]


def once_each(inputs: list[RasterPath]) -> list[RasterPath]:
    """``inputs`` (absolute) with each scene once, in order: the same name given twice (``a.tif a.tif``; a
    folder and a file in it; ``a/../a/x.tif``, made absolute) is one scene. Two names of one file (two
    links) stay two, for ``ChipSet.check_unique_names`` to refuse.

    Why: each repeat was run as a job of its own, which waited for the first 'another run' to write
    the same record, and index.geojson listed every chip of the scene once per repeat (train weighed
    them double)."""
    return list(dict.fromkeys(inputs))


def without_sidecars(inputs: list[RasterPath]) -> tuple[list[RasterPath], list[RasterPath]]:
    """The scenes without the sidecars of another of them (``x.tif.msk``, ``x.tif.ovr``, ``x.tif.aux.xml``,
    ``x.tfw`` beside ``x.tif``: ``tiles.rasterpath.split_sidecars``), and those sidecars; a sidecar given
    without its raster (``x.tif.ovr`` alone, GDAL's overviews: no georeferencing) is refused in one line.

    Why: ``geoseg tile scenes/x.tif*`` (the shell's pattern) cut the external mask as a scene of its own,
    which failed the run ('1 band(s)', exit 1), as ``geoseg predict`` did before it left them out."""
    kept, sidecars = split_sidecars(inputs)
    for path in kept:
        why = sidecar_of(path)
        if why:
            name = raster_name(path)
            raise ValueError(f"{name} is {why}, not a scene: give {name.rsplit('.', 1)[0]}")
    return kept, sidecars


def _sidecars_note(sidecars: list[RasterPath]) -> str:
    """The note for sidecars given with their rasters: left out, and why."""
    names = ", ".join(raster_name(p) for p in sidecars[:5]) + (", ..." if len(sidecars) > 5 else "")
    return (f"left out {len(sidecars)} sidecar file{'s' if len(sidecars) > 1 else ''} of the scenes ({names}): "
            f"GDAL reads each with its raster")


#: why a folder's JPEG and PNG files are no scenes of ``geoseg tile`` (buildings, vector land cover)
PICTURES_BY_NAME = "left out: a JPEG or PNG scene is cut only when given by its file name"
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png")


def pictures_in_folders(paths: list[RasterPath], chips_dir: Path | None = None) -> list[Path]:
    """The JPEG and PNG files under the folders among ``paths`` (hidden files and ``chips_dir``'s chips
    aside), which a folder does not contribute as scenes (a folder's pictures are previews as often as
    scenes); they are named, not dropped unseen: a folder of georeferenced drone JPEGs (with their world
    files) was 'no input rasters found'."""
    from tiles.chips import is_chip_file

    found: list[Path] = []
    for p in paths:
        if isinstance(p, Path) and p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in PICTURE_SUFFIXES and q.is_file()
                            and not is_hidden(q, p) and (chips_dir is None or not is_chip_file(q, chips_dir)))
    return found


def unpaired_images(paths: list[RasterPath], chips_dir: Path | None = None) -> list[Path]:
    """The images in the land-cover folders among ``paths`` that have no ``X_label`` mask beside them
    (``tiles.chips.images_without_masks``), the chips in ``chips_dir`` aside: they are left out."""
    from tiles.chips import images_without_masks, is_chip_file

    found: list[Path] = []
    for p in paths:
        if isinstance(p, Path) and p.is_dir():
            found += [q for q in images_without_masks(p)
                      if chips_dir is None or not is_chip_file(q, chips_dir)]
    return found


def _named(images: list[Path]) -> str:
    """``2 images (b.jpg, c.jpg)``: a count and the first few names."""
    names = ", ".join(p.name for p in images[:3]) + (", ..." if len(images) > 3 else "")
    return f"{len(images)} image{'s' if len(images) > 1 else ''} ({names})"


def landcover_class_file(images: list[Path]) -> Path:
    """The one ``classes.json`` of the masks of these images (before OUT is touched).

    Why: the class list decides the model's outputs and the names and colours of its card (and so
    of every class map it makes). All pairs must share one ``classes.json`` (by content). A mask
    without one is refused: its chips trained a model whose card named a team's own classes
    (1 trees, 2 fields) as Dubai's (1 building, 2 road), silently.
    """
    from tiles.chips import landcover_mask_path

    lists: dict[str, Path] = {}
    for image in images:
        mask = landcover_mask_path(image)
        path = find_classes_file(mask)
        if path is None:
            raise ValueError(f"{mask}: no {CLASSES_FILE} beside it or one folder up to name its classes: write one "
                             f'([{{"index": 0, "name": "unlabeled"}}, {{"index": 1, "name": "trees"}}, ...]; '
                             f"Dubai's is landcover/dubai/{CLASSES_FILE})")
        lists.setdefault(json.dumps(read_classes(path), sort_keys=True), path)
    if len(lists) > 1:
        shown = " and ".join(map(str, lists.values()))
        raise ValueError(f"the masks use different class lists ({shown}): tile each into its own --out")
    (path,) = lists.values()
    return path


def record_landcover_classes(out: Path, classes_file: Path) -> None:
    """Write the masks' class list into ``OUT/classes.json``, where ``geoseg train`` reads it
    (without it a 3-class data set trained a model and a card with Dubai's six classes); every run
    into OUT must share it."""
    key = json.dumps(read_classes(classes_file), sort_keys=True)
    recorded = out / CLASSES_FILE
    if recorded.exists():
        if json.dumps(read_classes(recorded), sort_keys=True) != key:
            raise ValueError(f"{out} holds chips of other classes ({recorded}); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(read_classes(classes_file), indent=1) + "\n")


def check_no_vrt_over_scenes(inputs: list[RasterPath]) -> None:
    """Refuse a VRT scene that reads other scenes of the run (``scenes/`` holding the tiles and the
    ``gdalbuildvrt`` index over them), before any is cut.

    Why: their ground was cut into chips twice, through the VRT and through each tile, with no word,
    and trained on twice; the chip set kept both (a scene stays in its ``--out`` once cut)."""
    for vrt, inside in vrts_over_inputs(inputs).items():
        names = ", ".join(raster_name(p) for p in inside[:3]) + (", ..." if len(inside) > 3 else "")
        raise ValueError(f"{vrt} reads {len(inside)} other scene{'s' if len(inside) > 1 else ''} of this run "
                         f"({names}): their ground would be cut into chips twice; give the VRT or the rasters it "
                         f"reads, not both (a VRT kept beside its tiles: move it out of the scene folder)")


SPLITS = ("train", "val", "test")


def check_options(size: int, overlap: int, gsd: float | None, min_valid: float, split: str | None,
                  workers: int) -> None:
    """Refuse option values that would crash (--gsd 0), hang (--workers 0: a cluster with no
    worker), be ignored (--gsd -1) or silently skip every window (--min-valid 5)."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"--size must be > 0 and --overlap in [0, --size) (got --size {size}, --overlap {overlap})")
    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise ValueError(f"--gsd must be a positive number of metres, got {gsd}")
    if not 0 <= min_valid <= 1:
        raise ValueError(f"--min-valid is a fraction in [0, 1], got {min_valid}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


def check_landcover_gsd(images: list[Path], gsd: float | None) -> None:
    """Refuse ``--gsd`` for land-cover image + mask pairs rather than ignore it: the Dubai images carry
    no georeferencing (no GSD to resample from), and the class masks are cut at native resolution.
    (Vector land cover, ``--labels-class-field``, is rasterised on the working grid: ``--gsd`` works.)"""
    import rasterio

    if gsd is None:
        return
    for image in images:
        with rasterio.open(image) as src:
            if src.crs is None:
                raise ValueError(f"{image.name} is not georeferenced: cannot resample to --gsd")
    raise ValueError("--gsd is not supported for --target landcover (image + mask pairs are cut at native "
                     "resolution)")


def check_landcover_labels(labels: list[RasterPath] | None, labels_where: str | None, labels_layer: str | None,
                           class_field: str | None = None) -> None:
    """Refuse ``--labels`` (and ``--labels-where``) for land cover without ``--labels-class-field``
    rather than ignore it: land-cover chips then take their classes from the class mask beside each
    image, so a vector file given there was silently unused and the chips carried whatever masks lay
    beside the images. A class field without ``--labels`` is refused too."""
    if class_field is not None and not labels:
        raise ValueError("--labels-class-field names the class field of --labels polygons: give --labels")
    if class_field is None and (labels or labels_where or labels_layer):
        given = f"--labels {raster_name(labels[0])}" if labels else "--labels-where" if labels_where else "--labels-layer"
        raise ValueError(f"{given} with --target landcover needs --labels-class-field FIELD (the polygons' class "
                         f"field, its values class names or indices of a classes.json); without it land-cover "
                         f"labels are class masks X_label.png|tif beside each image X")


def check_label_files(given: list[RasterPath] | None, inputs: list[RasterPath], where: str | None,
                      layer: str | None = None) -> list[str]:
    """Check the label files before any scene is cut: a ``--labels`` file that is missing or not a
    vector file, coordinates that cannot be lon/lat, or a ``--labels-where`` the file cannot answer
    is one line at once. Why: each was found by every scene in turn, one failure line per scene,
    and left an OUT holding an empty index. A ``labels.geojson`` missing beside some scenes (no
    ``--labels``) still fails those scenes alone. Returns the notes of files mixing points or lines
    with their footprints (``points_and_lines_note``)."""
    from tiles.labels import check_label_file, points_and_lines_note

    for path in given or []:
        if not location_exists(path):  # a folder may be one: an Esri File Geodatabase (x.gdb/), a folder of shapefiles
            raise ValueError(f"--labels {path}: no such file or folder")
    notes = []
    for path in given or dict.fromkeys(beside(p, "labels.geojson") for p in inputs):
        if location_exists(path):
            check_label_file(path, where, layer)
            if note := points_and_lines_note(path, where, layer):
                notes.append(note)
    return notes


def check_one_gsd(out: Path, inputs: list[RasterPath], pairs: bool = False) -> None:
    """Refuse scenes of different GSDs cut without ``--gsd`` (with each other or with the chips already
    in ``out``), before any is cut; ``pairs``: land-cover image + mask pairs, which ``--gsd`` cannot
    resample (georeferenced ones: a folder of 0.15 m and 0.3 m pairs was cut, and ``geoseg train``
    then asked for the ``--gsd`` tile refuses for them), nor pairs with and without georeferencing, which
    ``geoseg train`` refuses as chips with and without a GSD.

    Why: a model has one working scale, so ``geoseg train`` refuses a chip set of mixed GSD; such a
    folder (0.15 m and 0.3 m scenes side by side, as drone and aerial blocks come) was cut in full
    and only then found unusable, and re-cutting it at one ``--gsd`` needs another ``--out``.
    """
    import rasterio

    from geoseg.training.data import same_gsd
    from tiles.chipset import INDEX_FILE, index_chips
    from tiles.gsd import dataset_gsd_m

    measured: dict[str, float] = {}
    unmeasured: dict[str, None] = {}  # pairs without georeferencing (ordered, once each)
    for props in index_chips(out / INDEX_FILE):
        if props.get("image") and props.get("gsd"):
            measured[f"{props['scene']} (chips in {out})"] = float(props["gsd"])
        elif props.get("image"):
            unmeasured[f"{props['scene']} (chips in {out})"] = None
    for path in inputs:
        try:
            with rasterio.open(path) as src:
                value = dataset_gsd_m(src)
        except rasterio.errors.RasterioError:  # the scene's own job says what is wrong with it
            continue
        name = raster_name(path)
        measured = {k: v for k, v in measured.items() if not k.startswith(f"{name} (")}
        unmeasured = {k: v for k, v in unmeasured.items() if not k.startswith(f"{name} (")}
        if value is not None:
            measured[name] = value
        else:
            unmeasured[name] = None
    if pairs and measured and unmeasured:
        known, unknown = next(iter(measured)), next(iter(unmeasured))
        raise ValueError(f"image + mask pairs with and without georeferencing ({unknown} has no GSD, {known} "
                         f"{measured[known]:.3g} m): a model has one working scale, which geoseg train cannot tell "
                         f"for the pairs without; tile them into different --out folders (train those with "
                         f"geoseg train --gsd METRES)")
    if not same_gsd(list(measured.values())):
        fine, coarse = min(measured, key=measured.get), max(measured, key=measured.get)
        found = f"{fine} {measured[fine]:.3g} m, {coarse} {measured[coarse]:.3g} m"
        if pairs:
            raise ValueError(f"image + mask pairs of different GSD ({found}): a model has one working scale; tile "
                             f"them into different --out folders, or resample the images and their masks to one "
                             f"GSD first (gdalwarp -tr, with -r near for the masks)")
        raise ValueError(f"scenes of different GSD without --gsd ({found}): a model has one working scale; give "
                         f"--gsd (e.g. --gsd {measured[coarse]:.2g}) or tile them into different --out folders")


def check_upsampling(inputs: list[RasterPath], gsd: float | None, size: int, overlap: int) -> None:
    """Refuse a ``--gsd`` more than ``MAX_COARSER`` times finer than a scene's GSD, before any is cut,
    as ``geoseg predict`` refuses an input that much coarser than a model's working GSD (one limit,
    one slack: ``geoseg.coarse_input``).

    Why: ``geoseg tile RGB.byte.tif --gsd 0.3`` (a 300 m Landsat scene: a typo, or the wrong scene)
    said nothing for 10 minutes while its memory grew past 5 GB, on its way to 8.6 million windows of
    pixels each repeated a million times; chips that upsampled say nothing a model can learn a
    building from."""
    import rasterio

    from geoseg.coarse_input import GSD_SLACK, MAX_COARSER
    from tiles.gsd import dataset_gsd_m

    if gsd is None:
        return
    for path in inputs:
        try:
            with rasterio.open(path) as src:
                value, width, height = dataset_gsd_m(src), src.width, src.height
        except rasterio.errors.RasterioError:  # the scene's own job says what is wrong with it
            continue
        # with predict's slack: a nominal 3 m UTM pixel measures 3.001 m on the ground
        if value is not None and value > MAX_COARSER * (1 + GSD_SLACK) * gsd:
            ratio, step = value / gsd, size - overlap
            windows = math.ceil(width * ratio / step) * math.ceil(height * ratio / step)
            times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
            raise ValueError(f"{raster_name(path)}: its GSD {value:.3g} m is {times}x the --gsd {gsd:g} m "
                             f"(more than {MAX_COARSER:g}x: about {windows:,} windows of upsampled pixels); give "
                             f"--gsd {value / MAX_COARSER:.3g} or coarser, finer imagery, or --allow-coarse to "
                             f"cut it anyway")


@sigterm_interrupts
def tile(
    # strings, not Paths: Path would turn /vsizip//tmp/a.zip/b.tif into a relative path for GDAL
    scenes: list[str] = typer.Argument(..., metavar="SCENE", help="Scene rasters or folders: the .tif .tiff .vrt .jp2 .img files under them (a JPEG or PNG scene by its name; GDAL virtual paths such as /vsizip//path/a.zip/b.tif, an archive /vsizip//path/a.zip standing for the rasters in it, and subdataset names such as GTIFF_DIR:2:path/a.tif included; land cover: X.jpg|png|tif + X_label.png|tif class-mask pairs, local files)."),
    out: Path = typer.Option(..., "--out", help="Chip directory (index.geojson, images/, labels/); holds chips of one option set (--split aside)."),
    labels: list[str] = typer.Option(None, "--labels", help="Building polygons, or land-cover polygons with --labels-class-field: any OGR vector file (or a folder GDAL reads as one, an Esri x.gdb; or a GDAL virtual path, /vsizip//path/l.zip/labels.geojson), any CRS; their extent must meet each scene; repeatable (a file named twice is read once). Default (buildings): labels.geojson beside each scene (in its archive for /vsizip/ and /vsitar/); land cover without it: X_label masks."),
    labels_where: str = typer.Option(None, "--labels-where", help="Only the label features matching this OGR SQL condition are buildings, e.g. \"class = 'building'\" (default: every polygon)."),
    labels_layer: str = typer.Option(None, "--labels-layer", help="The building layer of label files with several (a GeoPackage); default: the only polygon layer."),
    labels_class_field: str = typer.Option(None, "--labels-class-field", help="--target landcover: the --labels polygons' class field, its values class names (or indices) of the classes.json beside the labels file (or one folder up); each image is rasterised from them instead of an X_label mask."),
    # a string, not a Path: Path would collapse the // of a GDAL virtual path
    coverage: str = typer.Option(None, "--coverage", help="Polygons of the area where the labels are complete (any OGR vector file, any CRS): pixels outside it are labelled 255, ignore (land cover from --labels-class-field polygons: 0, unlabeled), and windows without a valid pixel inside it are skipped, not written. Default: the labels are complete over every scene."),
    size: int = typer.Option(512, help="Chip size in working-grid pixels."),
    overlap: int = typer.Option(0, help="Overlap between neighbouring chips in pixels."),
    gsd: float = typer.Option(None, help="Resample to this ground sample distance in metres (buildings, and land cover from --labels-class-field polygons; refused for image + mask pairs)."),
    target: Target = typer.Option(Target.buildings, help="buildings (0/1/2 + 255 ignore) or landcover (class-index masks)."),
    min_valid: float = typer.Option(0.5, help="Windows with a smaller valid-pixel fraction (0 to 1) are recorded as skipped, not written."),
    bands: str = typer.Option(None, help="1-based bands for R,G,B, e.g. 4,3,2, or 1,1,1 for one grey band (default: colour interpretation, else band descriptions red, green, blue, else 1,2,3); recorded per chip, and geoseg train writes them into the model card, which geoseg predict follows."),
    split: str = typer.Option(None, help="Force this split (train, val or test) for all chips (default: by area, see docs/ARCHITECTURE.md; your own scenes go to train, and those kept in a folder named val, valid, validation or test are refused without it); runs differing only by --split share an --out."),
    scheduler: str = typer.Option(None, help="'local' (local worker processes), 'sync' (in this process) or a Dask scheduler address such as tcp://host:8786 (default: local, in-process for one input)."),
    workers: int = typer.Option(2, help="Local worker processes (at least 1)."),
    allow_coarse: bool = typer.Option(False, "--allow-coarse", help="Cut a scene whose GSD is more than 10x coarser than --gsd (refused otherwise: its chips are upsampled pixels)."),
) -> None:
    """Cut scenes into training chips with labels and an index (resumable; one option set per --out)."""
    from tiles.chips import ChipOptions, write_index
    from tiles.landcover_vectors import check_vector_landcover
    from tiles.mapped_area import check_coverage_file
    from tiles.normalize import parse_bands
    from tiles.scene_chips import SceneJob, chip_prefix

    given = [as_raster_path(p) for p in scenes]
    label_files = [as_raster_path(p) for p in labels] if labels else None
    with ExitStack() as held:  # the lock on OUT, taken before OUT is read or changed
        try:
            with usage_errors(ValueError):  # the options alone, before any scene or label file is read
                check_options(size, overlap, gsd, min_valid, split, workers)
                if target is Target.landcover:
                    check_landcover_labels(label_files, labels_where, labels_layer, labels_class_field)
                elif labels_class_field is not None:
                    raise ValueError("--labels-class-field is for --target landcover (building labels are one class)")
                if coverage is not None and target is Target.landcover and not labels_class_field:
                    raise ValueError("--coverage with --target landcover needs --labels-class-field polygons (a class "
                                     "mask marks its unlabeled pixels 0 itself)")
                chosen = parse_scheduler(scheduler) if scheduler is not None else None
                opts = ChipOptions(size=size, overlap=overlap, gsd=gsd, min_valid=min_valid,
                                   bands=parse_bands(bands) if bands is not None else None)
            if coverage is not None:
                check_coverage_file(coverage)
            # vector land cover: scene rasters, as for buildings (not image + mask pairs)
            inputs = expand_inputs(given, Target.buildings if labels_class_field else target, chips_dir=out.resolve())
            inputs, sidecars = without_sidecars(inputs)
            job = SceneJob(out=out.resolve(), opts=opts, target=target.value,
                           labels=distinct_label_files(label_files) if label_files else None, split=split,
                           labels_where=labels_where, labels_layer=labels_layer, labels_class_field=labels_class_field,
                           coverage=None if coverage is None else _absolute_label(as_raster_path(coverage)))
            # absolute, links kept: a scene linked into a store (git-annex, DVC, a share) keeps its own name,
            # folder and labels.geojson, not the target's
            inputs = once_each([absolute_raster_path(p) for p in inputs])
            check_no_vrt_over_scenes(inputs)
            if (target is Target.buildings or labels_class_field) and not allow_coarse:  # pairs: no --gsd
                check_upsampling(inputs, gsd, size, overlap)
            label_notes = (check_label_files(list(job.labels or ()), inputs, labels_where, labels_layer)
                           if target is Target.buildings else [])
            if target is Target.landcover:
                if not labels_class_field:
                    check_landcover_gsd(inputs, gsd)
                classes_file = (check_vector_landcover(list(job.labels or ()), labels_class_field, job.out, labels_where,
                                                       labels_layer) if labels_class_field
                                else landcover_class_file(inputs))
            if split is None:
                check_held_out_folders(inputs)
            check_not_another_commands_out(job.out, "geoseg tile")
            held.enter_context(hold_out_folder(job.out, "geoseg tile"))  # one run at a time in OUT
            if gsd is None:
                check_one_gsd(job.out, inputs, pairs=target is Target.landcover and not labels_class_field)
            chip_set = job.chip_set()
            siblings = chip_set.claim()
            # image + mask pairs: one image of two masks is not one scene's labels twice
            # same-size scenes are read through to compare them: a bar (or a line) when it is long, as predict's
            moved = chip_set.check_unique_names(inputs, partial(chip_prefix, target=job.target), siblings,
                                                by_content=target is Target.buildings or bool(labels_class_field),
                                                progress=hashing_progress("tile"))
            moved += (chip_set.move_to_this_split(inputs, siblings) + chip_set.recut_changed(inputs, job.watched_files)
                      + chip_set.recut_incomplete(inputs))
            if target is Target.landcover:
                record_landcover_classes(job.out, classes_file)
        except UsageError:
            raise
        except Exception as exc:  # one line for the user, non-zero exit
            typer.echo(f"geoseg tile: error: {exc}", err=True)
            raise typer.Exit(1) from None
        if sidecars:
            moved.insert(0, _sidecars_note(sidecars))
        moved += label_notes
        if split is None:
            moved += [note for path in inputs if (note := name_split_note(path, target is Target.landcover))]
        if target is Target.landcover and not labels_class_field and (unpaired := unpaired_images(given, job.out)):
            moved.append(f"left out {_named(unpaired)} with no class mask X_label.png|tif beside them")
        elif (target is Target.buildings or labels_class_field) and (pictures := pictures_in_folders(given, job.out)):
            moved.append(f"{_named(pictures)} in the scene folders {PICTURES_BY_NAME}")
        for note in moved:
            typer.echo(f"note: {note}", err=True)
        if scheduler is None and len(inputs) == 1:
            chosen = "sync"
        held.enter_context(warnings_as_lines())  # e.g. a batch.json that cannot be written: one line
        summary = BatchSummary(job.out / SUMMARY_NAME, inputs, chip_set.record,
                               header={"command": "geoseg tile", "argv": command_line(), "geoseg_version": __version__,
                                       "out": str(job.out)},
                               details=_window_counts, no_details={"windows": None})
        try:
            report = run_batch(inputs, chip_set.record, job, scheduler=chosen,
                               n_workers=workers, description="scenes", on_update=summary.update)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: click said nothing and exited 130
            code = TERMINATED_EXIT if isinstance(stop, Terminated) else 130
            summary.stop(code)
            typer.echo(f"geoseg tile: {'terminated' if code == TERMINATED_EXIT else 'interrupted'}: finished scenes "
                       f"are kept, run the same command again to resume", err=True)
            raise typer.Exit(code) from None
        except Exception as exc:  # noqa: BLE001 -- e.g. a Dask scheduler that cannot be reached: one line
            summary.stop(1, error=f"{exc}")
            typer.echo(f"geoseg tile: error: {exc}", err=True)
            raise typer.Exit(1) from None
        try:
            features = chip_set.features(inputs)
            index = write_index(out, features)
        except Exception as exc:  # noqa: BLE001 -- e.g. a full disk: one line, and the summary says so
            summary.stop(1, error=f"{exc}")
            typer.echo(f"geoseg tile: error: {exc}", err=True)
            raise typer.Exit(1) from None
        counts = {s: sum(f["properties"]["status"] == s for f in features) for s in ("ok", "empty", "skipped")}
        for note in skipped_scene_notes(features, size, min_valid):
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"{len(features)} windows ({counts['ok']} ok, {counts['empty']} empty, {counts['skipped']} skipped) "
                   f"from {len(inputs) - len(report.failed)} file(s), {len(report.skipped)} already done -> {index}")
        summary.finish(1 if report.failed else 0)
        for path in inputs:  # in the order given, as batch.json lists them (not the order they failed in)
            if str(path) in report.failed:
                typer.echo(f"geoseg tile: error: {failure_line(raster_name(path), report.failed[str(path)])}", err=True)
        if report.failed:
            raise typer.Exit(1)


def _absolute_label(path: RasterPath) -> RasterPath:
    """A ``--labels`` file as the chip set's options record it: a local one by its real absolute path,
    a virtual one (``/vsizip//a.zip/l.geojson``) as given."""
    return path.resolve() if isinstance(path, Path) else path


def distinct_label_files(paths: list[RasterPath]) -> tuple[RasterPath, ...]:
    """The ``--labels`` files as the chip set's options record them (``_absolute_label``), each file
    once, in the order first given (the order decides the shared outline of overlapping footprints):
    ``l.geojson --labels ./l.geojson``, a link to it or another hard link of it is one file.

    Why: a file given twice had every polygon read twice (twice the time and memory a scene) and
    recorded twice in the options, so a re-run naming it once was refused as 'other options'."""
    kept: dict[object, RasterPath] = {}
    for path in map(_absolute_label, paths):
        kept.setdefault(_file_identity(path), path)
    return tuple(kept.values())


def _file_identity(path: RasterPath) -> object:
    """What makes two ``--labels`` names one file: a local file's device and inode (also a folder
    GDAL reads as one, an Esri ``x.gdb``), else the name (a virtual path, or a missing file that
    ``check_label_files`` refuses)."""
    if isinstance(path, Path):
        try:
            stat = path.stat()
        except OSError:
            return path
        return stat.st_dev, stat.st_ino
    return path


def skipped_scene_notes(features: list[dict], size: int, min_valid: float) -> list[str]:
    """A note for each scene whose every window was skipped (below ``--min-valid``), with its best
    valid fraction. Why: a folder of 256 px tiles cut at the default --size 512 gave windows three
    quarters padding, all skipped, and only a count said so ('4 windows (0 ok, 0 empty, 4 skipped)');
    ``geoseg train`` then found no chips."""
    best: dict[str, float] = {}
    for feature in features:
        props = feature["properties"]
        if props["status"] == "skipped":
            best[props["scene"]] = max(best.get(props["scene"], 0.0), float(props["valid_fraction"]))
        else:
            best[props["scene"]] = math.inf
    return [f"{scene}: every window skipped, none has --min-valid {min_valid:g} of valid pixels (at best "
            f"{fraction:.2f}; nodata and the padding past a scene smaller than --size {size} are invalid): a smaller "
            f"--size or --min-valid cuts it" for scene, fraction in best.items() if fraction != math.inf]


def _window_counts(record: Path, result: object) -> dict[str, dict[str, int]]:
    """A finished scene's entry in the batch summary: its windows by status (ok, empty, skipped),
    from its record (also for a scene skipped as already done)."""
    statuses = [f["properties"]["status"] for f in json.loads(record.read_text())]
    return {"windows": {s: statuses.count(s) for s in ("ok", "empty", "skipped")}}

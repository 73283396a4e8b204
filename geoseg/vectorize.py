"""Building class rasters -> separated, simplified, valid building polygons.

The building head predicts three classes per pixel: 0 background, 1 interior,
2 outline. A building is a 4-connected component of non-background pixels;
components holding several interior "seeds" are split between the seeds by a
watershed (touching houses sharing a wall), the others are kept whole. Only
the few multi-seed components pay for the watershed, which keeps the whole
thing within a small factor of ``rasterio.features.shapes`` on big masks.

Large rasters are processed in horizontal strips with a halo: every component
is emitted by exactly one strip (the one holding its top row) and only when it
lies wholly inside that strip's read window; otherwise the window grows. A
building that crosses strip or tile borders is therefore always one polygon
and the result does not depend on the strip height.

Everything works in pixel coordinates (column, row of the whole raster);
callers apply the affine transform. Pure numpy/scipy/skimage/shapely, no I/O.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage

BACKGROUND, INTERIOR, OUTLINE = 0, 1, 2
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-label")

#: reads rows [start, stop) of the whole raster -> (classes uint8 (h, w), building probability (h, w) or None)
StripReader = Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class VectorizeOptions:
    """Knobs of the vectoriser, in pixels of the raster being vectorised."""

    min_area_px: float = 4.0
    simplify_px: float = 0.5
    strip_rows: int = 2048
    halo_rows: int = 128


@dataclass
class BuildingPolygons:
    """Polygons in pixel coordinates (x = column, y = row) plus per-building attributes."""

    geometries: list = field(default_factory=list)
    confidence: list = field(default_factory=list)
    #: index of the pre-separation component; buildings sharing a group touched in the raster
    group: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.geometries)

    def extend(self, other: "BuildingPolygons") -> None:
        self.geometries.extend(other.geometries)
        self.confidence.extend(other.confidence)
        self.group.extend(other.group)


def classes_from_probabilities(probs: np.ndarray, building: np.ndarray) -> np.ndarray:
    """0/1/2 classes from (3, h, w) probabilities and a building mask: interior where it beats outline."""
    classes = np.where(probs[1] >= probs[2], INTERIOR, OUTLINE).astype(np.uint8)
    classes[~building] = BACKGROUND
    return classes


@dataclass
class Separation:
    """Buildings labelled 1..n (0 = background) and where each came from."""

    labels: np.ndarray  # int32 (h, w)
    owner: np.ndarray  # int64: owner[label] = connected component the building came from
    component_slices: list  # ndimage.find_objects of the components (index = component - 1)

    @property
    def n_components(self) -> int:
        return len(self.component_slices)


def separate_buildings(classes: np.ndarray) -> Separation:
    """Label buildings (4-connected non-background), splitting touching ones between interior seeds.

    Components with at most one interior seed keep their component number; the others are
    split between their seeds by a breadth-first growth (a watershed on the distance to the seeds).
    The footprint is exactly the interior and outline pixels (``tiles.labels``: the outline
    is the band just inside each footprint's edge, and along shared walls).
    """
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2-D array, got shape {classes.shape}")
    # the two labellings release the GIL: run them side by side
    seeds_job = _POOL.submit(lambda: ndimage.label(classes == INTERIOR))
    comp, n_comp = ndimage.label(classes != BACKGROUND)
    seeds, n_seeds = seeds_job.result()
    labels = comp.astype(np.int32, copy=False)
    if n_comp == 0:
        return Separation(labels, np.zeros(1, np.int64), [])
    slices = ndimage.find_objects(comp)
    seeds_per_comp = np.zeros(n_comp + 1, np.int64)
    if n_seeds:
        # every pixel of a seed lies in one component: scatter instead of a (sorting) ndimage.maximum
        is_seed = seeds > 0
        comp_of_seed = np.zeros(n_seeds + 1, dtype=np.int64)
        comp_of_seed[seeds[is_seed]] = comp[is_seed]
        seeds_per_comp = np.bincount(comp_of_seed[1:], minlength=n_comp + 1)
    multi = seeds_per_comp >= 2
    owner = np.arange(n_comp + 1, dtype=np.int64)
    if multi.any():
        owner = _split_between_seeds(labels, comp, slices, seeds, comp_of_seed, multi, n_comp)
    return Separation(labels, np.asarray(owner, dtype=np.int64), slices)


def _split_between_seeds(
    labels: np.ndarray, comp: np.ndarray, slices: list, seeds: np.ndarray, comp_of_seed: np.ndarray,
    multi: np.ndarray, n_comp: int,
) -> np.ndarray:
    """Grow every seed of the multi-seed components over its component, in place; returns ``owner``.

    A breadth-first growth (4-neighbour layers, ties to the larger label) done for all
    components at once on flat index arrays: the outline band between seeds is a few
    pixels wide, so a handful of vectorised iterations replace one watershed per component.
    The first seed of a component keeps the component's number, the others get new ones.
    """
    seed_ids = np.arange(1, comp_of_seed.size, dtype=np.int64)
    seed_comp = comp_of_seed[1:]
    chosen = multi[seed_comp]
    ms, mc = seed_ids[chosen], seed_comp[chosen]
    order = np.lexsort((ms, mc))
    ms, mc = ms[order], mc[order]
    first = np.r_[True, mc[1:] != mc[:-1]]
    new_label = np.empty(ms.size, dtype=np.int32)
    new_label[first] = mc[first]
    n_extra = int((~first).sum())
    new_label[~first] = np.arange(n_comp + 1, n_comp + 1 + n_extra, dtype=np.int32)
    seed_to_label = np.zeros(comp_of_seed.size, dtype=np.int32)
    seed_to_label[ms] = new_label

    h, w = labels.shape
    # the multi-seed components' bounding boxes, each with a 1 px empty border, stacked into
    # one small "atlas": neighbours are +-1 and +-stride there, and no page of a big array is touched
    chosen_comps = np.flatnonzero(multi)
    boxes = [slices[c - 1] for c in chosen_comps]
    heights = np.array([b[0].stop - b[0].start + 2 for b in boxes])
    stride = max(b[1].stop - b[1].start for b in boxes) + 2
    row_offsets = np.concatenate([[0], np.cumsum(heights)[:-1]])
    image_idx, atlas_idx = [], []
    for c, box, r0 in zip(chosen_comps, boxes, row_offsets):
        rr, cc = np.nonzero(comp[box] == c)
        image_idx.append((rr + box[0].start) * w + (cc + box[1].start))
        atlas_idx.append((rr + r0 + 1) * stride + cc + 1)
    idx, at = np.concatenate(image_idx), np.concatenate(atlas_idx)
    grown = np.zeros(int(heights.sum()) * stride, dtype=np.int32)
    grown[at] = seed_to_label[seeds.ravel()[idx]]
    todo = at[grown[at] == 0]
    while todo.size:
        nb = np.maximum(np.maximum(grown[todo - 1], grown[todo + 1]),
                        np.maximum(grown[todo - stride], grown[todo + stride]))
        reached = nb > 0
        if not reached.any():
            break  # unreachable pixels (cannot happen inside a connected component)
        grown[todo[reached]] = nb[reached]
        todo = todo[~reached]
    labels.ravel()[idx] = grown[at]
    return np.concatenate([np.arange(n_comp + 1, dtype=np.int64), mc[~first]])


def keep_labels(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Zero every label whose ``keep[label]`` is False, in one lookup pass."""
    lut = np.where(keep, np.arange(keep.size, dtype=np.int32), 0).astype(np.int32)
    lut[0] = 0
    return lut[labels]


def polygons_from_labels(
    labels: np.ndarray, row_offset: int = 0, col_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Polygonise a label raster: one Polygon per 4-connected region, in pixel coordinates.

    Returns ``(polygons, label value of each)``. Rings are built in bulk by shapely from one
    flat coordinate array (building each Polygon in Python costs more than GDAL's polygonising).
    """
    transform = Affine.translation(col_offset, row_offset)
    coords: list = []
    ring_sizes: list[int] = []
    rings_per_polygon: list[int] = []
    values: list[int] = []
    for geom, value in features.shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
        rings = geom["coordinates"]
        for ring in rings:
            coords.extend(ring)
            ring_sizes.append(len(ring))
        rings_per_polygon.append(len(rings))
        values.append(int(value))
    if not values:
        return np.empty(0, dtype=object), np.zeros(0, dtype=np.int64)
    ring_index = np.repeat(np.arange(len(ring_sizes)), ring_sizes)
    rings = shapely.linearrings(np.asarray(coords, dtype=np.float64), indices=ring_index)
    counts = np.asarray(rings_per_polygon)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    polygons = shapely.polygons(rings[first])
    for k in np.flatnonzero(counts > 1):  # the few with holes
        polygons[k] = shapely.Polygon(rings[first[k]], rings[first[k] + 1:first[k] + counts[k]])
    return polygons, np.asarray(values, dtype=np.int64)


def clean_polygons(geoms: list, simplify_px: float, min_area_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify, make valid, explode to Polygons, drop those under ``min_area_px``.

    Returns ``(polygons, index of the input geometry each came from)``; vectorised shapely calls.
    """
    arr = np.asarray(geoms, dtype=object)
    if arr.size == 0:
        return arr, np.zeros(0, dtype=np.int64)
    if simplify_px > 0:
        arr = shapely.simplify(arr, simplify_px, preserve_topology=True)
    invalid = ~shapely.is_valid(arr)
    if invalid.any():
        arr[invalid] = shapely.make_valid(arr[invalid])
    parts, index = shapely.get_parts(arr, return_index=True)
    if parts.size and (invalid.any()):
        # make_valid may return collections holding lines or points: keep only surfaces
        parts_of_parts, sub = shapely.get_parts(parts, return_index=True)
        parts, index = parts_of_parts, index[sub]
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area_px)
    return parts[keep], index[keep]


def vectorize_array(
    classes: np.ndarray,
    building_probability: np.ndarray | None = None,
    options: VectorizeOptions = VectorizeOptions(),
) -> BuildingPolygons:
    """Vectorise one whole class raster held in memory."""
    sep = separate_buildings(classes)
    keep = np.ones(sep.owner.size, dtype=bool)
    return _polygons_with_attributes(sep, keep, building_probability, options, row_offset=0)


def _polygons_with_attributes(
    sep: Separation,
    keep: np.ndarray,
    building_probability: np.ndarray | None,
    options: VectorizeOptions,
    row_offset: int,
) -> BuildingPolygons:
    out = BuildingPolygons()
    n = sep.owner.size
    counts = np.bincount(sep.labels.ravel(), minlength=n)
    big = counts >= options.min_area_px
    big[0] = False
    keep = keep & big
    if not keep.any():
        return out
    # tiny regions are zeroed before polygonising (noisy masks: much cheaper); the few buildings
    # another strip owns are polygonised and dropped afterwards (no extra pass over the raster)
    labels = sep.labels if big[1:].all() else keep_labels(sep.labels, big)
    if building_probability is not None:
        prob = building_probability
        if prob.shape != labels.shape:
            raise ValueError(f"probability shape {prob.shape} != class raster shape {labels.shape}")
        sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)
        scale = 255.0 if prob.dtype == np.uint8 else 1.0
        mean_prob = sums / np.maximum(counts, 1) / scale
    else:
        mean_prob = np.full(n, np.nan)
    geoms, values = polygons_from_labels(labels, row_offset=row_offset)
    mine = keep[values]
    geoms, values = geoms[mine], values[mine]
    parts, part_of = clean_polygons(geoms, options.simplify_px, options.min_area_px)
    values = values[part_of]
    out.geometries = list(parts)
    out.confidence = mean_prob[values].tolist()
    out.group = sep.owner[values].tolist()
    return out


def vectorize_strips(
    read: StripReader,
    height: int,
    options: VectorizeOptions = VectorizeOptions(),
    progress: Callable[[float], None] | None = None,
) -> BuildingPolygons:
    """Vectorise a raster too big for memory, strip by strip, with no building cut at strip borders.

    ``read(start, stop)`` returns the class raster rows ``[start, stop)`` (and the building
    probability or None). Each component is emitted by the strip holding its top row, and
    only once it is wholly inside the read window (the window grows downwards if needed).
    """
    if options.strip_rows < 1 or options.halo_rows < 1:
        raise ValueError("strip_rows and halo_rows must be >= 1")
    out = BuildingPolygons()
    group_offset = 0
    start = 0
    while start < height:
        _, core_stop, read_start, sep, owned, prob = _separate_strip(read, start, height, options)
        strip = _polygons_with_attributes(sep, owned[sep.owner], prob, options, row_offset=read_start)
        strip.group = [g + group_offset for g in strip.group]
        group_offset += sep.n_components + 1
        out.extend(strip)
        start = core_stop
        if progress is not None:
            progress(core_stop / height)
    return out


def _separate_strip(read: StripReader, start: int, height: int, options: VectorizeOptions) -> tuple:
    """Read and separate the strip starting at ``start``, growing its window until no owned building is cut."""
    core_stop = min(start + options.strip_rows, height)
    read_start = max(0, start - 1)  # one row above tells whether a component began earlier
    halo = options.halo_rows
    while True:
        read_stop = min(core_stop + halo, height)
        classes, prob = read(read_start, read_stop)
        sep = separate_buildings(classes)
        owned = _components_owned_by_strip(sep, start - read_start, core_stop - read_start,
                                           at_bottom=read_stop >= height)
        if owned is not None:
            return start, core_stop, read_start, sep, owned, prob
        halo *= 2  # a component runs past the window: read further down


def _components_owned_by_strip(
    sep: Separation, core_start: int, core_stop: int, at_bottom: bool
) -> np.ndarray | None:
    """Boolean per component: does this strip emit it? None when an owned one is cut by the window bottom."""
    owned = np.zeros(sep.n_components + 1, dtype=bool)
    if sep.n_components == 0:
        return owned
    top = np.array([s[0].start for s in sep.component_slices])
    bottom = np.array([s[0].stop for s in sep.component_slices])
    mine = (top >= core_start) & (top < core_stop)
    if core_start > 0:
        mine &= top > 0  # touches the extra row above: it began in the previous strip
    if not at_bottom and np.any(mine & (bottom >= sep.labels.shape[0])):
        return None
    owned[1:] = mine
    return owned

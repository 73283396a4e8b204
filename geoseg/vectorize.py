"""Building class rasters -> separated, simplified, valid building polygons.

The building head predicts three classes per pixel: 0 background, 1 interior,
2 outline. A building is a 4-connected component of non-background pixels;
components holding several interior "seeds" are split between the seeds by a
watershed (touching houses sharing a wall), the others are kept whole.

Speed: components are found from the runs of building pixels in each row (one
pass over the raster, then work in the number of building pixels); only their
bounding boxes, packed 1 px apart into a small "atlas" raster, are separated;
and the atlas is polygonised by the numpy boundary tracer of ``geoseg.polygonize``
(GDAL's polygoniser costs per background pixel and per polygon). Polygons are
moved back by their box's offset.

Large rasters are processed in horizontal strips with a halo: every component
is emitted by exactly one strip (the one holding its top row) and only when it
lies wholly inside that strip's read window; otherwise the window grows. A
building that crosses strip or tile borders is therefore always one polygon
and the result does not depend on the strip height. Strips are read in the
caller's thread, in order; with ``workers > 1`` their separating and tracing
run on a thread pool (shapely and large numpy operations release the GIL) and
the result is the same as with one worker. Default 1: on the shared 2-core
machine two threads measured no faster (``bench/predict.py --what vector``).

Everything works in pixel coordinates (column, row of the whole raster);
callers apply the affine transform. Pure numpy/scipy/shapely, no I/O.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import shapely

from geoseg.coverage import simplify_coverage
# re-exported: the run labelling and the tracer lived here before geoseg.polygonize
from geoseg.polygonize import Components, find_components, polygons_from_labels, trace_polygons

__all__ = [
    "BACKGROUND", "INTERIOR", "OUTLINE", "StripReader", "VectorizeOptions", "BuildingPolygons",
    "classes_from_probabilities", "Separation", "Components", "find_components", "components_of",
    "pack_boxes", "separate_buildings", "polygons_from_labels", "trace_polygons",
    "clean_polygons", "vectorize_array", "vectorize_strips",
]

BACKGROUND, INTERIOR, OUTLINE = 0, 1, 2

#: reads rows [start, stop) of the whole raster -> (classes uint8 (h, w), building probability (h, w) or None)
StripReader = Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]


#: pixels of one strip (its core): 2048 rows of an 8192 px wide scene. A strip is as wide as the scene, so a
#: fixed 2048 rows made memory grow with the width: 32768 x 2048 px peaked at 2.38 GB of process memory
#: where 8192 x 8192 px took 1.24-1.34 GB (the same pixel count, session 31)
STRIP_PIXELS = 2048 * 8192
#: fewest rows of a strip, however wide the scene: the halo (128 rows, re-read) stays a fraction of it
MIN_STRIP_ROWS = 256


def strip_rows_for(width: int) -> int:
    """Rows of a strip of a scene ``width`` pixels wide: 2048, fewer for scenes wider than 8192 px, so
    a strip holds about ``STRIP_PIXELS`` (the result does not depend on it: module docstring)."""
    return max(MIN_STRIP_ROWS, min(2048, STRIP_PIXELS // max(1, width)))


@dataclass(frozen=True)
class VectorizeOptions:
    """Knobs of the vectoriser, in pixels of the raster being vectorised."""

    min_area_px: float = 4.0
    simplify_px: float = 0.5
    strip_rows: int = 2048
    halo_rows: int = 128
    #: threads polygonising strips side by side (reading stays in the caller's thread)
    workers: int = 1

    def __post_init__(self) -> None:
        """Negative sizes were taken (a negative tolerance as none, a negative area as 0)."""
        if not (self.min_area_px >= 0 and self.simplify_px >= 0):
            raise ValueError(f"VectorizeOptions.min_area_px and simplify_px must be >= 0, got {self.min_area_px} "
                             f"and {self.simplify_px}")
        if not (self.strip_rows >= 1 and self.halo_rows >= 1 and self.workers >= 1):
            raise ValueError(f"VectorizeOptions.strip_rows, halo_rows and workers must be >= 1, got "
                             f"{self.strip_rows}, {self.halo_rows} and {self.workers}")


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
    classes[~np.asarray(building, bool)] = BACKGROUND  # a 0/1 uint8 mask: ~1 is 254, an index error
    return classes


@dataclass
class Separation:
    """Buildings labelled 1..n (0 = background) and where each came from."""

    labels: np.ndarray  # int32 (h, w)
    owner: np.ndarray  # int64: owner[label] = connected component the building came from


def components_of(classes: np.ndarray) -> Components:
    """The buildings' connected components (4-connected non-background pixels) of a class raster."""
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2-D array, got shape {classes.shape}")
    low, high = (int(classes.min()), int(classes.max())) if classes.size else (BACKGROUND, BACKGROUND)
    if low < BACKGROUND or high > OUTLINE:  # tiles.stitch.BlendingWriter's 255 (uncovered) became a building
        raise ValueError(f"classes must be {BACKGROUND} (background), {INTERIOR} (interior) or {OUTLINE} (outline), "
                         f"found {high if high > OUTLINE else low} (255: a BlendingWriter's uncovered pixels, set "
                         f"them to {BACKGROUND} first)")
    return find_components(np.flatnonzero(classes != BACKGROUND), classes.shape[1])


def pack_boxes(
    heights: np.ndarray, widths: np.ndarray, width: int | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Shelf-pack boxes, tallest first: returns (y, x) corners and the (height, width) used.

    Boxes never overlap. The default width makes the packing roughly square.
    """
    heights, widths = np.asarray(heights, dtype=np.int64), np.asarray(widths, dtype=np.int64)
    if heights.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0
    if width is None:
        width = int(np.sqrt(float((heights * widths).sum()))) + 1
    width = max(int(width), int(widths.max()))
    order = np.argsort(-heights, kind="stable")
    ys, xs = np.empty(heights.size, np.int64), np.empty(heights.size, np.int64)
    y = x = shelf = 0
    ys_l, xs_l = [], []
    for h, w in zip(heights[order].tolist(), widths[order].tolist()):
        if x + w > width:
            y, x, shelf = y + shelf, 0, 0
        shelf = max(shelf, h)
        ys_l.append(y)
        xs_l.append(x)
        x += w
    ys[order], xs[order] = ys_l, xs_l
    return ys, xs, y + shelf, width


@dataclass
class _Atlas:
    """Kept components of a window copied into a small raster, 1 px apart, split into buildings.

    ``raster`` holds building labels; a building ``b`` at atlas (x, y) lies at window
    (x + shift_x[b], y + shift_y[b]). ``pixel``/``label``: window flat index and building
    label of every copied pixel; ``owner[b]``: the component building ``b`` came from.
    """

    raster: np.ndarray  # int32 (H, W)
    position: np.ndarray  # int64 flat atlas index of every copied pixel
    pixel: np.ndarray
    label: np.ndarray
    owner: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray


def _separate(classes: np.ndarray, comps: Components, keep: np.ndarray) -> _Atlas:
    """Copy the components with ``keep[c]`` into an atlas and split the multi-seed ones there.

    Seeds are the 4-connected interior regions; a component with several is split between
    them by a breadth-first growth (a watershed on the distance to the seeds), done for all
    components at once on flat atlas indices: neighbours are +-1 and +-stride, and the atlas
    is small, so no page of the big window is touched.
    The first seed of a component keeps the component's number, the others get new ones.
    """
    h, w = classes.shape
    run_label, run_length, run_pixel = comps.run_label, comps.run_length, comps.run_pixel
    pixel, comp = comps.pixel, comps.label
    keep_run = keep[run_label]
    if not keep_run.all():
        selected = np.repeat(keep_run, run_length)
        pixel, comp = pixel[selected], comp[selected]
        run_label, run_length, run_pixel = run_label[keep_run], run_length[keep_run], run_pixel[keep_run]
    kept = np.flatnonzero(keep)
    # each box gets one more row and column: 1 px of background between boxes and at the edges
    ay, ax, height, width = pack_boxes(comps.bottom[kept] - comps.top[kept] + 1,
                                       comps.right[kept] - comps.left[kept] + 1)
    stride = width + 1
    to_atlas_y = np.zeros(comps.n + 1, dtype=np.int64)
    to_atlas_x = np.zeros(comps.n + 1, dtype=np.int64)
    to_atlas_y[kept] = ay + 1 - comps.top[kept]
    to_atlas_x[kept] = ax + 1 - comps.left[kept]
    # a run moves as a whole: one shift per run instead of row/column arithmetic per pixel
    run_row = run_pixel // w
    run_shift = (run_row + to_atlas_y[run_label]) * stride + to_atlas_x[run_label] - run_row * w
    position = pixel + np.repeat(run_shift, run_length)
    raster = np.zeros((height + 1) * stride, dtype=np.int32)
    label = comp.astype(np.int32)
    owner = np.arange(comps.n + 1, dtype=np.int64)

    interior = np.flatnonzero(classes.ravel()[pixel] == INTERIOR)
    seeds = find_components(pixel[interior], w)
    comp_of_seed = np.zeros(seeds.n + 1, dtype=np.int64)
    comp_of_seed[seeds.label] = comp[interior]
    multi = np.bincount(comp_of_seed[1:], minlength=comps.n + 1) >= 2
    multi[0] = False
    if multi.any():
        seed_to_label, extra_owner = _seed_labels(comp_of_seed, multi, comps.n)
        owner = np.concatenate([owner, extra_owner])
        in_multi = multi[comp]
        label[in_multi] = 0
        seeded = in_multi[interior]
        label[interior[seeded]] = seed_to_label[seeds.label[seeded]]
        raster[position] = label
        _grow_seeds(raster, position[label == 0], stride)
        label = raster[position]
    else:
        raster[position] = label
    return _Atlas(raster.reshape(height + 1, stride), position, pixel, label, owner,
                  -to_atlas_x[owner], -to_atlas_y[owner])


def _seed_labels(comp_of_seed: np.ndarray, multi: np.ndarray, n_comp: int) -> tuple[np.ndarray, np.ndarray]:
    """Building label of each seed of the multi-seed components, and the owner of each new label."""
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
    return seed_to_label, mc[~first]


def _grow_seeds(raster: np.ndarray, todo: np.ndarray, stride: int) -> None:
    """Breadth-first growth of the labels over the ``todo`` pixels (4-neighbour layers, ties to the larger label)."""
    while todo.size:
        nb = np.maximum(np.maximum(raster[todo - 1], raster[todo + 1]),
                        np.maximum(raster[todo - stride], raster[todo + stride]))
        reached = nb > 0
        if not reached.any():
            break  # unreachable pixels (cannot happen inside a connected component)
        raster[todo[reached]] = nb[reached]
        todo = todo[~reached]


def separate_buildings(classes: np.ndarray) -> Separation:
    """Label buildings (4-connected non-background), splitting touching ones between interior seeds.

    Components with at most one interior seed keep their component number; the others are
    split between their seeds by a breadth-first growth (a watershed on the distance to the seeds).
    The footprint is exactly the interior and outline pixels (``tiles.labels``: the outline
    is the band just inside each footprint's edge, and along shared walls).
    """
    comps = components_of(classes)
    labels = np.zeros(classes.shape, dtype=np.int32)
    if comps.n == 0:
        return Separation(labels, np.zeros(1, np.int64))
    keep = np.ones(comps.n + 1, dtype=bool)
    keep[0] = False
    atlas = _separate(classes, comps, keep)
    labels.ravel()[atlas.pixel] = atlas.label
    return Separation(labels, atlas.owner)


def clean_polygons(geoms: list, simplify_px: float, min_area_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Simplify, make valid, explode to Polygons, drop those under ``min_area_px``.

    The Polygons are simplified together as one coverage (``geoseg.coverage``): a wall two
    touching buildings share is simplified once for both, so it stays shared and they never
    overlap (nor do buildings touching at a corner, or a pixel apart). Returns ``(polygons,
    index of the input geometry each came from)``; vectorised shapely calls.
    """
    arr = np.asarray(geoms, dtype=object)
    if arr.size == 0:
        return arr, np.zeros(0, dtype=np.int64)
    if simplify_px > 0:
        arr = arr.copy()
        polygon = shapely.get_type_id(arr) == 3
        arr[polygon] = simplify_coverage(arr[polygon], simplify_px)
        if not polygon.all():
            arr[~polygon] = shapely.simplify(arr[~polygon], simplify_px, preserve_topology=True)
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
    comps = components_of(classes)
    keep = np.ones(comps.n + 1, dtype=bool)
    return _polygons_with_attributes(classes, comps, keep, building_probability, options, row_offset=0)


def _polygons_with_attributes(
    classes: np.ndarray,
    comps: Components,
    keep: np.ndarray,
    building_probability: np.ndarray | None,
    options: VectorizeOptions,
    row_offset: int,
) -> BuildingPolygons:
    """Polygons of the components with ``keep[c]``: separated, cleaned, with confidence and group."""
    out = BuildingPolygons()
    if building_probability is not None and building_probability.shape != classes.shape:
        raise ValueError(f"probability shape {building_probability.shape} != class raster shape {classes.shape}")
    # components under the minimum area hold only buildings under it: never copied
    keep = keep & (comps.sizes() >= options.min_area_px)
    keep[0] = False
    if not keep.any():
        return out
    atlas = _separate(classes, comps, keep)
    n = atlas.owner.size
    counts = np.bincount(atlas.label, minlength=n)
    small = counts < options.min_area_px
    small[0] = False
    if small.any():  # tiny regions are cleared before polygonising (noisy masks: much cheaper)
        atlas.raster.ravel()[atlas.position[small[atlas.label]]] = 0
    if building_probability is not None:
        prob = np.ascontiguousarray(building_probability).ravel()[atlas.pixel]
        sums = np.bincount(atlas.label, weights=prob, minlength=n)
        scale = 255.0 if building_probability.dtype == np.uint8 else 1.0
        mean_prob = sums / np.maximum(counts, 1) / scale
    else:
        mean_prob = np.full(n, np.nan)
    geoms, values = trace_polygons(atlas.raster, atlas.shift_x.astype(np.float64),
                                   atlas.shift_y.astype(np.float64) + row_offset)
    parts, part_of = clean_polygons(geoms, options.simplify_px, options.min_area_px)
    values = values[part_of]
    out.geometries = list(parts)
    out.confidence = mean_prob[values].tolist()
    out.group = atlas.owner[values].tolist()
    return out


def vectorize_strips(
    read: StripReader,
    height: int,
    options: VectorizeOptions = VectorizeOptions(),
    progress: Callable[[float], None] | None = None,
) -> BuildingPolygons:
    """Vectorise a raster too big for memory, strip by strip, with no building cut at strip borders.

    ``read(start, stop)`` returns the class raster rows ``[start, stop)`` (and the building
    probability or None); it is only called from the calling thread. Each component is
    emitted by the strip holding its top row, and only once it is wholly inside the read
    window (the window grows downwards if needed). At most ``workers + 1`` strips are in memory.
    """
    if options.strip_rows < 1 or options.halo_rows < 1:
        raise ValueError("strip_rows and halo_rows must be >= 1")
    if options.workers < 1:
        raise ValueError(f"workers must be >= 1, got {options.workers}")
    out = BuildingPolygons()
    group_offset = 0
    pending: deque = deque()

    def collect() -> None:
        nonlocal group_offset
        job, n_components, core_stop = pending.popleft()
        strip = job.result() if isinstance(job, Future) else job
        strip.group = [g + group_offset for g in strip.group]
        group_offset += n_components + 1
        out.extend(strip)
        if progress is not None:
            progress(core_stop / height)

    pool = ThreadPoolExecutor(options.workers, thread_name_prefix="geoseg-vectorize") if options.workers > 1 else None
    try:
        start = 0
        while start < height:
            core_stop, read_start, classes, prob, comps, owned = _read_strip(read, start, height, options)
            args = (classes, comps, owned, prob, options, read_start)
            job = pool.submit(_polygons_with_attributes, *args) if pool else _polygons_with_attributes(*args)
            pending.append((job, comps.n, core_stop))
            while len(pending) > (options.workers if pool else 0):
                collect()
            start = core_stop
        while pending:
            collect()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


def _read_strip(read: StripReader, start: int, height: int, options: VectorizeOptions) -> tuple:
    """Read the strip starting at ``start`` and find its components, growing the window until no owned one is cut."""
    core_stop = min(start + options.strip_rows, height)
    read_start = max(0, start - 1)  # one row above tells whether a component began earlier
    halo = options.halo_rows
    while True:
        read_stop = min(core_stop + halo, height)
        classes, prob = read(read_start, read_stop)
        classes = np.ascontiguousarray(classes)
        comps = components_of(classes)
        owned = _components_owned_by_strip(comps, classes.shape[0], start - read_start, core_stop - read_start,
                                           at_bottom=read_stop >= height)
        if owned is not None:
            return core_stop, read_start, classes, prob, comps, owned
        halo *= 2  # a component runs past the window: read further down


def _components_owned_by_strip(
    comps: Components, window_rows: int, core_start: int, core_stop: int, at_bottom: bool
) -> np.ndarray | None:
    """Boolean per component: does this strip emit it? None when an owned one is cut by the window bottom."""
    top, bottom = comps.top, comps.bottom
    mine = (top >= core_start) & (top < core_stop)
    if core_start > 0:
        mine &= top > 0  # touches the extra row above: it began in the previous strip
    mine[0] = False
    if not at_bottom and np.any(mine & (bottom >= window_rows)):
        return None
    return mine

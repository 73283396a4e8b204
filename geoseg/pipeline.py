"""``predict_scene``: one raster in, class map COG + building polygons + report out.

Stages (each streams window by window, so memory does not grow with the scene):

1. every head runs on its own working grid (the input resampled to the model card's
   ``gsd_m`` through ``tiles.source.Scene``), tiles with overlap, tiles without a valid
   pixel skipped, batches read in a background thread while the model computes;
   predictions are Hann-blended on disk (``tiles.stitch.BlendingWriter``);
2. land cover (optionally re-labelled per superpixel by the GCN) is brought back to the
   input's exact grid (bilinear on probabilities, then argmax), masked by the input's
   valid mask and written as a COG with a colour table;
3. buildings are vectorised on the working grid straight from the blended probabilities
   (``geoseg.vectorize``, strip by strip: a building crossing tile borders is one
   polygon), optionally squared (``geoseg.regularize``), then written as GeoPackage in
   the input CRS and RFC 7946 GeoJSON in WGS84.

All outputs are written into a staging folder inside ``out_dir`` and renamed into place.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg import card as cards
from geoseg import vectorize
from geoseg.infer import RUNTIMES, TileModel, load_head, refine_with_gcn, resolve_device
from geoseg.postprocess import BuildingPostprocess, building_classes, postprocess_from_card
from geoseg.regularize import regularize_buildings
from tiles.cog import colormap_from_hex, write_cog
from tiles.errors import UnsupportedRaster
from tiles.grid import Tile, round_up, stretched_size, tile_grid
from tiles.source import Scene, cap_block_cache
from tiles.stitch import BlendingWriter
from tiles.warp import axis_aligned, bilinear_window

Progress = Callable[[float, str], None]
OUTPUT_FILES = ("classmap.tif", "buildings.geojson", "buildings.gpkg", "report.json")


class PredictError(ValueError):
    """A prediction that cannot run, with a one-line reason for the user."""


@dataclass
class PredictOptions:
    """The options of ``geoseg predict`` (and of the service's jobs)."""

    tile_size: int = 512
    overlap: int = 64
    refine: str = "gcn"  # gcn | none
    buildings: bool = True
    classmap: bool = True
    regularize: bool = False
    device: str = "auto"  # auto | cpu | cuda
    gsd: float | None = None  # metres: overrides the input's own GSD
    profile: str = "accurate"  # accurate | fast
    #: auto (onnx on CPU, torch on CUDA) | torch | onnx | int8 (CPU: quantised graphs where a card ships one)
    runtime: str = "auto"
    #: pixels of context read around each tile; None: enough to show the model its card's tile_size
    context: int | None = None
    batch_size: int | None = None  # tiles per forward pass; None: 1 on CPU (peak memory), 8 on CUDA
    #: smallest building kept, m²; None: the building card's ``postprocess.min_area_m2``, else 3
    min_area_m2: float | None = None
    #: a pixel is building when P(interior) + P(outline) >= this (argmax would need > P(background));
    #: None: the building card's ``postprocess.threshold``, else 0.5
    building_threshold: float | None = None
    simplify_m: float = 0.3
    #: task (buildings | landcover | gcn) -> model card or folder, instead of the shipped weights
    model_dirs: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``PredictError`` on inconsistent options."""
        if self.tile_size < 32:
            raise PredictError(f"--tile-size must be >= 32, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size // 2:
            raise PredictError(f"--overlap must be in [0, tile_size/2), got {self.overlap}")
        if self.refine not in ("gcn", "none"):
            raise PredictError(f"--refine must be gcn or none, got {self.refine!r}")
        if self.profile not in ("fast", "accurate"):
            raise PredictError(f"--profile must be fast or accurate, got {self.profile!r}")
        if self.gsd is not None and not self.gsd > 0:
            raise PredictError(f"--gsd must be a positive number of metres, got {self.gsd}")
        if not (self.buildings or self.classmap):
            raise PredictError("nothing to do: both --no-buildings and --no-classmap given")
        if self.runtime not in RUNTIMES:
            raise PredictError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.min_area_m2 is not None and not self.min_area_m2 >= 0:
            raise PredictError(f"--min-area must be >= 0 square metres, got {self.min_area_m2}")
        if self.building_threshold is not None and not 0.0 < self.building_threshold < 1.0:
            raise PredictError(f"building threshold must be in (0, 1), got {self.building_threshold}")
        if self.context is not None and self.context < 0:
            raise PredictError(f"context must be >= 0 pixels, got {self.context}")
        if self.batch_size is not None and self.batch_size < 1:
            raise PredictError("batch size must be >= 1")


@dataclass
class HeadResult:
    """A head's blended predictions on its working grid."""

    writer: BlendingWriter
    transform: Affine
    crs: Any
    width: int
    height: int
    gsd: float | None
    warped: bool
    tiles: int
    tiles_skipped: int
    context: tuple[int, int] = (0, 0)
    tile_px: tuple[int, int] = (0, 0)  # tile width, height on the working grid (before fitting to the raster)


class _Stages:
    """Maps per-stage fractions onto one 0..1 progress callback."""

    def __init__(self, progress: Progress | None, weights: dict[str, float]) -> None:
        self.progress = progress
        total = sum(weights.values())
        self.done = 0.0  # progress never goes back when two stages run at once
        self.lock = threading.Lock()
        self.spans: dict[str, tuple[float, float]] = {}
        start = 0.0
        for name, w in weights.items():
            self.spans[name] = (start, start + w / total)
            start += w / total

    def __call__(self, stage: str, fraction: float) -> None:
        if self.progress is None or stage not in self.spans:
            return
        a, b = self.spans[stage]
        value = min(1.0, a + (b - a) * min(max(fraction, 0.0), 1.0))
        with self.lock:
            if value < self.done:
                return
            self.done = value
            self.progress(value, stage)


def _tiles_report(result: HeadResult) -> dict[str, Any]:
    """What report.json says about one head's tiling."""
    return {"tiles": result.tiles, "tile_px": list(result.tile_px), "skipped_nodata": result.tiles_skipped,
            "context_px": list(result.context),
            "working_width": result.width, "working_height": result.height}


def predict_scene(
    input_path: Path | str, out_dir: Path | str, options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the whole predict job for one raster (see module docstring); returns the report."""
    options = options or PredictOptions()
    options.check()
    input_path, out_dir = Path(input_path), Path(out_dir)
    if not input_path.is_file():
        raise PredictError(f"input not found: {input_path}")
    device = resolve_device(options.device)
    cap_block_cache()  # windowed reads must not fill a GDAL cache sized to the machine's RAM
    if options.batch_size is None:
        options = replace(options, batch_size=8 if device == "cuda" else 1)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with Scene(input_path) as scene:
                grid = dict(crs=scene.crs, transform=scene.src_transform, width=scene.src_width,
                            height=scene.src_height, native_gsd=scene.native_gsd)
        except UnsupportedRaster as exc:
            raise PredictError(str(exc)) from exc
    georeferenced = grid["crs"] is not None
    if not georeferenced:
        notes.append("input is not georeferenced: class map on the pixel grid without CRS; building "
                     "polygons in pixel coordinates in buildings.gpkg only (no GeoJSON can be georeferenced)")
        if options.gsd is not None:
            notes.append("--gsd only sets areas and tolerances for a non-georeferenced input: it is not resampled")
    input_gsd = options.gsd or grid["native_gsd"]

    t = time.perf_counter()
    heads = _load_heads(options, device, notes, gsd_known=input_gsd is not None)
    timings["load_models"] = time.perf_counter() - t
    weights = {}  # in the order the stages run
    if "landcover" in heads:
        weights.update(landcover=4.0 + (3.0 if "gcn" in heads else 0.0))
        if options.classmap:
            weights.update(classmap=1.0)
    if "buildings" in heads:
        weights.update(buildings=4.0, vectorize=1.0)
    weights["write"] = 0.3
    stages = _Stages(progress, weights)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    work = Path(tempfile.mkdtemp(prefix="geoseg-predict-", dir=staging))
    report: dict[str, Any] = {
        "input": str(input_path),
        "device": device,
        "options": {k: v for k, v in asdict(options).items() if k != "model_dirs"},
        "models": {task: _model_summary(card) for task, (_, card) in heads.items()},
        "grid": {"width": grid["width"], "height": grid["height"],
                 "crs": grid["crs"].to_string() if georeferenced else None},
        "gsd": {"input_m": grid["native_gsd"], "override_m": options.gsd, "used_m": input_gsd, "working_m": {}},
        "tiles": {"size": options.tile_size, "overlap": options.overlap},
        "counts": {},
        "warnings": notes,
    }
    classmap_job: _Background | None = None
    landcover_result: HeadResult | None = None
    landcover_card: dict[str, Any] | None = None
    try:
        if "landcover" in heads:
            t = time.perf_counter()
            # a GCN reading only colours and CNN probabilities spares the feature maps (fast profile)
            model = TileModel(*heads["landcover"], device=device, runtime=options.runtime,
                              with_features="gcn" in heads and heads["gcn"][0].reads_cnn_features)
            timings["prepare_landcover"] = time.perf_counter() - t
            report["models"]["landcover"]["runtime"] = model.runtime
            gcn = heads.get("gcn")
            t = time.perf_counter()
            result = _run_head(input_path, model, options, input_gsd, grid, work, lambda f: stages("landcover", f),
                               notes, gcn=gcn, mask_tiles=False)
            timings["landcover"] = time.perf_counter() - t
            report["gsd"]["working_m"]["landcover"] = result.gsd
            report["tiles"]["landcover"] = _tiles_report(result)
            # bound now: the building branch below rebinds ``result`` and ``model`` while this runs
            landcover_result, landcover_card = result, model.card

            def write_classmap() -> dict[str, int]:
                t0 = time.perf_counter()
                try:
                    return _write_classmap(input_path, landcover_result, grid, landcover_card, work,
                                           staging / "classmap.tif", lambda f: stages("classmap", f))
                finally:
                    timings["classmap"] = time.perf_counter() - t0

            if options.classmap:  # else the head ran for the building rules' land-cover cue only
                # resampling + argmax + deflate run beside the building model (numpy, GDAL and ONNX
                # Runtime release the GIL); alone, it runs here
                classmap_job = _Background(write_classmap, start="buildings" in heads and OVERLAP_CLASSMAP)
        if "buildings" in heads:
            t = time.perf_counter()
            model = TileModel(*heads["buildings"], device=device, runtime=options.runtime)
            timings["prepare_buildings"] = time.perf_counter() - t
            report["models"]["buildings"]["runtime"] = model.runtime
            post = _building_postprocess(model.card, options, gsd_known=input_gsd is not None)
            report["postprocess"] = post.as_dict()
            t = time.perf_counter()
            result = _run_head(input_path, model, options, input_gsd, grid, work, lambda f: stages("buildings", f),
                               notes)
            timings["buildings"] = time.perf_counter() - t
            report["gsd"]["working_m"]["buildings"] = result.gsd
            report["tiles"]["buildings"] = _tiles_report(result)
            t = time.perf_counter()
            cue = _landcover_cue(landcover_result, result, landcover_card) if post.landcover_threshold else None
            frame = _vectorise(result, options, input_gsd, grid, lambda f: stages("vectorize", f), post, cue)
            result.writer.close()
            timings["vectorize"] = time.perf_counter() - t
            t = time.perf_counter()
            frame["source"] = input_path.name
            _write_buildings(frame, staging, georeferenced)
            timings["write_buildings"] = time.perf_counter() - t
            report["counts"]["buildings"] = int(len(frame))
        if classmap_job is not None:
            report["counts"]["classmap_pixels"] = classmap_job.result()
        if landcover_result is not None:
            landcover_result.writer.close()
        shutil.rmtree(work, ignore_errors=True)
        timings["total"] = time.perf_counter() - t_start
        report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        report["mpx_per_s"] = round(grid["width"] * grid["height"] / 1e6 / timings["total"], 4)
        report["outputs"] = sorted(p.name for p in staging.iterdir() if p.is_file()) + ["report.json"]
        (staging / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        for name in OUTPUT_FILES:  # stale outputs of an earlier run must not survive
            if (out_dir / name).exists() and not (staging / name).exists():
                (out_dir / name).unlink()
        for path in staging.iterdir():
            if path.is_file():
                os.replace(path, out_dir / path.name)
        stages("write", 1.0)
    finally:
        if classmap_job is not None:
            classmap_job.wait()  # never delete the staging folder under a running writer
        shutil.rmtree(staging, ignore_errors=True)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return report


def _building_postprocess(card: dict[str, Any], options: PredictOptions, gsd_known: bool = True) -> BuildingPostprocess:
    """The building card's tuned post-processing, with the user's explicit values on top.

    Without a known GSD (no georeferencing, no ``--gsd``) the land-cover cue is off: both heads then
    run on the raw pixel grid, and a 1.1 m land-cover model on, say, 0.1 m pixels says nothing
    about roofs."""
    try:
        post = postprocess_from_card(card, options.building_threshold, options.min_area_m2)
    except ValueError as exc:
        raise PredictError(str(exc)) from exc
    return post if gsd_known else replace(post, landcover_threshold=0.0)


def _load_heads(options: PredictOptions, device: str, notes: list[str], gsd_known: bool = True) -> dict[str, tuple]:
    """The heads this run needs: the land-cover head (and its GCN) for the class map, and also for
    the building rules when the building card uses its P(building) (``landcover_threshold``)."""
    def load(task: str) -> tuple:
        model_dir = options.model_dirs.get(task)
        try:
            # the GCN is tiny and fed from numpy: it always runs on the CPU
            return _load_head_cached(task, options.profile, "cpu" if task == "gcn" else device,
                                     Path(model_dir) if model_dir else None)
        except (ValueError, OSError) as exc:
            raise PredictError(f"cannot load the {task} model: {exc}") from exc

    heads = {}
    if options.buildings:
        heads["buildings"] = load("buildings")
    card_cue = "buildings" in heads and _building_postprocess(heads["buildings"][1], options).landcover_threshold > 0
    if card_cue and not gsd_known:
        notes.append("the land-cover cue of the building rules is off: the input's GSD is unknown (give --gsd)")
    if options.classmap or (card_cue and gsd_known):
        heads["landcover"] = load("landcover")
        if options.refine == "gcn":
            # decide from the card alone: a GCN that cannot be used is not loaded (nor torch-geometric)
            reason = _gcn_card_mismatch(heads["landcover"], options.model_dirs.get("gcn"), options.profile)
            if reason:
                notes.append(f"GCN refinement skipped: {reason}")
            else:
                heads["gcn"] = load("gcn")
    return heads


#: heads already loaded in this process, for the next scene of a batch (several CLI inputs, a
#: Dask worker's tasks): (task, profile, device, card and weight files' identity) -> (head, warnings)
_HEADS: dict[tuple, tuple[tuple, list]] = {}
_HEADS_LOCK = threading.Lock()
_HEADS_MAX = 8


def _file_identity(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _load_head_cached(task: str, profile: str, device: str, model_dir: Path | None) -> tuple:
    """``load_head``, once per process for the same card and weights (an edited file is reloaded).

    The warnings of the first load (a fast profile falling back) are given again on each use."""
    try:
        path = cards.find_card(model_dir) if model_dir else cards.shipped_card_path(task, profile)
        weights = cards.read_card(path).get("weights")
    except (ValueError, OSError):
        return load_head(task, profile, device, model_dir)  # its own, clear, error
    key = (task, profile, device, str(model_dir), _file_identity(path),
           _file_identity(path.parent / weights) if weights else None)
    with _HEADS_LOCK:
        cached = _HEADS.get(key)
        if cached is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                head = load_head(task, profile, device, model_dir)
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.pop(next(iter(_HEADS)))
            cached = _HEADS[key] = (head, list(caught))
    (module, card), caught = cached
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return module, dict(card)


def forget_heads() -> None:
    """Drop the models kept by this process (the next scene loads them again, as a lone one does)."""
    with _HEADS_LOCK:
        _HEADS.clear()


def preload_heads(profile: str = "accurate", device: str = "auto") -> None:
    """Load the shipped heads of ``profile`` now, so the first scene does not wait for them
    (the service's standby worker calls this before its job arrives)."""
    _load_heads(PredictOptions(profile=profile, device=device), resolve_device(device), [])


def _gcn_card_mismatch(landcover: tuple, model_dir: str | Path | None, profile: str = "accurate") -> str | None:
    """Why the GCN card (``model_dir`` or the profile's shipped one) cannot refine this land-cover model, or None."""
    from geoseg.superpixels import n_node_features, reads_cnn_features

    try:
        path = cards.find_card(Path(model_dir)) if model_dir else cards.shipped_card_path("gcn", profile)
        gcn_card = cards.read_card(path)
        reads_features = reads_cnn_features(gcn_card.get("arch_kwargs", {}).get("inputs", "all"))
    except (ValueError, OSError) as exc:
        raise PredictError(f"cannot load the gcn model: {exc}") from exc
    module, card = landcover
    if not reads_features:
        # fitted on one CNN's probabilities (their calibration, the fusion weight): that CNN only
        if gcn_card.get("cnn") != card.get("name"):
            return f"the GCN was fitted on {gcn_card.get('cnn', '?')}'s probabilities, not {card.get('name')}'s"
        return None
    channels = getattr(module, "feature_channels", None)
    expected = gcn_card.get("arch_kwargs", {}).get("in_features")
    if channels is None or expected is None:
        return None
    if n_node_features(channels, len(card["classes"]) - 1) != expected:
        return (f"the GCN was trained on another model's features ({gcn_card.get('cnn', '?')}), "
                f"not {card.get('name')}'s {channels} channels")
    return None


def _model_summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "architecture", "profile", "weights", "gsd_m", "tile_size", "date", "code_version", "metrics")
    return {k: card.get(k) for k in keys if k in card}


#: never upsample the input more than this per axis (a 30 m scene must not become a 0.3 m one)
MAX_UPSAMPLING = 2.0


def _scene_gsd(model_gsd: float | None, native_gsd: float | None, input_gsd: float | None) -> float | None:
    """Target GSD to open the Scene at, in the file's own measure (None: no resampling).

    With ``--gsd`` the user says one pixel is really ``input_gsd`` metres; the Scene
    measures ``native_gsd``, so the model's ``model_gsd`` maps to ``model_gsd * native / input``.
    Upsampling is capped at ``MAX_UPSAMPLING`` so memory and time stay bounded.
    """
    if model_gsd is None or native_gsd is None or input_gsd is None:
        return None
    return max(model_gsd * native_gsd / input_gsd, native_gsd / MAX_UPSAMPLING)


#: write the class map while the building model runs (False: one stage after the other)
OVERLAP_CLASSMAP = True


class _Background:
    """``fn()`` on a thread (or, with ``start=False``, right here); ``result()`` re-raises its error."""

    def __init__(self, fn: Callable[[], Any], start: bool = True) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
            self._thread.start()
        else:
            self._run(fn)

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # re-raised by result()
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> Any:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``items`` produced by a background thread (GDAL reads release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while True:
        item = q.get()
        if item is done:
            break
        yield item
    thread.join()
    if failure:
        raise failure[0]


def _run_head(
    input_path: Path, model: TileModel, options: PredictOptions, input_gsd: float | None, grid: dict,
    work: Path, progress: Callable[[float], None], notes: list[str], gcn: tuple | None = None,
    mask_tiles: bool = True,
) -> HeadResult:
    """Predict one head over the working grid into a BlendingWriter."""
    target = _scene_gsd(model.gsd_m, grid["native_gsd"], input_gsd)
    if target is not None and model.gsd_m and input_gsd and input_gsd / MAX_UPSAMPLING > model.gsd_m * 1.01:
        notes.append(f"input GSD {input_gsd:.3g} m is much coarser than the {model.card.get('name')} model's "
                     f"{model.gsd_m:.3g} m: upsampled {MAX_UPSAMPLING:g}x only, expect poor results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        scene = Scene(input_path, gsd=target)
    with scene:
        # sides stretched up to 1.25x where that saves an edge tile (less model input, same seams)
        # tiles and model windows start on multiples of TILE_MULTIPLE (tiles.grid: shift variance)
        side_x = stretched_size(scene.width, options.tile_size, options.overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
        side_y = stretched_size(scene.height, options.tile_size, options.overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
        tiles = _fit_tiles(tile_grid(scene.width, scene.height, side_x, options.overlap, size_y=side_y,
                                     align=TILE_MULTIPLE), scene.width, scene.height)
        writer = BlendingWriter(scene.width, scene.height, model.n_classes, transform=scene.transform,
                                crs=scene.crs, tmp_dir=work)
        my, mx = _context_margins(tiles, scene.width, scene.height, model.card.get("tile_size"), options.context)

        def batches() -> Iterator:
            for i in range(0, len(tiles), options.batch_size):
                chunk = tiles[i:i + options.batch_size]
                windows = [_context_window(t.read, my, mx, scene.width, scene.height) for t in chunk]
                reads = [scene.read(win, pad="reflect") for win, _ in windows]
                yield i + len(chunk), chunk, reads, [inner for _, inner in windows]

        skipped = 0
        for done, chunk, reads, inners in _prefetch(batches()):
            keep = [k for k, (_, valid) in enumerate(reads) if valid[inners[k]].any()]
            skipped += len(chunk) - len(keep)
            if keep:
                images = np.stack([reads[k][0] for k in keep])
                if gcn is not None and model.with_features:
                    probs, feats = model.probabilities_and_features(images)
                else:
                    probs = model.probabilities(images)
                    feats = np.zeros((len(images), 0, *images.shape[2:]), np.float32)
                for j, k in enumerate(keep):
                    inner = inners[k]
                    p = probs[j][(slice(None), *inner)]
                    valid = reads[k][1][inner]
                    if gcn is not None:
                        p = refine_with_gcn(images[j][(slice(None), *inner)], p, feats[j][(slice(None), *inner)],
                                            valid, gcn[0], gcn[1])
                    # land cover predicts the whole tile (the input's own mask is applied on its grid
                    # later, so resampled edges keep a class); buildings only ever see valid pixels
                    writer.add(chunk[k].read, p, valid if mask_tiles else None)
            progress(done / len(tiles))
        return HeadResult(writer, scene.transform, scene.crs, scene.width, scene.height, scene.gsd,
                          scene.is_warped, len(tiles), skipped, (my, mx), (side_x, side_y))


def _context_window(read: Window, my: int, mx: int, width: int, height: int) -> tuple[Window, tuple[slice, slice]]:
    """The tile's read window grown by the margins, shifted to stay inside the raster where it fits
    (context from real pixels rather than padding); and where the tile lies inside it.

    Windows start on multiples of ``TILE_MULTIPLE`` like the tiles (``tiles.grid``: the networks
    are not shift-invariant) and may end up to ``TILE_MULTIPLE - 1`` pixels past the raster, as
    a big tile's would. Along an axis the raster is shorter than the grown window, every window
    starts at the raster's start: centred windows put a different amount of empty padding
    before the pixels in each tile, and the network's wide receptive field saw that
    (nairobi_z20_2, 507 rows on the 0.3 m grid: 256 vs 1024 px tiles agreed at IoU 0.69-0.76).
    """
    def axis(start: int, side: int, margin: int, length: int) -> int:
        grown = side + 2 * margin
        if margin == 0:
            return start
        extent = round_up(length, TILE_MULTIPLE)
        if extent < grown:
            return 0
        first = max(start - margin, 0)
        aligned = first // TILE_MULTIPLE * TILE_MULTIPLE
        if aligned + grown >= start + side:  # off-grid tile sizes may not leave room to snap
            first = aligned
        return min(first, extent - grown)

    c0 = axis(int(read.col_off), int(read.width), mx, width)
    r0 = axis(int(read.row_off), int(read.height), my, height)
    window = Window(c0, r0, int(read.width) + 2 * mx, int(read.height) + 2 * my)
    dy, dx = int(read.row_off) - r0, int(read.col_off) - c0
    return window, (slice(dy, dy + int(read.height)), slice(dx, dx + int(read.width)))


def _context_margins(tiles: list[Tile], width: int, height: int, model_window: int | None,
                     context: int | None) -> tuple[int, int]:
    """Extra pixels read around each tile (rows, cols) so the model sees at least its training window.

    Small tiles otherwise give context-starved predictions that differ from big tiles' (a
    U-Net's receptive field is wide); only the tile itself is blended. ``context`` overrides
    the margin; none is added along an axis the raster does not exceed.
    """
    side_y, side_x = int(tiles[0].read.height), int(tiles[0].read.width)

    def margin(side: int, length: int) -> int:
        if length <= side:
            return 0
        m = context if context is not None else max(0, ((model_window or 0) - side) // 2)
        m = round_up(m, TILE_MULTIPLE // 2)  # keeps the window a multiple of 32
        # no wider than the raster rounded up to the multiple: more would only add padding
        return min(m, max(0, (round_up(length, TILE_MULTIPLE) - side) // 2))

    return margin(side_y, height), margin(side_x, width)


#: tile sides stay multiples of this (the networks downsample by up to 32)
TILE_MULTIPLE = 32


def _fit_tiles(tiles: list[Tile], width: int, height: int) -> list[Tile]:
    """Shrink tiles along an axis where the raster is smaller than the tile (no work on padding)."""
    def fitted(length: int, tile_side: int) -> int:
        return min(tile_side, round_up(length, TILE_MULTIPLE))

    out = []
    for t in tiles:
        w, h = fitted(width, int(t.read.width)), fitted(height, int(t.read.height))
        read = Window(t.read.col_off, t.read.row_off, w, h)
        out.append(Tile(t.row, t.col, read, t.core))
    return out


def _write_classmap(
    input_path: Path, head: HeadResult, grid: dict, card: dict, work: Path, out_path: Path,
    progress: Callable[[float], None],
) -> dict[str, int]:
    """Argmax land cover on the input's exact grid, 0 outside the valid mask; a COG with colours."""
    classes = card["classes"]
    width, height = grid["width"], grid["height"]
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", nodata=0,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
                   transform=grid["transform"])
    if grid["crs"] is not None:
        profile["crs"] = grid["crs"]
    counts = np.zeros(len(classes), dtype=np.int64)
    plain = work / "classmap_plain.tif"
    vrt = probs_ds = None
    # same CRS, both grids unrotated: resample straight from the accumulators, no GDAL warp
    separable = head.warped and grid["crs"] == head.crs and axis_aligned(head.transform, grid["transform"])
    if head.warped and not separable:
        probs_path = work / "landcover_probs.tif"
        head.writer.finalise(probs_path=probs_path, probs_dtype="uint8")
        probs_ds = rasterio.open(probs_path)
        vrt = WarpedVRT(probs_ds, crs=grid["crs"], transform=grid["transform"], width=width, height=height,
                        resampling=Resampling.bilinear, nodata=0)
    blocks = tile_grid(width, height, 1024, 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            native = Scene(input_path)
        with native, rasterio.open(plain, "w", **profile) as dst:
            for i, block in enumerate(blocks):
                win = block.core
                _, valid = native.read(win)
                if separable:
                    probs, inside = bilinear_window(lambda w: head.writer.read(w)[0], (head.height, head.width),
                                                    head.transform, grid["transform"], win)
                    covered = inside & (probs.sum(axis=0) > 0)
                elif vrt is not None:
                    probs = vrt.read(window=win).astype(np.float32)
                    covered = probs.sum(axis=0) > 0
                else:
                    probs, covered = head.writer.read(win)
                out = np.argmax(probs, axis=0).astype(np.uint8)
                out[~(valid & covered)] = 0
                counts += np.bincount(out.ravel(), minlength=len(classes))[: len(classes)]
                dst.write(out, 1, window=win)
                progress((i + 1) / len(blocks))
    finally:
        if vrt is not None:
            vrt.close()
            probs_ds.close()
    colours = [c["colour"] for c in sorted(classes, key=lambda c: c["index"])]
    colormap = colormap_from_hex(colours, nodata=None)
    colormap[0] = (0, 0, 0, 0)  # 0 = no data / outside the valid mask
    names = {str(c["index"]): c["name"] for c in classes}
    names["0"] = "nodata"
    tags = {"classes": json.dumps(names), "model": card.get("name", ""), "nodata_class": "0"}
    write_cog(plain, out_path, colormap=colormap, tags=tags)
    return {names[str(i)]: int(n) for i, n in enumerate(counts)}


def _landcover_cue(landcover: HeadResult | None, buildings: HeadResult,
                   card: dict[str, Any] | None) -> Callable[[int, int], np.ndarray]:
    """Rows [a, b) of the land-cover head's P(building), bilinear on the building grid (the cue
    of ``BuildingPostprocess.landcover_threshold``)."""
    index = next((c["index"] for c in (card or {}).get("classes", []) if c["name"] == "building"), None)
    if landcover is None or index is None:
        raise PredictError("the building rules use the land-cover cue, but no land-cover head with a "
                           "'building' class ran")
    if landcover.crs != buildings.crs or not axis_aligned(landcover.transform, buildings.transform):
        raise PredictError("the land-cover and building grids are not aligned: cannot combine them")

    def rows(a: int, b: int) -> np.ndarray:
        values, _ = bilinear_window(lambda w: landcover.writer.read(w)[0][index:index + 1],
                                    (landcover.height, landcover.width), landcover.transform,
                                    buildings.transform, Window(0, a, buildings.width, b - a))
        return values[0]

    return rows


def _vectorise(
    head: HeadResult, options: PredictOptions, input_gsd: float | None, grid: dict,
    progress: Callable[[float], None], post: BuildingPostprocess,
    landcover: Callable[[int, int], np.ndarray] | None = None,
) -> gpd.GeoDataFrame:
    """Building polygons from the blended probabilities, in the working grid's CRS coordinates.

    ``post``: the building decision rules (``geoseg.postprocess``, from the card and the options);
    ``landcover``: rows [a, b) of the land-cover P(building) on this grid, when ``post`` uses it.
    """
    # ground size of one working pixel: the Scene's own measure, scaled when --gsd overrides it
    if head.gsd is not None and grid["native_gsd"]:
        pixel_m = head.gsd * (input_gsd / grid["native_gsd"])
    else:
        pixel_m = input_gsd  # not georeferenced: pixels as given by --gsd, else unknown
    scale = pixel_m if pixel_m else None
    vopts = vectorize.VectorizeOptions(
        min_area_px=post.min_area_m2 / scale**2 if scale else 4.0,
        simplify_px=options.simplify_m / scale if scale else 0.5,
    )

    margin = post.context_rows  # rows the morphology looks across

    def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        # one row of context each side so the eroded valid mask is exact at strip borders,
        # plus what the morphology needs
        a, b = max(0, start - 1 - margin), min(head.height, stop + 1 + margin)
        probs, covered = head.writer.read(Window(0, a, head.width, b - a))
        # rows outside the raster count as nodata (one padded row is enough for the erosion)
        covered = np.pad(covered, ((1, 1), (0, 0)), constant_values=False)
        inner = _erode(covered)[1:-1]
        cue = landcover(a, b) if landcover is not None and post.landcover_threshold else None
        classes, building = building_classes(probs, inner, post, cue)
        return classes[start - a:stop - a], building[start - a:stop - a]

    found = vectorize.vectorize_strips(read, head.height, vopts, progress)
    geoms = found.geometries
    if options.regularize and geoms:
        geoms = regularize_buildings(geoms, found.group, vopts.simplify_px)
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size:
        t = head.transform
        geoms = shapely.transform(geoms, lambda xy: np.column_stack([
            t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f]))
        # a working grid coarser than the input's overhangs its far edges by part of a pixel:
        # nothing may lie outside the input raster
        geoms = shapely.intersection(shapely.make_valid(geoms), _footprint(grid))
        geoms = np.asarray([_as_polygon(g) for g in geoms], dtype=object)
    frame = gpd.GeoDataFrame(
        {"id": np.arange(1, len(geoms) + 1, dtype=np.int64), "confidence": np.round(found.confidence, 4)},
        geometry=gpd.GeoSeries(list(geoms), crs=head.crs), crs=head.crs,
    )
    frame = frame[~frame.geometry.is_empty].reset_index(drop=True)
    frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["area_m2"] = _areas_m2(frame, pixel_m, head.transform)
    # orient rings the RFC 7946 way (exterior counter-clockwise)
    frame["geometry"] = shapely.orient_polygons(frame.geometry.values) if len(frame) else frame.geometry
    return frame[["id", "area_m2", "confidence", "geometry"]]


def _footprint(grid: dict) -> shapely.Polygon:
    """The input raster's outline in its CRS (any geotransform, rotated ones included)."""
    t, w, h = grid["transform"], grid["width"], grid["height"]
    return shapely.Polygon([t * (0, 0), t * (w, 0), t * (w, h), t * (0, h)])


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion by one pixel (outside the array counts as set)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _as_polygon(geom) -> shapely.Polygon:
    """The largest polygon of a geometry (after make_valid a building may gain slivers)."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not parts:
        return shapely.Polygon()
    return max(parts, key=lambda p: p.area)


def _areas_m2(frame: gpd.GeoDataFrame, pixel_m: float | None, transform: Affine) -> np.ndarray:
    """Areas in square metres: in the local UTM zone for georeferenced data, from the GSD otherwise."""
    if len(frame) == 0:
        return np.zeros(0)
    if frame.crs is not None:
        metric = frame.to_crs(frame.estimate_utm_crs())
        return np.round(metric.area.to_numpy(), 2)
    if pixel_m:
        px_area = abs(transform.a * transform.e - transform.b * transform.d)
        return np.round(frame.area.to_numpy() / px_area * pixel_m**2, 2)
    return np.full(len(frame), np.nan)


def _write_buildings(frame: gpd.GeoDataFrame, staging: Path, georeferenced: bool) -> None:
    """GeoPackage in the input CRS; RFC 7946 GeoJSON in WGS84 when georeferenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        frame.to_file(staging / "buildings.gpkg", driver="GPKG", layer="buildings", engine="pyogrio",
                      geometry_type="Polygon")
        if georeferenced:
            wgs84 = frame.to_crs(4326)
            wgs84.to_file(staging / "buildings.geojson", driver="GeoJSON", engine="pyogrio",
                          layer_options={"RFC7946": "YES", "WRITE_NAME": "NO"})

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

import functools
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import __version__
from geoseg.card import code_version, read_card
from geoseg.classmap import write_classmap
from geoseg.classmap_confidence import ConfidenceTally, uncertain_note
from geoseg.coarse_input import too_coarse
from geoseg.ensemble_heads import has_int8_graph, head_models, member_cards, run_mean_head
from geoseg.footprints import landcover_cue, vectorise_buildings, write_buildings
from geoseg.heads import bands_of_models, building_rules, load_heads, model_summary, task_card_path
from geoseg.infer import TileModel, resolve_device
from geoseg.options import PredictError, PredictOptions
from geoseg.output_files import OUTPUT_FILES, OUTPUT_SIDECARS
from geoseg.progress import StageProgress, StageWork, run_seconds, stage_weights, tracing_share
from geoseg.request_record import request_record
from geoseg.staging import make_staging, other_hosts_note, remove_abandoned
from geoseg.strict_json import json_safe
from geoseg.tiled_inference import (HeadResult, TilePlan, gsd_scale, head_plan, plan_tiles, run_head, scene_gsd,
                                   upsampling_cap)
from geoseg.valid_area import all_valid
from tiles.errors import UnsupportedRaster
from tiles.gsd import dataset_gsd_m, has_lonlat
from tiles.mosaic import input_at
from tiles.normalize import scaling_record, stretch_note
from tiles.palette import open_expanded
from tiles.rasterpath import (RasterPath, as_raster_path, check_utf8_name, is_virtual, not_found, raster_exists,
                              raster_name, sidecar_of)
from tiles.same_content import content_record
from tiles.source import Scene, cap_block_cache
from tiles.stitch import accumulator_bytes, check_free_space, size_words

__all__ = ["OUTPUT_FILES", "PredictError", "PredictOptions", "expected_seconds", "predict_scene"]

Progress = Callable[[float, str], None]


#: write the class map while the building model runs (False: one stage after the other)
OVERLAP_CLASSMAP = True


class _RunEnded(Exception):
    """Raised in the class map's thread when the run it belongs to has ended (an error, Ctrl-C)."""


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


def grey_input_note(bands: tuple[int, ...]) -> str:
    """The warning for one band read as red, green and blue (``--bands 1,1,1``: a grey aerial photo,
    a panchromatic band). Why: the models learned from colour, and grey input costs accuracy (docs/
    predict.md measures it); a user should see that in the run, not only in the docs."""
    shown = ",".join(map(str, bands))
    return (f"bands {shown} read one band as red, green and blue (grey imagery): the models were trained on "
            f"colour imagery: expect lower accuracy than from colour (docs/predict.md, 'Grey imagery', "
            f"measures it)")


def _in_user_measure(working_gsd: float | None, input_gsd: float | None, grid: dict) -> float | None:
    """A working grid's GSD as --gsd measures it (the Scene measures the file's georeferencing)."""
    return None if working_gsd is None else working_gsd * gsd_scale(input_gsd, grid["native_gsd"])


@functools.cache
def _running_code_version() -> str:
    """The code this process imported (git is asked once, not on every scene of a batch or service)."""
    return code_version()


def _head_plans(input_path: RasterPath, heads: dict[str, tuple], options: PredictOptions, input_gsd: float | None,
                grid: dict) -> dict[str, TilePlan]:
    """The tile plan of each model head of this run, before it runs."""
    return {task: head_plan(input_path, heads[task][1], options, input_gsd, grid)
            for task in ("landcover", "buildings") if task in heads}


def _stage_work(input_path: RasterPath, heads: dict[str, tuple], plans: dict[str, TilePlan], options: PredictOptions,
                device: str, grid: dict) -> StageWork:
    """The pixels each stage of this run will handle (its progress weights), from the heads' tile plans."""
    return _work_of(plans, {task: head[1] for task, head in heads.items()}, options, device,
                    grid["width"] * grid["height"], _nodata_cut(input_path, grid.get("bands")))


def _check_accumulator_space(staging: Path, heads: dict[str, tuple], plans: dict[str, TilePlan]) -> None:
    """Raise ``OSError`` (ENOSPC) before any head runs when ``staging``'s file system cannot hold the
    blending accumulators of every head at once (the land cover's stays open for the class map while
    the building model's, one per ensemble member, are filled).

    Why: each writer checked its own space as it was made, so a scene whose building accumulators did
    not fit failed only after its land cover had run (minutes on a big scene). The writers still check
    and reserve their own: another process may take the space meanwhile."""
    parts = {task: accumulator_bytes(plan.width, plan.height, len(heads[task][1]["classes"]))
             * len(member_cards(heads[task][1]) or [None])
             for task, plan in plans.items()}
    if parts:
        words = ", ".join(f"{task.replace('landcover', 'land cover')} {size_words(n)}" for task, n in parts.items())
        check_free_space(staging, sum(parts.values()), f"this run's blending accumulators ({words}) need")


def _nodata_cut(input_path: RasterPath, bands: tuple[int, ...] | None) -> bool:
    """Whether the polygons will be cut at the input's invalid pixels (``geoseg.valid_area``): not for
    an all-valid integer raster, whose header says so (unknown: counted). ``bands``: those read (None:
    every band). A GDAL virtual path or URL is not opened again for it (a request each time)."""
    if is_virtual(input_path):
        return True
    try:
        with open_expanded(input_path) as src:
            return not all_valid(src, tuple(bands or range(1, src.count + 1)))
    except Exception:  # noqa: BLE001 -- a weight: the run itself says what is wrong
        return True


def _work_of(plans: dict[str, TilePlan], cards: dict[str, dict[str, Any]], options: PredictOptions, device: str,
             input_px: int, nodata_cut: bool = True) -> StageWork:
    """``StageWork`` of a run whose heads have these ``cards`` and tile ``plans``."""
    buildings = plans.get("buildings")
    return StageWork(
        input_px=input_px,
        landcover_px=plans["landcover"].model_input_px if "landcover" in plans else None,
        gcn="gcn" in cards, classmap=options.classmap and "landcover" in cards,
        buildings_px=buildings.model_input_px if buildings else None,
        building_grid_px=buildings.width * buildings.height if buildings else None,
        int8=options.runtime == "int8" and device == "cpu" and has_int8_graph(cards.get("buildings", {})),
        regularize=options.regularize, nodata_cut=nodata_cut,
    )


#: seconds a run takes whatever its size (preparing the heads' sessions, opening and writing files,
#: report.json): a 64 px scene took 0.36 s and a 512 px one 0.45 s with the models loaded (session 23,
#: --profile fast, CPU), where the stage costs give them 0.01 and 0.24 s
PER_RUN_S = 0.3


def expected_seconds(input_path: RasterPath, options: PredictOptions) -> float | None:
    """What ``predict_scene`` should take on ``input_path`` by ``geoseg.progress.run_seconds`` (seconds on
    its reference machine: a measure to compare inputs by, not a forecast), from the raster's header (its
    working grids sized from its GSD, as the Scene's warped grid within a pixel: no statistics read) and
    the model cards, no model loaded; None when it cannot be told (an input that cannot be opened: its
    run says why; a GDAL virtual path or URL, not opened for this: a request each time).

    Why: a batch's time left counted inputs alike (a small first scene's time was every later one's),
    and pixels mislead too, since the heads run at their cards' GSD: a 0.075 m scene of the ground of a
    0.3 m one has 16x its pixels and took less time than it (by pixels: 58 s left where 3 were). The
    fixed part of a run (``PER_RUN_S``) keeps a small first input (a 64 px preview) from standing for a
    rate that made later scenes look 20x longer than they were."""
    import rasterio

    if is_virtual(input_path):
        return None
    try:
        device = resolve_device(options.device)
        with rasterio.open(input_path) as src:
            width, height, native_gsd = src.width, src.height, dataset_gsd_m(src)
        input_gsd = options.gsd or native_gsd
        cards: dict[str, dict[str, Any]] = {}
        if options.buildings:
            cards["buildings"] = read_card(task_card_path("buildings", options))
        cue = ("buildings" in cards and input_gsd is not None
               and building_rules(cards["buildings"], options).landcover_threshold > 0)
        if options.classmap or cue:  # as load_heads decides, from the cards alone
            cards["landcover"] = read_card(task_card_path("landcover", options))
            if options.refine == "gcn":
                cards["gcn"] = {}
        plans = {}
        for task in ("landcover", "buildings"):
            if task in cards:
                card = cards[task]
                target = scene_gsd(float(card["gsd_m"]) if card.get("gsd_m") else None, native_gsd, input_gsd,
                                   upsampling_cap(card))
                scale = native_gsd / target if target and native_gsd else 1.0
                plans[task] = plan_tiles(max(1, round(width * scale)), max(1, round(height * scale)), card, options)
        work = _work_of(plans, cards, options, device, width * height, _nodata_cut(input_path, None))
    except Exception:  # noqa: BLE001 -- an estimate: its run says what is wrong with the input
        return None
    return PER_RUN_S + run_seconds(work, device, options.profile, side_by_side=OVERLAP_CLASSMAP)


def _tiles_report(result: HeadResult) -> dict[str, Any]:
    """What report.json says about one head's tiling."""
    report = {"tiles": result.tiles, "tile_px": list(result.tile_px), "skipped_nodata": result.tiles_skipped,
              "context_px": list(result.context), "window_from_card": result.window_from_card,
              "working_width": result.width, "working_height": result.height}
    if result.members:  # an ensemble whose members ran on their own tiles: the totals above, each one here
        report["members"] = [_tiles_report(member) for member in result.members]
    return report


def building_sources(frame: Any, source: str, grid: dict[str, Any], mosaic: dict[str, Any] | None) -> Any:
    """Each building's ``source``: the input's name, or with ``--mosaic`` the file name of the tile
    its representative point lies on (a point inside the polygon, even for an L-shaped one)."""
    if mosaic is None or frame.empty:
        return source
    points = frame.geometry.representative_point()
    cols, rows = ~grid["transform"] @ (points.x.to_numpy(), points.y.to_numpy())
    return [Path(p).name for p in input_at(mosaic, np.asarray(cols), np.asarray(rows), source)]


def predict_scene(
    input_path: RasterPath, out_dir: Path | str, options: PredictOptions | None = None,
    progress: Progress | None = None, name: str | None = None, warn_notes: bool = True,
    mosaic: dict[str, Any] | None = None, record_content: bool = False, said: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the whole predict job for one raster (see module docstring); returns the report.

    ``name`` is what the outputs call the input (each building's ``source``; default the
    raster's file name): the service stores uploads as ``input.tif`` but knows the client's name.
    The run's notes are the report's ``warnings``; ``warn_notes`` also raises each as a
    ``UserWarning`` at the end (a caller that prints the report's, as a batch job on a Dask
    worker thread does, passes False: ``geoseg.notes``).
    ``mosaic``: when the input is a mosaic of several rasters (``geoseg predict --mosaic``: a VRT over
    them), what ``tiles.mosaic.Mosaic.summary`` says of them; report.json keeps it as ``mosaic``.
    ``record_content``: report.json keeps ``input_content`` (``tiles.same_content.content_record``: the
    input's size and SHA-256s, read through once), by which a later batch into the same folder gives
    these outputs to the scene moved or renamed (``geoseg predict`` batches ask for it).
    ``said``: notes the caller told the user before the run (``geoseg predict --mosaic``'s: the
    mosaic's gaps and overlaps, sidecars and earlier outputs left out of its inputs): the report's
    ``warnings`` start with them, and they are not raised again.
    """
    options = options or PredictOptions()
    options.check()
    input_path, out_dir = as_raster_path(input_path), Path(out_dir)  # /vsizip//a.zip/b.tif keeps its //
    try:
        check_utf8_name(input_path)
    except ValueError as exc:
        raise PredictError(str(exc)) from None
    if not raster_exists(input_path):
        raise PredictError(not_found(input_path))
    if out_dir.exists() and not out_dir.is_dir():  # was: FileExistsError from mkdir, after the models ran
        raise PredictError(f"{out_dir} is a file: the outputs go into a folder")
    sidecar = sidecar_of(input_path)
    if sidecar:
        raise PredictError(f"{raster_name(input_path)} is {sidecar}, not a scene: predict "
                           f"{raster_name(input_path).rsplit('.', 1)[0]}")
    request = request_record(input_path, options)  # the input's size and time before it is read
    device = resolve_device(options.device)
    cap_block_cache()  # windowed reads must not fill a GDAL cache sized to the machine's RAM
    if options.batch_size is None:
        options = replace(options, batch_size=8 if device == "cuda" else 1)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = list(said)
    from_card = bands_of_models(options)  # --bands, else the bands the run's own cards were trained on
    try:
        with Scene(input_path, bands=from_card[0] if from_card else options.bands) as scene:
            # every later read of the input (heads, class map mask, nodata cut) takes these bands
            grid = dict(crs=scene.crs, transform=scene.src_transform, width=scene.src_width,
                        height=scene.src_height, native_gsd=scene.native_gsd, path=input_path,
                        bands=scene.bands)
            ground_control, unplaced_crs = scene.ground_control, scene.unplaced_crs
            band_choice = scene.band_choice
            scaling, stretched = scaling_record(scene.dtype, scene.stats), stretch_note(scene.dtype, scene.stats)
    except UnsupportedRaster as exc:
        if from_card:  # e.g. bands 4,3,2 of a 3-band raster
            raise PredictError(f"{exc} (the bands model card {from_card[1]} was trained on)") from exc
        raise PredictError(str(exc)) from exc
    if from_card:
        band_choice = replace(band_choice, source=f"model card {from_card[1]}")
    if band_choice.note:
        notes.append(band_choice.note)
    if stretched:
        notes.append(stretched)
    if not from_card and len(set(band_choice.bands)) == 1:
        notes.append(grey_input_note(band_choice.bands))
    georeferenced = grid["crs"] is not None
    if not georeferenced:
        # rasterio's and pyogrio's warnings about each output without a CRS or with an identity
        # transform are ignored (tiles.georeferencing_warnings): this note says it once.
        # Name only the outputs this run writes (--no-buildings / --no-classmap).
        in_pixels = (["class map on the pixel grid without CRS"] if options.classmap else []) + (
            ["building polygons in pixel coordinates in buildings.gpkg only"] if options.buildings else [])
        no_geojson = " (no GeoJSON can be georeferenced)" if options.buildings else ""
        if ground_control:  # GIS tools place such a file by warping it on the fly
            placed = ([f"the class map keeps its {ground_control}, so GIS tools place it on the input"]
                      if options.classmap else []) + (
                ["building polygons in pixel coordinates in buildings.gpkg only"] if options.buildings else [])
            notes.append(f"input has no geotransform, only {ground_control}: geoseg predicts on its pixel grid; "
                         f"{'; '.join(placed)}{no_geojson}. Warp it first for georeferenced outputs: gdalwarp"
                         f"{' -rpc' if ground_control == 'RPCs' else ''} in.tif warped.tif")
        elif unplaced_crs is not None:  # e.g. a PNG with a .prj or an .aux.xml SRS but no world file
            notes.append(f"input has a CRS ({unplaced_crs.to_string()[:80]}) but no geotransform, so nothing places "
                         f"it on the ground: {'; '.join(in_pixels)}{no_geojson}; give it one first (a world file, "
                         "or gdal_translate -a_ullr ULX ULY LRX LRY in.tif placed.tif)")
        elif not grid["transform"].is_identity:  # a world file (.pgw, .jgw, .tfw) without a CRS
            files = " and ".join((["the class map"] if options.classmap else [])
                                 + (["buildings.gpkg"] if options.buildings else []))
            notes.append(f"input has a geotransform (e.g. a world file) but no CRS: {files} "
                         f"{'are' if options.classmap and options.buildings else 'is'} in its coordinates, "
                         f"without a CRS{no_geojson}; give the raster its CRS first (gdal_edit.py -a_srs "
                         "EPSG:<code> in.png) or assign it to the outputs in your GIS")
        else:
            notes.append(f"input is not georeferenced: {'; '.join(in_pixels)}{no_geojson}")
        if options.gsd is not None:
            notes.append("--gsd only sets areas and tolerances for a non-georeferenced input: it is not resampled")
    lonlat = has_lonlat(grid["crs"])
    if georeferenced and not lonlat:  # e.g. a drone survey's site grid: the buildings cannot go to WGS84
        notes.append(f"the input's CRS ({grid['crs'].to_string()[:80]}) cannot be converted to longitude/latitude: "
                     "no buildings.geojson (RFC 7946 is WGS84); buildings.gpkg and the class map are in the "
                     "input's CRS, areas from its units")
    input_gsd = options.gsd or grid["native_gsd"]
    coarse = too_coarse(input_gsd, options)
    if coarse is not None:  # a continent in a few hundred pixels: no output would mean anything
        raise PredictError(coarse.advice("--no-buildings" if coarse.task == "buildings" else "--no-classmap",
                                         "--gsd METRES", "--allow-coarse"))
    # of the bytes about to be read; after the checks above, so an input refused at once is not read through
    content = content_record(input_path) if record_content else None
    if content is not None and request_record(input_path, options)["input_file"] != request["input_file"]:
        content = None  # changed since its size and time were taken: the bytes hashed may not be those

    t = time.perf_counter()
    heads = load_heads(options, device, notes, gsd_known=input_gsd is not None)
    timings["load_models"] = time.perf_counter() - t
    plans = _head_plans(input_path, heads, options, input_gsd, grid)
    stage_work = _stage_work(input_path, heads, plans, options, device, grid)
    stages = StageProgress(progress, stage_weights(stage_work, device, options.profile))

    made_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out_dir)  # first: what they held is free space for this run
    if (others := other_hosts_note(out_dir)) is not None:
        notes.append(others)
    staging = make_staging(out_dir)
    work = staging / "work"  # the staging folder is this run's alone; mkdir, unlike mkdtemp, follows the umask
    work.mkdir()
    report: dict[str, Any] = {
        "geoseg": {"version": __version__, "code_version": _running_code_version()},  # what made these outputs
        "input": request["input"],
        "input_file": request["input_file"],
        **({"input_content": content} if content is not None else {}),
        **({"mosaic": mosaic} if mosaic is not None else {}),
        "device": device,
        "options": request["options"] | {"batch_size": options.batch_size},
        "models": {task: model_summary(card) for task, (_, card) in heads.items()},
        "grid": {"width": grid["width"], "height": grid["height"],
                 "crs": grid["crs"].to_string() if georeferenced else None},
        "bands": band_choice.as_dict(),  # read as red, green, blue, and why (``geoseg eval`` reads them)
        "scaling": scaling,  # how the input's values became the models' bytes (``tiles.normalize``)
        "gsd": {"input_m": grid["native_gsd"], "override_m": options.gsd, "used_m": input_gsd, "working_m": {}},
        "tiles": {"size": options.tile_size, "overlap": options.overlap},
        "counts": {},
        "warnings": notes,
    }
    classmap_job: _Background | None = None
    # set when the run ends: a class map still being written beside a run that failed or was interrupted
    # stops at its next block (the first Ctrl-C waited 15-19 s for it on a 12288 px scene)
    classmap_stop = threading.Event()

    def classmap_progress(fraction: float) -> None:
        if classmap_stop.is_set():
            raise _RunEnded("the run ended: the class map is not finished")
        stages("classmap", fraction)

    landcover_result: HeadResult | None = None
    landcover_card: dict[str, Any] | None = None
    try:
        _check_accumulator_space(staging, heads, plans)  # named by its folder: DIR
        if "landcover" in heads:
            t = time.perf_counter()
            # a GCN reading only colours and CNN probabilities spares the feature maps (fast profile)
            model = TileModel(*heads["landcover"], device=device, runtime=options.runtime,
                              with_features="gcn" in heads and heads["gcn"][0].reads_cnn_features, notes=notes)
            timings["prepare_landcover"] = time.perf_counter() - t
            report["models"]["landcover"]["runtime"] = model.runtime
            gcn = heads.get("gcn")
            t = time.perf_counter()
            result = run_head(input_path, model, options, input_gsd, grid, work, lambda f: stages("landcover", f),
                               notes, gcn=gcn, mask_tiles=False)
            timings["landcover"] = time.perf_counter() - t
            report["gsd"]["working_m"]["landcover"] = _in_user_measure(result.gsd, input_gsd, grid)
            report["tiles"]["landcover"] = _tiles_report(result)
            # bound now: the building branch below rebinds ``result`` while this runs
            landcover_result, landcover_card = result, model.card

            def classmap_task() -> dict[str, int]:
                t0 = time.perf_counter()
                try:
                    return write_classmap(input_path, landcover_result, grid, landcover_card, work,
                                           staging / "classmap.tif", classmap_progress, confidence)
                finally:
                    timings["classmap"] = time.perf_counter() - t0

            confidence = ConfidenceTally()
            # the card whose probabilities the class map argmaxes holds the rule for an uncertain scene
            confidence_card = gcn[1] if gcn is not None else landcover_card
            if options.classmap:  # else the head ran for the building rules' land-cover cue only
                # resampling + argmax + deflate run beside the building model (numpy, GDAL and ONNX
                # Runtime release the GIL); alone, it runs here
                classmap_job = _Background(classmap_task, start="buildings" in heads and OVERLAP_CLASSMAP)
        if "buildings" in heads:
            t = time.perf_counter()
            # one TileModel, or one per member of an ensemble that tiles member by member
            models = head_models(*heads["buildings"], device=device, runtime=options.runtime, notes=notes)
            timings["prepare_buildings"] = time.perf_counter() - t
            # an ensemble's members may run differently (--runtime int8: the U2-Net's graph, the LiteUNet float32)
            report["models"]["buildings"]["runtime"] = "+".join(dict.fromkeys(m.runtime for m in models))
            # no land-cover head ran ({}): load_heads dropped one without a 'building' class
            post = building_rules(heads["buildings"][1], options, gsd_known=input_gsd is not None,
                                  landcover_card=landcover_card or {})
            report["postprocess"] = post.as_dict()
            t = time.perf_counter()
            result = run_mean_head(input_path, models, options, input_gsd, grid, work,
                                   lambda f: stages("buildings", f), notes)
            timings["buildings"] = time.perf_counter() - t
            report["gsd"]["working_m"]["buildings"] = _in_user_measure(result.gsd, input_gsd, grid)
            report["tiles"]["buildings"] = _tiles_report(result)
            t = time.perf_counter()
            cue = landcover_cue(landcover_result, result, landcover_card) if post.landcover_threshold else None
            frame = vectorise_buildings(result, options, input_gsd, grid, lambda f: stages("vectorize", f), post,
                                        cue, notes, tracing_share(stage_work, device, options.profile))
            stages("vectorize", 1.0)
            result.writer.close()
            timings["vectorize"] = time.perf_counter() - t
            t = time.perf_counter()
            frame["source"] = building_sources(frame, name or raster_name(input_path), grid, mosaic)
            stages("write", 0.0)
            write_buildings(frame, staging, lonlat)
            stages("write", 0.9)  # the rest: report.json and the renames
            timings["write_buildings"] = time.perf_counter() - t
            report["counts"]["buildings"] = int(len(frame))
        if classmap_job is not None:
            report["counts"]["classmap_pixels"] = classmap_job.result()
            report["classmap_confidence"] = confidence.as_dict()
            note = uncertain_note(report["classmap_confidence"], confidence_card)
            if note:
                notes.append(note)
        if landcover_result is not None:
            landcover_result.writer.close()
        shutil.rmtree(work, ignore_errors=True)
        timings["total"] = time.perf_counter() - t_start
        report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        report["mpx_per_s"] = round(grid["width"] * grid["height"] / 1e6 / timings["total"], 4)
        written = [p.name for p in staging.iterdir() if p.is_file()]
        if mosaic is not None and Path(input_path).parent.resolve() == Path(out_dir).resolve():
            written.append(Path(input_path).name)  # --mosaic's VRT, kept in DIR beside what was made from it
        report["outputs"] = sorted(written) + ["report.json"]
        (staging / "report.json").write_text(json.dumps(json_safe(report), indent=2, default=str, allow_nan=False)
                                             + "\n")
        # report.json says a folder is finished: an earlier run's goes first, this run's comes last,
        # so a report is never beside another run's files (say, while a re-run is moved into place)
        (out_dir / "report.json").unlink(missing_ok=True)
        for name in OUTPUT_FILES:  # stale outputs of an earlier run must not survive
            if (out_dir / name).exists() and not (staging / name).exists():
                (out_dir / name).unlink()
        # nor their sidecars: QGIS's pending edit in buildings.gpkg-wal was applied onto the new file (41 of
        # its 60 buildings, the integrity check failed), an old classmap.tif.aux.xml's statistics read as the new
        for name, suffixes in OUTPUT_SIDECARS.items():
            for suffix in suffixes:
                (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda f: f.name == "report.json"):
            if path.is_file():
                os.replace(path, out_dir / path.name)
        stages.finish()
    finally:
        classmap_stop.set()
        try:
            if classmap_job is not None:
                classmap_job.wait()  # never delete the staging folder under a running writer
        finally:  # a second Ctrl-C during the wait: the folder goes all the same (it left 0.5 MB to 3 GB)
            shutil.rmtree(staging, ignore_errors=True)
            if made_out_dir and not any(out_dir.iterdir()):  # a failed or interrupted run leaves no empty folder
                out_dir.rmdir()
    if warn_notes:
        for note in notes[len(said):]:
            warnings.warn(note, stacklevel=2)
    return report

"""`geoseg predict INPUT... --out DIR`: class map COG + building polygons for each input.

One input file writes into DIR; several, or a folder (its rasters), write into DIR/<input stem>/
through ``tiles.batch`` (resumable: folders finished with the same input and options are skipped,
others predicted again; ``--scheduler`` runs them on a Dask cluster). With ``--mosaic`` all inputs are
one scene, a VRT over them (``tiles.mosaic``), written into DIR.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from geoseg import __version__
from geoseg.commands.outdir import check_not_another_commands_out, check_predict_layout, check_printable_path
from geoseg.commands.outlock import hold_out_folder, in_use_by
from geoseg.commands.termination import TERMINATED_EXIT, Terminated, sigterm_interrupts
from geoseg.commands.usage import UsageError, usage_errors
from geoseg.commands.warning_lines import echo_warnings, recorded_warnings, warning_lines
from geoseg.options import PredictError
from geoseg.output_files import is_users_own
from tiles.batch import failure_line, parse_scheduler, time_left
from tiles.batch_summary import SUMMARY_NAME, BatchSummary, command_line
from tiles.errors import PLAIN_KINDS
from tiles.hashing_progress import hashing_progress
from tiles.progress_console import logs_lines, progress_console
from tiles.rasterpath import (RASTER_SUFFIXES, RasterPath, absolute_path, absolute_raster_path, as_raster_path,
                              is_virtual, not_found, raster_exists, raster_name, raster_stem, rasters_in, split_sidecars,
                              vrts_over_inputs)
from tiles.same_content import HashProgress, file_key, same_as_recorded, same_content

#: without a terminal, a line each time the single-input progress passes another tenth
LOG_STEP = 0.1
#: a failed input's line names no kind for the pipeline's own errors, as for the engine's
_PLAIN_KINDS = PLAIN_KINDS | {PredictError.__name__, "ModelCardError"}  # geoseg.card's, named: it loads numpy

# the pipeline imports torch, geoseg.card numpy and tiles.normalize rasterio: they are loaded when the command
# runs, not for `geoseg --help` or `geoseg serve`, which import this module too (tests/test_cli_imports.py)
if TYPE_CHECKING:
    from geoseg.pipeline import PredictOptions
    from tiles.mosaic import Mosaic


def _predict_into(options: PredictOptions, input_path: RasterPath, out_dir: Path) -> list[str]:
    """Batch job (module level so Dask can pickle it); returns the run's notes, printed with the
    input's name (a Dask worker's warnings would never reach this console). Taken from the report,
    not caught as warnings: catch_warnings is not thread-safe, and a Dask worker with several
    threads runs several jobs at once (geoseg.notes)."""
    from geoseg.pipeline import predict_scene

    # input_content: a later batch into this --out gives these outputs to the scene moved or renamed
    report = predict_scene(input_path, out_dir, options, warn_notes=False, record_content=True)
    return list(dict.fromkeys(report["warnings"]))  # each once, in order


def _one_card_per_task(specs: list[str]) -> list[str]:
    """``--model``'s check: a task named twice is a usage error (exit 2). Why: the last card given
    silently won, so a script that added a card without removing the old one ran another model
    than it said (the service refuses a job naming a task twice, too)."""
    tasks = [spec.partition("=")[0] for spec in specs if "=" in spec]
    twice = next((task for task in tasks if tasks.count(task) > 1), None)
    if twice is not None:
        given = ", ".join(spec for spec in specs if spec.partition("=")[0] == twice)
        raise typer.BadParameter(f"{twice} is given twice ({given}): give each task one card")
    return specs


@sigterm_interrupts
def predict(
    # strings, not Paths: Path would turn /vsizip//tmp/a.zip/b.tif into a relative path for GDAL
    inputs: list[str] = typer.Argument(..., metavar="INPUT", help="Rasters to predict (GeoTIFF, JPEG, PNG, anything GDAL reads, "
                                       "GDAL virtual paths such as /vsizip//path/a.zip/b.tif, URLs and subdataset names such as "
                                       "GPKG:path/two.gpkg:a included), "
                                       "or folders: the rasters directly inside each."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one sub-folder per input when several or given a folder, unless --mosaic)."),
    tile_size: int = typer.Option(512, "--tile-size", help="Tile size in working-grid pixels (a head whose card fixes its window keeps it: the accurate building head's U2-Net runs on 512 px tiles at any --tile-size, its LiteUNet on these)."),
    overlap: int = typer.Option(64, "--overlap", help="Overlap between tiles in pixels (blended; it may grow by up to 31 px to keep tiles of a multiple-of-32 size on a 32 px grid)."),
    refine: str = typer.Option("gcn", "--refine", help="Land-cover refinement: gcn | none."),
    no_buildings: bool = typer.Option(False, "--no-buildings", help="Skip building footprints."),
    no_classmap: bool = typer.Option(False, "--no-classmap", help="Skip the land-cover class map (the accurate profile still runs the land-cover model for its building cue)."),
    regularize: bool = typer.Option(False, "--regularize", help="Square building outlines."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    gsd: Optional[float] = typer.Option(None, "--gsd", help="What one input pixel really measures, metres (overrides the georeferencing's GSD: "
                                           "resampling, areas, --min-area and --simplify use it; an input without georeferencing is not resampled, "
                                           "so there it sets areas and tolerances only)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Batches: 'local' (a local Dask cluster), 'sync' (one input after another in this process, the default) or a Dask scheduler address such as tcp://host:8786."),
    profile: str = typer.Option("accurate", "--profile", help="accurate | fast (distilled students and their own GCN, ~6x faster end to end on a CPU at 0.3 m; ~2-3x on a 1 m scene, which the fast building head upsamples to its 0.3 m)."),
    context: Optional[int] = typer.Option(None, "--context", help="Context pixels read around each tile (default: enough for the model to see its card's tile size, and at least the card's min_context: 64 for --profile fast)."),
    runtime: str = typer.Option("auto", "--runtime", help="auto (onnx on CPU, torch on CUDA) | torch | onnx | int8 (CPU: the U2-Net's "
                                 "int8 graph for the accurate building head's U2-Net member, which ran ~2x faster alone, see docs/predict.md; heads without one run onnx)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Tiles per forward pass (default 1 on CPU, 8 on CUDA)."),
    min_area: Optional[float] = typer.Option(None, "--min-area", help="Smallest building kept, square metres (default: the building model card's tuned value: "
                                                 "60 accurate, 40 fast; 3 for a card without one)."),
    simplify: float = typer.Option(0.3, "--simplify", help="Outline simplification tolerance, metres."),
    model: list[str] = typer.Option([], "--model", callback=_one_card_per_task, help="TASK=CARD to use your own model (buildings, landcover, gcn); CARD is a card .json or a "
                                    "model folder (its card of that task); repeatable."),
    bands: Optional[str] = typer.Option(None, "--bands", help="1-based bands to read as red, green, blue, e.g. 3,2,1 for "
                                        "bands stored blue, green, red (BGR, BGRN), 5,3,2 for WorldView-3 or 1,1,1 for one grey band "
                                        "(the models were trained on colour: lower accuracy) (default: "
                                        "the bands a --model card was trained on, else bands labelled red, green, "
                                        "blue by colour or description, else 1,2,3)."),
    mosaic: bool = typer.Option(False, "--mosaic", help="Read all INPUTs (files, and the rasters in folders) as ONE scene: "
                                "adjacent tiles of one image on one pixel grid (one CRS, pixel size, bands), mosaicked by a "
                                "GDAL VRT kept as OUT/mosaic.vrt; outputs in OUT as for one input, seamless across the "
                                "tile lines. Gaps are nodata; where tiles overlap the last listed wins where it has data. Not with --scheduler local or an address."),
    allow_coarse: bool = typer.Option(False, "--allow-coarse", help="Predict an input more than 10x coarser than a model's "
                                      "working GSD (buildings 0.3 m, land cover 1.1 m: refused above 3.03 m, or 11.1 m with "
                                      "--no-buildings), whose outputs mean little."),
) -> None:
    """Predict land cover and building footprints for one or more rasters."""
    from geoseg.card import parse_model_specs
    from geoseg.pipeline import PredictOptions
    from tiles.normalize import parse_bands

    options = PredictOptions(tile_size=tile_size, overlap=overlap, refine=refine, buildings=not no_buildings,
                             classmap=not no_classmap, regularize=regularize, device=device, gsd=gsd,
                             profile=profile, context=context, runtime=runtime, batch_size=batch_size, min_area_m2=min_area, simplify_m=simplify,
                             allow_coarse=allow_coarse)
    batch = False
    try:
        with usage_errors(ValueError):  # the options alone, before any input or model is read
            options.model_dirs = parse_model_specs(model)
            options.bands = parse_bands(bands) if bands is not None else None
            options.check()
            if mosaic and scheduler not in (None, "sync"):  # one scene, predicted here: nothing to spread over a cluster
                raise ValueError("--mosaic predicts its inputs as one scene in this process; --scheduler is for "
                                 "batches of separate inputs: leave it out")
            # also for one input, which runs in this process: a mistyped address was silently ignored
            scheduler = _scheduler(scheduler)
            check_printable_path(out)
        paths, folders, outputs = _expand_folders([as_raster_path(p) for p in inputs])
        batch = not mosaic and (folders or len(paths) > 1)  # the layout follows what was given, repeats included
        paths, sidecars = split_sidecars(_unique(paths))
        notes = ([_sidecars_note(sidecars)] if sidecars else []) + _outputs_note(outputs)
        check_not_another_commands_out(out, "geoseg predict")
        one = not (mosaic or batch)
        check_predict_layout(out, batch, raster_stem(paths[0]) if one else None, raster_name(paths[0]) if one else None,
                             str(absolute_raster_path(paths[0])) if one and not is_virtual(paths[0]) else None)
        if mosaic:
            _predict_mosaic(paths, out, options, notes)
        elif not batch:
            if not raster_exists(paths[0]):
                raise ValueError(not_found(paths[0]))
            # hold_out_folder makes --out, and removes it again if it made it and the run fails leaving it empty
            with hold_out_folder(out, "geoseg predict"):  # not while a batch writes there
                _predict_one(paths[0], out, options)
        else:  # a missing input is one failed input of the batch (predict_scene checks it): the others run
            with hold_out_folder(out, "geoseg predict"):  # one batch at a time in DIR
                _predict_many(paths, out, options, scheduler, notes + _vrts_of_inputs(paths))
    except (typer.Exit, UsageError):
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: say what is kept (a batch's finished folders) and how to go on
        kept = "finished folders are kept, run the same command again to resume" if batch else "nothing written"
        terminated = isinstance(stop, Terminated)
        typer.echo(f"geoseg predict: {'terminated' if terminated else 'interrupted'}: {kept}", err=True)
        raise typer.Exit(TERMINATED_EXIT if terminated else 130) from None
    except Exception as exc:  # one line for the user, non-zero exit
        typer.echo(f"geoseg predict: error: {exc}", err=True)
        raise typer.Exit(1) from None


def _expand_folders(paths: list[RasterPath]) -> tuple[list[RasterPath], bool, list[Path]]:
    """Each local folder replaced by the rasters directly inside it; whether there was one (a folder
    is a batch, written into DIR/<stem>/, even when it holds a single raster); and the rasters left out
    of the folders as outputs of an earlier ``geoseg predict`` into them (its classmap.tif was predicted
    as a scene: a class map of a class map)."""
    out: list[RasterPath] = []
    left_out: list[Path] = []
    folders = False
    for p in paths:
        if isinstance(p, Path) and p.is_dir():
            written, rasters = _predict_outputs_in(p), rasters_in(p)
            found = [f for f in rasters if f.name not in written]
            left_out += [f for f in rasters if f.name in written]
            if not found:
                below = sorted(d.name for d in Path(p).iterdir() if d.is_dir() and not d.name.startswith("."))
                raise ValueError(f"no rasters in folder {p} (looked for {', '.join(RASTER_SUFFIXES)})"
                                 + (" but the outputs of an earlier geoseg predict (its report.json)" if written else "")
                                 + (f"; only directly in it, not in its folders ({', '.join(below[:5])}"
                                    f"{', ...' if len(below) > 5 else ''}): give those, e.g. {p}/*/"
                                    if below and not written else ""))
            out.extend(found)
            folders = True
        else:
            out.append(p)
    return out, folders, left_out


def _predict_outputs_in(folder: Path) -> set[str]:
    """The files a ``geoseg predict`` of one input wrote into ``folder`` (its report.json's ``outputs``)."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return set()
    if not (isinstance(report, dict) and isinstance(report.get("options"), dict)
            and isinstance(report.get("outputs"), list)):
        return set()
    return {name for name in report["outputs"] if isinstance(name, str)}


def _outputs_note(left_out: list[Path]) -> list[str]:
    """The warning for outputs of an earlier predict left out of a folder's rasters."""
    if not left_out:
        return []
    names = ", ".join(str(p) for p in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
    return [f"left out {names}: the output{'s' if len(left_out) > 1 else ''} of an earlier geoseg predict "
            f"into {'that folder' if len({p.parent for p in left_out}) == 1 else 'those folders'} "
            f"(its report.json), not a scene"]


def _unique(paths: list[RasterPath]) -> list[RasterPath]:
    """``paths`` without repeats of one file under one name (a folder and a file in it, ``a/../a/x.tif``,
    a link of the same name elsewhere), in order. A link under another name stays: the user asked
    for its folder, which gets a copy of the file's outputs (``tiles.same_content``)."""
    seen: set[tuple[str, str]] = set()
    out: list[RasterPath] = []
    for p in paths:
        key = (file_key(p), raster_stem(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _sidecars_note(sidecars: list[RasterPath]) -> str:
    """The warning for sidecars given with their rasters (``scenes/*``): left out, and why."""
    names = ", ".join(raster_name(p) for p in sidecars[:5]) + (", ..." if len(sidecars) > 5 else "")
    return (f"left out {len(sidecars)} sidecar file{'s' if len(sidecars) > 1 else ''} of the inputs ({names}): "
            f"GDAL reads each with its raster")


def _vrts_of_inputs(paths: list[RasterPath]) -> list[str]:
    """A warning for each VRT input that reads other inputs of the batch (``scenes/`` holding the tiles
    and the ``gdalbuildvrt`` index over them): their buildings would be predicted twice, in the VRT's
    folder and in their own, with no word."""
    lines = []
    for p, inside in vrts_over_inputs(paths).items():
        names = ", ".join(raster_name(q) for q in inside[:3]) + (", ..." if len(inside) > 3 else "")
        lines.append(f"{raster_name(p)} reads {len(inside)} other input{'s' if len(inside) > 1 else ''} of this "
                     f"batch ({names}): their buildings are predicted twice, in {raster_stem(p)}/ and in "
                     f"their own folders; give the VRT or the rasters it reads, not both")
    return lines


def _predict_mosaic(inputs: list[RasterPath], out: Path, options: PredictOptions, notes: list[str]) -> None:
    """``inputs`` as one scene (``--mosaic``): checked to share one grid before ``out`` is made, then a
    VRT over them, ``out/mosaic.vrt``, predicted as one input. A failed run leaves the VRT as it was."""
    from tiles.mosaic import MOSAIC_VRT, MosaicError, plan_mosaic, write_vrt

    vrt = out / MOSAIC_VRT
    for p in inputs:
        if not raster_exists(p):
            raise ValueError(not_found(p))
        if not is_virtual(p) and os.path.realpath(p) == os.path.realpath(vrt):
            raise ValueError(f"--mosaic: {p} is the mosaic this run writes (--out's {MOSAIC_VRT}): give the tiles, "
                             f"not it")
    try:
        plan = plan_mosaic(inputs, options.bands)
    except MosaicError as exc:
        raise ValueError(f"--mosaic: {exc}") from None
    # hold_out_folder makes --out, and removes it again if it made it and the run fails leaving it empty
    with hold_out_folder(out, "geoseg predict"):  # not while another run writes there
        said = notes + _mosaic_warnings(plan)
        echo_warnings(said, prefix="--mosaic: ")  # once the folder is ours
        before = vrt.read_bytes() if vrt.is_file() else None
        try:
            write_vrt(plan, vrt)
            _predict_one(vrt, out, options, mosaic=plan.summary(), said=tuple(f"--mosaic: {n}" for n in said),
                         label=f"mosaic of {len(plan.tiles)} raster{'s' if len(plan.tiles) > 1 else ''}")
        except BaseException:  # the VRT an earlier run's outputs were made from stays theirs
            if before is None:
                vrt.unlink(missing_ok=True)
            else:
                vrt.write_bytes(before)
            raise


def _mosaic_warnings(plan: Mosaic) -> list[str]:
    """What a user should know of a mosaic before its run: gaps (they cost time and memory as in a scene
    of the whole rectangle) and overlaps (which raster is read there)."""
    lines = []
    if len(plan.tiles) > 1 and plan.covered_fraction < 1.0:
        scattered = ("; a run goes through the whole rectangle: predict groups of tiles far apart separately"
                     if plan.covered_fraction < 0.5 else "")
        lines.append(f"the {len(plan.tiles)} rasters cover {plan.covered_fraction:.1%} of the mosaic's "
                     f"{plan.width} x {plan.height} px rectangle: the rest is nodata (no buildings, class 0)"
                     f"{scattered}")
    overlaps = plan.overlaps()
    if overlaps:
        first, last = overlaps[0]
        lines.append(f"{len(overlaps)} pair{'s' if len(overlaps) > 1 else ''} of rasters overlap (e.g. "
                     f"{raster_name(first)} and {raster_name(last)}): where they do, the last listed "
                     f"({raster_name(last)}) is read where it has data")
    return lines


def _predict_one(input_path: RasterPath, out: Path, options: PredictOptions, mosaic: dict | None = None,
                 label: str | None = None, said: tuple[str, ...] = ()) -> None:
    columns = (TextColumn("{task.description:<12}", markup=False), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"))
    from geoseg.pipeline import predict_scene  # before the block: its modules' import-time filters stay

    # the time left from the rate over the whole run (geoseg.progress makes the bar move with time),
    # not over rich's default last 30 s, which a slow tile or stage would throw off
    with recorded_warnings() as caught, Progress(*columns, speed_estimate_period=24 * 3600,
                                                 console=progress_console()) as bar:
        label = label or raster_name(input_path)
        task = bar.add_task(label, total=1.0)
        # in a log file (no terminal) the bar is drawn once, at the end: a line every tenth instead
        log_lines = logs_lines(bar.console)
        next_line = [LOG_STEP]

        def progress(fraction: float, stage: str) -> None:
            bar.update(task, completed=fraction, description=stage)
            if log_lines and next_line[0] <= fraction < 1.0:
                next_line[0] = (int(fraction / LOG_STEP + 1e-9) + 1) * LOG_STEP
                elapsed = bar.tasks[0].elapsed or 0.0
                bar.console.print(f"{label}: {fraction:.0%} ({stage}), {elapsed:.0f} s, "
                                  f"about {time_left(elapsed, fraction, 1.0 - fraction):.0f} s left",
                                  highlight=False, soft_wrap=True, markup=False, emoji=False)

        try:
            report = predict_scene(input_path, out, options, progress, mosaic=mosaic, said=said)
        except BaseException:
            _drop_bar(bar)  # the error is one line, without a bar stopped at 0 % above it
            # what was said before the failure may be its cause: "ONNX cache not writable" before a
            # full /tmp's "No space left on device" was dropped with the run
            echo_warnings(warning_lines(caught))
            raise
    echo_warnings(warning_lines(caught))
    counts = report.get("counts", {})
    n = counts.get("buildings", 0)
    found = f"{n} building{'' if n == 1 else 's'}" if options.buildings else "no building model run"
    typer.echo(f"{label}: {found}, "
               f"{report['timings_s']['total']:.1f} s ({report['mpx_per_s']:.3g} Mpx/s) -> {out}")


def _drop_bar(bar: Progress) -> None:
    """Stop ``bar`` leaving nothing on stdout: rich erases a transient bar on a terminal, but without
    one it draws the last frame (empty when hidden) and then a newline, and a script capturing stdout
    of a failed run got an empty line."""
    bar.live.transient = True
    bar.live.stop()
    bar.disable = True  # Progress.stop (on leaving the block) would print the newline


def _predict_many(inputs: list[RasterPath], out: Path, options: PredictOptions, scheduler: str | None,
                  notes: list[str]) -> None:
    """The batch of ``inputs`` into ``out/<stem>/``; ``scheduler``: as ``_scheduler`` returns it;
    ``notes``: warnings of the batch known before it runs (printed before it, and in its summary)."""
    from geoseg.pipeline import expected_seconds as _expected_seconds
    from geoseg.prediction_copy import copy_prediction
    from tiles.batch import run_batch

    # absolute: a Dask worker runs in its own folder (--model cards are made absolute by the pipeline's
    # report only, so they are made absolute here too)
    inputs = [absolute_raster_path(p) for p in inputs]
    out = Path(absolute_path(out))
    options = dataclasses.replace(options, model_dirs={task: absolute_path(card)
                                                       for task, card in options.model_dirs.items()})
    stems = [raster_stem(p) for p in inputs]
    reading = hashing_progress("predict")  # same-size inputs read through: a bar (or a line) when it is long
    if len(set(stems)) < len(stems):  # one scene of one name in two folders (deliveries merged): one input
        twins = {p: first for p, first in same_content(inputs, reading).items()
                 if raster_stem(p) == raster_stem(first)}
        notes += [f"{p} is the same scene as {first} (the same name and content): predicted once, into "
                  f"{out / raster_stem(first)}" for p, first in twins.items()]
        inputs = [p for p in inputs if p not in twins]
        stems = [raster_stem(p) for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        same = [str(p) for p, s in zip(inputs, stems) if s == duplicates[0]]
        raise ValueError(f"several inputs share the stem {duplicates[0]!r} ({', '.join(same)}): "
                         f"{'both' if len(same) == 2 else f'all {len(same)}'} would write {out / duplicates[0]}; "
                         f"rename {'one' if len(same) == 2 else 'all but one'} or predict them into different "
                         "--out folders")
    if SUMMARY_NAME in stems:
        raise ValueError(f"an input's stem is {SUMMARY_NAME!r}, the batch summary's name in {out}: rename it")
    summary = BatchSummary(out / SUMMARY_NAME, inputs, lambda p: out / raster_stem(p),
                           header={"command": "geoseg predict", "argv": command_line(), "geoseg_version": __version__,
                                   "out": str(out)},
                           details=_folder_counts, no_details={"buildings": None, "warnings": [],
                                                               "same_content_as": None})
    kept = _touched_but_unchanged(out, inputs, options, reading)
    if kept:
        names = ", ".join(raster_name(p) for p in kept[:5]) + (", ..." if len(kept) > 5 else "")
        notes.append(f"{len(kept)} input{'s' if len(kept) > 1 else ''} modified since predicted, of the same "
                     f"content (read through): kept as done ({names})")
    # copies and links under other names, in this batch or of an earlier one's input (moved since, too):
    # predicted once
    earlier, recorded = _earlier_inputs(out, inputs, options)
    given = {str(p) for p in inputs}
    # an input of this batch is compared by its file below (a record of its own would make it wait for itself)
    recorded = {name: content for name, content in recorded.items() if name not in given}
    same: dict[RasterPath, RasterPath] = dict(same_as_recorded(inputs, recorded, reading))
    rest = [p for p in inputs if p not in same]  # those known by a record are not read again
    rest = _current_first(rest, out, options)
    same |= {p: first for p, first in same_content([*earlier, *rest], reading).items()
             if str(p) in given}
    echo_warnings(notes)  # before the batch's time is spent, not after it
    with recorded_warnings() as caught:  # the jobs return their notes; these are the batch's
        try:
            report = run_batch(inputs, lambda p: out / raster_stem(p), functools.partial(_predict_into, options),
                               scheduler=scheduler, description="predict",
                               is_current=lambda p, folder: _outputs_current(folder, p, options),
                               on_update=summary.update, duplicates={str(p): first for p, first in same.items()},
                               copy_output=lambda first, p, folder: copy_prediction(first, p, folder, options),
                               weigh=functools.partial(_expected_seconds, options=options),
                               startup=_load_seconds, keep_old=is_users_own, plain_kinds=_PLAIN_KINDS)
        except KeyboardInterrupt as stop:
            summary.stop(TERMINATED_EXIT if isinstance(stop, Terminated) else 130)
            raise
        except Exception as exc:
            summary.stop(1, error=f"{exc}")
            raise
        summary.finish(1 if report.failed else 0, notes + warning_lines(caught))
    echo_warnings(warning_lines(caught))
    for p in inputs:  # in the order given, each with its input's name
        echo_warnings(report.done.get(str(p)) or [], prefix=f"{raster_name(p)}: ")
    copied = f", {len(report.copied)} copied (the same content as another input)" if report.copied else ""
    typer.echo(f"{len(report.done) - len(report.copied)} predicted{copied}, {len(report.skipped)} already done, "
               f"{len(report.failed)} failed")
    redone = [p for p in report.redone if p in report.done]  # a failed one keeps its old folder
    if redone:
        again = "predicted or copied again" if any(p in report.copied for p in redone) else "predicted again"
        typer.echo(f"{len(redone)} of them {again}: their folders in {out} held results of other "
                   f"options, of another input or model, of an earlier version of the file or its sidecars or of an earlier geoseg's "
                   f"stretch of its 16-bit or float values, or lacked one of its files "
                   f"({', '.join(raster_name(p) for p in redone[:5])}{', ...' if len(redone) > 5 else ''})")
    if report.failed:
        for p in inputs:  # in the order given, as batch.json lists them (not the order they failed in)
            if str(p) in report.failed:
                typer.echo(f"geoseg predict: error: {failure_line(raster_name(p), report.failed[str(p)], _PLAIN_KINDS)}", err=True)
        raise typer.Exit(1)


def _touched_but_unchanged(out: Path, inputs: list[RasterPath], options: PredictOptions,
                           reading: HashProgress) -> list[RasterPath]:
    """The inputs whose folder in ``out`` would be current but for their files' modification times
    (``geoseg.request_record.touched_only``) and whose content is the one its report records (read
    through under ``reading``); their reports then record the new times (``refresh_input_file``, when
    the files kept them while the others were read), so the batch, and later ones, skip them as done."""
    from geoseg.request_record import refresh_input_file, touched_only

    records: dict[str, dict[str, Any]] = {}
    seen: dict[str, dict[str, Any]] = {}
    for p in inputs:
        folder = out / raster_stem(p)
        if folder.is_dir():
            touched = touched_only(folder, p, options)
            if touched is not None:
                records[str(p)], seen[str(p)] = touched
    found = same_as_recorded([p for p in inputs if str(p) in records], records, reading)
    # its own record (or a twin's), and the file as it was before it was read through
    return [p for p, name in found.items() if records[name] == records[str(p)]
            and refresh_input_file(out / raster_stem(p), p, seen[str(p)])]


def _outputs_current(folder: Path, input_path: RasterPath, options: PredictOptions) -> bool:
    """``outputs_current``, but a folder another run is writing (one INPUT's ``geoseg predict`` into it, a
    cluster's array task) is said to be in use, not "not an output of geoseg predict: move it"."""
    from geoseg.request_record import outputs_current

    try:
        return outputs_current(folder, input_path, options)
    except PredictError:
        holder = in_use_by(folder)
        if holder is None:
            raise
        raise PredictError(f"{folder} is being written by another run ({holder}): left as it is; run this batch "
                           f"again once that run has ended") from None


def _current_first(inputs: list[RasterPath], out: Path, options: PredictOptions) -> list[RasterPath]:
    """``inputs`` with those whose folder in ``out`` is current first (in their order), the rest after.

    Why: of inputs of one content, the first given runs and the others copy its outputs. A copy
    added under a name sorting before a scene already predicted (``a_copy.tif`` beside ``m.tif``) was
    that first: predicted again, the models run for outputs a folder already held. Only inputs of a
    size another input has can be copies, so only their folders are asked."""
    from geoseg.request_record import outputs_current

    sizes: dict[RasterPath, int | None] = {}
    for p in inputs:
        try:
            sizes[p] = None if is_virtual(p) else os.stat(p).st_size
        except OSError:
            sizes[p] = None
    shared = [size for size in sizes.values() if size is not None]

    def current(p: RasterPath) -> bool:
        folder = out / raster_stem(p)
        try:
            return folder.is_dir() and outputs_current(folder, p, options)
        except PredictError:  # a folder not of predict's: its job says so
            return False

    done = {p for p in inputs if sizes[p] is not None and shared.count(sizes[p]) > 1 and current(p)}
    return [p for p in inputs if p in done] + [p for p in inputs if p not in done]


def _earlier_inputs(out: Path, inputs: list[RasterPath],
                    options: PredictOptions) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """What earlier batches into ``out`` left that a copy given to this batch takes its outputs from:
    folders (named by their input's stem) holding outputs made with ``options``, of an input of a size
    one of ``inputs`` has. Returned as the inputs of those whose report records no content (earlier
    versions), when the file is still there and the folder current for it, to compare with
    ``same_content``; and the others' recorded input -> its ``input_content`` (the file may be gone:
    moved or renamed), for ``same_as_recorded``. A folder of this batch's stems counts by its record
    only (a scene moved to another folder under its name: its own folder's outputs). Only reports are
    read, and only those of a matching size are checked further."""
    from geoseg.request_record import outputs_current, outputs_made_with

    sizes = set()
    for p in inputs:
        if not is_virtual(p):
            try:
                sizes.add(os.stat(p).st_size)
            except OSError:
                continue
    mine = {raster_stem(p) for p in inputs}
    files: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    for folder in sorted(out.iterdir()) if sizes and out.is_dir() else ():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            report = json.loads((folder / "report.json").read_text())
            name, size = report["input"], (report.get("input_file") or {}).get("bytes")
            content = report.get("input_content")
            if not isinstance(name, str) or is_virtual(name) or raster_stem(name) != folder.name:
                continue
            if isinstance(content, dict):
                if content.get("bytes") in sizes and outputs_made_with(folder, options):
                    records[name] = content
            elif (folder.name not in mine and size in sizes and os.path.isfile(name)
                  and outputs_current(folder, name, options)):
                files.append(name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a prediction of a file
            continue
    return files, records


def _load_seconds(folder: Path) -> float | None:
    """How long a predicted folder's run spent loading its models (report.json's
    ``timings_s.load_models``): the first input of a batch in this process loads them, the next ones
    find them loaded, so the batch's time left leaves it out (``tiles.batch.BatchTimeLeft``)."""
    return json.loads((folder / "report.json").read_text())["timings_s"]["load_models"]


def _folder_counts(folder: Path, result: Any) -> dict[str, Any]:
    """A predicted folder's entry in the batch summary, from its ``report.json`` (also for a folder
    skipped as already done): ``buildings`` (None without the building model), ``warnings``,
    ``same_content_as`` (the input whose outputs it holds, copied; None when predicted itself)."""
    report = json.loads((folder / "report.json").read_text())
    return {"buildings": report.get("counts", {}).get("buildings"),
            "warnings": list(dict.fromkeys(report.get("warnings", []))),
            "same_content_as": report.get("same_content_as")}


def _scheduler(address: str | None) -> str | None:
    """No address: in this process, one file after another; 'local': a local Dask cluster."""
    return "sync" if address is None else parse_scheduler(address)



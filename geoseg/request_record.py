"""The request a ``predict_scene`` run records in report.json (the input, its size and time,
every option that decides the outputs, the models' digests), and ``outputs_current``: whether an
output folder already holds a run of the same request, so a batch skips it and predicts again
over a stale one.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from geoseg.heads import card_digests, task_card_path
from geoseg.options import PredictError, PredictOptions
from geoseg.strict_json import json_safe
from tiles.pam import statistics_only
from tiles.rasterpath import (RasterPath, absolute_path, absolute_raster_path, as_raster_path, is_virtual,
                              local_file_of, vrt_sources)
from tiles.same_content import recorded_sidecars

__all__ = ["outputs_current", "outputs_made_with", "refresh_input_file", "request_record", "touched_only"]


def _input_name(input_path: RasterPath) -> str:
    """How report.json names the input: a local file by its absolute path (``geoseg eval`` reads the
    input's grid from it, from whatever folder it runs in), a virtual path or URL as given."""
    return str(absolute_raster_path(input_path))


def request_record(input_path: RasterPath, options: PredictOptions) -> dict[str, Any]:
    """What decides a scene's outputs, as report.json records it: the input and every option but the
    batch size (the local card paths given with --model made absolute)."""
    input_path = as_raster_path(input_path)
    return {"input": _input_name(input_path), "input_file": _input_file(input_path), "options": _options_record(options)}


def _options_record(options: PredictOptions) -> dict[str, Any]:
    """Every option but the batch size, the local card paths given with --model made absolute."""
    opts = asdict(options)
    opts.pop("batch_size")
    opts["model_dirs"] = {task: absolute_path(path) for task, path in sorted(options.model_dirs.items())}
    return opts


def _input_file(input_path: RasterPath) -> dict[str, Any] | None:
    """Size and modification time of a local input (None for a URL, or when it is gone): a scene
    replaced under the same name is predicted again by a batch. A VRT's adds ``sources``, the same
    of each file it reads (``path``; ``bytes`` and ``modified_ns`` None for one missing): a tile of
    the mosaic replaced changes the VRT's pixels but not the VRT. Another raster's adds ``sidecars``,
    the same of each other file GDAL reads with it, when there is one. A virtual path into a local
    archive or a subdataset name (``/vsizip//a.zip/b.tif``, ``GPKG:a.gpkg:t``) has only ``sources``:
    the zip or container, which a new delivery replaces."""
    if is_virtual(input_path):
        container = local_file_of(input_path)
        return None if container is None else {"sources": [_source_file(container)]}
    try:
        stat = os.stat(input_path)
    except OSError:
        return None
    record: dict[str, Any] = {"bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}
    sources = vrt_sources(input_path)
    if sources:
        record["sources"] = [_source_file(name) for name in sources]
    else:
        sidecars = _sidecar_files(input_path)
        if sidecars:  # left out when there is none: the reports of such inputs stay as they were
            record["sidecars"] = [_source_file(name) for name in sidecars]
    return record


def _sidecar_files(input_path: Path) -> list[str]:
    """The other files GDAL reads with ``input_path`` (a ``.msk``, ``.aux.xml``, ``.ovr``, world file,
    ``.tab``...), sorted: georeferencing or a mask edited beside an untouched raster changes its
    outputs, and a batch kept the folder."""
    import rasterio  # here: this module is imported by commands that must not load GDAL

    try:
        with rasterio.open(input_path) as src:
            files = src.files
    except rasterio.errors.RasterioError:  # predicting it says why
        return []
    main = os.path.realpath(input_path)
    # statistics a GIS wrote while browsing change nothing predict reads (tiles.pam)
    return sorted(f for f in files if os.path.realpath(f) != main
                  and not (f.lower().endswith(".aux.xml") and statistics_only(f)))


def _source_file(name: str) -> dict[str, Any]:
    """``path``, ``bytes`` and ``modified_ns`` of a file a VRT reads (None for one that is missing)."""
    try:
        stat = os.stat(name)
    except OSError:
        return {"path": name, "bytes": None, "modified_ns": None}
    return {"path": name, "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


def outputs_current(out_dir: Path | str, input_path: RasterPath, options: PredictOptions) -> bool:
    """Whether ``out_dir`` holds a finished ``predict_scene`` output of this input with these options
    (a batch skips such a folder, and predicts the input again over another output of predict).
    Raises ``PredictError`` when ``out_dir`` exists but is no output of predict: it is not replaced."""
    report = _read_report(out_dir)
    if report is None:
        raise PredictError(f"{out_dir} exists and is not an output of geoseg predict (no readable report.json): "
                           f"left as it is; move it or choose another --out")
    wanted = _wanted(input_path, options)
    if "input_file" not in report:  # reports before the input's size and time were recorded
        wanted.pop("input_file")
    given = {"input": report.get("input"), "input_file": report.get("input_file")}
    given = {k: v for k, v in given.items() if k in wanted}
    if isinstance(given["input"], str):  # older reports: the path as typed
        given["input"] = _input_name(given["input"])
    return (given == {k: v for k, v in wanted.items() if k != "options"}
            and _made_as_wanted(out_dir, report, wanted["options"], options, input_path))


def _wanted(input_path: RasterPath, options: PredictOptions) -> dict[str, Any]:
    """``request_record`` as report.json holds it once written (JSON types)."""
    return json.loads(json.dumps(json_safe(request_record(input_path, options)), default=str))


def _made_as_wanted(out_dir: Path | str, report: dict[str, Any], wanted_options: dict[str, Any],
                    options: PredictOptions, input_path: RasterPath) -> bool:
    """Whether ``report``'s folder is complete and was made with these options and models, as they
    read the input today."""
    return (_recorded_options(report) == wanted_options and _complete(out_dir, report)
            and _same_models(report, options) and not _stretched_before_scaling_was_recorded(report, input_path))


def touched_only(out_dir: Path | str, input_path: RasterPath,
                 options: PredictOptions) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ``input_content`` that ``out_dir``'s report.json records, and the input's ``input_file`` as
    it is now, when the folder would be current for ``input_path`` (``outputs_current``) but for
    modification times: the input's own, and those of the sidecars whose content that record keeps
    (``tiles.same_content.recorded_sidecars``; every other file GDAL reads with it unchanged, and the
    same files). None otherwise, and for a VRT or a virtual input. The caller compares the content
    (``same_as_recorded``), then ``refresh_input_file`` with that state.

    Why: a delivery synced again (the same bytes under new times: ``cp`` without ``-p``, a bucket
    sync, ``touch``) was predicted again, every scene of it, as if each had been replaced."""
    report = _read_report(out_dir)
    content = report.get("input_content") if report is not None else None
    was = report.get("input_file") if report is not None else None
    if not isinstance(content, dict) or not isinstance(was, dict) or not isinstance(content.get("sha256"), str):
        return None
    wanted = _wanted(input_path, options)
    now = wanted["input_file"]
    if (not isinstance(now, dict) or "sources" in now or "sources" in was or now == was
            or report.get("input") != wanted["input"] or was.get("bytes") != now["bytes"]
            or content.get("bytes") != now["bytes"]):
        return None
    before = {s.get("path"): s for s in was.get("sidecars", []) if isinstance(s, dict)}
    after = {s["path"]: s for s in now.get("sidecars", [])}
    hashed = set(recorded_sidecars(input_path))
    if before.keys() != after.keys() or any(
            state != before[path] and (state["bytes"] != before[path].get("bytes")
                                       or os.path.realpath(path) not in hashed)
            for path, state in after.items()):
        return None
    return (content, now) if _made_as_wanted(out_dir, report, wanted["options"], options, input_path) else None


def refresh_input_file(out_dir: Path | str, input_path: RasterPath, seen: dict[str, Any]) -> bool:
    """Record ``seen`` (the input's ``input_file`` that ``touched_only`` returned, taken before its
    content was found unchanged) in ``out_dir``'s report.json, so that later runs find the folder
    current without reading the input through again; only while the input is still in that state (a
    file rewritten while others were read through is predicted again). Best effort: False when it is
    not written (the input moved on, or the report could not be: a full disk), and the batch then
    predicts the input again. Written beside and renamed over: an interrupted refresh leaves the old
    report."""
    path = Path(out_dir) / "report.json"
    staged = path.with_name(".report.json.refresh")
    try:
        if json.loads(json.dumps(json_safe(_input_file(as_raster_path(input_path))), default=str)) != seen:
            return False
        report = json.loads(path.read_text())
        report["input_file"] = seen
        staged.write_text(json.dumps(json_safe(report), indent=2, default=str, allow_nan=False) + "\n")
        os.replace(staged, path)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        return False
    return True


def _stretched_before_scaling_was_recorded(report: dict[str, Any], input_path: RasterPath) -> bool:
    """A report without ``scaling`` (before session 28) of an input that is not uint8: it was stretched
    then, and 8-bit data kept in a wider type is now read as its own bytes, so it is predicted again."""
    if "scaling" in report:
        return False
    import rasterio  # here: only old reports of a batch need it

    try:
        with rasterio.open(as_raster_path(input_path)) as src:
            return src.dtypes[0] != "uint8"
    except rasterio.errors.RasterioError:  # unreadable now: predicting it again says why
        return True


def outputs_made_with(out_dir: Path | str, options: PredictOptions) -> bool:
    """Whether ``out_dir`` holds a finished ``predict_scene`` output made with these options and models,
    whatever its input (which may be gone: a batch gives its outputs to a moved scene of the content
    its report records). False for a folder that is no output of predict."""
    report = _read_report(out_dir)
    if report is None:
        return False
    wanted = json.loads(json.dumps(json_safe(_options_record(options)), default=str))
    return _recorded_options(report) == wanted and _complete(out_dir, report) and _same_models(report, options)


def _read_report(out_dir: Path | str) -> dict[str, Any] | None:
    """``out_dir``'s report.json, None when it has none that reads as a predict report."""
    try:
        report = json.loads((Path(out_dir) / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("options"), dict) else None


def _recorded_options(report: dict[str, Any]) -> dict[str, Any]:
    """A report's options as a run of today records them (fields older reports lack get their defaults)."""
    options = {k: v for k, v in report["options"].items() if k != "batch_size"}
    options.setdefault("model_dirs", {})  # reports before the cards were recorded: shipped ones
    options.setdefault("bands", None)  # reports before --bands: the raster's own choice
    options.setdefault("allow_coarse", False)  # reports before --allow-coarse
    return options


def _complete(out_dir: Path | str, report: dict[str, Any]) -> bool:
    """Whether every file the report lists is there."""
    return all((Path(out_dir) / name).is_file() for name in report.get("outputs", []))


def _same_models(report: dict[str, Any], options: PredictOptions) -> bool:
    """Whether the card and weight files a run with ``options`` would load are those ``report``'s models
    were loaded from (same digests): a card retrained in place is another model under the same path."""
    models = report.get("models")
    for task, summary in (models.items() if isinstance(models, dict) else ()):
        if not isinstance(summary, dict) or "card_sha256" not in summary:
            continue  # reports before the digests were recorded
        try:
            now = card_digests(task_card_path(task, options))
        except (ValueError, OSError):
            return False  # the card is gone or unreadable: predicted again, which says why it fails
        if any(summary.get(key) != value for key, value in now.items()):
            return False
    return True

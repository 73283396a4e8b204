"""The default job runner: ``geoseg.pipeline.predict_scene`` with a job's options.

A module of its own, importing the pipeline (and torch) at the top, so that the server
process never loads it while a standby worker process can preload it before a job comes.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.redact import redact_paths
from api.worker import INPUT_NAME_KEY
from geoseg.heads import preload_heads
from geoseg.pipeline import PredictOptions, predict_scene


def run_pipeline(input_path: Path, out_dir: Path, options: dict[str, Any],
                 progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Run one job; unknown option names are ignored, values are checked by the pipeline.

    ``options[INPUT_NAME_KEY]`` (set by the worker, not by clients) is the upload's own file
    name: the buildings' ``source`` and report.json's ``input`` say it, not ``input.tif``.
    ``options["model_dirs"]`` (set by the supervisor from the job's ``models``, by name) are the
    cards to load, as ``geoseg predict --model TASK=CARD`` loads them.
    """
    known = {f.name for f in dataclasses.fields(PredictOptions)}
    kwargs = {k: v for k, v in options.items() if k in known and v is not None}
    name = options.get(INPUT_NAME_KEY) or input_path.name
    report = predict_scene(input_path, out_dir, PredictOptions(**kwargs), progress, name=name)
    return hide_server_paths(report, out_dir / "report.json", name, options.get("models") or {})


def warm() -> None:
    """Load both profiles' shipped models (a standby worker, before its job comes)."""
    for profile in ("accurate", "fast"):
        preload_heads(profile)


run_pipeline.warm = warm  # type: ignore[attr-defined]  # found by api.worker.standby_main


def hide_server_paths(report: dict[str, Any], report_file: Path, name: str,
                      models: dict[str, str] | None = None) -> dict[str, Any]:
    """Clients download report.json: name the input by ``name``, not by its path on the server, and
    the models a job named (``models``: task -> name) by their names, not their cards' paths (in
    ``options.model_dirs``, and in warnings such as a skipped GCN's, which keep file names only)."""
    def hidden(report: dict[str, Any]) -> dict[str, Any]:
        report = {**report, "input": name}
        if models and isinstance(report.get("options"), dict):
            report["options"] = {**report["options"], "model_dirs": dict(models)}
        if isinstance(report.get("warnings"), list):
            report["warnings"] = [redact_paths(w) if isinstance(w, str) else w for w in report["warnings"]]
        return report

    report = hidden(report)
    if report_file.is_file():
        on_disk = hidden(json.loads(report_file.read_text()))
        tmp = report_file.with_name(report_file.name + ".tmp")
        tmp.write_text(json.dumps(on_disk, indent=2, default=str))
        os.replace(tmp, report_file)
    return report

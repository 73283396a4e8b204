"""The default job runner: ``geoseg.pipeline.predict_scene`` with a job's options.

A module of its own, importing the pipeline (and torch) at the top, so that the server
process never loads it while a standby worker process can preload it before a job comes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg.pipeline import PredictOptions, predict_scene


def run_pipeline(input_path: Path, out_dir: Path, options: dict[str, Any],
                 progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Run one job; unknown option names are ignored, values are checked by the pipeline."""
    known = {f.name for f in dataclasses.fields(PredictOptions)}
    kwargs = {k: v for k, v in options.items() if k in known and v is not None}
    return predict_scene(input_path, out_dir, PredictOptions(**kwargs), progress)

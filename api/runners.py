"""A job runner, named ``module:function`` so that a job's fresh process can import it
(``GEOSEG_RUNNER``; default ``api.pipeline_runner:run_pipeline``): its name, the start-up
check, the import.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[float, str], None]
#: ``runner(input_path, out_dir, options, progress) -> report``
Runner = Callable[[Path, Path, dict[str, Any], Progress], dict[str, Any]]


def runner_spec(runner: Runner | str) -> str:
    """``module:function`` for a runner, so a fresh child process can import it."""
    if isinstance(runner, str):
        return runner
    return f"{runner.__module__}:{runner.__qualname__}"


def _split_spec(spec: str, origin: str = "") -> tuple[str, str]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"runner {spec!r}{origin} is not of the form 'module:function'")
    return module_name, attr


def check_runner_spec(spec: str) -> None:
    """Refuse a runner whose module is not on the import path, without importing it (the real
    runner imports torch: the server process never loads it). Left unchecked, every job's process
    failed with ModuleNotFoundError, three attempts each, behind a healthy /healthz."""
    module_name, _ = _split_spec(spec, " (GEOSEG_RUNNER)")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ValueError(f"runner {spec!r} (GEOSEG_RUNNER): no module {module_name!r} on the import path")


def resolve_runner(spec: str) -> Runner:
    """Import the runner named ``module:function``; a clear error if it is not there."""
    module_name, attr = _split_spec(spec)
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"runner {spec!r} is not a callable")
    return fn

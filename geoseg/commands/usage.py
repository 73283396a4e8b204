"""Usage errors found inside a command: click's own kind, so they end as click's do (one line, exit 2).

Why: click refuses a value of the wrong type or a missing option with exit 2 and the help hint, while
the commands' own checks of a value's range or choice (``--profile turbo``, ``--batch-size 0``) or of
options that do not go together ended as a failed run, exit 1. A script told "you called me wrong"
from "the run failed" only for some mistakes. ``geoseg.cli`` formats what is raised here.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

#: the exceptions module of the click typer runs on: click's own, or the copy newer typers vendor
click_errors = sys.modules[typer.BadParameter.__module__]
UsageError = click_errors.UsageError


@contextmanager
def usage_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Raise each of ``kinds`` raised inside as a usage error: wrap checks of the options alone, made
    before any input, label, chip or model is read (what those hold is a run's failure, exit 1)."""
    try:
        yield
    except kinds as exc:
        raise UsageError(str(exc)) from None

"""Warnings as the commands print them: ``warning: <message>``, one line each, distinct messages.

Why: Python's own display is two lines (``file:line: UserWarning: ...`` and the source line), a
developer's view that scripts and logs reading one line per problem cannot use.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised inside (on this, the main, thread's watch), recorded each time they are
    raised (a batch's inputs may share a note). "always" goes after the filters in force, so the
    targeted ones installed at import (tiles/georeferencing_warnings.py, the ONNX tracer's in
    geoseg/infer.py) and Python's own (deprecations, unclosed resources) still ignore theirs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", append=True)
        yield caught


def warning_lines(caught: list) -> list[str]:
    """The distinct messages of caught warnings, in order; deprecations are for developers."""
    lines: list[str] = []
    for w in caught:
        text = str(w.message)
        if text not in lines and not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            lines.append(text)
    return lines


def echo_warnings(lines: list[str], prefix: str = "") -> None:
    for text in lines:
        typer.echo(f"warning: {prefix}{text}", err=True)


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """The warnings raised inside, printed as ``warning:`` lines when the block ends (however it ends)."""
    with recorded_warnings() as caught:
        try:
            yield
        finally:
            echo_warnings(warning_lines(caught))

"""``hashing_progress``: what a batch shows while it reads inputs through to compare them (SHA-256)
before its own bar, when that is many bytes.

Why: two same-size multi-GB scenes (or a scene moved since an earlier batch, checked against its
record) are read through whole before ``geoseg predict`` draws its bar: at about 0.5 GB/s, minutes
with no word, as if the command hung. Above ``QUIET_BYTES`` a terminal gets a transient bar (bytes,
speed, time left; erased when done, so the batch's output is as before) and a log file one line;
below, nothing (a batch of small scenes stays quiet).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tiles.progress_console import logs_lines, progress_console
from tiles.same_content import HashProgress

__all__ = ["QUIET_BYTES", "hashing_progress"]

#: reading fewer bytes than this (about half a second) says nothing
QUIET_BYTES = 256 * 2**20


def _size(n: int) -> str:
    """Bytes as a person reads them (decimal units, as the bar's own columns)."""
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def hashing_line(description: str, total: int, files: int) -> str:
    """The one line (a log) or bar label (a terminal) for ``files`` inputs read through, ``total`` bytes."""
    inputs = f"{files} input{'s' if files != 1 else ''}"
    return f"{description}: reading {inputs} through ({_size(total)}, SHA-256) to find those of the same content"


def hashing_progress(description: str, console: Console | None = None) -> HashProgress:
    """A ``tiles.same_content.HashProgress`` that shows reading through of ``QUIET_BYTES`` or more:
    on a terminal a transient bar, else one line (``console``: rich's default, stdout)."""

    @contextmanager
    def progress(total: int, files: int) -> Iterator[Callable[[int], None]]:
        if total < QUIET_BYTES:
            yield lambda n: None
            return
        out = console or progress_console()
        if logs_lines(out):  # a log: no bar frames, one line saying why the wait
            out.print(hashing_line(description, total, files), highlight=False, soft_wrap=True, markup=False,
                      emoji=False)
            yield lambda n: None
            return
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=out, transient=True) as bar:
            task = bar.add_task(hashing_line(description, total, files), total=total)
            yield lambda n: bar.advance(task, n)

    return progress

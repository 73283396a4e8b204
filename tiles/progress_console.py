"""The console a progress bar draws on: a terminal's live frames, or a log's lines.

rich takes ``FORCE_COLOR`` (which many CI systems set, even to 0) for a terminal, and drew its live
frames, ten a second joined by carriage returns, into a job's log file; on ``TERM=dumb`` it draws no
frame at all, and the commands, which print lines only where there is no terminal, said nothing until
the end. Here a terminal is a stream that is one, and a dumb terminal gets the lines.
"""
from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console


class _ProgressStream:
    """The stream a bar is drawn on, which cannot stop the run it shows: a write or flush that fails
    (the reader of a pipe gone, ``| head -1``; a log on a full disk, ``> /dev/full``) silences it, and
    the stream's descriptor is pointed at ``/dev/null`` so that later lines, and Python's own flush at
    exit, fail no more.

    Why: rich ends the process on a broken pipe (``SystemExit(1)``), so ``geoseg predict ... | head -1``
    exited 1 with nothing written and a batch's batch.json stayed 'running'; a full log disk failed
    the scene with 'No space left on device', which a user blamed on --out's disk."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def _lose(self) -> None:
        self.lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's stream)
            pass

    def write(self, text: str) -> int:
        """``text`` written, or dropped once the stream failed: its length either way (what a stream
        answers), so rich draws on as if it were read."""
        if not self.lost:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # ValueError: a stream closed meanwhile
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lose()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the stream's
        return getattr(self._stream, name)


def progress_console(stderr: bool = False) -> Console:
    """rich's console for a bar on stdout (or ``stderr``), a terminal only where that stream is one;
    a stream that fails cannot stop the run (``_ProgressStream``)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream is None:  # started with the stream closed (`>&-`, pythonw): rich drew nowhere, as here
        return Console(file=open(os.devnull, "w"), force_terminal=False)  # noqa: SIM115 -- the console's
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        tty = False
    return Console(file=_ProgressStream(stream), force_terminal=None if tty else False)


def logs_lines(console: Console) -> bool:
    """Whether progress on ``console`` goes as lines: no terminal, or a dumb one (no frames drawn)."""
    return not console.is_terminal or console.is_dumb_terminal

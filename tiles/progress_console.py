"""The console a progress bar draws on: a terminal's live frames, or a log's lines.

rich takes ``FORCE_COLOR`` (which many CI systems set, even to 0) for a terminal, and drew its live
frames, ten a second joined by carriage returns, into a job's log file; on ``TERM=dumb`` it draws no
frame at all, and the commands, which print lines only where there is no terminal, said nothing until
the end. Here a terminal is a stream that is one, and a dumb terminal gets the lines.
"""
from __future__ import annotations

import sys

from rich.console import Console


def progress_console(stderr: bool = False) -> Console:
    """rich's console for a bar on stdout (or ``stderr``), a terminal only where that stream is one."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        tty = False
    return Console(stderr=stderr, force_terminal=None if tty else False)


def logs_lines(console: Console) -> bool:
    """Whether progress on ``console`` goes as lines: no terminal, or a dumb one (no frames drawn)."""
    return not console.is_terminal or console.is_dumb_terminal

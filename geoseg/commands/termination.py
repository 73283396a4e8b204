"""SIGTERM stops a command as Ctrl-C does: ``Terminated`` (a KeyboardInterrupt) in the main thread.

Why: ``timeout``, a cancelled CI job, ``systemctl stop``, Kubernetes and batch schedulers end a
process with SIGTERM, which Python's default action obeys at once: a batch left its
half-written ``.<stem>.part`` folder, said nothing, and its ``batch.json`` kept saying
``running``. Raised as an interruption, the same clean-up runs as for Ctrl-C (nothing
half-written kept, the summary says ``interrupted``, one line on stderr), and the command exits
143 (128 + SIGTERM), as a process killed by it would. A second SIGTERM during the clean-up is
obeyed at once.
"""
from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TERMINATED_EXIT", "Terminated", "sigterm_interrupts"]

#: the exit code of a command stopped by SIGTERM (the shell's 128 + 15)
TERMINATED_EXIT = 128 + signal.SIGTERM

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread was (a KeyboardInterrupt, so Ctrl-C's clean-up runs).
    Its message is ``SIGTERM``: code below the commands (the training loops) names what stopped a
    run from it without importing this module."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not held up by the clean-up
    raise Terminated("SIGTERM")


def sigterm_interrupts(command: F) -> F:
    """Run ``command`` with SIGTERM raising ``Terminated``; the previous handler comes back after it."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
            return command(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return command(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run  # type: ignore[return-value]

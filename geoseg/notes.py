"""What a predict run tells its user, collected in the run's own list of notes.

Why a list and not ``warnings``: capturing the warnings of one run needs
``warnings.catch_warnings``, which swaps the process-wide filter list and is not thread-safe.
A Dask worker with several threads (``dask worker`` gives one per core) runs several predict jobs
at once; their catch blocks lost one input's notes and gave them to another. Code that serves a
run and direct library calls alike takes ``notes``: a run's list gets the message, a direct call
(``notes=None``) gets the ``UserWarning`` it always did. ``predict_scene`` puts its notes in
``report.json`` and warns them once, at its end, unless its caller prints them itself.
"""
from __future__ import annotations

import warnings

__all__ = ["tell"]


def tell(notes: list[str] | None, message: str, stacklevel: int = 2) -> None:
    """``message`` into the run's ``notes``, or, without a run, a ``UserWarning`` attributed as
    ``warnings.warn(message, stacklevel=stacklevel)`` in the caller would be."""
    if notes is not None:
        notes.append(message)
    else:
        warnings.warn(message, stacklevel=stacklevel + 1)

"""The ``--out`` folder of a command: created and proved writable before the long work starts.

Why: ``geoseg predict`` loaded models and ``geoseg train`` trained for the whole budget before
finding that ``--out`` was a file or could not be written, and lost the result.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def make_out_folder(out: Path) -> None:
    """Create ``out`` and check a file can be written in it (ValueError, one line, if not)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ValueError(f"cannot write into the --out folder {out}: {exc.strerror or exc}") from None

"""The staging folder a prediction writes its outputs into, inside its ``out_dir``, before renaming them into
place; and the removal of those a run left behind.

Why: a run stopped where it could not clean up (``kill -9``, a second Ctrl-C while the class map was still
being written, a power cut) left its ``.partial-*`` folder, up to ~19 bytes a pixel of accumulators (2.9 GB
for a 12288 px scene), and later runs into that folder kept it for ever. Each staging folder now names its
run (an empty ``.run-PID@HOST`` folder inside it), and a run removes those of its host whose process is gone.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

PREFIX = ".partial-"
_OWNER = re.compile(r"\.run-(?P<pid>\d+)@(?P<host>.+)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def make_staging(out_dir: Path) -> Path:
    """A new staging folder in ``out_dir``, marked as this process's."""
    staging = out_dir / f"{PREFIX}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / f".run-{os.getpid()}@{_host()}").mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_abandoned(out_dir: Path) -> list[Path]:
    """Remove the staging folders in ``out_dir`` of runs on this host whose process is gone; returns them.
    A live run's folder, another host's (a shared disk) and one without a mark (made before session 31)
    are left as they are."""
    removed = []
    for staging in out_dir.glob(f"{PREFIX}*"):
        marks = [m for m in (_OWNER.fullmatch(p.name) for p in staging.glob(".run-*")) if m] if staging.is_dir() else []
        if len(marks) == 1 and marks[0]["host"] == _host() and not _alive(int(marks[0]["pid"])):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed

"""The staging folder a prediction writes its outputs into, inside its ``out_dir``, before renaming them into
place; and the removal of those a run left behind.

Why: a run stopped where it could not clean up (``kill -9``, a second Ctrl-C while the class map was still
being written, a power cut) left its ``.partial-*`` folder, up to ~19 bytes a pixel of accumulators (2.9 GB
for a 12288 px scene), and later runs into that folder kept it for ever. Each staging folder's name now says
whose it is (``.partial-HEX.PID@HOST``: a mark inside it could be removed while a writer refilled the folder),
and a run removes those of its host whose process is gone.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

PREFIX = ".partial-"
_OWNED = re.compile(re.escape(PREFIX) + r"[0-9a-f]+\.(?P<pid>\d{1,10})@(?P<host>[A-Za-z0-9.-]+)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def make_staging(out_dir: Path) -> Path:
    """A new staging folder in ``out_dir``, named as this process's."""
    staging = out_dir / f"{PREFIX}{uuid.uuid4().hex[:8]}.{os.getpid()}@{_host()}"
    staging.mkdir()
    return staging


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` runs here (another user's, or a pid the system cannot take: not gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def remove_abandoned(out_dir: Path) -> list[Path]:
    """Remove the staging folders in ``out_dir`` of runs on this host whose process is gone; returns them.
    A live run's folder, another host's (a shared disk) and one named otherwise (made before session 31)
    are left as they are; a folder that cannot be looked at is left too (this is housekeeping, never a
    reason for the run to fail)."""
    removed = []
    try:
        candidates = list(out_dir.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for staging in candidates:
        owner = _OWNED.fullmatch(staging.name)
        if owner and owner["host"] == _host() and _gone(int(owner["pid"])) and staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def other_hosts_note(out_dir: Path) -> str | None:
    """A note naming the staging folders in ``out_dir`` of runs on other hosts, which ``remove_abandoned``
    leaves (it cannot tell whether they still run); None when there are none.

    Why: a cluster task killed on one node and re-run on another (a SLURM requeue, a new pod) left its
    folder, up to ~19 bytes a pixel, for ever, and nothing said so."""
    try:
        others = sorted(p.name for p in out_dir.glob(f"{PREFIX}*")
                        if (owner := _OWNED.fullmatch(p.name)) and owner["host"] != _host() and p.is_dir())
    except OSError:
        return None
    if not others:
        return None
    shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    return (f"{out_dir} holds {len(others)} staging folder{'s' if len(others) > 1 else ''} of runs on other hosts "
            f"({shown}): this run cannot tell whether they still run; remove them once those runs are gone "
            f"(each holds up to ~19 bytes a pixel of its scene)")

"""File modes as the user's umask asks for them, for files whose library fixes its own mode.

Why: a team sharing an output folder (setgid, umask 002) needs every file and folder a run leaves
there writable by the group, or a colleague can neither re-run into it after a killed run nor edit
its results. SQLite creates a GeoPackage 0644 whatever the umask, and ``tempfile.mkdtemp`` a folder
0700 by design.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

__all__ = ["current_umask", "follow_umask"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """This process's umask. Read from ``/proc/self/status`` where Linux gives it (reading it the
    portable way sets it for a moment, which a thread creating a file then would meet)."""
    try:
        found = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(path: Path, mode: int = 0o666) -> None:
    """Give ``path`` ``mode`` less the umask (0o666 for a file, 0o777 for a folder), as a plain
    ``open`` or ``mkdir`` would have; where the file system keeps no modes (a FAT or exFAT disk refuses
    the chmod) the file stays as made: a mode must never fail a run after its model work."""
    try:
        os.chmod(path, mode & ~current_umask())
    except OSError:
        pass

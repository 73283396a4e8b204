"""One run at a time per ``--out`` folder: an OS lock on a file in it, held while the command writes there.

Why: runs started from cron, CI or systemd overlap (tonight's batch while last night's still runs).
Two ``geoseg predict`` batches into one DIR removed each other's ``.<stem>.part`` folders half-way
(inputs failed in both with GDAL's 'unable to open database file'), replaced each other's
``batch.json`` and could replace a finished folder while it was read; two ``geoseg tile`` runs
moved and rewrote one chip set; two trainings of one task replaced each other's model files.
The second run is now refused at once, with one line naming the first (its pid, command and start).

The lock is ``flock`` on ``<out>/.geoseg.lock`` (``.geoseg-<key>.lock`` for a narrower claim): the
kernel drops it when its holder ends, killed with -9 too, so a lock is never stale; the file says
who holds it, and is removed by the holder when it lets go (a killed holder's file is taken over
by the next run). On a file system without locks (some network ones) runs go on unlocked.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.commands.outdir import make_out_folder
from geoseg.commands.warning_lines import echo_warnings
from tiles.output_lock import remove_if_unheld

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not kept apart there
    fcntl = None  # type: ignore[assignment]

__all__ = ["OutFolderInUse", "hold_out_folder", "in_use_by", "lock_path"]


class OutFolderInUse(ValueError):
    """Another run holds the ``--out`` folder (one line, naming it)."""


def lock_path(out: Path, key: str = "") -> Path:
    """The lock file of ``out`` (of one ``key``'s claim on it, when given)."""
    return Path(out) / (f".geoseg-{key}.lock" if key else ".geoseg.lock")


@contextmanager
def hold_out_folder(out: Path, command: str, key: str = "") -> Iterator[None]:
    """Make ``out`` (``make_out_folder``) and hold its lock while the block runs; ``OutFolderInUse``
    at once if another process holds it (a folder it made is removed again if the block fails and
    leaves it empty). ``command`` (e.g. ``geoseg predict``) is what a refused
    run is told is using the folder; ``key`` narrows the claim (``train-buildings``: other tasks
    may train into the same folder at once)."""
    made = not Path(out).exists()
    make_out_folder(out)
    try:
        if fcntl is None:
            yield
            return
        path = lock_path(out, key)
        fd = _lock(path, command)
        if fd is None:  # a file system without locks: runs are not kept apart there
            # said, not silent: two array tasks into one DIR there lost batch.json records and scratch
            echo_warnings([f"the file system of {out} has no locks (flock): another run into it at the same "
                           "time would not be refused; give each run an --out of its own there"])
            yield
            return
        try:
            yield
        finally:
            try:
                path.unlink()  # while still held: a run that opened this file retries on a new one
            except OSError:
                pass
            os.close(fd)
    except BaseException:
        if made:  # a run refused or failed leaves no empty --out folder behind
            try:
                Path(out).rmdir()
            except OSError:  # not empty: what it wrote is kept
                pass
        raise


def _lock(path: Path, command: str) -> int | None:
    """The open, locked ``path`` with this run's record written in it; None (and no file) where the
    file system has no locks (some network file systems): the run goes on, as before locks."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides: a group's shared folder
        except PermissionError:
            # another user's lock file (the folder itself is writable: a group's shared --out): one a run
            # killed with kill -9 left is removed and this run's made; one a live run holds refuses this run
            try:
                if remove_if_unheld(path):
                    continue
            except OSError as exc:  # a sticky folder: another user's file cannot be removed
                raise ValueError(f"cannot write into the --out folder {path.parent}: {exc.strerror or exc}") from None
            raise OutFolderInUse(f"{path.parent} is in use by another run ({_holder_of(path)}): wait for it to "
                                 f"end, or use another --out") from None
        except OSError as exc:
            raise ValueError(f"cannot write into the --out folder {path.parent}: {exc.strerror or exc}") from None
        try:
            _exclusive(fd)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutFolderInUse(f"{path.parent} is in use by another run ({holder}): wait for it to end, "
                                 f"or use another --out") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            os.close(fd)
            path.unlink(missing_ok=True)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its holder let go and removed it between our open and lock
            same = False
        if not same:
            os.close(fd)
            continue
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                  .replace("+00:00", "Z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as exc:  # a full disk: one line before any work, no empty lock file left
            path.unlink(missing_ok=True)
            os.close(fd)
            raise ValueError(f"cannot write into the --out folder {path.parent}: {exc.strerror or exc}") from None
        return fd


def _exclusive(fd: int, tries: int = 5) -> None:
    """``flock(LOCK_EX | LOCK_NB)``, tried again for a moment: ``in_use_by`` holds a shared lock for an
    instant, and a run starting then was refused as if the folder were in use (448 of 2000 in a test)."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.01)


def _holder_of(path: Path) -> str:
    """``_holder`` of the lock file at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "pid unknown"
    try:
        return _holder(fd)
    finally:
        os.close(fd)


def in_use_by(out: Path) -> str | None:
    """Who holds ``out``'s lock ('geoseg predict, pid 123, started ...'), or None when no run does (or
    the file system has no locks). Nothing is created: a folder without a lock file is free."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_path(out), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # a shared lock taken is dropped with it
    return None


def _holder(fd: int) -> str:
    """Who holds the lock, from its file: 'geoseg predict, pid 123, started 2026-...Z'."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode())
        # the host too: on a shared file system the pid alone names no process (a cluster's other nodes)
        host = f", on host {record['host']}" if record.get("host") else ""
        return f"{record['command']}, pid {record['pid']}, started {record['started']}{host}"
    except (OSError, ValueError, KeyError, TypeError):  # it has only just taken the lock
        return "pid unknown, just started"

"""One writer at a time per batch output, across processes and machines sharing the folder.

Why: after Ctrl-C a Dask worker of an external cluster (``--scheduler tcp://...``) goes on with
the input it has begun (Dask cannot stop a running task), while the user's next run of the same
command starts that input again. Both wrote the same scratch path, each removing or renaming the
other's half-written files. ``tiles.batch`` now gives each run its own scratch path and holds this
lock from before its job starts until the output is in place, so the later run waits for the
earlier one, then finds its finished output.

The lock is an ``flock`` on ``.<name>.writing.lock`` beside the output (not ``.<name>.lock``: an
input of stem ``geoseg`` would then take ``geoseg predict``'s own ``--out`` lock,
``geoseg.commands.outlock``): the OS drops it when its process dies (a worker killed by the OOM
killer leaves no stale lock), and Linux's NFS client maps it to a byte-range lock the server
sees. The file is removed on release, so no lock files stay behind; a waiter that got the lock of
a file removed meanwhile takes the new one instead. On a file system without locks the block runs
unlocked (each run's scratch path is still its own).
"""
from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["lock_path", "output_lock", "remove_if_unheld"]

#: what flock raises on a file system that has no locks (some network ones)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: a hidden sibling."""
    return output.with_name(f".{output.name}.writing.lock")


def remove_if_unheld(path: Path, wait: bool = False) -> bool:
    """Remove ``path``, a lock file this user cannot open for writing (another user's, left by a killed
    run in a group's shared folder), when no process holds its lock; False when one does (``wait``: once
    it has let go, the file left as its holder leaves it). An unlink refused (a sticky folder) raises.

    Why not lock it read-only: NFS grants an exclusive lock on a file open for writing only, and the
    file's record would go on naming the dead run."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # gone meanwhile: the caller makes its own
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
        if wait:
            return True  # its holder let go (and removed it, or the next pass removes it)
        path.unlink(missing_ok=True)  # while locked shared: one who opened it finds another file, and retries
        return True
    finally:
        os.close(fd)


def _lock(fd: int, path: Path, on_wait: Callable[[Path], None] | None) -> bool:
    """Lock ``fd`` (of ``path``), waiting while another holds it; ``on_wait(path)`` first when
    it is held and ``on_wait`` is given. Whether ``on_wait`` was called."""
    if on_wait is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:  # held by another run: say so, then wait
        pass
    on_wait(path)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


def _locked(path: Path, on_wait: Callable[[Path], None] | None = None) -> int | None:
    """The open descriptor of ``path`` once this process holds its lock (waiting for it; ``on_wait``
    called once if it has to); None where the file system has no locks."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides: a group's shared folder
        except PermissionError:  # another user's: removed if no run holds it (a killed run's), else waited for
            if not remove_if_unheld(path):
                if on_wait is not None:
                    on_wait(path)
                    on_wait = None
                remove_if_unheld(path, wait=True)
            continue
        try:
            if _lock(fd, path, on_wait):
                on_wait = None  # said once: a lock file replaced meanwhile is waited for in silence
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LOCKS:
                raise
            path.unlink(missing_ok=True)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            on_disk, held = os.stat(path), os.fstat(fd)
            if (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except FileNotFoundError:  # its holder removed it on release: lock the next one
            pass
        os.close(fd)


@contextmanager
def output_lock(output: Path, on_wait: Callable[[Path], None] | None = None) -> Iterator[None]:
    """Hold ``output``'s lock for the block, waiting while another process holds it; ``on_wait``
    is called with the lock file's path once, before a wait (a batch tells its user what it waits
    for: its bar stood still with no word)."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(path, on_wait)
    try:
        yield
    finally:
        if fd is not None:
            try:
                path.unlink(missing_ok=True)  # while held: a waiter on it then sees it gone
            finally:
                os.close(fd)

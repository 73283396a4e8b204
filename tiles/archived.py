"""The bytes of a file GDAL reads from a local zip, tar or gzip file (``/vsizip//a.zip/b.tif``,
``/vsitar//a.tar/b.tif``, ``/vsigzip//b.tif.gz``), read with Python's own ``zipfile``, ``tarfile`` and
``gzip`` (no GDAL: ``tiles.splits`` imports it).

Why: ``tiles.splits`` knows the shared data set's scenes by their bytes, so that a renamed copy of a
test scene stays test; a scene cut from an archive must be known the same way, or a zipped copy of
the Kampala test scenes would have its chips put in train.
"""
from __future__ import annotations

import gzip
import tarfile
import zipfile
from collections.abc import Callable
from typing import IO

from tiles.rasterpath import RasterPath, archive_member

__all__ = ["ArchivedFile", "archived_file"]

#: a file's size in bytes (of a gzip file, its uncompressed size modulo 2**32, as the format stores
#: it) and a function opening it for reading
ArchivedFile = tuple[int, Callable[[], IO[bytes]]]


def archived_file(location: RasterPath) -> ArchivedFile | None:
    """The size of the file a ``/vsizip/``, ``/vsitar/`` or ``/vsigzip/`` location names in a local
    archive, and how to open it; None for any other location or a member the archive lacks."""
    found = archive_member(location)
    if found is None:
        return None
    kind, archive, member = found
    if kind == "gzip":
        with open(archive, "rb") as packed:  # ISIZE, the format's last 4 bytes
            packed.seek(-4, 2)
            size = int.from_bytes(packed.read(4), "little")
        return size, lambda: gzip.open(archive, "rb")
    if kind == "zip":
        with zipfile.ZipFile(archive) as zipped:
            try:
                size = zipped.getinfo(member).file_size
            except KeyError:
                return None

        def open_zipped() -> IO[bytes]:
            zipped = zipfile.ZipFile(archive)
            return zipped.open(member)  # keeps the archive open until it is closed

        return size, open_zipped
    with tarfile.open(archive) as tarred:
        try:
            info = tarred.getmember(member)
        except KeyError:
            return None
        if not info.isfile():
            return None
        size = info.size

    def open_tarred() -> IO[bytes]:
        return tarfile.open(archive).extractfile(member)  # type: ignore[return-value]

    return size, open_tarred

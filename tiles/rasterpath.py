"""Raster locations as the user gives them: local files, GDAL virtual paths and URLs.

Why: GDAL reads ``/vsizip//tmp/a.zip/b.tif``, ``/vsicurl/https://...`` or ``https://...``, but
``pathlib.Path`` collapses the ``//`` of the first (GDAL then looks for a relative path) and
``is_file()`` is False for all of them. Such locations stay strings, are checked by opening
them, and are named after their last path component.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

__all__ = ["RASTER_SUFFIXES", "RasterPath", "absolute_raster_path", "as_raster_path", "is_virtual", "not_found", "raster_exists",
           "raster_name", "raster_stem", "rasters_in"]

RasterPath = str | Path

#: what a folder input contributes: raster files, not their sidecars (.aux.xml, .ovr, .msk, world files)
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")


def is_virtual(location: RasterPath) -> bool:
    """True for a GDAL virtual file system path (``/vsi...``) or a URL (``scheme://...``)."""
    text = str(location)
    return text.startswith("/vsi") or "://" in text


def as_raster_path(location: RasterPath) -> RasterPath:
    """A ``Path`` for a local file; a virtual path or URL unchanged, as a string."""
    return str(location) if is_virtual(location) else Path(location)


def absolute_raster_path(location: RasterPath) -> RasterPath:
    """A local file as an absolute ``Path`` (it means the same file from any folder: a Dask worker's,
    ``geoseg eval``'s); a virtual path or URL unchanged, as a string."""
    return str(location) if is_virtual(location) else Path(os.path.abspath(location))


def raster_name(location: RasterPath) -> str:
    """The file name: ``b.tif`` for ``/vsizip//tmp/a.zip/b.tif`` and ``https://h/b.tif?sig=x``."""
    if not is_virtual(location):
        return Path(location).name
    text = str(location)
    if "://" in text:  # the URL, from its scheme on, without query or fragment
        text = urlsplit(text[text.rfind("/", 0, text.index("://")) + 1:]).path
    return PurePosixPath(text).name


def raster_stem(location: RasterPath) -> str:
    """The file name without its last suffix (a batch's output folder)."""
    return PurePosixPath(raster_name(location)).stem


def raster_exists(location: RasterPath) -> bool:
    """A local path must be a file; a virtual path or URL must open as a raster (GDAL has no
    cheaper test that works for every virtual file system)."""
    if not is_virtual(location):
        return Path(location).is_file()
    import rasterio  # here: the CLI imports this module for --help too
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(str(location)):
            return True
    except RasterioIOError:
        return False


def not_found(location: RasterPath) -> str:
    """The message for an input that does not exist; a pattern the shell left as it was (it matched
    no file: ``scenes/*.tif`` in an empty folder) is named as such."""
    hint = " (a shell pattern that matched no file?)" if any(c in raster_name(location) for c in "*?[") else ""
    return f"input not found: {location}{hint}"


def rasters_in(folder: Path) -> list[Path]:
    """The raster files directly inside ``folder``, sorted by name (not its sub-folders: results
    written under the folder must not become inputs of the next run; not hidden files: macOS leaves
    an AppleDouble ``._scene.tif`` of metadata beside each file it copies to a USB disk, a network
    share or a zip, and each was a failed input that made the whole batch exit 1)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RASTER_SUFFIXES)

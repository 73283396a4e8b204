"""GDAL's own stderr lines kept out of the commands' output.

Why: GDAL calls that rasterio makes outside its error handler (a dataset's mask flags, read after
``rasterio.open`` returned) report through GDAL's default handler, which writes straight to stderr:
``geoseg predict scenes/`` over a truncated TIFF printed eight ``ERROR 1: TIFFFetchDirectory: ...``
lines among the batch's progress lines, and a single input's one-line error came after them. What
such a message says reaches the user anyway: the rasterio error it ends in carries GDAL's message
(``broken.tif: cannot read its pixels (truncated or corrupt file?): TIFFReadEncodedStrip: ...``).
"""
from __future__ import annotations

import os

#: GDAL's configuration option (read from the environment) naming the file its default handler writes to
GDAL_LOG = "CPL_LOG"


def gdal_stderr_off() -> None:
    """Send GDAL's default-handler messages to the null device instead of stderr, for this process and
    the Dask workers it starts (they inherit the environment). A ``CPL_LOG`` the user set (a file, to
    read GDAL's messages) is kept. GDAL reads it at its first such message: call this before any."""
    os.environ.setdefault(GDAL_LOG, os.devnull)

"""Errors of the tiling engine that users should see as plain messages."""
from __future__ import annotations


class UnsupportedRaster(ValueError):
    """A raster the models cannot use (complex data, too few bands, no valid pixel, ...)."""


#: The kinds of error a batch's per-input line leaves unnamed: the engine's own messages (ValueError and
#: its subclasses here, a file that is missing or unreadable) say what is wrong without a class name in
#: front. Any other kind (KeyError, RuntimeError, MemoryError...) is a fault the message alone may not
#: explain, so its line keeps the name.
PLAIN_KINDS = frozenset({
    "ValueError", "UnsupportedRaster", "MosaicError", "LoopedTiff",
    "OSError", "FileNotFoundError", "PermissionError", "IsADirectoryError", "NotADirectoryError",
    "RasterioIOError",
})

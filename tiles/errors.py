"""Errors of the tiling engine that users should see as plain messages."""
from __future__ import annotations


class UnsupportedRaster(ValueError):
    """A raster the models cannot use (complex data, too few bands, no valid pixel, ...)."""

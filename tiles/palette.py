"""Paletted rasters (one band of colour-table indices) opened as the RGBA they stand for.

Why: a PNG8, a GIF-like GeoTIFF (``PHOTOMETRIC=PALETTE``) or an indexed-colour export of an
orthophoto holds one band of indices into a colour table; the colours are the picture. Read as
one band it is no RGB image (``geoseg predict`` refused it as "1 band(s)"), and its indices are
no brightness to stretch. GDAL expands it on the fly (``vrt://PATH?expand=rgba``, as
``gdal_translate -expand rgba`` does), keeping the georeferencing; the alpha band it makes from
the colour table is the mask, so transparent entries (GDAL gives a declared nodata index alpha 0)
are no data.
"""
from __future__ import annotations

import rasterio
from rasterio.enums import ColorInterp

from tiles.rasterpath import RasterPath

__all__ = ["EXPANDED_COLORINTERP", "EXPANSION", "expanded_location", "is_expanded", "is_paletted", "open_expanded"]

#: what ``vrt://`` is asked to do with the colour table
EXPANSION = "?expand=rgba"

#: the bands a paletted band expands into (the colour table's four components), as GDAL labels them
EXPANDED_COLORINTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)


def is_paletted(dataset) -> bool:
    """True for a one-band raster whose band is colour-table indices."""
    return dataset.count == 1 and dataset.colorinterp[0] == ColorInterp.palette


def expanded_location(path: RasterPath) -> str:
    """GDAL's connection string for ``path`` read as RGBA through its colour table."""
    return f"vrt://{path}{EXPANSION}"


def is_expanded(dataset) -> bool:
    """True for a dataset opened as a paletted raster's expansion (``open_expanded``)."""
    return dataset.name.startswith("vrt://") and dataset.name.endswith(EXPANSION)


def open_expanded(path: RasterPath, **options):
    """``rasterio.open(path)``, or its RGBA expansion when it is paletted (``options`` go to both).

    A location holding a ``?`` (a URL's query) cannot be put in a ``vrt://`` string: such a
    paletted raster is returned as it is (and refused later as one band)."""
    src = rasterio.open(path, **options)
    if not is_paletted(src) or "?" in str(path):
        return src
    src.close()
    return rasterio.open(expanded_location(path), **options)

"""A raster's WGS84 bounding box as RFC 7946 (5) and TileJSON write one: longitudes in -180..180,
west > east for a box across the antimeridian.

Why: rasterio's ``transform_bounds`` gives a lon/lat raster's own longitudes back, so a scene stored
past 180 degrees (179.9995 .. 180.0003 over Fiji, or a 0..360 grid) had bounds out of range, and its
Web-Mercator extent, projected point by point, wrapped round the whole world; and it gives infinities
for a raster whose edges leave the globe (a geostationary full disk: its corners are space), which
left such a scene without bounds, TileJSON or tiles. Those are bounded by their pixels on the globe.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.warp import transform_bounds

__all__ = ["wgs84_bounds", "wrap_longitudes"]

#: points a side of the pixel grid projected when the raster's edges do not all lie on the globe
GRID_SAMPLES = 129


def wrap_longitudes(west: float, east: float) -> tuple[float, float]:
    """``west, east`` (east >= west, or west > east as rasterio gives a box across 180 degrees) in
    -180..180, as RFC 7946 writes them: west > east when the box crosses the antimeridian."""
    if east >= west and east - west >= 360.0:
        return -180.0, 180.0
    wrapped = (west + 180.0) % 360.0 - 180.0
    east += wrapped - west  # both moved by the same whole turns
    if east > 180.0:
        east -= 360.0
    elif east < -180.0:
        east += 360.0
    return wrapped, east


def wgs84_bounds(src: rasterio.io.DatasetReader) -> tuple[float, float, float, float]:
    """(west, south, east, north) of ``src`` in degrees, longitudes wrapped by ``wrap_longitudes``: from
    its edges, or, where they leave the globe, from a grid of its pixels (``GRID_SAMPLES`` a side) on it.
    ``ValueError`` for a raster without a CRS, or with no pixel on the globe."""
    if src.crs is None:
        raise ValueError(f"{Path(src.name).name} has no CRS")
    west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        west, south, east, north = _bounds_on_the_globe(src)
    west, east = wrap_longitudes(west, east)
    return west, south, east, north


def _bounds_on_the_globe(src: rasterio.io.DatasetReader) -> tuple[float, float, float, float]:
    """The bounds of a grid of ``src``'s pixel corners that project to finite degrees, longitudes made
    continuous around the one nearest the raster's middle (a disk across 180 degrees stays one box)."""
    cols, rows = np.meshgrid(np.linspace(0, src.width, GRID_SAMPLES), np.linspace(0, src.height, GRID_SAMPLES))
    t = src.transform
    xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(xs.ravel(), ys.ravel())
    lon, lat = np.asarray(lon), np.asarray(lat)
    on_globe = np.isfinite(lon) & np.isfinite(lat)
    if not on_globe.any():
        raise ValueError(f"{Path(src.name).name}: none of its pixels projects to longitude and latitude")
    middle = np.flatnonzero(on_globe)[np.argmin(np.hypot(cols.ravel() - src.width / 2,
                                                         rows.ravel() - src.height / 2)[on_globe])]
    lon = lon[middle] + (lon[on_globe] - lon[middle] + 180.0) % 360.0 - 180.0
    lat = lat[on_globe]
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())

"""A raster's WGS84 bounding box as RFC 7946 (5) and TileJSON write one: longitudes in -180..180,
west > east for a box across the antimeridian.

Why: rasterio's ``transform_bounds`` gives a lon/lat raster's own longitudes back, so a scene stored
past 180 degrees (179.9995 .. 180.0003 over Fiji, or a 0..360 grid) had bounds out of range, and its
Web-Mercator extent, projected point by point, wrapped round the whole world.
"""
from __future__ import annotations

import math

import rasterio
from rasterio.warp import transform_bounds

__all__ = ["wgs84_bounds", "wrap_longitudes"]


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
    """(west, south, east, north) of ``src`` in degrees, longitudes wrapped by ``wrap_longitudes``;
    ``ValueError`` for a raster without a CRS, or whose bounds do not project to finite degrees."""
    if src.crs is None:
        raise ValueError(f"{src.name} has no CRS")
    west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError(f"{src.name}: its corners do not project to longitude and latitude")
    west, east = wrap_longitudes(west, east)
    return west, south, east, north

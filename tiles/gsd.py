"""Ground sample distance (metres on the ground per pixel) of any georeferenced grid.

Why: CRS units lie. Web Mercator "metres" are 1/cos(latitude) too long, geographic
CRSs are in degrees, custom WKT CRSs may use feet, and rotated geotransforms mix
axes. We measure instead: step one pixel along each image axis at the scene centre,
convert the points to lon/lat and take geodesic distances on the WGS84 ellipsoid.
When a CRS cannot be converted to lon/lat we fall back to its linear unit.
"""
from __future__ import annotations

import math

from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

_GEOD = Geod(ellps="WGS84")


def _to_lonlat(crs: CRS):
    pcrs = ProjCRS.from_wkt(crs.to_wkt())
    return Transformer.from_crs(pcrs, ProjCRS.from_epsg(4326), always_xy=True)


def has_lonlat(crs: CRS | None) -> bool:
    """True when ``crs`` converts to WGS84 longitude/latitude (not for a local engineering CRS,
    e.g. a drone survey's site grid: there is no GeoJSON or geodesic area for it)."""
    if crs is None:
        return False
    try:
        _to_lonlat(crs)
    except Exception:  # pyproj raises several types for unusable CRSs
        return False
    return True


def _ground_distance(crs: CRS, p: tuple[float, float], q: tuple[float, float]) -> float | None:
    """Geodesic metres between two CRS points, or None if they cannot be placed on Earth."""
    try:
        tr = _to_lonlat(crs)
        (lon1, lon2), (lat1, lat2) = tr.transform([p[0], q[0]], [p[1], q[1]])
    except Exception:  # pyproj raises several types for unusable CRSs
        return None
    if not all(math.isfinite(v) for v in (lon1, lon2, lat1, lat2)) or max(abs(lat1), abs(lat2)) > 90:
        return None  # a latitude past the pole (metres labelled as degrees): the geodesic is NaN
    _, _, dist = _GEOD.inv(lon1, lat1, lon2, lat2)
    return float(dist) if math.isfinite(dist) else None


def _linear_unit_metres(crs: CRS) -> float | None:
    """Metres per CRS unit for projected and engineering CRSs (fallback), None otherwise.

    An engineering CRS (``LOCAL_CS``, e.g. a drone survey's site grid in metres or feet) has no
    longitude/latitude, and rasterio gives no unit for it: its axes' unit is read with pyproj.
    """
    if crs.is_geographic:
        return None
    try:
        factor = crs.linear_units_factor[1]
    except Exception:
        try:
            pcrs = ProjCRS.from_wkt(crs.to_wkt())
            factors = {axis.unit_conversion_factor for axis in pcrs.axis_info[:2]}
            factor = factors.pop() if pcrs.is_engineering and len(factors) == 1 else None
        except Exception:  # pyproj raises several types for unusable CRSs
            return None
    return float(factor) if factor else None


def metres_per_unit(crs: CRS, x: float, y: float, step: float) -> tuple[float, float] | None:
    """Ground metres per CRS unit along the CRS x and y axes around (x, y)."""
    dx = _ground_distance(crs, (x, y), (x + step, y))
    dy = _ground_distance(crs, (x, y), (x, y + step))
    if dx is None or dy is None or dx <= 0 or dy <= 0:
        unit = _linear_unit_metres(crs)
        return None if unit is None else (unit, unit)
    return dx / step, dy / step


def pixel_size_m(crs: CRS | None, transform: Affine, width: int, height: int) -> tuple[float, float] | None:
    """Ground metres of one pixel step along image columns and rows, at the grid centre.

    None when the grid has no CRS (not georeferenced): GSD unknown.
    """
    if crs is None or not crs:
        return None
    cx, cy = width / 2.0, height / 2.0
    p0 = transform @ (cx, cy)
    px = transform @ (cx + 1, cy)
    py = transform @ (cx, cy + 1)
    dx = _ground_distance(crs, p0, px)
    dy = _ground_distance(crs, p0, py)
    if dx is None or dy is None or dx <= 0 or dy <= 0:
        unit = _linear_unit_metres(crs)
        if unit is None:
            return None
        dx = math.hypot(transform.a, transform.d) * unit
        dy = math.hypot(transform.b, transform.e) * unit
    return dx, dy


def gsd_m(crs: CRS | None, transform: Affine, width: int, height: int) -> float | None:
    """Ground sample distance in metres (geometric mean of both pixel axes), None if unknown."""
    size = pixel_size_m(crs, transform, width, height)
    if size is None:
        return None
    return math.sqrt(size[0] * size[1])


def dataset_gsd_m(dataset: DatasetReader | WarpedVRT) -> float | None:
    """GSD in metres of an open rasterio dataset (None when not georeferenced)."""
    return gsd_m(dataset.crs, dataset.transform, dataset.width, dataset.height)


#: a pixel this small in a projected CRS's unit (a millimetre) is none of Earth observation's
_TINY_PIXEL = 1e-3


def lonlat_in_projected_crs(crs: CRS | None, transform: Affine, width: int, height: int) -> str | None:
    """Why a grid in a projected CRS reads as longitude/latitude given the wrong CRS, or None.

    Why: a raster whose coordinates are degrees (a lon/lat grid) but whose CRS says metres (UTM,
    Web Mercator) lies within 180 m of the CRS's origin with pixels of micrometres; predict read
    it so (a 512 x 384 px orthophoto as 1.4 x 1 mm, 1 x 1 px at the models' GSD) and wrote
    outputs of no meaning with only a warning about the scene's size. Tested: a pixel under
    ``_TINY_PIXEL`` of the CRS's unit and every corner within longitude/latitude's ranges."""
    if crs is None or not crs.is_projected or transform.is_identity:
        return None
    pixel = math.sqrt(abs(transform.determinant))
    corners = [transform @ (c, r) for c in (0, width) for r in (0, height)]
    if not (0 < pixel < _TINY_PIXEL and all(abs(x) <= 180 and abs(y) <= 90 for x, y in corners)):
        return None
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return (f"its coordinates ({min(xs):.6g} to {max(xs):.6g}, {min(ys):.6g} to {max(ys):.6g}) look like longitude/"
            f"latitude, but its CRS {crs.to_string()} is projected: so read, its pixels are {pixel:.2g} "
            f"{'m' if crs.linear_units in ('metre', 'meter') else crs.linear_units or 'units'} across; set the CRS its coordinates are in (gdal_edit.py -a_srs "
            f"EPSG:4326 FILE) or warp it")

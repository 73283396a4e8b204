"""Building areas in square metres, measured geodesically on the WGS84 ellipsoid.

Why: areas were measured in the one UTM zone that ``estimate_utm_crs`` picks for the whole
frame. Far from that zone the projection inflates areas, and past it the transform fails:
world.rgb.tif (EPSG:4326, the whole globe) gave null ``area_m2`` and numpy's "invalid value
encountered in area". A local metric projection per polygon would need one pyproj transformer
per building. The geodesic area of each polygon (``pyproj.Geod``, from its longitude/latitude
vertices) needs no zone and is exact on the ellipsoid wherever the polygon lies. On the 56
buildings of kampala_z19_1, repeated to 11200, it cost 0.53 s against 0.22 s for the UTM
zone, and the two agreed within 0.08 %.

Some polygons have no longitude/latitude at all: in a geostationary scene (goes.tif) pixels
off the Earth's disk do not transform, and their buildings came out of the GeoJSON as empty
MultiPolygons with a null area. ``off_earth`` finds them so the caller can drop them.
"""
from __future__ import annotations

import numpy as np
import pyproj
import shapely

__all__ = ["geodesic_areas_m2", "off_earth"]

_GEOD = pyproj.Geod(ellps="WGS84")


def off_earth(lonlat: np.ndarray) -> np.ndarray:
    """Per geometry (already transformed to longitude/latitude): True when some vertex did not
    transform (non-finite) or the geometry is empty."""
    lonlat = np.asarray(lonlat, dtype=object)
    xy, index = shapely.get_coordinates(lonlat, return_index=True)
    bad = np.bincount(index[~np.isfinite(xy).all(axis=1)], minlength=lonlat.size) > 0
    return bad | shapely.is_empty(lonlat)


def geodesic_areas_m2(lonlat: np.ndarray) -> np.ndarray:
    """Areas in square metres on the WGS84 ellipsoid of polygons in longitude/latitude (holes subtracted)."""
    # Geod adds the rings' signed areas: exteriors counter-clockwise, holes clockwise
    oriented = shapely.orient_polygons(np.asarray(lonlat, dtype=object))
    return np.array([abs(_GEOD.geometry_area_perimeter(g)[0]) for g in oriented], dtype=np.float64)

"""RFC 7946 GeoJSON of building polygons, written by geoseg rather than GDAL's GeoJSON driver.

Why: GDAL's RFC7946 writer cuts a polygon across the antimeridian with its own heuristic and
moves vertices within about 1e-6 degree of +-180 onto the meridian. A building whose pixel
outline crosses 180 degrees several times, a few centimetres either side of it (a scene in
UTM 60S over Fiji), came out as a MultiPolygon whose part on -180 doubled back along the
meridian: a self-intersecting ring, wound clockwise, or a ring of too few points. It did so even
when given parts already cut. Here each building is cut at the meridian in continuous longitudes
(shapely), snapped to the 1e-7 degree grid its coordinates are written on (GEOS keeps polygons
valid on that grid, where rounding alone can make them cross), and its rings wound the RFC 7946
way: exteriors counter-clockwise, holes clockwise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import mapping

__all__ = ["COORDINATE_DECIMALS", "cut_at_antimeridian", "rfc7946_geometries", "write_feature_collection"]

#: decimals of the written longitudes and latitudes (1e-7 degree, about 1 cm; GDAL's RFC 7946 default)
COORDINATE_DECIMALS = 7


def cut_at_antimeridian(lonlat: np.ndarray) -> np.ndarray:
    """Polygons in longitude/latitude with every longitude in [-180, 180]: one that crosses the
    antimeridian (its longitudes span more than 180 degrees, jumping from +180 to -180, or run past
    +-180, as a raster in 0..360 degree longitudes gives) is cut at it, each part moved by whole
    turns into [-180, 180], into a MultiPolygon; the others as given."""
    out = np.asarray(lonlat, dtype=object).copy()
    xy, index = shapely.get_coordinates(out, return_index=True)
    west, east = np.full(out.size, np.inf), np.full(out.size, -np.inf)
    np.minimum.at(west, index, xy[:, 0])
    np.maximum.at(east, index, xy[:, 0])
    jumps = east - west > 180.0
    for i in np.flatnonzero(jumps | (west < -180.0) | (east > 180.0)):
        geom = _continuous(out[i]) if jumps[i] else out[i]
        lon = shapely.get_coordinates(geom)[:, 0]
        polygons = []
        for turn in range(math.floor((lon.min() + 180.0) / 360.0), math.floor((lon.max() + 180.0) / 360.0) + 1):
            band = shapely.box(360.0 * turn - 180.0, -90.0, 360.0 * turn + 180.0, 90.0)
            piece = shapely.affinity.translate(shapely.intersection(geom, band), -360.0 * turn)
            polygons += [p for p in shapely.get_parts(piece) if isinstance(p, shapely.Polygon) and not p.is_empty]
        out[i] = shapely.MultiPolygon(polygons) if len(polygons) > 1 else polygons[0] if polygons else geom
    return out


def _continuous(geom: Any) -> Any:
    """``geom`` in continuous longitudes: each ring's steps under 180 degrees (a ring crossing the
    antimeridian runs on past +-180), and a ring round a pole closed through it, along latitude +-90.

    Why: moving every vertex west of 0 one turn on fits a ring that crosses 180 degrees, not one
    that spans more than 180 degrees elsewhere (beside a pole) or round a pole: a building round
    the North Pole ended the run (TopologyException), one round the South Pole came out as two
    slivers without the pole."""
    parts = []
    for polygon in shapely.get_parts(geom):
        shell = _continuous_ring(np.asarray(polygon.exterior.coords))
        centre = (shell[:, 0].min() + shell[:, 0].max()) / 2.0
        shape = shapely.Polygon(shell)
        for hole in polygon.interiors:  # placed by whole turns about the shell's longitudes
            ring = _continuous_ring(np.asarray(hole.coords))
            ring[:, 0] += 360.0 * round((centre - ring[:, 0].mean()) / 360.0)
            shape = shapely.difference(shape, shapely.Polygon(ring))
        parts += [p for p in shapely.get_parts(shapely.make_valid(shape)) if isinstance(p, shapely.Polygon)]
    return shapely.MultiPolygon(parts) if len(parts) > 1 else parts[0] if parts else geom


def _continuous_ring(coords: np.ndarray) -> np.ndarray:
    """A closed ring's (lon, lat) with each step's longitude change taken the short way (< 180 degrees);
    a ring that so turns once round the Earth encloses a pole and is closed through it."""
    coords = coords[:, :2].astype(float)
    steps = (np.diff(coords[:, 0]) + 180.0) % 360.0 - 180.0
    lon = coords[0, 0] + np.concatenate([[0.0], np.cumsum(steps)])
    ring = np.column_stack([lon, coords[:, 1]])
    if abs(lon[-1] - lon[0]) > 180.0:  # once round: the pole on the side of its latitudes
        pole = 90.0 if coords[:, 1].mean() > 0 else -90.0
        ring = np.vstack([ring, [[lon[-1], pole], [lon[0], pole]], ring[:1]])
    return ring


def rfc7946_geometries(lonlat: np.ndarray) -> np.ndarray:
    """What ``write_feature_collection`` writes of polygons in longitude/latitude: cut at the
    antimeridian, valid on the 1e-7 degree grid, rings wound the RFC 7946 way, and a lone part
    of a MultiPolygon as a Polygon."""
    geoms = _valid_on_grid(cut_at_antimeridian(lonlat))
    single = (shapely.get_type_id(geoms) == 6) & (shapely.get_num_geometries(geoms) == 1)
    geoms[single] = shapely.get_geometry(geoms[single], 0)
    geoms = shapely.orient_polygons(geoms)
    # the decimal each coordinate is written as (set_precision's grid values can differ by an ulp)
    return shapely.transform(geoms, lambda xy: np.round(xy, COORDINATE_DECIMALS))


def _valid_on_grid(geoms: np.ndarray) -> np.ndarray:
    """Polygons snapped to the 1e-7 degree grid, valid there. One that is invalid already (a
    reprojection can fold a thin sliver; GEOS cannot snap it and raised a TopologyException that
    ended the run) is made valid first, its polygonal parts kept."""
    geoms = np.asarray(geoms, dtype=object).copy()
    invalid = np.flatnonzero(~shapely.is_valid(geoms) & ~shapely.is_missing(geoms))
    for i in invalid:
        parts = shapely.get_parts(shapely.make_valid(geoms[i]))
        while (shapely.get_type_id(parts) >= 4).any():  # a collection may hold a MultiPolygon
            parts = shapely.get_parts(parts)
        polygons = [p for p in parts if isinstance(p, shapely.Polygon) and not p.is_empty]
        geoms[i] = shapely.multipolygons(polygons) if len(polygons) > 1 else polygons[0] if polygons else \
            shapely.Polygon()
    return shapely.set_precision(geoms, 10.0 ** -COORDINATE_DECIMALS)


def write_feature_collection(path: Path, lonlat: np.ndarray, properties: list[dict[str, Any]],
                             ids: list[int]) -> None:
    """An RFC 7946 FeatureCollection at ``path``: one Feature a polygon (``rfc7946_geometries``),
    its ``id`` member from ``ids`` (the key web maps select features by), its ``properties``
    as JSON values (numpy scalars as numbers, NaN as null); no ``crs`` member. One Feature a line."""
    geoms = rfc7946_geometries(lonlat)
    with open(path, "w", encoding="utf-8") as out:
        out.write('{\n"type": "FeatureCollection",\n"features": [')
        for k, (geom, props, fid) in enumerate(zip(geoms, properties, ids)):
            feature = {"type": "Feature", "id": int(fid),
                       "properties": {key: _json_value(v) for key, v in props.items()},
                       "geometry": None if geom is None or geom.is_empty else mapping(geom)}
            out.write(("," if k else "") + "\n" + json.dumps(feature, allow_nan=False))
        out.write("\n]\n}\n")


def _json_value(value: Any) -> Any:
    """A property value as JSON has it: numpy scalars as Python numbers, NaN and None as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""The area where a scene's labels are complete (``--coverage FILE`` of ``geoseg tile`` and ``geoseg eval``).

Why: volunteer-mapped building labels (OSM) often cover only part of a scene. Outside the mapped
part a house without a footprint is not background, it is unknown: chips cut there taught the model
that unmapped roofs are background, and ``geoseg eval`` counted the buildings it found there as false
positives. The box around the labels is no substitute (zanzibar_z19_1 lies ~36 m past its labels'
box, and the shipped chips and scores must not change), so the user names the mapped area: any OGR
vector file of polygons, in any CRS (no CRS: lon/lat, as label files), reprojected onto the scene's.

A pixel is inside the mapped area when its centre is (``rasterio.features.rasterize``'s rule, as the
labels are burnt). Not ``geoseg.coverage``, which simplifies touching polygons (a polygonal coverage).
"""
from __future__ import annotations

import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS

from tiles.labels import bounds_in, grid_bounds, polygon_layer, polygons_only
from tiles.rasterpath import RasterPath, as_raster_path, location_exists, raster_name

__all__ = ["MappedArea", "check_coverage_file"]


def _coverage_layer(path: RasterPath) -> str | int:
    """The polygon layer of a coverage file: its only layer, or its only polygon layer (one line
    otherwise: the file is unreadable, or holds several polygon layers)."""
    return polygon_layer(path, option="--coverage ", reads_as="a vector file",
                         advice="save the mapped area in a file of its own")


def _file_crs(info: dict) -> CRS:
    """The layer's CRS; lon/lat (RFC 7946) when it declares none, as label files are read."""
    return CRS.from_user_input(info["crs"]) if info.get("crs") else CRS.from_epsg(4326)


def check_coverage_file(path: RasterPath) -> None:
    """Refuse, in one line naming it, a ``--coverage`` file that is missing, not a vector file, or
    holds no polygon (a table, points or lines, an empty layer, lon/lat-read coordinates that cannot
    be lon/lat), before any scene is read: each would otherwise leave every pixel unmapped."""
    path = as_raster_path(path)
    if not location_exists(path):
        raise ValueError(f"--coverage {path}: no such file or folder")
    layer = _coverage_layer(path)
    info = pyogrio.read_info(path, layer=layer, force_total_bounds=True)
    name = raster_name(path)
    kind = str(info.get("geometry_type") or "")
    if not kind:
        raise ValueError(f"--coverage {name} holds no geometry (a table of {info['features']} rows): the mapped "
                         f"area is polygons")
    if not any(word in kind.lower() for word in ("polygon", "surface", "unknown", "collection", "geometry")):
        raise ValueError(f"--coverage {name} holds {kind} features, not polygons: the mapped area is polygons")
    bounds = info.get("total_bounds")
    if not info["features"] or bounds is None or not all(np.isfinite(bounds)):
        raise ValueError(f"--coverage {name} holds no polygon: the mapped area is polygons")
    crs = _file_crs(info)
    x0, y0, x1, y1 = map(float, bounds)
    if crs.is_geographic and (x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90):
        raise ValueError(f"--coverage {name}: coordinates x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g} are not "
                         f"longitude/latitude ({'no CRS: read as lon/lat' if not info.get('crs') else crs.to_string()}):"
                         f" give the file its CRS or reproject it to EPSG:4326")
    if len(MappedArea.read(path, None).polygons) == 0:  # polygons of no area, GeometryCollections of lines
        raise ValueError(f"--coverage {name} holds no polygon: the mapped area is polygons")


class MappedArea:
    """The mapped area in one CRS: its polygons, with a spatial index, and where it came from."""

    def __init__(self, polygons: np.ndarray, source: str):
        self.polygons = polygons
        self.tree = shapely.STRtree(polygons)
        #: the file's name, for messages
        self.source = source

    @classmethod
    def read(cls, path: RasterPath, crs: CRS | None,
             near: tuple[float, float, float, float] | None = None) -> MappedArea:
        """The polygons of a coverage file (repaired, lines and points dropped) in ``crs`` (None: the
        file's own). ``near``, a box in ``crs``: only the features whose envelope meets it are read."""
        path = as_raster_path(path)
        layer = _coverage_layer(path)
        file_crs = _file_crs(pyogrio.read_info(path, layer=layer))
        bbox = bounds_in(crs, file_crs, near) if near is not None and crs is not None else None
        frame = pyogrio.read_dataframe(path, layer=layer, bbox=bbox, on_invalid="fix")
        frame = frame.set_crs(file_crs, allow_override=True)
        if crs is not None:
            frame = frame.to_crs(crs)
        return cls(polygons_only(np.asarray(frame.geometry.values, dtype=object)), raster_name(path))

    def meets(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether some of the mapped area (more than an edge) lies in the box (left, bottom, right, top)."""
        box = shapely.box(*bounds)
        found = self.tree.query(box, predicate="intersects")
        return bool(found.size) and bool((shapely.area(shapely.intersection(self.polygons[found], box)) > 0).any())

    def mask(self, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """Boolean raster of a window: True where a pixel's centre lies in the mapped area."""
        h, w = shape
        box = shapely.box(*grid_bounds(transform, w, h))
        found = np.sort(self.tree.query(box, predicate="intersects"))
        if found.size == 0:
            return np.zeros(shape, dtype=bool)
        return features.rasterize(((p, 1) for p in self.polygons[found]), out_shape=shape, transform=transform,
                                  fill=0, dtype="uint8") > 0

"""Vector building labels -> label rasters on any window of a working grid.

Why: the outline head (U2-Net, 3 classes) needs footprints split into interior and
a thin outline band so touching buildings stay separate. Codes: 0 background,
1 interior, 2 outline (the 2 px band just inside each footprint's edge, also along
walls shared with another building), 255 ignore (invalid image pixels). The
footprint is exactly ``label in {1, 2}``. Labels in any CRS are reprojected to the
scene CRS once, invalid geometries are repaired with ``shapely.make_valid``, and an
STR-tree answers "which buildings touch this window".
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from scipy import ndimage

from tiles.rasterpath import RasterPath, as_raster_path, raster_name

BACKGROUND, INTERIOR, OUTLINE, IGNORE = 0, 1, 2, 255


def polygons_only(geoms: np.ndarray) -> np.ndarray:
    """Repair geometries and keep their polygonal parts (make_valid may emit lines)."""
    return polygon_parts(geoms)[0]


def polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``polygons_only`` and, for each polygon, the index of the geometry it came from (what a
    land-cover polygon's class follows, ``tiles.landcover_vectors``)."""
    parts, source = shapely.get_parts(shapely.make_valid(geoms), return_index=True)
    while (nested := shapely.get_type_id(parts) == 7).any():  # a collection in a collection: taken apart too
        # (one level was: a building wrapped twice was dropped without a word)
        inner_parts, inner = shapely.get_parts(parts[nested], return_index=True)
        parts = np.concatenate([parts[~nested], inner_parts])
        source = np.concatenate([source[~nested], source[nested][inner]])
    keep = np.isin(shapely.get_type_id(parts), (3, 6))  # Polygon, MultiPolygon
    polys, inner = shapely.get_parts(parts[keep], return_index=True)
    source = source[keep][inner]
    solid = ~shapely.is_empty(polys) & (shapely.area(polys) > 0)
    return polys[solid], source[solid]


class LabelIndex:
    """Building polygons in the scene CRS with a spatial index."""

    def __init__(self, polygons: np.ndarray, extent: tuple[float, float, float, float] | None = None,
                 in_files: int | None = None):
        self.polygons = polygons
        self.tree = shapely.STRtree(polygons)
        #: the files' whole extent in the index CRS and their feature count, when only part was read
        self.extent = extent
        self.in_files = len(polygons) if in_files is None else in_files

    @classmethod
    def from_files(cls, paths: RasterPath | list[RasterPath], crs: CRS, where: str | None = None,
                   near: tuple[float, float, float, float] | None = None, layer: str | None = None) -> "LabelIndex":
        """Read vector files (any OGR format; no CRS member means WGS84) into ``crs``; one path or a list.
        ``where``: an OGR SQL condition on their attributes (``class = 'building'``) keeping only the
        features that are buildings (``read_labels``); ``layer``: the building layer of a file of several
        (``polygon_layer``). ``near``: a box (left, bottom, right, top) in
        ``crs``: only the features whose envelope meets it are read (OGR's spatial filter, through the
        file's spatial index where it has one), while ``meets`` still answers for the files' extent.
        Why: each scene read a country-wide file in full (216 000 footprints: 2.8 s and 590 MB a scene)."""
        if isinstance(paths, (str, Path)):  # a lone str was read character by character ('l', 'a', ...)
            paths = [paths]
        chunks, extents, in_files = [], [], 0
        for path in map(as_raster_path, paths):
            file_crs, file_bounds, count = _layer_extent(path, layer, where)
            declared = file_crs is not None
            file_crs = file_crs or CRS.from_epsg(4326)
            _check_lonlat(path, file_crs, file_bounds, declared)
            bbox = None
            if near is not None and crs is not None and file_bounds is not None:
                bbox = bounds_in(crs, file_crs, near)
                extents.append(bounds_in(file_crs, crs, file_bounds))
            frame = read_labels(path, where, bbox=bbox, layer=layer).sort_index()  # file order (a spatial index reads
            # in its own), which decides the shared outline of overlapping footprints
            frame = frame.set_crs(file_crs, allow_override=True)
            if crs is not None:
                frame = frame.to_crs(crs)
            chunks.append(polygons_only(np.asarray(frame.geometry.values, dtype=object)))
            in_files += count
        polys = np.concatenate(chunks) if chunks else np.empty(0, dtype=object)
        if near is None or any(e is None for e in extents):
            return cls(polys)
        extent = None if not extents else (min(e[0] for e in extents), min(e[1] for e in extents),
                                           max(e[2] for e in extents), max(e[3] for e in extents))
        return cls(polys, extent=extent, in_files=in_files)

    def meets(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the labels' extent meets the box (left, bottom, right, top).

        Why: a scene outside the extent cannot be labelled by these files (wrong CRS, wrong
        file) and would silently become all-background chips; a scene inside it with no
        building is a real empty scene.
        """
        if self.extent is not None:
            x0, y0, x1, y1 = self.extent
        elif len(self.polygons) == 0:
            return False
        else:
            x0, y0, x1, y1 = shapely.total_bounds(self.polygons)
        return bool(x0 <= bounds[2] and bounds[0] <= x1 and y0 <= bounds[3] and bounds[1] <= y1)

    def query(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        """Polygons intersecting the box (left, bottom, right, top)."""
        box = shapely.box(*bounds)
        idx = self.tree.query(box, predicate="intersects")
        return self.polygons[np.sort(idx)]


def polygon_layer(path: RasterPath, layer: str | None = None, *, option: str = "", reads_as: str = "vector labels",
                  advice: str = "save the building layer in a file of its own or name it with --labels-layer",
                  ) -> str | int:
    """The layer of a vector file that holds the building polygons: ``layer`` when named (it must
    be one of the file's), else the file's only layer or only polygon layer. ``option``, ``reads_as``
    and ``advice`` word its errors for another polygon file (``--coverage``: ``tiles.mapped_area``).

    Why: GDAL reads the first layer of a multi-layer file (a GeoPackage with roads, then
    buildings), so the buildings were ignored ("holds no polygon") or, worse, another polygon
    layer (parcels) was taken for buildings. One layer: that one; several: the one whose
    geometry is polygonal, else a one-line error naming them.
    """
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError as exc:  # GDAL's own words, without its advice on driver prefixes
        reason = str(exc).split(".; ")[0].replace(f"'{path}' ", "").rstrip(".")
        raise ValueError(f"{option}{path}: cannot be read as {reads_as} ({reason})") from None
    if layer is not None:
        names = [str(name) for name, _ in layers]
        if layer not in names:
            raise ValueError(f"{raster_name(path)} has no layer {layer!r} (its layers: {', '.join(names)})")
        return layer
    if len(layers) <= 1:
        return 0
    polygonal = [str(name) for name, kind in layers if kind and "polygon" in str(kind).lower()]
    if len(polygonal) == 1:
        return polygonal[0]
    shown = ", ".join(f"{name} ({kind})" for name, kind in layers)
    raise ValueError(f"{option}{raster_name(path)} has {len(layers)} layers ({shown}) and {len(polygonal)} of them "
                     f"are polygons: {advice}")


def is_vector_folder(path: RasterPath) -> bool:
    """Whether ``path`` is a folder GDAL reads as one vector data source (an Esri File Geodatabase
    ``x.gdb/``, a folder of shapefiles): labels given as a folder, not a file."""
    if not Path(path).is_dir():
        return False
    try:
        return len(pyogrio.list_layers(path)) > 0
    except pyogrio.errors.DataSourceError:
        return False


def read_labels(path: RasterPath, where: str | None = None,
                bbox: tuple[float, float, float, float] | None = None, layer: str | None = None) -> gpd.GeoDataFrame:
    """The building layer of a vector file (``polygon_layer``), only the features matching ``where``.

    Why: a team's label layer often holds more than buildings (a ``class`` of building, parking,
    pool...), and every polygon was taken for a building. A condition the file cannot answer (a
    field it lacks, bad SQL) is a ValueError naming the file and its fields. A ring that does not
    end where it starts (GDAL reads it, with a warning) is closed: it failed the whole scene with
    GEOS's 'Points of LinearRing do not form a closed linestring'.
    """
    layer = polygon_layer(path, layer)
    try:
        return gpd.read_file(path, layer=layer, where=where, bbox=bbox, fid_as_index=True, on_invalid="fix")
    except (ValueError, pyogrio.errors.DataLayerError):  # GDAL's words differ by driver (GeoJSON, SQLite)
        if where is None:
            raise
        raise _where_error(path, layer, where) from None


def _where_error(path: RasterPath, layer: str | int, where: str) -> ValueError:
    """The one line for a ``where`` a file cannot answer: the file, the condition and its fields."""
    fields = ", ".join(map(str, pyogrio.read_info(path, layer=layer)["fields"])) or "none"
    return ValueError(f"{raster_name(path)}: cannot select features where {where!r} (its fields: {fields}); "
                      f"an OGR SQL condition such as \"class = 'building'\" or \"type IN ('house', 'shed')\"")


def check_label_file(path: RasterPath, where: str | None = None, layer: str | None = None) -> None:
    """What ``LabelIndex.from_files`` would refuse of a file whatever the scene, without reading it:
    not a vector file, several polygon layers, coordinates that cannot be lon/lat, a ``where`` it
    cannot answer, a table without geometry (ValueError, one line naming the file).

    Why a table: OGR reads a CSV (DeepForest's boxes in pixel columns) as a layer without geometry,
    which failed each scene with Python's "'DataFrame' object has no attribute 'set_crs'"."""
    chosen = polygon_layer(path, layer)
    info = pyogrio.read_info(path, layer=chosen)
    if info.get("geometry_type") is None:
        fields = ", ".join(map(str, info["fields"])) or "none"
        raise ValueError(f"{raster_name(path)} holds no geometry (a table of {info['features']} rows; its fields: "
                         f"{fields}): building labels are polygons (footprints)")
    if info["features"] and not _may_hold_polygons(info):
        raise ValueError(f"{raster_name(path)} holds {info['geometry_type']} features, not building polygons (footprints)")
    file_crs, bounds, count = _layer_extent(path, layer, where)
    _check_lonlat(path, file_crs or CRS.from_epsg(4326), bounds, file_crs is not None)
    if where is not None and not count:
        raise ValueError(f"no feature of {raster_name(path)} matches where {where!r}: check the condition's values")


def points_and_lines_note(path: RasterPath, where: str | None = None, layer: str | None = None) -> str | None:
    """A note when the building layer of a file of mixed geometry types holds points or lines (which
    ``polygons_only`` leaves out), else None. Why: an OSM export mixes building nodes and ways with
    footprints, and those buildings became background without a word; a layer declared as points or
    lines is refused instead (``check_label_file``)."""
    chosen = polygon_layer(path, layer)
    kind = str(pyogrio.read_info(path, layer=chosen).get("geometry_type") or "Unknown").lower()
    if "polygon" in kind or "surface" in kind:  # a layer declared polygonal holds nothing else
        return None
    lone = "OGR_GEOMETRY IN ('POINT', 'MULTIPOINT', 'LINESTRING', 'MULTILINESTRING')"
    try:  # OGR's own SQL (GeoJSON, shapefiles): the envelopes of the matching features alone are read
        matching = lone if where is None else f"({where}) AND {lone}"
        count = len(pyogrio.read_bounds(path, layer=chosen, where=matching)[0])
    except (ValueError, pyogrio.errors.DataLayerError):  # SQLite's (GeoPackage): no OGR_GEOMETRY, so the
        # geometries are read and their types counted (points and lines: shapely type ids 0, 1, 4, 5)
        frame = pyogrio.read_dataframe(path, layer=chosen, columns=[], where=where)
        count = int(np.isin(shapely.get_type_id(np.asarray(frame.geometry.values, dtype=object)), (0, 1, 4, 5)).sum())
    if not count:
        return None
    selected = f" matching {where!r}" if where is not None else ""
    return (f"{raster_name(path)}: {count} of its features{selected} are points or lines, not footprints: they are "
            f"left out, and the buildings they mark count as no building (building labels are polygons)")


def _layer_extent(path: RasterPath, layer: str | None = None,
                  where: str | None = None) -> tuple[CRS | None, tuple[float, float, float, float] | None, int]:
    """CRS (None when the file has none), extent (None when empty) and feature count of the building
    layer, from its header (a scan for formats without one), or of its features matching ``where``
    (their envelopes alone are read)."""
    chosen = polygon_layer(path, layer)
    info = pyogrio.read_info(path, layer=chosen, force_total_bounds=True)
    if where is not None:
        try:
            _, boxes = pyogrio.read_bounds(path, layer=chosen, where=where)
        except (ValueError, pyogrio.errors.DataLayerError):
            raise _where_error(path, chosen, where) from None
        info["features"] = boxes.shape[1]
        info["total_bounds"] = (boxes[0].min(), boxes[1].min(), boxes[2].max(), boxes[3].max()) if boxes.shape[1] else None
    bounds = info.get("total_bounds")
    if bounds is None or not info["features"] or not all(np.isfinite(bounds)) or not _may_hold_polygons(info):
        bounds = None  # no polygon to meet a scene: a layer of points or lines holds no building
    return (CRS.from_user_input(info["crs"]) if info.get("crs") else None,
            None if bounds is None else tuple(map(float, bounds)), int(info["features"]) if bounds else 0)


def _may_hold_polygons(info: dict) -> bool:
    """Whether a layer's declared geometry type may hold polygons (GeoJSON of mixed types: unknown)."""
    kind = str(info.get("geometry_type") or "Unknown").lower()
    return any(word in kind for word in ("polygon", "surface", "unknown", "collection")) or kind == "geometry"


def bounds_in(src: CRS, dst: CRS, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    """A box reprojected (edges densified), None where it has no finite image (off the target CRS)."""
    try:
        out = transform_bounds(src, dst, *bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 -- PROJ refuses points off the projection: extent unknown
        return None
    return out if all(np.isfinite(out)) else None


def _check_lonlat(path: RasterPath, crs: CRS, bounds: tuple[float, float, float, float] | None,
                  declared: bool = True) -> None:
    """Refuse lon/lat-labelled files whose coordinates cannot be lon/lat: projected coordinates in
    a file without a CRS (a GeoJSON without a ``crs`` member, a shapefile without its ``.prj``),
    which GDAL reads as WGS84, or in one that declares a geographic CRS."""
    if bounds is None or not crs.is_geographic:
        return
    x0, y0, x1, y1 = bounds
    if x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90:
        where = f"x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}"
        if not declared:
            raise ValueError(f"{raster_name(path)} has no CRS and its coordinates ({where}) are not longitude/latitude: "
                             f"give it its CRS (the .prj beside a shapefile, a GeoPackage's own) or reproject it "
                             f"to EPSG:4326")
        raise ValueError(f"{raster_name(path)}: coordinates outside [-180,180]x[-90,90] ({where}) in a file read as lon/lat "
                         f"({crs.to_string()}; a GeoJSON without a crs member is lon/lat): reproject it to "
                         f"EPSG:4326")


def instance_raster(polygons: np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """int32 raster of 1-based polygon ids (0 = none) on a grid."""
    if len(polygons) == 0:
        return np.zeros(shape, dtype=np.int32)
    pairs = ((p, i + 1) for i, p in enumerate(polygons))
    return features.rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype="int32")


OUTLINE_PX = 2


def building_classes(instances: np.ndarray, width_px: int = OUTLINE_PX) -> np.ndarray:
    """0 background / 1 interior / 2 outline from an instance raster (see module docstring).

    A building pixel is outline when another id (or background) lies within
    ``width_px`` pixels (Chebyshev distance).
    """
    size = 2 * width_px + 1
    hi = ndimage.maximum_filter(instances, size=size, mode="nearest")
    lo = ndimage.minimum_filter(instances, size=size, mode="nearest")
    inside = instances > 0
    out = np.zeros(instances.shape, dtype=np.uint8)
    out[inside] = INTERIOR
    out[inside & (hi != lo)] = OUTLINE
    return out


def grid_bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a pixel grid, correct for rotated transforms too."""
    pts = [transform @ (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def window_labels(index: LabelIndex, window_transform: Affine, shape: tuple[int, int],
                  valid: np.ndarray, margin_px: int = OUTLINE_PX,
                  mapped: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Building label raster for a window and the number of buildings in it.

    The window is rasterised with a ``margin_px`` border so outlines at the chip edge
    are the same as in the full scene; pixels where ``valid`` is False become 255. ``mapped``
    (``--coverage``, ``tiles.mapped_area``): pixels outside the mapped area become 255 too, and
    only the buildings with a pixel inside it are counted.
    """
    h, w = shape
    big_transform = window_transform @ Affine.translation(-margin_px, -margin_px)
    polys = index.query(grid_bounds(big_transform, w + 2 * margin_px, h + 2 * margin_px))
    inst = instance_raster(polys, big_transform, (h + 2 * margin_px, w + 2 * margin_px))
    classes = building_classes(inst)[margin_px:margin_px + h, margin_px:margin_px + w]
    core_ids = inst[margin_px:margin_px + h, margin_px:margin_px + w]
    if mapped is not None:
        core_ids = np.where(mapped, core_ids, 0)
        classes[~mapped] = IGNORE
    n_objects = int(np.unique(core_ids[core_ids > 0]).size)
    classes[~valid] = IGNORE
    return classes, n_objects

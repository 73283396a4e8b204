"""Building footprints from a head's blended probabilities: polygons, areas, GeoPackage and GeoJSON.

Why: the decision rules (``geoseg.postprocess``) and the vectoriser (``geoseg.vectorize``) work
on pixel arrays; this module feeds them strip by strip from the blending writer (with the
land-cover cue where the card's rules use it), puts the polygons in the working grid's CRS, cuts
them at the input raster's outline and off its nodata pixels, measures areas in square metres on
the ellipsoid and writes the GIS files (GeoPackage in the input CRS, RFC 7946 GeoJSON in WGS84).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg import vectorize
from geoseg.areas import geodesic_areas_m2, off_earth
from geoseg.options import PredictError, PredictOptions
from geoseg.polygonize import through_affine
from geoseg.postprocess import BuildingPostprocess, building_classes
from geoseg.regularize import regularize_buildings
from geoseg.rfc7946 import write_feature_collection
from geoseg.tiled_inference import HeadResult, gsd_scale
from geoseg.valid_area import cut_nodata
from tiles.file_modes import follow_umask
from tiles.gsd import has_lonlat
from tiles.warp import axis_aligned, bilinear_window

__all__ = ["GPKG_VERSION", "building_frame", "landcover_cue", "vectorise_buildings", "write_buildings"]


#: what the vectoriser keeps and simplifies by when no pixel size turns metres into pixels
UNKNOWN_PIXEL_MIN_AREA_PX, UNKNOWN_PIXEL_SIMPLIFY_PX = 4.0, 0.5


def landcover_cue(landcover: HeadResult | None, buildings: HeadResult,
                   card: dict[str, Any] | None) -> Callable[[int, int], np.ndarray]:
    """Rows [a, b) of the land-cover head's P(building), bilinear on the building grid (the cue
    of ``BuildingPostprocess.landcover_threshold``)."""
    index = next((c["index"] for c in (card or {}).get("classes", []) if c["name"] == "building"), None)
    if landcover is None or index is None:
        raise PredictError("the building rules use the land-cover cue, but no land-cover head with a "
                           "'building' class ran")
    if landcover.crs != buildings.crs or not axis_aligned(landcover.transform, buildings.transform):
        raise PredictError("the land-cover and building grids are not aligned: cannot combine them")

    def rows(a: int, b: int) -> np.ndarray:
        values, _ = bilinear_window(lambda w: landcover.writer.read(w)[0][index:index + 1],
                                    (landcover.height, landcover.width), landcover.transform,
                                    buildings.transform, Window(0, a, buildings.width, b - a))
        return values[0]

    return rows


def vectorise_buildings(
    head: HeadResult, options: PredictOptions, input_gsd: float | None, grid: dict,
    progress: Callable[[float], None], post: BuildingPostprocess,
    landcover: Callable[[int, int], np.ndarray] | None = None, notes: list[str] | None = None,
    tracing_share: float = 1.0,
) -> gpd.GeoDataFrame:
    """Building polygons from the blended probabilities, in the working grid's CRS coordinates.

    ``post``: the building decision rules (``geoseg.postprocess``, from the card and the options);
    ``landcover``: rows [a, b) of the land-cover P(building) on this grid, when ``post`` uses it;
    ``notes``: gets a line when buildings are dropped for having no longitude/latitude;
    ``tracing_share``: the part of ``progress`` that tracing the strips takes (the rest: squaring
    with --regularize, then the cut at the input's outline and nodata).
    """
    # ground size of one working pixel: the Scene's own measure, scaled when --gsd overrides it
    scale_m = gsd_scale(input_gsd, grid["native_gsd"])
    if head.gsd is not None and grid["native_gsd"]:
        pixel_m = head.gsd * scale_m
    else:
        pixel_m = input_gsd  # not georeferenced: pixels as given by --gsd, else unknown
    scale = pixel_m if pixel_m else None
    vopts = vectorize.VectorizeOptions(
        min_area_px=post.min_area_m2 / scale**2 if scale else UNKNOWN_PIXEL_MIN_AREA_PX,
        simplify_px=options.simplify_m / scale if scale else UNKNOWN_PIXEL_SIMPLIFY_PX,
        strip_rows=vectorize.strip_rows_for(head.width),
    )
    if scale is None and notes is not None:  # a JPEG or PNG without georeferencing, no --gsd
        notes.append(f"the input's pixel size is unknown, so the minimum building area ({post.min_area_m2:g} m², "
                     f"--min-area) and --simplify ({options.simplify_m:g} m) cannot be measured: buildings under "
                     f"{UNKNOWN_PIXEL_MIN_AREA_PX:g} pixels are dropped, outlines simplified by "
                     f"{UNKNOWN_PIXEL_SIMPLIFY_PX:g} px, and areas left empty; --gsd METRES gives the pixel size")

    margin = post.context_rows  # rows the morphology looks across

    def read(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        # one row of context each side so the eroded valid mask is exact at strip borders,
        # plus what the morphology needs
        a, b = max(0, start - 1 - margin), min(head.height, stop + 1 + margin)
        probs, covered = head.writer.read(Window(0, a, head.width, b - a))
        # rows outside the raster count as nodata (one padded row is enough for the erosion)
        covered = np.pad(covered, ((1, 1), (0, 0)), constant_values=False)
        inner = _erode(covered)[1:-1]
        cue = landcover(a, b) if landcover is not None and post.landcover_threshold else None
        classes, building = building_classes(probs, inner, post, cue)
        return classes[start - a:stop - a], building[start - a:stop - a]

    found = vectorize.vectorize_strips(read, head.height, vopts, lambda f: progress(f * tracing_share))
    geoms = found.geometries
    if options.regularize and geoms:
        # squaring gets what is left but a tenth for the cut (tracing_share counts both in the rest)
        rest = 1.0 - tracing_share
        geoms = regularize_buildings(geoms, found.group, vopts.simplify_px,
                                     lambda f: progress(tracing_share + 0.9 * rest * f))
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size:
        geoms = through_affine(geoms, head.transform)
        # a working grid coarser than the input's overhangs its far edges by part of a pixel:
        # nothing may lie outside the input raster, nor on its nodata (geoseg.valid_area)
        geoms = shapely.intersection(shapely.make_valid(geoms), _footprint(grid))
        if grid.get("path") is not None:
            geoms = cut_nodata(geoms, grid["path"], bands=grid.get("bands", options.bands))
        geoms = np.asarray([_as_polygon(g) for g in geoms], dtype=object)
    # --gsd says what an input pixel really measures: areas in that measure, like --min-area's
    return building_frame(geoms, found.confidence, head.crs, pixel_m, head.transform, notes, scale_m**2)


def building_frame(geoms: np.ndarray, confidence: list, crs: Any, pixel_m: float | None, transform: Affine,
                   notes: list[str] | None = None, area_scale: float = 1.0) -> gpd.GeoDataFrame:
    """The buildings table: ``id``, ``area_m2``, ``confidence`` and one non-empty Polygon each.

    Empty geometries are dropped, and so are those with no longitude/latitude (off the Earth
    in ``crs``; ``notes`` gets a line). ``pixel_m`` and ``transform`` give areas when there is no CRS;
    ``area_scale`` multiplies georeferenced areas (``--gsd``: what a pixel really measures).
    """
    frame = gpd.GeoDataFrame({"confidence": np.round(np.asarray(confidence, dtype=np.float64), 4)},
                             geometry=gpd.GeoSeries(list(geoms), crs=crs), crs=crs)
    frame = frame[~frame.geometry.is_empty].reset_index(drop=True)
    lonlat = None
    if len(frame) and has_lonlat(frame.crs):  # a local engineering CRS has none: planar areas
        with np.errstate(all="ignore"):  # vertices off the Earth: inf (numpy's state is per thread)
            lonlat = frame.geometry.to_crs(4326).values
        lost = off_earth(lonlat)
        if lost.any():
            if notes is not None:
                notes.append(f"{int(lost.sum())} building polygon(s) dropped: they have no longitude/latitude "
                             "(off the Earth in the input's CRS, e.g. past a geostationary disk)")
            frame, lonlat = frame[~lost].reset_index(drop=True), lonlat[~lost]
    frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    frame["area_m2"] = _areas_m2(frame, lonlat, pixel_m, transform, area_scale)
    # orient rings the RFC 7946 way (exterior counter-clockwise)
    frame["geometry"] = shapely.orient_polygons(frame.geometry.values) if len(frame) else frame.geometry
    return frame[["id", "area_m2", "confidence", "geometry"]]


def _footprint(grid: dict) -> shapely.Polygon:
    """The input raster's outline in its CRS (any geotransform, rotated ones included)."""
    t, w, h = grid["transform"], grid["width"], grid["height"]
    return shapely.Polygon([t @ (0, 0), t @ (w, 0), t @ (w, h), t @ (0, h)])


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion by one pixel (outside the array counts as set)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _as_polygon(geom) -> shapely.Polygon:
    """The largest polygon of a geometry (after make_valid a building may gain slivers)."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty]
    if not parts:
        return shapely.Polygon()
    return max(parts, key=lambda p: p.area)


def _areas_m2(frame: gpd.GeoDataFrame, lonlat: np.ndarray | None, pixel_m: float | None,
              transform: Affine, area_scale: float = 1.0) -> np.ndarray:
    """Areas in square metres: geodesic for georeferenced data (``geoseg.areas``; ``lonlat``: the
    polygons in WGS84) times ``area_scale`` (the square of --gsd over the raster's own GSD), from the
    GSD otherwise."""
    if len(frame) == 0:
        return np.zeros(0)
    if lonlat is not None:
        return np.round(geodesic_areas_m2(lonlat) * area_scale, 2)
    if pixel_m:
        px_area = abs(transform.a * transform.e - transform.b * transform.d)
        return np.round(frame.area.to_numpy() / px_area * pixel_m**2, 2)
    return np.full(len(frame), np.nan)


#: the GeoPackage version buildings.gpkg is written as. GDAL 3.7 and later write 1.4 by default,
#: which older readers do not support: ArcMap 10.6 and 10.7 document 1.1 and 1.2, ArcGIS Pro 3.1 1.1 to 1.3,
#: and GDAL 3.6 (Debian 12's, which its QGIS reads with) warns on each open ("may only be partially
#: supported") while its validate_gpkg.py fails the file (Req 75: the R-tree update triggers of 1.4
#: are not those of 1.2). 1.2 holds the same polygons and R-tree index, and all of them read it
GPKG_VERSION = "1.2"


def write_buildings(frame: gpd.GeoDataFrame, staging: Path, georeferenced: bool) -> None:
    """GeoPackage (version ``GPKG_VERSION``, with its R-tree spatial index) in the input CRS; RFC 7946
    GeoJSON in WGS84 when ``georeferenced`` (in a CRS that converts to longitude/latitude)."""
    with np.errstate(all="ignore"):  # not catch_warnings: the class map may be written beside this
        frame.to_file(staging / "buildings.gpkg", driver="GPKG", layer="buildings", engine="pyogrio",
                      geometry_type="Polygon", dataset_options={"VERSION": GPKG_VERSION})
        follow_umask(staging / "buildings.gpkg")  # SQLite makes it 0644 whatever the umask: a group's folder
        if georeferenced:
            # not GDAL's GeoJSON driver: it cut buildings across the antimeridian into invalid parts
            # (geoseg.rfc7946); each Feature's "id" member too (RFC 7946 3.2), the key web maps
            # select and update features by
            lonlat = frame.geometry.to_crs(4326).values
            write_feature_collection(staging / "buildings.geojson", lonlat,
                                     frame.drop(columns=frame.geometry.name).to_dict("records"),
                                     frame["id"].tolist())

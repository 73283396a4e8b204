"""Web-map tiles of a class map: 256 px Web-Mercator (EPSG:3857) PNGs in the XYZ scheme.

Why: a web map (Leaflet, OpenLayers, MapLibre) shows rasters as XYZ tiles, not as a GeoTIFF;
without them a user ran a tile server of their own over ``classmap.tif``. A tile is warped
from the COG with nearest resampling (a class map has no in-between classes) and read from
the overview closest to the tile's resolution (not finer), so a tile at a low zoom reads a
few thousand pixels, not the scene. Colours are the class map's own colour table; class 0
(no data), any colour with alpha 0, the dataset's nodata and everything outside the scene
are transparent.

Tile numbering: the XYZ ("Google", "slippy map") scheme, x eastwards from 180 W, y southwards
from 85.05 N, ``2**z`` tiles a side. The few lines of tile maths are here (mercantile is
not a dependency).
"""
from __future__ import annotations

import functools
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from tiles.gsd import dataset_gsd_m
from tiles.lonlat_bounds import wgs84_bounds

__all__ = ["MAX_ZOOM", "TileSet", "check_tile", "empty_tile_png", "lonlat_to_tile", "render_xyz_tile",
           "renderer_fingerprint", "tile_bounds_mercator", "tileset_of"]

WEB_MERCATOR = CRS.from_epsg(3857)
#: half the Web-Mercator world's side, metres (the projection of 180 degrees)
ORIGIN_M = 20037508.342789244
#: the tile grid's northernmost and southernmost latitude (degrees)
MAX_LATITUDE = 85.05112878
#: the deepest zoom served: 2.4 cm pixels at the equator, finer than any scene geoseg reads
MAX_ZOOM = 24
#: how much coarser (log2) than the scene's GSD its native zoom's pixels may be
ZOOM_SLACK = 0.1
#: the colour of transparent pixels (RGBA)
_CLEAR = (0, 0, 0, 0)
#: index the warp writes where no source pixel lands (outside the scene, or the source's nodata)
_OUTSIDE = 256


def check_tile(z: int, x: int, y: int) -> None:
    """Raise ``ValueError`` (one line) unless ``z/x/y`` names a tile of the XYZ grid."""
    if not 0 <= z <= MAX_ZOOM:
        raise ValueError(f"zoom {z} is out of range: 0..{MAX_ZOOM}")
    last = 2**z - 1
    if not (0 <= x <= last and 0 <= y <= last):
        raise ValueError(f"tile {z}/{x}/{y} is outside the zoom-{z} grid: x and y go from 0 to {last}")


def tile_bounds_mercator(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of tile ``z/x/y`` in EPSG:3857 metres."""
    check_tile(z, x, y)
    span = 2 * ORIGIN_M / 2**z
    left, top = -ORIGIN_M + x * span, ORIGIN_M - y * span
    return left, top - span, left + span, top


def lonlat_to_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the zoom-``z`` tile holding WGS84 ``lon, lat`` (latitudes clipped to the grid's 85.05)."""
    n = 2**z
    lat = max(-MAX_LATITUDE, min(MAX_LATITUDE, lat))
    x = int((lon + 180.0) / 360.0 * n)
    phi = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(phi)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


@dataclass(frozen=True)
class TileSet:
    """What a web map needs to know of a class map's tiles (TileJSON's bounds and zooms)."""

    #: west, south, east, north (WGS84 degrees)
    bounds_wgs84: tuple[float, float, float, float]
    #: the deepest zoom whose whole scene still fits one tile (0 for a scene wider than the world's tile):
    #: where a map opens (tiles are drawn at every zoom)
    fit_zoom: int
    #: the first zoom whose pixels are as fine as the scene's ground sample distance (its native zoom)
    maxzoom: int

    @property
    def tilejson_bounds(self) -> tuple[float, float, float, float]:
        """``bounds_wgs84`` as TileJSON 3.0.0 takes them: bounds MUST NOT wrap around the antimeridian, so a
        scene across it spans every longitude. Why: MapLibre tests ``west <= x < east`` for each tile, and
        with RFC 7946's west > east it requested none: the scene never drew."""
        west, south, east, north = self.bounds_wgs84
        return (-180.0, south, 180.0, north) if west > east else (west, south, east, north)

    @property
    def centre_lonlat(self) -> tuple[float, float]:
        """The middle of ``bounds_wgs84`` (where a map opens), across the antimeridian too (west > east):
        the plain average of west and east put a scene over 180 degrees at 0 degrees, half a world away."""
        west, south, east, north = self.bounds_wgs84
        if west > east:
            east += 360.0
        lon = (west + east) / 2
        return (lon - 360.0 if lon > 180.0 else lon), (south + north) / 2


def _mercator_bounds(src: rasterio.io.DatasetReader) -> tuple[float, float, float, float]:
    """The scene's Web-Mercator bounds, continuous in x: a scene across the antimeridian ends past
    +ORIGIN_M (its east part shifted by one turn) instead of spanning the whole world, which made it a
    zoom-0 scene drawn from its coarsest overview."""
    if src.crs is None:
        raise ValueError(f"{Path(src.name).name} has no CRS: it cannot be placed on a web map")
    # from its WGS84 bounds, longitudes wrapped (a lon/lat scene stored past 180 degrees too)
    west, south, east, north = wgs84_bounds(src)
    if west > east:  # across 180 degrees
        east += 360.0
    return west / 180 * ORIGIN_M, _mercator_y(south), east / 180 * ORIGIN_M, _mercator_y(north)


def _mercator_y(latitude: float) -> float:
    """Web-Mercator northing (metres) of ``latitude``, clipped to the tile grid's +-85.05 degrees."""
    phi = math.radians(max(-MAX_LATITUDE, min(MAX_LATITUDE, latitude)))
    return ORIGIN_M / math.pi * math.asinh(math.tan(phi))


def _overlaps(tile_m: tuple[float, float, float, float], scene_m: tuple[float, float, float, float]) -> bool:
    """Whether a tile meets the scene, the scene also taken one turn west (its part past +180 degrees)."""
    if tile_m[1] >= scene_m[3] or tile_m[3] <= scene_m[1]:
        return False
    turn = 2 * ORIGIN_M
    return any(tile_m[0] < scene_m[2] - shift and tile_m[2] > scene_m[0] - shift for shift in (0.0, turn))


def tileset_of(path: str | Path) -> TileSet:
    """Bounds and zoom range of ``path``'s tiles; ``ValueError`` for a raster without a usable CRS."""
    with rasterio.open(path) as src:
        left, bottom, right, top = _mercator_bounds(src)
        west, south, east, north = wgs84_bounds(src)
        gsd = dataset_gsd_m(src)
    if gsd is None or gsd <= 0:
        raise ValueError(f"{Path(path).name}: its ground sample distance is unknown (no CRS in metres or degrees)")
    if south >= MAX_LATITUDE or north <= -MAX_LATITUDE:  # every tile was transparent, nothing said why
        raise ValueError(f"{Path(path).name} lies beyond {MAX_LATITUDE:.2f} degrees of latitude ({south:.2f} to "
                         f"{north:.2f}), where the Web-Mercator tile grid ends: open classmap.tif in a GIS instead")
    latitude = math.radians((south + north) / 2)
    metres_per_pixel_z0 = 2 * ORIGIN_M / 256 * math.cos(latitude)  # on the ground, at the scene's latitude
    # a zoom up to ZOOM_SLACK (in log2: 7 %) coarser than the GSD counts as native: a scene made on a
    # zoom-21 grid measures 0.3 % finer on the ellipsoid than the sphere's figure, and z22 would only
    # magnify it
    maxzoom = min(MAX_ZOOM, max(0, math.ceil(math.log2(metres_per_pixel_z0 / gsd) - ZOOM_SLACK)))
    extent = max(right - left, top - bottom, 1e-9)
    # 1e-9: a scene exactly one tile wide (cut on the tile grid) measures a few pm more through lon/lat
    fit_zoom = min(maxzoom, max(0, math.floor(math.log2(2 * ORIGIN_M / extent) + 1e-9)))
    return TileSet((west, south, east, north), fit_zoom, maxzoom)


def _rgba_lut(src: rasterio.io.DatasetReader) -> np.ndarray:
    """(257, 4) uint8: the colour of each class index, and of ``_OUTSIDE`` (transparent)."""
    lut = np.zeros((_OUTSIDE + 1, 4), dtype=np.uint8)
    try:
        table = src.colormap(1)
    except ValueError:  # no colour table: grey levels (still a class map the user can see)
        table = {i: (i, i, i, 255) for i in range(256)}
    for index, colour in table.items():
        if 0 <= index < _OUTSIDE:
            lut[index] = colour
    lut[0] = _CLEAR  # class 0 is "no data" in geoseg's class maps
    if src.nodata is not None and 0 <= src.nodata < _OUTSIDE:
        lut[int(src.nodata)] = _CLEAR
    lut[_OUTSIDE] = _CLEAR
    return lut


def _overview_level(src: rasterio.io.DatasetReader, scene_m: tuple[float, float, float, float],
                    tile_pixel_m: float) -> int | None:
    """Index of the coarsest overview still at least as fine as the tile's pixels; None: full resolution."""
    source_pixel_m = (scene_m[2] - scene_m[0]) / src.width  # a source pixel's width, in mercator metres
    factors = src.overviews(1)
    fitting = [i for i, f in enumerate(factors) if f * source_pixel_m <= tile_pixel_m]
    return fitting[-1] if fitting else None


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an (h, w, 4) uint8 RGBA array."""
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def empty_tile_png(size: int = 256) -> bytes:
    """A fully transparent ``size`` px PNG (what a web map shows where there is nothing)."""
    return encode_png(np.zeros((size, size, 4), dtype=np.uint8))


@functools.cache
def renderer_fingerprint() -> str:
    """12 hex digits that change whenever what turns a class map into tile bytes may have changed:
    this module's code (resampling, overview choice, colours, transparency, PNG settings), GDAL's
    warper and Pillow's PNG encoder. Why: a server caching tiles as immutable must name them by
    it, or an upgrade that renders them otherwise leaves clients with the old pictures for good."""
    parts = (Path(__file__).read_bytes(), rasterio.__gdal_version__.encode(), PIL.__version__.encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def render_xyz_tile(path: str | Path, z: int, x: int, y: int, size: int = 256) -> bytes | None:
    """PNG (RGBA, ``size`` px) of tile ``z/x/y`` of the class map at ``path``; None when the tile shows
    none of it (outside the scene, or only transparent classes there).

    ``ValueError``: ``z/x/y`` is not a tile, or the raster has no CRS.
    """
    tile_m = tile_bounds_mercator(z, x, y)
    with rasterio.open(path) as src:
        scene_m = _mercator_bounds(src)
        if not _overlaps(tile_m, scene_m):
            return None
        lut = _rgba_lut(src)
        pixel_m = (tile_m[2] - tile_m[0]) / size
        level = _overview_level(src, scene_m, pixel_m)
        nodata = src.nodata
    classes = np.full((size, size), _OUTSIDE, dtype=np.uint16)
    # opened anew at the chosen overview: GDAL's warper reads only the window the tile needs
    with rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), classes, src_nodata=nodata, dst_transform=Affine(pixel_m, 0, tile_m[0], 0, -pixel_m, tile_m[3]),
                  dst_crs=WEB_MERCATOR, dst_nodata=_OUTSIDE, resampling=Resampling.nearest)
    rgba = lut[classes]
    if not rgba[..., 3].any():
        return None
    return encode_png(rgba)

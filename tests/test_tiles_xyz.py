"""tiles.xyz: XYZ tile maths and class map tiles warped from a COG in another CRS (UTM)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.warp import transform

from tiles.cog import write_cog
from tiles.lonlat_bounds import wrap_longitudes
from tiles.xyz import (
    ORIGIN_M,
    check_tile,
    lonlat_to_tile,
    render_xyz_tile,
    tile_bounds_mercator,
    tileset_of,
)

COLOURS = {0: (0, 0, 0, 0), 1: (230, 25, 75, 255), 2: (60, 180, 75, 255), 3: (0, 130, 200, 255)}


def test_tile_maths_follows_the_xyz_scheme():
    assert tile_bounds_mercator(0, 0, 0) == pytest.approx((-ORIGIN_M, -ORIGIN_M, ORIGIN_M, ORIGIN_M))
    # y counts southwards from the top (XYZ, not TMS): tile 1/0/0 is the north-west quarter
    assert tile_bounds_mercator(1, 0, 0) == pytest.approx((-ORIGIN_M, 0, 0, ORIGIN_M))
    assert lonlat_to_tile(-179.9, 85.0, 1) == (0, 0) and lonlat_to_tile(0.1, -0.1, 1) == (1, 1)
    for lon, lat in ((32.58, 0.34), (-73.99, 40.75), (151.2, -33.87)):  # the tile holds the point's projection
        (mx,), (my,) = transform("EPSG:4326", "EPSG:3857", [lon], [lat])
        left, bottom, right, top = tile_bounds_mercator(19, *lonlat_to_tile(lon, lat, 19))
        assert left <= mx < right and bottom < my <= top
    for z, x, y in ((5, 0, 32), (5, 32, 0), (25, 0, 0), (-1, 0, 0)):
        with pytest.raises(ValueError, match="out of range|outside the zoom"):
            check_tile(z, x, y)


@pytest.fixture(scope="module")
def utm_classmap(tmp_path_factory) -> tuple:
    """A 0.5 m, 1600 x 1200 px class map in UTM 36N near Kampala: a no-data left quarter, classes 1-3 in bands."""
    folder = tmp_path_factory.mktemp("xyz")
    height, width = 1200, 1600
    classes = np.repeat(np.arange(height)[:, None] * 3 // height + 1, width, axis=1).astype("uint8")
    classes[:, : width // 4] = 0
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32636", "transform": Affine(0.5, 0, 453000, 0, -0.5, 38000), "tiled": True,
               "blockxsize": 512, "blockysize": 512}
    with rasterio.open(folder / "plain.tif", "w", **profile) as dst:
        dst.write(classes, 1)
    path = write_cog(folder / "plain.tif", folder / "classmap.tif", colormap=COLOURS)
    return path, classes


def rgba(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_the_scene_at_minzoom_has_the_class_map_shares_and_colours(utm_classmap):
    path, classes = utm_classmap
    tileset = tileset_of(path)
    # 800 x 600 m: the whole scene fits one zoom-15 tile (1223 m); 0.5 m pixels: native at z19 (0.30 m),
    # since z18's 0.60 m pixels would lose detail
    assert (tileset.fit_zoom, tileset.maxzoom) == (15, 19)
    west, south, east, north = tileset.bounds_wgs84
    (x0, y0), (x1, y1) = lonlat_to_tile(west, north, tileset.fit_zoom), lonlat_to_tile(east, south, tileset.fit_zoom)
    assert x1 - x0 <= 1 and y1 - y0 <= 1  # the scene lies on at most 2 x 2 tiles (1 if it sits in one)
    tiles = [render_xyz_tile(path, tileset.fit_zoom, x, y) for x in (x0, x1) for y in (y0, y1)]
    pixels = np.concatenate([rgba(png) for png in tiles if png is not None])
    assert pixels.shape[1:] == (256, 4)
    opaque = pixels[pixels[..., 3] > 0]
    assert {tuple(c) for c in np.unique(opaque, axis=0)} == {c for c in COLOURS.values() if c[3]}
    # nearest resampling from the overviews keeps each class's share of the scene
    for index in (1, 2, 3):
        share = (opaque == COLOURS[index]).all(axis=-1).mean()
        assert share == pytest.approx((classes[classes > 0] == index).mean(), abs=0.03), index


def test_native_zoom_tile_and_a_tile_elsewhere(utm_classmap):
    path, _ = utm_classmap
    tileset = tileset_of(path)
    west, south, east, north = tileset.bounds_wgs84
    x, y = lonlat_to_tile(west + (east - west) * 0.6, (south + north) / 2, tileset.maxzoom)
    assert rgba(render_xyz_tile(path, tileset.maxzoom, x, y))[..., 3].all()  # inside the scene: no hole
    assert render_xyz_tile(path, tileset.maxzoom, x + 50, y) is None  # outside: nothing to draw
    x, y = lonlat_to_tile(west + (east - west) * 0.05, (south + north) / 2, tileset.maxzoom)
    assert render_xyz_tile(path, tileset.maxzoom, x, y) is None  # only no data (class 0) there
    assert math.isclose(sum(tile_bounds_mercator(3, 1, 1)[::2]), 2 * (-ORIGIN_M + 1.5 * ORIGIN_M / 4))


def test_a_scene_across_the_antimeridian_keeps_its_zooms_and_draws_on_both_sides(tmp_path):
    """A UTM 60S scene over 180 degrees (Fiji): its zoom range is the same scene's away from the meridian
    (it was zoom 0, the whole world wide), and its tiles either side come from full-resolution pixels."""
    def classmap(name: str, lon: float) -> tuple:
        (x,), (y,) = transform("EPSG:4326", "EPSG:32760", [lon], [-16.5])
        height, width = 600, 800
        classes = np.where(np.arange(width)[None, :] < width // 2, 1, 2).repeat(height, axis=0).astype("uint8")
        classes[(np.arange(height) // 4) % 2 == 1, :] = 3  # 2 m bands: a coarse overview loses them
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 0,
                   "crs": "EPSG:32760", "transform": Affine(0.5, 0, x - width / 4, 0, -0.5, y + height / 4)}
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(classes, 1)
        return write_cog(tmp_path / f"{name}.tif", tmp_path / f"{name}-cog.tif", colormap=COLOURS), x

    across, _ = classmap("across", 180.0)
    inland, _ = classmap("inland", 177.0)
    tiles, reference = tileset_of(across), tileset_of(inland)
    assert (tiles.fit_zoom, tiles.maxzoom) == (reference.fit_zoom, reference.maxzoom) and tiles.fit_zoom >= 15
    west, _, east, _ = tiles.bounds_wgs84
    assert west > 179.99 and east < -179.99  # RFC 7946's order for a box across the antimeridian
    z = tiles.maxzoom
    for lon, own, other in ((179.9995, 1, 2), (-179.9995, 2, 1)):
        png = render_xyz_tile(across, z, *lonlat_to_tile(lon, -16.5, z))
        pixels = rgba(png)
        shares = {c: (pixels == COLOURS[c]).all(axis=-1).mean() for c in (1, 2, 3)}
        assert shares[own] > 0.3 and shares[3] > 0.3 and shares[other] < 0.05, (lon, shares)
    assert render_xyz_tile(across, z, 2 ** (z - 1), 2 ** (z - 1)) is None  # the other side of the world


@pytest.mark.parametrize(("west", "east", "wrapped"), [
    (10.0, 11.0, (10.0, 11.0)),
    (179.9995, 180.0003, (179.9995, -179.9997)),  # a lon/lat scene stored past 180: across it
    (200.0, 201.0, (-160.0, -159.0)),  # a 0..360 grid
    (-190.0, -170.0, (170.0, -170.0)),
    (179.99, -179.99, (179.99, -179.99)),  # rasterio's own order across 180 is kept
    (170.0, 180.0, (170.0, 180.0)),
    (-10.0, 400.0, (-180.0, 180.0)),
])
def test_longitudes_are_wrapped_the_rfc_7946_way(west, east, wrapped):
    assert wrap_longitudes(west, east) == pytest.approx(wrapped)

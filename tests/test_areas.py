"""Building areas on the ellipsoid, anywhere on the Earth, and buildings off it dropped (real rasters)."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.areas import geodesic_areas_m2, off_earth
from geoseg.footprints import building_frame, write_buildings
from geoseg.paths import data_root

RASTERS = data_root() / "rasters" / "rasterio"


def pixel_blocks(transform, cells: list[tuple[int, int]], size: int) -> np.ndarray:
    """Squares of ``size`` x ``size`` pixels with their top-left pixel at (column, row), in the raster's CRS."""
    boxes = []
    for col, row in cells:
        (x0, y0), (x1, y1) = transform @ (col, row), transform @ (col + size, row + size)
        boxes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return np.asarray(boxes, dtype=object)


def test_areas_match_the_local_utm_zone_on_a_real_scene():
    labels = gpd.read_file(data_root() / "buildings" / "kampala" / "labels.geojson").explode(index_parts=False)
    labels = labels[labels.geom_type == "Polygon"].iloc[:300]
    utm = labels.to_crs(labels.estimate_utm_crs()).area.to_numpy()
    ours = geodesic_areas_m2(labels.to_crs(4326).geometry.values)
    assert np.allclose(ours, utm, rtol=2e-3)
    # a hole is subtracted, whatever the rings' orientation
    ring = shapely.Polygon(labels.geometry.iloc[0].exterior).buffer(0)
    holed = shapely.Polygon(ring.exterior.coords, [shapely.affinity.scale(ring, 0.5, 0.5).exterior.coords[::-1]])
    assert geodesic_areas_m2([holed])[0] == pytest.approx(0.75 * geodesic_areas_m2([ring])[0], rel=1e-3)


def test_areas_across_the_whole_globe_are_true_areas():
    """world.rgb.tif (EPSG:4326, 0.7 degree pixels): one UTM zone for the whole frame gave null
    areas; each block's area now equals its area in an equal-area projection."""
    with rasterio.open(RASTERS / "world.rgb.tif") as src:
        transform, crs = src.transform, src.crs
    cells = [(col, row) for col in range(0, 500, 37) for row in range(15, 236, 20)]  # latitudes to +-80 deg
    blocks = pixel_blocks(transform, cells, 4)
    frame = building_frame(blocks, [0.5] * len(blocks), crs, None, transform)
    assert len(frame) == len(blocks) and frame["area_m2"].notna().all()
    # the blocks' edges follow meridians and parallels: densified, an equal-area projection measures them exactly
    dense = gpd.GeoSeries(shapely.segmentize(blocks, 0.01), crs=crs)
    expected = dense.to_crs("+proj=cea +ellps=WGS84").area.to_numpy()
    assert np.allclose(frame["area_m2"].to_numpy(), expected, rtol=1e-3)
    assert frame["area_m2"].max() > 4 * frame["area_m2"].min()  # blocks near the poles are much smaller


def test_buildings_off_a_geostationary_disk_are_dropped(tmp_path):
    """goes.tif: pixels past the Earth's disk have no longitude/latitude; their buildings came out
    as empty GeoJSON MultiPolygons with a null area."""
    with rasterio.open(RASTERS / "goes.tif") as src:
        transform, crs = src.transform, src.crs
    on_disk = [(261, 261), (100, 261), (261, 400)]
    corners = [(5, 5), (525, 5), (5, 525)]
    blocks = pixel_blocks(transform, on_disk + corners, 10)
    lonlat = gpd.GeoSeries(blocks, crs=crs).to_crs(4326).values
    assert list(off_earth(lonlat)) == [False] * 3 + [True] * 3
    notes: list[str] = []
    frame = building_frame(blocks, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], crs, None, transform, notes)
    assert list(frame["confidence"]) == [0.9, 0.8, 0.7] and list(frame["id"]) == [1, 2, 3]
    assert len(notes) == 1 and "3 building polygon(s) dropped" in notes[0]
    assert (frame["area_m2"] > 1e7).all()  # 10 x 10 pixels of ~2 km near the sub-satellite point
    frame["source"] = "goes.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    features = json.loads((tmp_path / "buildings.geojson").read_text())["features"]
    assert [f["geometry"]["type"] for f in features] == ["Polygon"] * 3
    assert all(f["properties"]["area_m2"] > 0 for f in features)
    assert len(gpd.read_file(tmp_path / "buildings.gpkg")) == 3

"""buildings.geojson as RFC 7946 asks: valid polygons cut at the antimeridian, rings wound the RFC way."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import shape

from geoseg.areas import geodesic_areas_m2
from geoseg.footprints import building_frame, write_buildings

UTM_60S = CRS.from_epsg(32760)  # Fiji's 180th meridian runs through its zone
_TO_UTM = pyproj.Transformer.from_crs(4326, 32760, always_xy=True)


def staircase_across_180(offsets_m: tuple[float, ...], lat: float = -16.5) -> shapely.Polygon:
    """A 6 x 6 m building in UTM 60S whose east wall is a 0.3 m pixel staircase with its steps
    ``offsets_m`` east (+) or west (-) of the 180th meridian, in turn: it crosses it several times."""
    x0, y0 = _TO_UTM.transform(180.0, lat)
    to_lonlat = pyproj.Transformer.from_crs(32760, 4326, always_xy=True)
    wall = []
    for i, dy in enumerate(np.arange(0.0, 6.01, 0.3)):
        meridian_x = _TO_UTM.transform(180.0, to_lonlat.transform(x0, y0 + dy)[1])[0]
        wall.append((meridian_x + offsets_m[i % len(offsets_m)], y0 + dy))
    return shapely.Polygon([(x0 - 6, y0), *wall, (x0 - 6, y0 + 6)])


@pytest.mark.parametrize("offsets_m", [(0.01, -0.05), (0.05, -0.01), (0.02, 0.3), (0.3, -0.02, 0.01)])
def test_a_building_across_the_antimeridian_is_valid_parts_wound_the_rfc_7946_way(offsets_m, tmp_path):
    """GDAL's GeoJSON driver cut such a building (its staircase steps a few centimetres either
    side of 180 degrees, as a predicted outline over Fiji in UTM 60S has) into a part on -180 whose
    ring doubled back along the meridian: self-intersecting and clockwise, or too few points."""
    building = staircase_across_180(offsets_m)
    neighbour = shapely.box(*(np.array(building.bounds) + (-20, 0, -20, 0)))  # west of 180: one Polygon
    assert building.is_valid
    frame = building_frame(np.asarray([building, neighbour], dtype=object), [0.9, 0.8], UTM_60S, None,
                           Affine.identity())
    frame["source"] = "fiji.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    collection = json.loads((tmp_path / "buildings.geojson").read_text())
    assert "crs" not in collection and [f["id"] for f in collection["features"]] == [1, 2]
    crossing, west = (shape(f["geometry"]) for f in collection["features"])
    assert collection["features"][0]["geometry"]["type"] == "MultiPolygon"
    assert collection["features"][1]["geometry"]["type"] == "Polygon"
    for geom in (crossing, west):
        assert geom.is_valid, shapely.is_valid_reason(geom)
        parts = shapely.get_parts(geom)
        assert all(p.exterior.is_ccw and not any(h.is_ccw for h in p.interiors) for p in parts)
        xy = shapely.get_coordinates(geom)
        assert (np.abs(xy[:, 0]) <= 180).all()
    lons = [shapely.get_coordinates(p)[:, 0] for p in shapely.get_parts(crossing)]
    assert any((lon >= 179.999).all() for lon in lons) and any((lon <= -179.999).all() for lon in lons)
    # the parts hold the whole building: their areas add up to its own
    measured = geodesic_areas_m2(np.asarray(shapely.get_parts(crossing), dtype=object)).sum()
    assert measured == pytest.approx(frame["area_m2"].iloc[0], rel=2e-3)
    read = gpd.read_file(tmp_path / "buildings.geojson", engine="pyogrio")  # GDAL reads it back
    assert list(read["id"]) == [1, 2] and list(read["source"]) == ["fiji.tif"] * 2


@pytest.mark.parametrize("epsg, box", [(3413, (-3.0, -6.0, 7.0, 4.0)), (3031, (-3.0, -6.0, 7.0, 4.0)),
                                        (3413, (0.1, -5.0, 10.1, 5.0))])
def test_a_building_round_or_beside_a_pole_keeps_its_ground(epsg, box, tmp_path):
    """A ring round a pole spans every longitude without crossing 180 degrees as a cut expects: a
    building round the North Pole ended the run (TopologyException), one round the South Pole came
    out as two slivers without the pole. Written, each covers the building's ground again (in polar
    stereographic metres), as one beside the pole does."""
    crs = CRS.from_epsg(epsg)
    building = shapely.box(*box).segmentize(0.3)  # a pixel outline: a vertex every 0.3 m
    frame = building_frame(np.asarray([building], dtype=object), [0.9], crs, None, Affine.identity())
    frame["source"] = "pole.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    geom = shape(json.loads((tmp_path / "buildings.geojson").read_text())["features"][0]["geometry"])
    assert geom.is_valid and (np.abs(shapely.get_coordinates(geom)) <= (180, 90)).all()
    assert all(p.exterior.is_ccw for p in shapely.get_parts(geom))
    to_polar = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    back = shapely.make_valid(shapely.transform(geom, lambda xy: np.c_[to_polar.transform(xy[:, 0], xy[:, 1])]))
    assert shapely.symmetric_difference(back, building).area / building.area < 0.01
    assert geodesic_areas_m2(np.asarray(shapely.get_parts(geom), dtype=object)).sum() == pytest.approx(
        frame["area_m2"].iloc[0], rel=0.01)


def test_longitudes_past_180_are_written_in_range(tmp_path):
    """A raster in EPSG:4326 with 0..360 degree longitudes (GDAL allows a geotransform past 180):
    GeoJSON positions must lie in [-180, 180], and a building across 180 is cut there."""
    past = shapely.box(180.01, -16.5, 180.0101, -16.4999)
    across = shapely.box(179.99995, -16.5, 180.00005, -16.4999)
    before = shapely.box(-180.0002, -16.5, -179.9999, -16.4999)
    frame = building_frame(np.asarray([past, across, before], dtype=object), [0.9, 0.8, 0.7], CRS.from_epsg(4326),
                           None, Affine.identity())
    frame["source"] = "lon360.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    geoms = [shape(f["geometry"]) for f in json.loads((tmp_path / "buildings.geojson").read_text())["features"]]
    assert [g.geom_type for g in geoms] == ["Polygon", "MultiPolygon", "MultiPolygon"]
    assert geoms[0].bounds == pytest.approx((-179.99, -16.5, -179.9899, -16.4999))
    for geom, area in zip(geoms, frame["area_m2"]):
        assert geom.is_valid and (np.abs(shapely.get_coordinates(geom)[:, 0]) <= 180).all()
        parts = np.asarray(shapely.get_parts(geom), dtype=object)
        assert geodesic_areas_m2(parts).sum() == pytest.approx(area, rel=1e-3)


def test_an_invalid_polygon_is_written_valid(tmp_path):
    """A polygon that is invalid in WGS84 (a reprojection can fold a sliver; here a bow tie)
    was written as it came; snapping it to the 1e-7 degree grid raised GEOS's TopologyException."""
    x0, y0 = _TO_UTM.transform(178.0, -17.8)
    bow_tie = shapely.Polygon([(x0, y0), (x0 + 8, y0 + 8), (x0 + 8, y0), (x0, y0 + 8)])
    assert not bow_tie.is_valid
    frame = building_frame(np.asarray([bow_tie, shapely.box(x0 + 20, y0, x0 + 30, y0 + 9)], dtype=object),
                           [0.6, 0.7], UTM_60S, None, Affine.identity())
    frame["source"] = "a.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    features = json.loads((tmp_path / "buildings.geojson").read_text())["features"]
    assert [f["id"] for f in features] == [1, 2]
    for feature in features:
        geom = shape(feature["geometry"])
        assert geom.is_valid and geom.area > 0, shapely.is_valid_reason(geom)


def test_geojson_properties_are_json_numbers_and_coordinates_have_seven_decimals(tmp_path):
    x0, y0 = _TO_UTM.transform(178.0, -17.8)
    house = shapely.Polygon([(x0, y0), (x0 + 7.3, y0 + 0.123456), (x0 + 7.0, y0 + 9.1), (x0 - 0.2, y0 + 8.7)])
    frame = building_frame(np.asarray([house], dtype=object), [0.75], UTM_60S, None, Affine.identity())
    frame["source"] = "a.tif"
    write_buildings(frame, tmp_path, georeferenced=True)
    feature = json.loads((tmp_path / "buildings.geojson").read_text())["features"][0]
    props = feature["properties"]
    assert feature["id"] == props["id"] == 1 and isinstance(props["id"], int)
    assert isinstance(props["area_m2"], float) and props["area_m2"] == pytest.approx(house.area, rel=2e-3)
    assert props["confidence"] == 0.75 and props["source"] == "a.tif"
    ring = feature["geometry"]["coordinates"][0]
    assert max(len(repr(v).split(".")[1]) for xy in ring for v in xy) <= 7
    assert shapely.LinearRing(ring).is_ccw


def test_no_buildings_is_an_empty_feature_collection(tmp_path):
    frame = building_frame(np.asarray([], dtype=object), [], UTM_60S, None, Affine.identity())
    frame["source"] = []
    write_buildings(frame, tmp_path, georeferenced=True)
    assert json.loads((tmp_path / "buildings.geojson").read_text()) == {"type": "FeatureCollection", "features": []}
    assert len(gpd.read_file(tmp_path / "buildings.gpkg")) == 0

"""Rasterised building labels agree with the real OSM polygons they come from."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from rasterio import features
from rasterio.windows import Window

from tiles.grid import tile_grid
from tiles.labels import BACKGROUND, IGNORE, INTERIOR, OUTLINE, LabelIndex, building_classes, window_labels
from tiles.source import Scene


def scene_labels(scene: Scene, index: LabelIndex, size: int = 256, overlap: int = 32) -> np.ndarray:
    """Label raster of the whole scene assembled from per-tile label windows."""
    out = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for t in tile_grid(scene.width, scene.height, size, overlap):
        _, valid = scene.read(t.read)
        lab, _ = window_labels(index, scene.window_transform(t.read), valid.shape, valid)
        rows, cols = t.core_slices
        c = t.core
        out[int(c.row_off):int(c.row_off + c.height), int(c.col_off):int(c.col_off + c.width)] = lab[rows, cols]
    return out


@pytest.fixture(scope="module")
def nairobi(buildings_dir: Path):
    path = buildings_dir / "nairobi/nairobi_z19_2.tif"
    scene = Scene(path)
    index = LabelIndex.from_files([buildings_dir / "nairobi/labels.geojson"], scene.crs)
    labels = scene_labels(scene, index)
    polys = gpd.read_file(buildings_dir / "nairobi/labels.geojson").to_crs(scene.crs)
    yield scene, index, labels, polys
    scene.close()


def test_building_interiors_are_labelled(nairobi):
    scene, _, labels, polys = nairobi
    res = scene.transform.a
    inv = ~scene.transform
    checked = 0
    for geom in polys.geometry:
        core = geom.buffer(-3.5 * res)  # away from the 2 px outline band
        if core.is_empty:
            continue
        pt = core.representative_point()
        col, row = (int(v) for v in inv @ (pt.x, pt.y))
        if 0 <= row < scene.height and 0 <= col < scene.width:
            assert labels[row, col] == INTERIOR, f"building at {pt} labelled {labels[row, col]}"
            checked += 1
    assert checked >= 20


def test_pixels_far_from_buildings_are_background(nairobi):
    scene, _, labels, polys = nairobi
    near = features.rasterize(polys.geometry.buffer(2.0 * scene.transform.a), out_shape=labels.shape,
                              transform=scene.transform, all_touched=True).astype(bool)
    assert (~near).mean() > 0.2
    assert (labels[~near] == BACKGROUND).all()
    assert set(np.unique(labels)) == {BACKGROUND, INTERIOR, OUTLINE}


def test_footprint_is_exactly_the_rasterised_polygons(nairobi):
    scene, _, labels, polys = nairobi
    footprint = features.rasterize(polys.geometry, out_shape=labels.shape, transform=scene.transform).astype(bool)
    np.testing.assert_array_equal(labels > 0, footprint)
    outline_share = (labels == OUTLINE).sum() / footprint.sum()
    assert 0.1 < outline_share < 0.6  # a thin band, not the whole footprint


def test_tiled_labels_equal_whole_scene_labels(nairobi):
    scene, index, labels, _ = nairobi
    _, valid = scene.read(Window(0, 0, scene.width, scene.height))
    whole, n = window_labels(index, scene.transform, labels.shape, valid)
    np.testing.assert_array_equal(labels, whole)  # no seams from tiling
    assert n > 50


def test_labels_in_another_crs_land_on_the_same_pixels(nairobi, tmp_path: Path):
    scene, _, labels, polys = nairobi
    utm = tmp_path / "labels_utm.gpkg"
    polys.to_crs("EPSG:32737").to_file(utm)
    index = LabelIndex.from_files([utm], scene.crs)
    again = scene_labels(scene, index)
    assert (again == labels).mean() > 0.995


def test_invalid_geometries_are_repaired_and_invalid_pixels_ignored(tmp_path: Path):
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    assert not bowtie.is_valid
    path = tmp_path / "bowtie.geojson"
    gpd.GeoDataFrame({"osm_id": [1]}, geometry=[bowtie], crs="EPSG:32618").to_file(path)
    index = LabelIndex.from_files([path], "EPSG:32618")
    assert all(shapely.is_valid(index.polygons)) and len(index.polygons) == 2  # two triangles
    valid = np.ones((12, 12), dtype=bool)
    valid[:, -1] = False
    lab, n = window_labels(index, Affine(1, 0, 0, 0, -1, 12), (12, 12), valid)
    assert n == 2 and (lab[:, -1] == IGNORE).all() and (lab == OUTLINE).any()


def test_a_ring_that_does_not_close_is_closed_not_fatal(tmp_path: Path):
    """A hand-edited GeoJSON footprint whose ring does not end where it starts (GDAL reads it, with a
    warning) failed the whole scene with GEOS's 'Points of LinearRing do not form a closed linestring'."""
    path = tmp_path / "unclosed.geojson"
    path.write_text('{"type": "FeatureCollection", "features": ['
                    '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", '
                    '"coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10]]]}}, '
                    '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", '
                    '"coordinates": [[[20, 0], [30, 0], [30, 10], [20, 10], [20, 0]]]}}], '
                    '"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32618"}}}')
    with pytest.warns(RuntimeWarning, match="Non closed ring"):
        index = LabelIndex.from_files(path, "EPSG:32618")
    assert sorted(shapely.area(index.polygons)) == [100.0, 100.0]

def test_touching_buildings_stay_separated_by_outline():
    inst = np.zeros((10, 20), dtype=np.int32)
    inst[2:8, 2:10] = 1
    inst[2:8, 10:18] = 2  # shared wall between columns 9 and 10
    classes = building_classes(inst)
    assert (classes[2:8, 8:12] == OUTLINE).all()  # 2 px on each side of the shared wall
    assert (classes[4:6, 4:8] == INTERIOR).all() and (classes[4:6, 12:16] == INTERIOR).all()
    assert (classes[inst == 0] == BACKGROUND).all() and (classes[2, 2:18] == OUTLINE).all()


def test_labels_near_a_scene_are_read_alone_and_the_extent_still_counts(buildings_dir: Path, tmp_path: Path):
    """Each scene read its labels file in full: a country-wide file (216 000 footprints) cost 2.8 s and
    590 MB a scene. `near` reads only the features around the scene, with the same polygons in the same
    order (the order decides the outline shared by overlapping footprints) as a full read, while `meets`
    still answers for the file's whole extent (a scene between far-apart label blocks is empty, not
    'misses the labels')."""
    from tiles.scene_chips import scene_box

    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson")
    far = frame.copy()
    far["geometry"] = shapely.transform(far.geometry.values, lambda c: c + np.array([0.5, 0.5]))
    path = tmp_path / "country.gpkg"
    gpd.GeoDataFrame(pd.concat([far, frame], ignore_index=True), crs=4326).to_crs(32737).to_file(path)
    with Scene(buildings_dir / "nairobi/nairobi_z19_2.tif") as scene:
        box = scene_box(scene, 256)
        full = LabelIndex.from_files(path, scene.crs)
        near = LabelIndex.from_files(path, scene.crs, near=box)
    assert 0 < len(near.polygons) < len(frame) < len(full.polygons)
    assert shapely.equals_exact(full.query(box), near.query(box), tolerance=0).all()
    assert near.in_files == len(full.polygons)
    x0, y0, x1, y1 = shapely.total_bounds(full.polygons)
    between = ((x0 + x1) / 2, (y0 + y1) / 2, (x0 + x1) / 2 + 10, (y0 + y1) / 2 + 10)
    assert near.meets(between) and full.meets(between)
    assert not near.meets((x1 + 1000, y1 + 1000, x1 + 1010, y1 + 1010))

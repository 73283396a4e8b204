"""Squaring (--regularize) on a real scene: neighbours that shared a wall still share it, never overlap."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely

from geoseg.paths import data_root
from geoseg.regularize import dominant_angle, regularize_buildings
from geoseg.vectorize import VectorizeOptions, vectorize_array
from tiles.labels import LabelIndex, building_classes, instance_raster

from checks import walls_between


def kampala_terraces() -> tuple[list, list]:
    """Buildings of kampala_z19_2 (OSM footprints -> training-style classes -> polygons at the
    default --simplify of 1 px), and the component each came from."""
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    with rasterio.open(scene) as src:
        transform, shape, crs, bounds = src.transform, (src.height, src.width), src.crs, src.bounds
    polys = LabelIndex.from_files([data_root() / "buildings" / "kampala" / "labels.geojson"], crs).query(tuple(bounds))
    found = vectorize_array(building_classes(instance_raster(polys, transform, shape)),
                            options=VectorizeOptions(min_area_px=4, simplify_px=1.0))
    return found.geometries, found.group


def test_squared_neighbours_keep_their_walls_on_a_real_scene():
    """Pairs sharing at least 0.5 m (1.7 px) of wall still share one after squaring, and no two
    buildings overlap. The first version (each building squared alone, overlaps cut, gaps closed
    with mitred buffers) left 5 of these 19 pairs apart and 8.9 px² of overlap between groups."""
    geoms, groups = kampala_terraces()
    before = {k: w for k, (w, _) in walls_between(geoms).items() if w >= 1.7}
    assert len(before) >= 15, "the scene must hold terraces for this test to mean anything"
    squared = regularize_buildings(geoms, groups, 1.0)
    assert len(squared) == len(geoms)
    assert all(g.is_valid and g.geom_type == "Polygon" for g in squared)
    after = walls_between(squared)
    assert sum(overlap for _, overlap in after.values()) < 1e-6
    lost = [k for k in before if after.get(k, (0.0, 0.0))[0] < 1]
    assert not lost, f"pairs no longer sharing a wall: {lost}"
    # squared: nearly all outline length runs along the group's two axes
    for members in {g: [i for i, h in enumerate(groups) if h == g] for g in set(groups)}.values():
        if len(members) < 2:
            continue
        angle = dominant_angle([squared[i] for i in members])
        for i in members:
            xy = np.asarray(squared[i].exterior.coords)
            d = np.diff(xy, axis=0)
            length = np.hypot(d[:, 0], d[:, 1])
            off = np.abs(np.sin(2 * (np.arctan2(d[:, 1], d[:, 0]) - angle)))  # 0 along either axis
            assert (length * (off > 1e-6)).sum() <= 0.02 * length.sum()
    assert sum(len(g.exterior.coords) for g in squared) < sum(len(g.exterior.coords) for g in geoms)
    assert sum(g.area for g in squared) == pytest.approx(sum(g.area for g in geoms), rel=0.05)


def test_no_ring_of_a_squared_building_runs_millimetres_from_another():
    """A courtyard 0.01 px inside a wall: squared ring by ring, the two rings stayed 0.01 px
    apart (2 mm on nairobi_z19_1, which the GeoJSON's 7 decimals turned into a MultiPolygon).
    Walls closer than half the tolerance are merged: the courtyard opens onto the wall."""
    building = shapely.box(0, 0, 30, 20).difference(shapely.box(24, 8, 29.99, 12))
    assert len(building.interiors) == 1
    squared = regularize_buildings([building], [0], 1.0)[0]
    assert squared.is_valid and squared.geom_type == "Polygon"
    rings = [shapely.LinearRing(squared.exterior), *(shapely.LinearRing(r) for r in squared.interiors)]
    gaps = [a.distance(b) for k, a in enumerate(rings) for b in rings[k + 1:]]
    assert all(gap == 0 or gap >= 0.5 for gap in gaps)
    assert squared.area == pytest.approx(building.area, abs=0.5)


def test_squaring_reports_its_progress():
    """--regularize squared every building (~7 ms each, seconds for a dense scene) with the bar
    standing still at the end of the vectorize stage."""
    geoms, groups = kampala_terraces()
    seen: list[float] = []
    same = regularize_buildings(geoms, groups, 1.0, progress=seen.append)
    assert len(seen) >= min(20, len(set(groups)) // 2) and seen == sorted(seen) and 0 <= seen[0] and seen[-1] < 1
    assert [g.wkb for g in same] == [g.wkb for g in regularize_buildings(geoms, groups, 1.0)]

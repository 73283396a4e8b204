"""Coverage simplification: shared walls simplified once, so neighbours keep them and never overlap."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoseg.coverage import simplify_coverage
from geoseg.polygonize import polygons_from_labels


def pairwise_overlap(polygons: np.ndarray) -> float:
    left, right = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    pair = left < right
    return float(shapely.area(shapely.intersection(polygons[left[pair]], polygons[right[pair]])).sum())


@pytest.mark.parametrize("seed", range(12))
def test_random_label_rasters_stay_a_valid_coverage(seed):
    """Noisy, blocky and holed label rasters: every output valid, no overlaps, walls still matched,
    each outline within Douglas-Peucker's reach of its pixels and simpler than them."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 80, 2)
    k = int(rng.integers(2, 8))
    block = (1, 3, 6)[seed % 3]
    labels = np.kron(rng.integers(0, k + 1, (h // block + 1, w // block + 1)), np.ones((block, block), int))[:h, :w]
    if seed % 3 == 2:
        labels[rng.random((h, w)) < 0.1] = 0  # holes and ragged walls
    polygons, _ = polygons_from_labels(labels)
    assert shapely.coverage_is_valid(polygons)  # the tracer's output is edge-matched
    for tolerance in (0.5, 1.0, 2.5):
        out = simplify_coverage(polygons, tolerance)
        assert out.size == polygons.size
        assert shapely.is_valid(out).all() and (shapely.get_type_id(out) == 3).all()
        assert shapely.coverage_is_valid(out)
        assert pairwise_overlap(out) < 1e-9
        # Douglas-Peucker moves a vertex by at most the tolerance (topology preservation may keep more)
        assert shapely.hausdorff_distance(polygons, out).max() <= 1.5 * tolerance
    assert shapely.get_num_coordinates(out).sum() < shapely.get_num_coordinates(polygons).sum()


def test_a_shared_staircase_wall_is_simplified_once_for_both_sides():
    # two houses split by a diagonal staircase wall: each ring alone would cut it differently
    labels = np.ones((30, 30), int)
    labels[np.triu_indices(30, 1)] = 2
    polygons, values = polygons_from_labels(np.pad(labels, 2))
    out = simplify_coverage(polygons, 1.0)
    a, b = out
    wall = a.boundary.intersection(b.boundary)
    assert a.intersection(b).area == 0
    # the staircase from (3, 2) to (32, 31) became one straight wall, the same for both
    assert wall.length == pytest.approx(29 * np.sqrt(2), rel=1e-9)
    assert shapely.line_merge(wall).equals(shapely.LineString([(3, 2), (32, 31)]))
    union = a.union(b)  # no gap left between them
    assert union.geom_type == "Polygon" and not union.interiors and union.area == pytest.approx(a.area + b.area)
    assert shapely.get_num_coordinates(out).sum() < 12


def test_empty_input_and_zero_tolerance_give_the_input_back():
    assert simplify_coverage(np.empty(0, dtype=object), 1.0).size == 0
    polygons, _ = polygons_from_labels(np.array([[1, 1, 2], [1, 2, 2]]))
    assert all(p.equals_exact(q, 0) for p, q in zip(simplify_coverage(polygons, 0), polygons))

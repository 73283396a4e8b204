"""The numpy polygoniser: GDAL's 4-connected regions (holes, diagonal touches) and value-aware run labelling."""
from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage

from geoseg.polygonize import find_components, polygons_from_labels, trace_polygons


@pytest.mark.parametrize("seed", range(24))
def test_traced_polygons_are_gdals_regions(seed):
    """The vectorised tracer gives GDAL's polygons (4-connected regions, holes, diagonal touches), all valid."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 60, 2)
    k = int(rng.integers(1, 6))
    labels = rng.integers(0, k + 1, (h, w)).astype(np.int32)
    if seed % 3 == 1:  # blocky: larger regions, holes, touching neighbours
        labels = np.kron(rng.integers(0, k + 1, (h // 3 + 1, w // 3 + 1)), np.ones((3, 3), int))[:h, :w]
    elif seed % 3 == 2:  # one value, dense noise: many regions touching themselves and others at corners
        labels = (rng.random((h, w)) < 0.6).astype(np.int32)
    mine, values = polygons_from_labels(labels, row_offset=5, col_offset=7)
    ref = [(shapely.geometry.shape(g), v) for g, v in features.shapes(
        labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=Affine.translation(7, 5))]
    assert all(g.is_valid and g.geom_type == "Polygon" for g in mine)
    # neighbours hold the same vertices along the walls they share (geoseg.coverage needs it)
    assert shapely.coverage_is_valid(mine)
    assert len(mine) == len(ref)
    key = lambda item: (int(item[1]), round(item[0].centroid.x, 6), round(item[0].centroid.y, 6))  # noqa: E731
    for (ours, v), (theirs, u) in zip(sorted(zip(mine, values), key=key), sorted(ref, key=key)):
        assert v == u and len(ours.interiors) == len(theirs.interiors)
        assert ours.equals(theirs)


def test_diagonal_touches_follow_four_connectivity():
    # two pixels of one value touching at a corner: two polygons
    two = np.array([[1, 0], [0, 1]])
    polys, values = polygons_from_labels(two)
    assert len(polys) == 2 and list(values) == [1, 1]
    # a frame whose hole touches the outside at a corner: one polygon, its hole touching the shell there
    frame = np.array([[0, 1, 1],
                      [1, 0, 1],
                      [1, 1, 1]])
    polys, _ = polygons_from_labels(frame)
    assert len(polys) == 1
    assert polys[0].is_valid and len(polys[0].interiors) == 1
    assert polys[0].area == frame.sum()
    assert polys[0].exterior.intersection(polys[0].interiors[0]).equals(shapely.Point(1, 1))


def test_tracer_refuses_rasters_without_background_border():
    with pytest.raises(ValueError, match="border"):
        trace_polygons(np.ones((4, 4), np.int32))
    with pytest.raises(ValueError, match="2-D"):
        trace_polygons(np.zeros(5, np.int32))
    polygons, values = trace_polygons(np.zeros((4, 4), np.int32))
    assert polygons.size == 0 and values.size == 0


def test_run_labelling_with_values_joins_only_equal_neighbours():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 4, (64, 80))
    pixel = np.flatnonzero(labels)
    comps = find_components(pixel, labels.shape[1], labels.ravel()[pixel])
    expected = sum(ndimage.label(labels == v)[1] for v in (1, 2, 3))
    assert comps.n == expected
    # same component <=> same value and 4-connected: each component holds one value and is one ndimage region
    got = np.zeros(labels.shape, np.int64)
    got.ravel()[pixel] = comps.label
    for c in range(1, comps.n + 1):
        inside = got == c
        values = np.unique(labels[inside])
        assert values.size == 1
        regions, n = ndimage.label(labels == values[0])
        assert np.unique(regions[inside]).size == 1
        assert (regions == regions[inside][0]).sum() == inside.sum()

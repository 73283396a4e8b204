"""Cutting building polygons off the input's nodata: real rasters, exact pixel squares."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features

import geoseg.valid_area as valid_area
from geoseg.paths import data_root
from geoseg.valid_area import cut_nodata

OSBS = data_root() / "rasters" / "deepforest_neon" / "OSBS_029.tif"  # 0.1 m, nodata 255: saturated pixels


def pixel_box(transform, col0: int, row0: int, col1: int, row1: int) -> shapely.Polygon:
    (x0, y0), (x1, y1) = transform @ (col0, row0), transform @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_polygons_lose_exactly_the_nodata_pixels_of_a_real_raster():
    with rasterio.open(OSBS) as src:
        transform, shape = src.transform, (src.height, src.width)
        valid = src.dataset_mask() > 0
    assert 0 < (~valid).sum() < 0.05 * valid.size
    boxes = [(0, 0, 400, 400), (30, 50, 180, 120), (250, 300, 390, 399), (10, 390, 40, 400)]
    geoms = np.asarray([pixel_box(transform, *b) for b in boxes], dtype=object)
    cut = cut_nodata(geoms, OSBS, block=128)  # several blocks: a polygon spans block borders
    assert all(g.is_valid for g in cut)
    for (c0, r0, c1, r1), geom in zip(boxes, cut):
        inside = np.zeros(shape, bool)
        inside[r0:r1, c0:c1] = True
        covered = features.rasterize([(geom, 1)], out_shape=shape, transform=transform) > 0
        np.testing.assert_array_equal(covered, inside & valid)  # every valid pixel kept, no invalid one
        assert geom.area == pytest.approx((inside & valid).sum() * 0.01)


def test_polygons_away_from_nodata_and_all_valid_rasters_are_left_alone(tmp_path, monkeypatch):
    with rasterio.open(OSBS) as src:
        transform, valid = src.transform, src.dataset_mask() > 0
        profile = src.profile
        data = src.read()
    rows, cols = np.nonzero(valid)
    clear = next((r, c) for r, c in zip(rows, cols) if valid[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4].all()
                 and 3 <= r < 396 and 3 <= c < 396)
    away = pixel_box(transform, clear[1] - 2, clear[0] - 2, clear[1] + 3, clear[0] + 3)
    assert cut_nodata(np.asarray([away], dtype=object), OSBS)[0] is away
    # the same pixels without a nodata value: the mask says "all valid", nothing is read
    plain = tmp_path / "plain.tif"
    profile.pop("nodata")
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data)
    monkeypatch.setattr(valid_area, "_invalid_polygons", lambda *a: pytest.fail("an all-valid raster was read"))
    whole = pixel_box(transform, 0, 0, 400, 400)
    assert cut_nodata(np.asarray([whole], dtype=object), plain)[0] is whole


def test_non_finite_floats_count_as_nodata(tmp_path):
    path = tmp_path / "float.tif"
    data = np.ones((3, 64, 64), np.float32)
    data[:, 20:30, 10:40] = np.nan
    transform = rasterio.Affine(0.5, 0, 1000, 0, -0.5, 2000)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="float32",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(data)
    box = pixel_box(transform, 0, 0, 64, 64)
    cut = cut_nodata(np.asarray([box], dtype=object), path)[0]
    assert cut.area == pytest.approx(box.area - 10 * 30 * 0.25)
    assert cut.intersection(pixel_box(transform, 10, 20, 40, 30)).area == pytest.approx(0)


def test_the_nodata_cut_follows_the_bands_the_models_read(tmp_path):
    """--bands 2,3,4 on a raster whose band 4 alone is NaN somewhere: those pixels are nodata to the
    models, so no building may stay on them; bands 1-3 (the default) are valid there."""
    path = tmp_path / "four.tif"
    data = np.ones((4, 64, 64), np.float32)
    data[3, 20:30, 10:40] = np.nan
    transform = rasterio.Affine(0.5, 0, 1000, 0, -0.5, 2000)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=4, dtype="float32",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(data)
    box = pixel_box(transform, 0, 0, 64, 64)
    assert cut_nodata(np.asarray([box], dtype=object), path)[0].area == pytest.approx(box.area)
    cut = cut_nodata(np.asarray([box], dtype=object), path, bands=(2, 3, 4))[0]
    assert cut.area == pytest.approx(box.area - 10 * 30 * 0.25)

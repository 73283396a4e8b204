"""A raster with a few valid pixels is not 'entirely nodata': thin valid areas that a decimated
mask read misses are found by the full-resolution scan (``tiles.normalize.scene_stats``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.paths import data_root
from tiles import normalize
from tiles.errors import UnsupportedRaster
from tiles.normalize import scene_stats
from tiles.source import Scene

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
SIDE = 4096  # read decimated 4x: 3 columns in 4 are never sampled
STRIP = Window(1003, 100, 2, 500)  # 2 columns x 500 rows of valid pixels


def sparse_raster(path: Path, dtype: str = "uint8", empty: bool = False) -> Path:
    """SIDE x SIDE, nodata 0 everywhere but STRIP, which holds real pixels of a Kampala scene."""
    with rasterio.open(SCENE) as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, STRIP.width, STRIP.height)).astype(dtype)
        crs, transform = src.crs, src.transform
    pixels = np.maximum(pixels, 1)  # no real pixel may read as nodata
    if dtype == "uint16":
        pixels = pixels * 40 + 1000  # a 12-bit-like range the stretch must find
    with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=3, dtype=dtype, nodata=0,
                       crs=crs, transform=transform, tiled=True, compress="deflate") as dst:
        if not empty:  # blocks never written read as nodata
            dst.write(pixels, window=STRIP)
    return path


def test_a_thin_valid_strip_is_missed_by_the_decimated_read_but_found(tmp_path):
    path = sparse_raster(tmp_path / "sparse.tif")
    with rasterio.open(path) as src:
        sampled = src.dataset_mask(out_shape=(1024, 1024), resampling=Resampling.nearest)
        assert not sampled.any(), "the strip must fall between the decimated samples for this test to mean anything"
        assert scene_stats(src, (1, 2, 3)) is None  # uint8: valid, no stretch
    with Scene(path) as scene:
        _, valid = scene.read(Window(1000, 90, 16, 520))
    assert valid.sum() == STRIP.width * STRIP.height


def test_stretch_bounds_come_from_the_strip_of_a_16_bit_raster(tmp_path):
    path = sparse_raster(tmp_path / "sparse16.tif", "uint16")
    with rasterio.open(path) as src:
        strip = src.read([1, 2, 3], window=STRIP).astype(np.float64)
        stats = scene_stats(src, (1, 2, 3))
    for band, lo, hi in zip(strip, stats.low, stats.high):
        assert (lo, hi) == pytest.approx(tuple(np.percentile(band, (2.0, 98.0))))


def test_scan_reads_strips_and_keeps_at_most_max_values(tmp_path, monkeypatch):
    path = sparse_raster(tmp_path / "sparse16.tif", "uint16")
    monkeypatch.setattr(normalize, "SCAN_PIXELS", SIDE * 64)  # 64-row strips: the valid rows span 8 of them
    with rasterio.open(path) as src:
        assert normalize._scan_valid(src, (1, 2, 3), collect=True, max_values=10**6).shape == (3, 1000)
        assert normalize._scan_valid(src, (1, 2, 3), collect=True, max_values=300).shape == (3, 300)
        assert normalize._scan_valid(src, (1, 2, 3), collect=False, max_values=300).shape == (3, 0)


def test_an_empty_raster_is_still_refused(tmp_path):
    path = sparse_raster(tmp_path / "empty.tif", empty=True)
    with rasterio.open(path) as src, pytest.raises(UnsupportedRaster, match="no valid pixels"):
        scene_stats(src, (1, 2, 3))

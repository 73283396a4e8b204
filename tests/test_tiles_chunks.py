"""tiles.tiff_chunks: a valid-pixel scan that reads each kind of stored chunk once decides as a
scan of every block does, on the ways a GeoTIFF stores its pixels and says which are nodata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

import tiles.masks
from tiles.masks import has_valid_pixel
from tiles.tiff_chunks import stored_chunks

SIDE = 1000  # not a multiple of the 256 px tiles: edge chunks are cut
TILED = {"tiled": True, "blockxsize": 256, "blockysize": 256}


def _noise(count: int, rows: int) -> np.ndarray:
    return np.random.default_rng(rows).integers(1, 255, (count, rows, SIDE), dtype=np.uint8)


# name: (bands, dtype, fill of (bands, rows) -> pixels, creation options; 'alpha', 'mask' as the file says nodata)
LAYOUTS = {
    "deflate tiles, nodata 0": (3, "uint8", None, {"nodata": 0, "compress": "deflate", **TILED}),
    "lzw, band-interleaved": (3, "uint8", None, {"nodata": 0, "compress": "lzw", "interleave": "band", **TILED}),
    "deflate strips": (3, "uint8", None, {"nodata": 0, "compress": "deflate", "blockysize": 32}),  # 32,000 px
    "sparse tiles": (3, "uint8", None, {"nodata": 0, "compress": "deflate", "sparse_ok": True, **TILED}),
    "float NaN": (3, "float32", np.nan, {"compress": "deflate", **TILED}),
    "alpha 0 over noise": (4, "uint8", "alpha", {"compress": "deflate", **TILED}),
    "internal mask 0 over noise": (3, "uint8", "mask", {"compress": "deflate", **TILED}),
}


def _write(path: Path, layout: tuple, valid_at: int | None) -> None:
    count, dtype, how, options = layout
    profile = {"driver": "GTiff", "width": SIDE, "height": SIDE, "count": count, "dtype": dtype,
               "crs": "EPSG:32737", "transform": from_origin(250000, 9860000, 0.3, 0.3), **options}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        if how in ("alpha", "mask"):
            pixels = _noise(count, SIDE)
            if how == "alpha":
                pixels[3] = 0
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        else:
            pixels = np.full((count, SIDE, SIDE), 0 if how is None else how, dtype)
        if valid_at is not None:
            pixels[:, valid_at, valid_at] = 100
        dst.write(pixels)
        if how == "mask":
            mask = np.zeros((SIDE, SIDE), np.uint8)
            if valid_at is not None:
                mask[valid_at, valid_at] = 255
            dst.write_mask(mask)


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("valid_at", [None, SIDE - 3, 300], ids=["all nodata", "last pixel valid", "one inside"])
def test_a_scan_by_chunk_keys_decides_as_a_scan_of_every_block(name, valid_at, tmp_path, monkeypatch):
    path = tmp_path / "x.tif"
    _write(path, LAYOUTS[name], valid_at)
    chunks = stored_chunks(path)
    assert chunks is not None and chunks.shape == (SIDE, SIDE)
    reads = []
    counted = tiles.masks.window_valid_mask
    monkeypatch.setattr(tiles.masks, "window_valid_mask", lambda *a, **k: reads.append(a[1]) or counted(*a, **k))
    with rasterio.open(path) as src:
        keyed = has_valid_pixel(src, (1, 2, 3), chunks)
        keyed_reads = len(reads)
        assert keyed is has_valid_pixel(src, (1, 2, 3), strip_pixels=256 * 256) is (valid_at is not None)
    if LAYOUTS[name][2] not in ("alpha", "mask"):  # fill-valued chunks: one read per chunk shape
        assert keyed_reads <= 4 + (valid_at is not None), reads


def test_small_chunks_are_read_in_windows_not_one_by_one(tmp_path, monkeypatch):
    """16 px tiles, each of other bytes (an upload made to be slow): one read per chunk cost ~0.3 ms
    of calls, 15 s for 4096 x 4096 px of nodata (68 s for 8192 px) where windows of many tiles take 0.3 s."""
    path = tmp_path / "tiny.tif"
    _write(path, (3, "uint8", None, {"nodata": 0, "compress": "deflate", "tiled": True, "blockxsize": 16,
                                     "blockysize": 16}), None)
    assert stored_chunks(path) is None
    reads = []
    counted = tiles.masks.window_valid_mask
    monkeypatch.setattr(tiles.masks, "window_valid_mask", lambda *a, **k: reads.append(a[1]) or counted(*a, **k))
    with rasterio.open(path) as src:
        assert has_valid_pixel(src, (1, 2, 3), stored_chunks(path)) is False
    assert len(reads) <= 2, len(reads)  # 1 Mpx windows, not 3,969 tiles


def test_an_uncompressed_raster_is_read_block_by_block(tmp_path):
    """Hashing raw chunks costs more than reading them: no keys."""
    path = tmp_path / "raw.tif"
    _write(path, (3, "uint8", None, {"nodata": 0, **TILED}), None)
    assert stored_chunks(path) is None
    assert stored_chunks(tmp_path / "missing.tif") is None


def test_an_external_mask_is_read_not_keyed_out(tmp_path):
    """GDAL reads an external ``scene.tif.msk`` as the raster's mask, but the keys covered the TIFF's
    own bytes only: a uniform image (fill not declared nodata) whose ``.msk`` marks one pixel in its
    second row of tiles valid was called all nodata, the tiles like the first skipped as 'the same bytes'."""
    path = tmp_path / "x.tif"
    profile = {"driver": "GTiff", "width": SIDE, "height": SIDE, "count": 3, "dtype": "uint8", "compress": "deflate",
               "crs": "EPSG:32737", "transform": from_origin(250000, 9860000, 0.3, 0.3), **TILED}
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[300, 300] = 255  # a whole 256 px tile like the first (the edge tiles are cut: keys of their own)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, SIDE, SIDE), 40, np.uint8))
        dst.write_mask(mask)
    assert (tmp_path / "x.tif.msk").exists()
    with rasterio.open(path) as src:
        assert has_valid_pixel(src, (1, 2, 3), stored_chunks(path)) is True

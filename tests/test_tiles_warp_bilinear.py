"""tiles.warp.bilinear_window agrees with GDAL's bilinear warper on axis-aligned grids."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.grid import tile_grid
from tiles.warp import axis_aligned, bilinear_window


def gdal_bilinear(tmp_path, src: np.ndarray, src_t, dst_t, width: int, height: int) -> np.ndarray:
    path = tmp_path / "src.tif"
    with rasterio.open(path, "w", driver="GTiff", width=src.shape[2], height=src.shape[1], count=src.shape[0],
                       dtype="float32", crs="EPSG:32636", transform=src_t) as ds:
        ds.write(src)
    with rasterio.open(path) as ds, WarpedVRT(ds, crs="EPSG:32636", transform=dst_t, width=width, height=height,
                                              resampling=Resampling.bilinear, nodata=0) as vrt:
        return vrt.read()


@pytest.mark.parametrize("src_res, dst_res, shift", [(1.1, 0.3, (0.0, 0.0)), (0.9, 0.3, (0.37, -0.52)),
                                                     (0.6, 0.25, (-2.0, 1.3))])
def test_matches_gdal_window_by_window(tmp_path, src_res, dst_res, shift):
    rng = np.random.default_rng(1)
    src = (rng.random((3, 37, 53)) + 0.1).astype(np.float32)  # no zeros: 0 is GDAL's nodata here
    src_t = from_origin(500000.0, 4000000.0, src_res, src_res)
    # the destination starts off the source's corner and runs past its far edges
    dst_t = from_origin(500000.0 + shift[0], 4000000.0 + shift[1], dst_res, dst_res)
    width, height = int(53 * src_res / dst_res) + 5, int(37 * src_res / dst_res) + 5
    reference = gdal_bilinear(tmp_path, src, src_t, dst_t, width, height)

    def read(win: Window) -> np.ndarray:
        r0, c0 = int(win.row_off), int(win.col_off)
        return src[:, r0:r0 + int(win.height), c0:c0 + int(win.width)]

    assert axis_aligned(src_t, dst_t)
    out = np.zeros_like(reference)
    inside = np.zeros(reference.shape[1:], bool)
    for tile in tile_grid(width, height, 64, 0):  # blocks, as the pipeline writes them
        values, ok = bilinear_window(read, (37, 53), src_t, dst_t, tile.core)
        rows, cols = tile.core.toslices()
        out[:, rows, cols], inside[rows, cols] = values, ok
    # GDAL leaves nodata (0) exactly where the centre falls off the source
    np.testing.assert_array_equal(inside, reference.sum(axis=0) > 0)
    assert (~inside).any() and inside.mean() > 0.5
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_rotated_grids_are_not_axis_aligned():
    from affine import Affine

    north_up = from_origin(0.0, 10.0, 1.0, 1.0)
    assert not axis_aligned(north_up @ Affine.rotation(10.0), north_up)

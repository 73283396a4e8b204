"""8-bit imagery kept in a wider type reads as the very bytes it was; other wide data is stretched.

A real scene (kampala_z19_1, uint8 with a mask) is written again as uint16 and float32 the ways
GIS tools write 8-bit data into wider types, and as data that is not 8-bit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio

from tiles.normalize import EIGHT_BIT, STRETCH, eight_bit_scale, scaling_record, stretch_note
from tiles.source import Scene

from test_tiles_source import full  # the whole scene read as one window


def _copy(src_path: Path, dst: Path, convert: Callable[[np.ndarray], np.ndarray], dtype: str,
          nodata_zero: bool = False) -> Path:
    """``src_path``'s pixels through ``convert`` as ``dtype``, with its mask (or nodata 0 over it)."""
    with rasterio.open(src_path) as src:
        data, mask, profile = src.read(), src.dataset_mask(), dict(src.profile)
    for key in ("blockxsize", "blockysize", "jpeg_quality", "nodata"):
        profile.pop(key, None)
    profile.update(dtype=dtype, compress="deflate", photometric="RGB", tiled=False)
    out = convert(data).astype(dtype)
    if nodata_zero:
        profile["nodata"] = 0
        out[:, mask == 0] = 0
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(out)
        if not nodata_zero:
            ds.write_mask(mask)
    return dst


EIGHT_BIT_COPIES = {
    "uint16 as is": (lambda d: d, "uint16", False, 1.0),
    "uint16 x 257 (gdal_translate -ot UInt16 -scale 0 255 0 65535)": (lambda d: d.astype(np.uint16) * 257, "uint16", False, 257.0),
    "uint16 x 256 (a shift)": (lambda d: d.astype(np.uint16) << 8, "uint16", False, 256.0),
    "uint16 x 16, nodata 0": (lambda d: d.astype(np.uint16) * 16, "uint16", True, 16.0),
    "uint16 0-4095 (gdal_translate -scale 0 255 0 4095)":
        (lambda d: np.rint(d * (4095 / 255)), "uint16", False, 4095 / 255),
    "float32 / 255": (lambda d: d.astype(np.float32) / 255.0, "float32", False, 1.0 / 255.0),
    "float32 0-255": (lambda d: d.astype(np.float32), "float32", False, 1.0),
}


@pytest.mark.parametrize("kind", list(EIGHT_BIT_COPIES))
def test_8_bit_data_in_a_wider_type_reads_as_its_own_bytes(buildings_dir: Path, tmp_path: Path, kind: str):
    original = buildings_dir / "kampala" / "kampala_z19_1.tif"
    convert, dtype, nodata_zero, scale = EIGHT_BIT_COPIES[kind]
    copy = _copy(original, tmp_path / "copy.tif", convert, dtype, nodata_zero)
    with Scene(original) as a, Scene(copy) as b:
        assert a.stats is None and b.stats is not None and b.stats.method == EIGHT_BIT
        assert b.stats.high == pytest.approx((255.0 * scale,) * 3)
        (pixels_a, valid_a), (pixels_b, valid_b) = full(a), full(b)
    if nodata_zero:  # a real black pixel (0 in a band) is nodata there too
        assert not (valid_b & ~valid_a).any() and valid_b.sum() > 0.99 * valid_a.sum()
    else:
        assert np.array_equal(valid_a, valid_b)
    assert np.array_equal(pixels_a * valid_b, pixels_b * valid_b)  # on the native grid: byte for byte
    # resampled to the land-cover head's 1.1 m, GDAL rounds the wider type at another step: 1 at most
    with Scene(original, gsd=1.1) as a, Scene(copy, gsd=1.1) as b:
        (pixels_a, valid_a), (pixels_b, valid_b) = full(a), full(b)
    both = valid_a & valid_b
    assert both.sum() > 0.95 * valid_a.sum()
    gap = np.abs(pixels_a.astype(int) - pixels_b.astype(int))[:, both]
    assert gap.max() <= 1 and gap.mean() < 0.05


@pytest.mark.parametrize("kind, convert", [
    ("x 257 + 7: an offset", lambda d: d.astype(np.uint16) * 257 + 7),
    ("a sensor's linear 12 bits", lambda d: np.rint(4095 * (d / 255.0) ** 2.2)),
])
def test_wider_data_that_is_not_8_bit_is_stretched(buildings_dir: Path, tmp_path: Path, kind: str, convert):
    original = buildings_dir / "kampala" / "kampala_z19_1.tif"
    copy = _copy(original, tmp_path / "wide.tif", convert, "uint16")
    with Scene(copy) as scene:
        assert scene.stats.method == STRETCH
        pixels, valid = full(scene)
    with rasterio.open(copy) as src:
        band = src.read(1)[src.dataset_mask() > 0].astype(np.float64)
    # the stretch: the 2nd and 98th percentiles of a decimated read become 0 and 255 (about: a sample)
    assert scene.stats.low[0] == pytest.approx(np.percentile(band, 2), rel=0.05)
    assert scene.stats.high[0] == pytest.approx(np.percentile(band, 98), rel=0.05)
    assert (pixels[0][valid] == 0).mean() == pytest.approx(0.02, abs=0.015)
    assert (pixels[0][valid] == 255).mean() == pytest.approx(0.02, abs=0.015)


@pytest.mark.parametrize("values, dtype, expected", [
    (np.array([[0, 17, 255]]), "uint16", 1.0),
    (np.array([[0, 17, 127]]), "uint16", None),  # a dark tile of 11-bit data: no 8-bit rendering is this dark
    (np.array([[0, 17, 127]]), "int8", None),
    (np.array([[0.0, 17.0, 100.0]]), "float32", None),
    (np.array([[0, 1, 2, 128, 255]]) * 4095 // 255, "uint16", None),  # floor, not rint: no full scale
    (np.rint(np.array([[0, 1, 2, 128, 255]]) * (4095 / 255)), "uint16", 4095 / 255),
    (np.rint(np.array([[0, 1, 2, 128, 200]]) * (32768 / 255)), "uint16", 32768 / 255),
    (np.array([[0, 257 * 3, 257 * 200]]), "uint16", 257.0),
    (np.array([[10000, 10000, 10000]]), "uint16", None),  # one level: its own divisor, not 8 bits
    (np.arange(101)[None] * 16, "uint16", None),  # brightest byte 100: too dark for 8-bit imagery
    (np.array([[-3, 17, 255]]), "int16", None),
    (np.array([[0, 1800, 2047]]), "uint16", None),  # 11 bits
    (np.array([[0.0, 0.5, 1.0]]), "float32", None),  # 0.5 is no step of 1/255
    (np.array([[0.0, 0.123, 0.9]]), "float32", None),  # reflectance
    (np.array([[0.0, 3.0, 255.0]]), "float64", 1.0),
    (np.array([[0.0, 3.0, 256.0]]), "float64", None),
])
def test_eight_bit_scale(values, dtype, expected):
    values = values.astype(dtype)
    assert eight_bit_scale(values, dtype) == (None if expected is None else pytest.approx(expected))


def test_a_file_of_more_than_8_bits_is_never_8_bit_data():
    values = np.array([[0, 17, 255]])
    assert eight_bit_scale(values, "uint16", nbits=11) is None and eight_bit_scale(values, "uint16", nbits=8) == 1.0


def test_nbits_of_the_file_is_read(buildings_dir: Path, tmp_path: Path):
    original = buildings_dir / "kampala" / "kampala_z19_1.tif"
    with rasterio.open(original) as src:
        data, profile = src.read(), dict(src.profile)
    for key in ("blockxsize", "blockysize", "jpeg_quality", "compress"):
        profile.pop(key, None)
    copy = tmp_path / "nbits.tif"
    with rasterio.open(copy, "w", **(profile | {"dtype": "uint16", "nbits": 11, "photometric": "RGB"})) as ds:
        ds.write(data.astype(np.uint16))  # 0-255 in an 11-bit file: a dark 11-bit scene, not 8-bit data
    with rasterio.open(copy) as ds:
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "11"
    with Scene(copy) as scene:
        assert scene.stats.method == STRETCH


def test_float_steps_of_1_over_255_are_8_bit():
    values = (np.arange(256, dtype=np.float32) / np.float32(255.0))[None]
    assert eight_bit_scale(values, "float32") == pytest.approx(1 / 255)


def test_report_record_and_note_say_how_the_input_became_bytes(buildings_dir: Path, tmp_path: Path):
    original = buildings_dir / "kampala" / "kampala_z19_1.tif"
    scaled = _copy(original, tmp_path / "x257.tif", lambda d: d.astype(np.uint16) * 257, "uint16")
    wide = _copy(original, tmp_path / "wide.tif", lambda d: np.rint(4095 * (d / 255.0) ** 2.2), "uint16")
    with Scene(original) as a, Scene(scaled) as b, Scene(wide) as c:
        assert scaling_record(a.dtype, a.stats) == {"dtype": "uint8", "method": "as stored"}
        assert scaling_record(b.dtype, b.stats) == {"dtype": "uint16", "method": EIGHT_BIT, "low": [0.0] * 3,
                                                    "high": [65535.0] * 3}
        assert scaling_record(c.dtype, c.stats)["method"] == STRETCH
        assert stretch_note(a.dtype, a.stats) is None and stretch_note(b.dtype, b.stats) is None
        note = stretch_note(c.dtype, c.stats)
    assert note.startswith("uint16 input stretched to 0-255") and f"{c.stats.low[0]:.6g}-" in note


def test_a_resumed_tile_cuts_a_scene_of_8_bit_data_in_a_wider_type_again(buildings_dir: Path, tmp_path: Path):
    """Chips of such a scene cut by an earlier geoseg were stretched, and a resumed run said '1 already
    done' and kept them, while predict reads the same file as its own bytes."""
    import json
    import shutil

    from typer.testing import CliRunner

    from geoseg.cli import app
    from tiles.chipset import INPUTS_FILE

    original = buildings_dir / "kampala" / "kampala_z19_1.tif"
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    _copy(original, scenes / "x257.tif", lambda d: d.astype(np.uint16) * 257, "uint16")
    shutil.copy(original, scenes / "plain.tif")
    out = tmp_path / "chips"
    args = ["tile", str(scenes), "--out", str(out), "--labels", str(buildings_dir / "kampala" / "labels.geojson"),
            "--size", "256", "--scheduler", "sync"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    chips = {p: p.read_bytes() for p in out.rglob("*x257*") if p.suffix in (".png", ".tif", ".npy")}
    assert chips
    # what an earlier geoseg left: other (stretched) chips, and an inputs.json that knew no reading
    for path in chips:
        path.write_bytes(b"stretched")
    (states_path,) = out.glob(f"parts/*/{INPUTS_FILE}")
    states = json.loads(states_path.read_text())
    assert {Path(p).name: "reading" in s for p, s in states.items()} == {"x257.tif": True, "plain.tif": False}
    for state in states.values():
        state.pop("reading", None)
    states_path.write_text(json.dumps(states))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 already done" in again.output, again.output
    assert ("x257.tif: cut by an earlier geoseg, before 8-bit values kept in a wider type were read as their "
            "own bytes (docs/tiling.md), cut again") in again.stderr
    assert "plain.tif" not in again.stderr
    assert {p: p.read_bytes() for p in chips} == chips
    assert "2 already done" in runner.invoke(app, args).output

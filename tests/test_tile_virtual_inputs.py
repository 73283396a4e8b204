"""`geoseg tile` on scenes and labels GDAL reads from archives (/vsizip/, /vsitar/, /vsigzip/) and
on subdataset names (GTIFF_DIR:1:a.tif), as `geoseg predict` reads them: the same chips as from
the plain files."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from checks import assert_one_line_error
from rasterio.windows import Window
from typer.testing import CliRunner

from geoseg.cli import app

runner = CliRunner()
ARGS = ["--size", "256", "--scheduler", "sync"]


@pytest.fixture(scope="module")
def plain_scene(buildings_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512 x 256 px crop of a Kampala scene (two 256 px chips) with the area's labels beside it,
    in a folder named ``sub`` as inside the archives below."""
    folder = tmp_path_factory.mktemp("plain") / "sub"
    folder.mkdir()
    with rasterio.open(buildings_dir / "kampala/kampala_z19_1.tif") as src:
        window = Window(0, 0, 512, 256)
        profile = {**src.profile, "width": 512, "height": 256, "transform": src.window_transform(window),
                   "compress": "deflate"}
        profile.pop("photometric")
        with rasterio.open(folder / "crop.tif", "w", **profile) as dst:
            dst.write(src.read(window=window))
    shutil.copy(buildings_dir / "kampala/labels.geojson", folder / "labels.geojson")
    return folder / "crop.tif"


def chips_of(out: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The index's chip records (without the scene's name) and every chip file's pixels."""
    records = [f["properties"] for f in json.loads((out / "index.geojson").read_text())["features"]]
    pixels = {}
    for folder in ("images", "labels"):
        for chip in sorted((out / folder).glob("*.tif")):
            with rasterio.open(chip) as src:
                pixels[f"{folder}/{chip.name}"] = src.read()
    return records, pixels


def assert_same_chips(out: Path, reference: Path, renamed: tuple[str, str] | None = None) -> None:
    records, pixels = chips_of(out)
    want_records, want_pixels = chips_of(reference)
    if renamed is not None:  # a subdataset's chips are named after its file and its own name
        old, new = renamed
        want_pixels = {k.replace(old, new): v for k, v in want_pixels.items()}
        want_records = [{**r, **{k: r[k].replace(old, new) for k in ("chip_id", "image", "label") if r[k]}}
                        for r in want_records]
    assert len(records) == len(want_records) == 2
    assert sorted(pixels) == sorted(want_pixels) and len(pixels) == 4
    for name, array in want_pixels.items():
        assert np.array_equal(pixels[name], array), name
    drop = ("scene",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in records] == \
           [{k: v for k, v in r.items() if k not in drop} for r in want_records]


def test_scenes_and_labels_read_from_archives_make_the_chips_of_the_plain_files(plain_scene: Path, tmp_path: Path):
    """`geoseg tile /vsizip//x.zip/sub/crop.tif` was refused ('/vsizip/x.zip/sub/crop.tif: no such file
    or directory', its // collapsed) although `geoseg predict` reads it. The chips are the plain file's,
    pixel for pixel, with the labels.geojson beside the scene in the archive or given as /vsizip/."""
    plain = runner.invoke(app, ["tile", str(plain_scene), "--out", str(tmp_path / "plain"), *ARGS])
    assert plain.exit_code == 0, plain.output
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(plain_scene, "sub/crop.tif")
        zipped.write(plain_scene.parent / "labels.geojson", "sub/labels.geojson")
    scene = f"/vsizip/{archive}/sub/crop.tif"
    assert scene.startswith("/vsizip//")
    result = runner.invoke(app, ["tile", scene, "--out", str(tmp_path / "zip"), *ARGS])
    assert result.exit_code == 0, result.output
    assert_same_chips(tmp_path / "zip", tmp_path / "plain")
    assert {r["scene"] for r in chips_of(tmp_path / "zip")[0]} == {"crop.tif"}
    again = runner.invoke(app, ["tile", scene, "--out", str(tmp_path / "zip"), *ARGS])  # resumable
    assert again.exit_code == 0 and "1 already done" in again.output, again.output
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))  # a new delivery
    again = runner.invoke(app, ["tile", scene, "--out", str(tmp_path / "zip"), *ARGS])
    assert again.exit_code == 0, again.output
    assert "crop.tif: crop.tif, labels.geojson changed since it was cut, cut again" in again.stderr

    with tarfile.open(tmp_path / "scenes.tar", "w") as tarred:  # a tar, labels from another zip
        tarred.add(plain_scene, "sub/crop.tif")
    with zipfile.ZipFile(tmp_path / "labels.zip", "w") as zipped:
        zipped.write(plain_scene.parent / "labels.geojson", "labels.geojson")
    result = runner.invoke(app, ["tile", f"/vsitar/{tmp_path}/scenes.tar/sub/crop.tif", "--labels",
                                 f"/vsizip/{tmp_path}/labels.zip/labels.geojson", "--out", str(tmp_path / "tar"), *ARGS])
    assert result.exit_code == 0, result.output
    assert_same_chips(tmp_path / "tar", tmp_path / "plain")


def test_a_gzipped_scene_and_a_subdataset_name_make_the_chips_of_the_plain_file(plain_scene: Path, tmp_path: Path):
    """/vsigzip/ (the labels.geojson beside the .gz file) and GTIFF_DIR:1:crop.tif (the file's first
    image; chips named crop_1_rNNN_cNNN, so another image of the file cannot overwrite them)."""
    plain = runner.invoke(app, ["tile", str(plain_scene), "--out", str(tmp_path / "plain"), *ARGS])
    assert plain.exit_code == 0, plain.output
    folder = tmp_path / "sub"
    folder.mkdir()
    shutil.copy(plain_scene.parent / "labels.geojson", folder / "labels.geojson")
    with gzip.open(folder / "crop.tif.gz", "wb") as packed:
        packed.write(plain_scene.read_bytes())
    result = runner.invoke(app, ["tile", f"/vsigzip/{folder}/crop.tif.gz", "--out", str(tmp_path / "gz"), *ARGS])
    assert result.exit_code == 0, result.output
    records, _ = chips_of(tmp_path / "gz")
    assert_same_chips(tmp_path / "gz", tmp_path / "plain", renamed=("crop_r", "crop.tif_r"))
    assert {r["scene"] for r in records} == {"crop.tif.gz"}

    result = runner.invoke(app, ["tile", f"GTIFF_DIR:1:{plain_scene}", "--out", str(tmp_path / "dir"), *ARGS])
    assert result.exit_code == 0, result.output
    assert_same_chips(tmp_path / "dir", tmp_path / "plain", renamed=("crop_r", "crop_1_r"))


def test_virtual_scenes_and_labels_that_do_not_exist_are_one_line(plain_scene: Path, tmp_path: Path):
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(plain_scene, "crop.tif")
    result = runner.invoke(app, ["tile", f"/vsizip/{archive}/nope.tif", "--out", str(tmp_path / "a"), *ARGS])
    assert_one_line_error(result, "tile", f"input not found: /vsizip/{archive}/nope.tif")
    result = runner.invoke(app, ["tile", f"GTIFF_DIR:2:{plain_scene}", "--out", str(tmp_path / "b"), *ARGS])
    assert_one_line_error(result, "tile", "input not found", "GDAL found no such subdataset")
    result = runner.invoke(app, ["tile", f"/vsizip/{archive}/crop.tif", "--labels",
                                 f"/vsizip/{archive}/labels.geojson", "--out", str(tmp_path / "c"), *ARGS])
    assert_one_line_error(result, "tile", f"--labels /vsizip/{archive}/labels.geojson: no such file or folder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    # no labels.geojson beside the scene in the archive: that scene fails, naming where it looked
    result = runner.invoke(app, ["tile", f"/vsizip/{archive}/crop.tif", "--out", str(tmp_path / "d"), *ARGS])
    assert result.exit_code == 1
    assert f"label file /vsizip/{archive}/labels.geojson not found" in result.stderr


def test_an_archive_is_a_scene_folder_and_shared_test_scenes_in_it_stay_test(buildings_dir: Path, tmp_path: Path):
    """`geoseg tile /vsizip//x.zip` cuts the rasters in it, as a folder (not the AppleDouble files
    of a zip made on macOS, `__MACOSX/._x.tif`); the shared data's test scenes are known by their
    bytes in an archive too (a renamed copy of Kampala's went to train when read through /vsizip/:
    test ground trained on)."""
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(buildings_dir / "kampala/kampala_z19_2.tif", "mine/scene.tif")
        zipped.write(buildings_dir / "kampala/labels.geojson", "mine/labels.geojson")
        zipped.writestr("__MACOSX/mine/._scene.tif", b"\x00\x05\x16\x07 AppleDouble")
    result = runner.invoke(app, ["tile", f"/vsizip/{archive}", "--out", str(tmp_path / "o"), *ARGS])
    assert result.exit_code == 0, result.output
    records, _ = chips_of(tmp_path / "o")
    assert {(r["scene"], r["area"], r["split"]) for r in records} == {("scene.tif", "mine", "test")}
    with gzip.open(tmp_path / "scene.tif.gz", "wb") as packed:  # gzip too
        packed.write((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    result = runner.invoke(app, ["tile", f"/vsigzip/{tmp_path}/scene.tif.gz", "--labels",
                                 str(buildings_dir / "kampala/labels.geojson"), "--out", str(tmp_path / "g"), *ARGS])
    assert result.exit_code == 0, result.output
    assert {r["split"] for r in chips_of(tmp_path / "g")[0]} == {"test"}

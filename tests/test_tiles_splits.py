"""Splits follow areas/blocks of the real data folders, never chips; they apply to the shared
data set's own files only, not to a user's scenes that share its names."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from geoseg.cli import app
from tiles.splits import buildings_split, landcover_split, name_split_note, scene_area, scene_split

EXPECTED = {"zanzibar_1": "train", "zanzibar_2": "val", "nairobi_1": "train", "nairobi_2": "val",
            "kampala_1": "test", "kampala_2": "test"}


def test_every_buildings_scene_gets_its_area_split(buildings_dir: Path):
    scenes = sorted(buildings_dir.glob("*/*.tif"))
    assert len(scenes) == 18
    for path in scenes:
        area, block = scene_area(path)
        assert area == path.parent.name
        assert buildings_split(area, block) == EXPECTED[f"{area}_{block}"]
        assert scene_split(path, landcover=False) == EXPECTED[f"{area}_{block}"]  # the file is the shared one


@pytest.mark.parametrize("tile, split", [("tile_1", "train"), ("tile_4", "train"), ("tile_5", "val"), ("tile_6", "test")])
def test_dubai_tiles(data_root: Path, tile: str, split: str):
    assert (data_root / "landcover/dubai" / tile).is_dir()
    assert landcover_split(tile) == split
    images = sorted((data_root / "landcover/dubai" / tile).glob("*.jpg"))
    assert images and {scene_split(image, landcover=True) for image in images} == {split}


def test_the_rules_follow_the_shared_files_not_their_names(buildings_dir: Path, data_root: Path, tmp_path: Path):
    """A user's kampala_z19_7.tif, kampala/ or tile_6/ is no test ground; a renamed copy of a shared
    Kampala scene (or of a Dubai tile-6 image) still is."""
    for name in ("kampala_z19_7.tif", "kampala/scene.tif", "nairobi_z19_2.tif", "tile_6/image_part_001.jpg"):
        own = tmp_path / "mine" / name
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_bytes(b"a scene of the user's own")
        assert scene_split(own, landcover=name.endswith(".jpg")) == "train", name
    shutil.copy(buildings_dir / "kampala/kampala_z19_1.tif", tmp_path / "renamed.tif")
    assert scene_split(tmp_path / "renamed.tif", landcover=False) == "test"
    shutil.copy(data_root / "landcover/dubai/tile_6/image_part_001.jpg", tmp_path / "x.jpg")
    assert scene_split(tmp_path / "x.jpg", landcover=True) == "test"


def test_tile_puts_a_users_kampala_named_scene_in_train(buildings_dir: Path, tmp_path: Path):
    """'geoseg tile mine/' of a user's scene named kampala_z19_7.tif put its chips in test; with its
    validation scene cut under --split val, 'geoseg train' then found 0 train chips and asked for
    --split val, which had been given."""
    source = buildings_dir / "nairobi/nairobi_z19_1.tif"
    scene = tmp_path / "mine" / "kampala" / "kampala_z19_7.tif"
    scene.parent.mkdir(parents=True)
    with rasterio.open(source) as src:
        window = Window(0, 0, 256, 256)
        profile = {**src.profile, "width": 256, "height": 256, "transform": src.window_transform(window)}
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read(window=window))
    result = CliRunner().invoke(app, ["tile", str(scene.parent), "--labels", str(buildings_dir / "nairobi/labels.geojson"),
                                      "--out", str(tmp_path / "chips"), "--size", "128", "--scheduler", "sync"])
    assert result.exit_code == 0, result.output
    features = json.loads((tmp_path / "chips" / "index.geojson").read_text())["features"]
    assert features and {f["properties"]["split"] for f in features} == {"train"}
    # named like test ground but not the shared file: said once, so a changed copy of a Kampala
    # scene does not slip into training unseen
    note = [line for line in result.stderr.splitlines() if "kampala_z19_7.tif" in line]
    assert note == [("note: kampala_z19_7.tif is named like the shared data's test ground but is not one of its "
                     "files: its chips go to train (--split test to hold it out)")]


def test_a_file_of_no_shared_size_is_never_hashed(buildings_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every scene given to 'geoseg tile' was read in full for its SHA-256 (a 1.26 GB scene: 2.9 s
    from disk) to learn whether it is a shared file; a size no shared file has settles that unread."""
    import tiles.splits

    shared = buildings_dir / "kampala/kampala_z19_1.tif"
    own = tmp_path / "kampala_z19_7.tif"  # named like test ground: both scene_split and the note look
    own.write_bytes(shared.read_bytes() + b"\0")
    same_size = tmp_path / "same_size.tif"  # a shared file's size, other bytes: hashed, and not shared
    same_size.write_bytes(bytes(shared.stat().st_size))
    assert scene_split(same_size, landcover=False) == "train"

    class NoHashing:
        @staticmethod
        def sha256() -> None:
            raise AssertionError("a file of no shared size was hashed")

    monkeypatch.setattr(tiles.splits, "hashlib", NoHashing)
    assert scene_split(own, landcover=False) == "train"
    assert name_split_note(own, landcover=False) is not None
    monkeypatch.undo()
    assert scene_split(shared, landcover=False) == "test"  # a shared file is still known

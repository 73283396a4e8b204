"""Splits follow areas/blocks of the real data folders, never chips."""
from __future__ import annotations

from pathlib import Path

import pytest

from tiles.splits import buildings_split, landcover_split, scene_area

EXPECTED = {"zanzibar_1": "train", "zanzibar_2": "val", "nairobi_1": "train", "nairobi_2": "val",
            "kampala_1": "test", "kampala_2": "test"}


def test_every_buildings_scene_gets_its_area_split(buildings_dir: Path):
    scenes = sorted(buildings_dir.glob("*/*.tif"))
    assert len(scenes) == 18
    for path in scenes:
        area, block = scene_area(path)
        assert area == path.parent.name
        assert buildings_split(area, block) == EXPECTED[f"{area}_{block}"]


@pytest.mark.parametrize("tile, split", [("tile_1", "train"), ("tile_4", "train"), ("tile_5", "val"), ("tile_6", "test")])
def test_dubai_tiles(data_root: Path, tile: str, split: str):
    assert (data_root / "landcover/dubai" / tile).is_dir()
    assert landcover_split(tile) == split

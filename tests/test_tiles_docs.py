"""docs/tiling.md's inference loop, run as written with a fake model, and the package's public names."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

import tiles
from tiles.cog import is_valid_cog, write_cog

DOC = Path(__file__).resolve().parents[1] / "docs" / "tiling.md"
NAMES = ["dark", "mid", "bright"]
COLOURS = ["#000000", "#ff0000", "#00ff00"]


def inference_snippet() -> str:
    """The python block under '## For inference' in docs/tiling.md."""
    found = re.search(r"^## For inference.*?```python\n(.*?)```", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert found, "docs/tiling.md lost its inference example"
    return found.group(1)


def box_model(rgb: np.ndarray) -> np.ndarray:
    """Position-independent fake model: a 3x3 mean of the grey level (seams would show), as 3 probabilities."""
    grey = np.pad(rgb.astype(np.float32).mean(0) / 255, 1, mode="edge")
    h, w = rgb.shape[1:]
    m = sum(grey[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
    return np.stack([(1 - m) ** 2, 2 * m * (1 - m), m ** 2]).astype(np.float32)


def run_snippet(folder: Path, path: Path, size: int, overlap: int, monkeypatch) -> None:
    code = inference_snippet()
    assert "512, 64" in code
    monkeypatch.chdir(folder)
    exec(compile(code.replace("512, 64", f"{size}, {overlap}"), str(DOC), "exec"),  # noqa: S102 (our own docs)
         {"path": str(path), "model": box_model, "names": NAMES, "colours": COLOURS})


def test_the_inference_example_runs_as_written_and_is_seamless(buildings_dir: Path, tmp_path: Path, monkeypatch):
    """The example passed ``tags={...}`` (a set: rio-cogeo failed inside with 'argument after ** must be a
    mapping') and imported from modules a user had to look up; here it runs verbatim, its class map
    is a valid COG on the input's grid, and tiles of 256 and 1024 px blend to the same probabilities."""
    path = buildings_dir / "kampala/kampala_z20_1.tif"  # 1536 x 1024 at 0.15 m: warped to 0.3 m and back
    small, big = tmp_path / "small", tmp_path / "big"
    for folder, size in ((small, 256), (big, 1024)):
        folder.mkdir()
        run_snippet(folder, path, size, 64, monkeypatch)
    with rasterio.open(path) as src, rasterio.open(small / "classmap.tif") as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert json.loads(out.tags()["classes"]) == NAMES and out.colormap(1)[2] == (0, 255, 0, 255)
        classes, valid = out.read(1), src.dataset_mask() > 0  # the scene has 4980 masked pixels
        assert set(np.unique(classes)) == {0, 1, 2, 255}
        # decided on 0.3 m pixels: 0.15 m pixels beside masked ones go either way (docs say so)
        assert (classes[~valid] == 255).mean() > 0.5 and (classes[valid] == 255).mean() < 0.005
    assert is_valid_cog(small / "classmap.tif")
    with rasterio.open(small / "work_probs.tif") as a, rasterio.open(big / "work_probs.tif") as b:
        pa, pb = a.read().astype(int), b.read().astype(int)
    assert pa.shape[1:] == (507, 765)  # the 0.3 m working grid
    # the 1024 px tile runs past the 765 x 507 working grid (zero padding): the 3x3 model's last row
    # and column see other context there; everywhere else the blend is the same to rounding
    assert np.abs(pa - pb)[:, :-1, :-1].max() <= 1
    assert not list(Path(tmp_path).rglob("geoseg-blend-*"))


def test_write_cog_names_bad_tags_and_leaves_no_part_file(tmp_path: Path):
    src = tmp_path / "plain.tif"
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.transform.from_origin(0, 0, 1, 1)) as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))
    with pytest.raises(TypeError, match="mapping of str to str.*got set"):
        write_cog(src, tmp_path / "cog.tif", tags={...})
    with pytest.raises(TypeError, match="'n_classes': int"):
        write_cog(src, tmp_path / "cog.tif", tags={"model": "x", "n_classes": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.tif"]


@pytest.mark.parametrize("georeferenced", [True, False])
def test_write_cog_removes_its_part_file_when_writing_fails(tmp_path: Path, monkeypatch, georeferenced):
    """A failure inside rio-cogeo, or GDAL's COG driver for a raster without georeferencing (disk
    full, here simulated after it began the file) left ``NAME.part`` beside the output."""
    from tiles import cog

    src = tmp_path / "plain.tif"
    place = {"crs": "EPSG:32636", "transform": rasterio.Affine(1, 0, 500000, 0, -1, 0)} if georeferenced else {}
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", **place) as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))

    def full_disk(source, dst_path, *args, **kwargs):
        Path(dst_path).write_bytes(b"II*\x00")
        raise OSError(28, "No space left on device")

    if georeferenced:
        monkeypatch.setattr(cog, "cog_translate", full_disk)
    else:
        monkeypatch.setattr(cog.rasterio.shutil, "copy", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_cog(src, tmp_path / "cog.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.tif"]


def test_the_main_names_import_from_the_package():
    assert set(tiles.__all__) == set(tiles._EXPORTS)
    assert {"Scene", "tile_grid", "BlendingWriter", "warp_to_grid", "scene_source_grid", "write_cog",
            "colormap_from_hex", "UnsupportedRaster", "building_chips", "LabelIndex", "run_batch"} <= set(tiles.__all__)
    for name in tiles.__all__:
        assert getattr(tiles, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tiles.nope  # noqa: B018


def test_importing_tiles_loads_no_rasterio():
    """The names are loaded on first use: ``tiles.splits`` imports on the GPU machine, which has no rasterio."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rasterio', 'torch', 'geoseg'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import tiles, tiles.splits\n"
        "from tiles import splits\n"
        "assert 'Scene' in dir(tiles)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_the_training_chips_example_runs_as_written(buildings_dir: Path, tmp_path: Path):
    """From Python: str paths (``out_dir / 'images'`` failed on a str) and one labels file given alone
    (a str was read character by character)."""
    found = re.search(r"^Format in docs/ARCHITECTURE.md. From Python.*?```python\n(.*?)```", DOC.read_text(),
                      re.DOTALL | re.MULTILINE)
    assert found, "docs/tiling.md lost its training chips example"
    out = tmp_path / "chips"
    names = {"path": str(buildings_dir / "kampala/kampala_z20_1.tif"), "out_dir": str(out),
             "labels_path": str(buildings_dir / "kampala/labels.geojson")}
    exec(compile(found.group(1), str(DOC), "exec"), names)  # noqa: S102 (our own docs)
    features = json.loads((out / "index.geojson").read_text())["features"]
    assert len(features) == len(names["records"]) > 1
    assert {f["properties"]["split"] for f in features} == {"test"} and any(f["properties"]["n_objects"] for f in features)
    for f in features:
        assert (out / f["properties"]["image"]).is_file() and (out / f["properties"]["label"]).is_file()


@pytest.mark.parametrize(("colours", "nodata", "says"), [
    (["#ff0000"] * 256, 255, "nodata 255 is the index of class 255"),
    (["#ff0000"] * 300, None, "300 colours: a uint8 class map's colour table holds 256"),
    (["#gg0000"], 255, "'#gg0000' is not #rrggbb"),
    ("#ff0000", 255, "a list of '#rrggbb' strings"),
])
def test_colormap_from_hex_says_what_is_wrong(colours, nodata, says):
    """Class 255's colour was replaced by transparent, 300 colours made a table GDAL cannot hold, '#gg0000'
    failed with int()'s message, and one string was read character by character ('#' is not #rrggbb)."""
    from tiles import colormap_from_hex

    with pytest.raises((ValueError, TypeError), match=says):
        colormap_from_hex(colours, nodata=nodata)

"""`geoseg tile` on real scenes: chip files, label codes, index, splits, resume, skips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from checks import assert_one_line_error, assert_usage_error
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.training.data import load_dataset
from tiles.grid import tile_grid
from tiles.labels import LabelIndex

runner = CliRunner()


def index_of(out: Path) -> list[dict]:
    return json.loads((out / "index.geojson").read_text())["features"]


def test_building_chips_at_target_gsd(buildings_dir: Path, tmp_path: Path):
    scenes = [buildings_dir / "kampala/kampala_z19_2.tif", buildings_dir / "kampala/kampala_z21_2.tif"]
    out = tmp_path / "chips"
    args = ["tile", *map(str, scenes), "--out", str(out), "--size", "128", "--overlap", "16", "--gsd", "0.3",
            "--target", "buildings", "--scheduler", "sync"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    feats = index_of(out)
    # kampala_z21_2 (1024 px at 0.075 m) -> ~256 px at 0.3 m: same window count as z19_2 (256 px)
    assert len(feats) == 2 * len(tile_grid(256, 256, 128, 16))
    for f in feats:
        p = f["properties"]
        assert p["split"] == "test" and p["area"] == "kampala" and p["target"] == "buildings"
        assert abs(p["gsd"] - 0.3) < 0.3 * 0.02 + 1e-9
        lon, lat = np.array(f["geometry"]["coordinates"][0]).T
        assert 32.5 < lon.min() < 32.7 and 0.2 < lat.mean() < 0.4  # Kampala, lon/lat order
        with rasterio.open(out / p["image"]) as im, rasterio.open(out / p["label"]) as lb:
            assert im.count == 3 and im.dtypes[0] == "uint8" and im.shape == (128, 128)
            lab = lb.read(1)
            assert set(np.unique(lab)) <= {0, 1, 2, 255}
            assert (p["n_objects"] > 0) == bool((lab == 1).any() or (lab == 2).any())
            assert im.crs == lb.crs and im.transform == lb.transform
    assert sum(f["properties"]["status"] == "ok" for f in feats) >= len(feats) // 2
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 already done" in again.output
    assert index_of(out) == feats


def labels_around(scene: Path, path: Path) -> Path:
    """A label file whose extent covers ``scene`` with no building inside it: two small
    squares just beyond opposite corners (the scene legitimately has zero buildings)."""
    with rasterio.open(scene) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    squares = [[[x, y], [x + 1e-4, y], [x + 1e-4, y + 1e-4], [x, y + 1e-4], [x, y]]
               for x, y in ((w - 0.01, s - 0.01), (e + 0.01, n + 0.01))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [sq]}}
        for sq in squares]}))
    return path


def test_low_valid_windows_are_recorded_as_skipped(rasters_dir: Path, tmp_path: Path):
    out = tmp_path / "chips"
    scene = rasters_dir / "rasterio/RGB.byte.tif"
    result = runner.invoke(app, ["tile", str(scene), "--labels",
                                 str(labels_around(scene, tmp_path / "around.geojson")), "--out", str(out),
                                 "--size", "256", "--min-valid", "0.9", "--scheduler", "sync"])
    assert result.exit_code == 0, result.output
    feats = index_of(out)
    skipped = [f["properties"] for f in feats if f["properties"]["status"] == "skipped"]
    written = [f["properties"] for f in feats if f["properties"]["status"] != "skipped"]
    assert skipped and written and len(feats) == len(tile_grid(791, 718, 256, 0))
    assert all(p["image"] is None and p["valid_fraction"] < 0.9 for p in skipped)
    assert all(p["status"] == "empty" and (out / p["image"]).exists() for p in written)  # no building inside the labels' extent
    assert len(list((out / "images").iterdir())) == len(written)


def test_landcover_chips_copy_the_class_mask(data_root: Path, tmp_path: Path):
    image = data_root / "landcover/dubai/tile_5/image_part_001.jpg"
    out = tmp_path / "lc"
    result = runner.invoke(app, ["tile", str(image), "--target", "landcover", "--out", str(out), "--size", "256"])
    assert result.exit_code == 0, result.output
    feats = index_of(out)
    with rasterio.open(image.with_name("image_part_001_label.png")) as m:
        mask = m.read(1)
    assert len(feats) == len(tile_grid(mask.shape[1], mask.shape[0], 256, 0))
    for f in feats:
        p = f["properties"]
        assert f["geometry"] is None and p["gsd"] is None and p["split"] == "val"
        x, y, w, h = p["window"]
        with rasterio.open(out / p["label"]) as lb:
            np.testing.assert_array_equal(lb.read(1), mask[y:y + h, x:x + w])
        assert p["n_objects"] == np.unique(mask[y:y + h, x:x + w][mask[y:y + h, x:x + w] > 0]).size


@pytest.mark.parametrize("address", ["local", "bogus"])
def test_the_scheduler_takes_predict_s_words_or_is_one_line(buildings_dir: Path, tmp_path: Path, address):
    """``--scheduler local`` (README's word, for predict) and a malformed address reached Dask: a 70-line
    traceback, 'missing port number in address'. 'local' is the local cluster; a bad address one line."""
    scene = str(buildings_dir / "kampala/kampala_z19_2.tif")
    result = runner.invoke(app, ["tile", scene, "--out", str(tmp_path / "c"), "--size", "128",
                                 "--scheduler", address, "--workers", "1"])
    if address == "local":
        assert result.exit_code == 0, result.output
        assert index_of(tmp_path / "c")
    else:
        assert_usage_error(result, "tile", "--scheduler expects 'local', 'sync' or a Dask scheduler address")
        assert not (tmp_path / "c").exists()


def test_a_chip_folder_inside_the_scene_folder_is_not_read_as_scenes(buildings_dir: Path, tmp_path: Path):
    """A folder's rasters are found recursively: a re-run of ``geoseg tile scenes/ --out scenes/chips``
    took the chips for scenes and was refused ('... would both write chips named ...')."""
    import shutil

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    shutil.copy(buildings_dir / "kampala/kampala_z19_2.tif", scenes)
    args = ["tile", str(scenes), "--labels", str(buildings_dir / "kampala/labels.geojson"),
            "--out", str(scenes / "chips"), "--size", "128"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "from 1 file(s), 1 already done" in again.stdout



@pytest.mark.parametrize("out_name", [".", ".."])
def test_chips_written_into_the_scene_folder_leave_its_scenes_scenes(buildings_dir: Path, tmp_path: Path, out_name: str):
    """Every file under --out was dropped from a scene folder, so ``geoseg tile scenes/ --out scenes/``
    (or a folder above it) found 'no input rasters'; only its images/ and labels/ are chips."""
    import shutil

    scenes = tmp_path / "scenes"
    (scenes / "images").mkdir(parents=True)  # a folder of scenes that a chip folder's has the name of
    shutil.copy(buildings_dir / "kampala/kampala_z19_2.tif", scenes)
    shutil.copy(buildings_dir / "kampala/kampala_z19_1.tif", scenes / "images")
    args = ["tile", str(scenes), "--labels", str(buildings_dir / "kampala/labels.geojson"),
            "--out", str(scenes / out_name), "--size", "128", "--scheduler", "sync", "--gsd", "0.3"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "from 2 file(s), 2 already done" in again.stdout, again.output

def test_unusable_raster_fails_with_message(rasters_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["tile", str(rasters_dir / "rasterio/shade.tif"), "--out", str(tmp_path / "x"),
                                 "--labels", str(rasters_dir / "../buildings/kampala/labels.geojson")])
    assert result.exit_code == 1
    assert "three bands" in result.output


def test_an_out_folder_holds_one_chip_set(buildings_dir: Path, tmp_path: Path):
    """Chip names do not carry the options: a second option set would overwrite the files that
    the first set's records (kept for resuming) point at, so it is refused before writing."""
    scene = str(buildings_dir / "kampala/kampala_z19_2.tif")
    out = tmp_path / "chips"
    first = runner.invoke(app, ["tile", scene, "--out", str(out), "--size", "128"])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    other = runner.invoke(app, ["tile", scene, "--out", str(out), "--size", "64"])
    assert other.exit_code == 1
    assert "holds chips cut with other options (size=128" in other.output and "Traceback" not in other.output
    assert len(other.output.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    again = runner.invoke(app, ["tile", scene, "--out", str(out), "--size", "128"])
    assert again.exit_code == 0 and "1 already done" in again.output
    for f in index_of(out):
        with rasterio.open(out / f["properties"]["image"]) as im:
            assert im.shape == (128, 128)


def test_scenes_with_the_same_name_are_refused(buildings_dir: Path, tmp_path: Path):
    """a/scene.tif and b/scene.tif would both write scene_rNNN_cNNN: refused in one run and
    across runs into one folder, before any chip is written."""
    src = buildings_dir / "kampala/kampala_z19_2.tif"
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "scene.tif").write_bytes(src.read_bytes())
    labels = ["--labels", str(buildings_dir / "kampala/labels.geojson")]
    out = tmp_path / "chips"
    both = runner.invoke(app, ["tile", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), *labels])
    assert both.exit_code == 1 and "would both write chips named scene_rNNN_cNNN" in both.output
    assert len(both.output.strip().splitlines()) == 1 and not (out / "images").exists()
    first = runner.invoke(app, ["tile", str(tmp_path / "a/scene.tif"), "--out", str(out), *labels])
    assert first.exit_code == 0, first.output
    later = runner.invoke(app, ["tile", str(tmp_path / "b/scene.tif"), "--out", str(out), *labels])
    assert later.exit_code == 1 and str(tmp_path / "a/scene.tif") in later.output
    again = runner.invoke(app, ["tile", str(tmp_path / "a/scene.tif"), "--out", str(out), *labels])
    assert again.exit_code == 0 and "1 already done" in again.output


def _feature_collection(coords: list[list[float]] | None) -> str:
    feats = [] if coords is None else [{"type": "Feature", "properties": {},
                                        "geometry": {"type": "Polygon", "coordinates": [coords]}}]
    return json.dumps({"type": "FeatureCollection", "features": feats})


def test_labels_that_cannot_meet_the_scene_are_errors(buildings_dir: Path, tmp_path: Path):
    """Labels in the wrong CRS, far away or empty would make all-background chips and exit 0."""
    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    with rasterio.open(scene) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        web_w, web_s, _, _ = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
    x, y = (w + e) / 2, (s + n) / 2
    cases = {
        # EPSG:3857 metres in a GeoJSON without a crs member (read as lon/lat)
        "web.geojson": (_feature_collection([[web_w, web_s], [web_w + 20, web_s], [web_w + 20, web_s + 20],
                                             [web_w, web_s]]), "coordinates outside [-180,180]x[-90,90]"),
        "far.geojson": (_feature_collection([[x + 10, y], [x + 10.001, y], [x + 10.001, y + 0.001], [x + 10, y]]),
                        "no label polygon overlaps kampala_z19_2.tif"),
        "empty.geojson": (_feature_collection(None), "empty.geojson holds no polygon"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / name.replace(".geojson", "")
        result = runner.invoke(app, ["tile", str(scene), "--labels", str(tmp_path / name), "--out", str(out)])
        assert result.exit_code == 1 and message in result.output, (name, result.output)
        assert "Traceback" not in result.output and not (out / "images").exists()


def test_a_failed_scene_is_one_line_naming_it_once(buildings_dir: Path, tmp_path: Path):
    """A scene that fails in its job (here: no labels.geojson beside it) is one line, its name said once,
    in the README's ``geoseg COMMAND: error:`` form, as geoseg predict says it; it was ``error: a.tif:
    FileNotFoundError: a.tif: label file ...``, and then ``error: a.tif: FileNotFoundError: label file ...``."""
    scene = tmp_path / "scenes" / "lone.tif"
    scene.parent.mkdir()
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    result = runner.invoke(app, ["tile", str(scene), "--out", str(tmp_path / "out"), "--size", "128"])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if "error: " in line]
    assert line == (f"geoseg tile: error: lone.tif: label file {scene.parent / 'labels.geojson'} not found "
                    f"(use --labels)"), line


def test_scene_without_crs_cannot_take_vector_labels(buildings_dir: Path, tmp_path: Path):
    scene = tmp_path / "plain.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as dst:
        dst.write(data)
    result = runner.invoke(app, ["tile", str(scene), "--labels", str(buildings_dir / "kampala/labels.geojson"),
                                 "--out", str(tmp_path / "chips")])
    assert result.exit_code == 1 and "plain.tif has no CRS: vector labels cannot be placed" in result.output


def test_landcover_label_without_its_image_is_one_line(data_root: Path, tmp_path: Path):
    folder = tmp_path / "dubai/tile_2"
    folder.mkdir(parents=True)
    mask = data_root / "landcover/dubai/tile_2/image_part_001_label.png"
    (folder / mask.name).write_bytes(mask.read_bytes())
    result = runner.invoke(app, ["tile", str(tmp_path / "dubai"), "--target", "landcover", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "image_part_001_label.png: no image image_part_001.jpg/.png/.tif beside it" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_hidden_files_of_a_scene_folder_are_not_scenes(buildings_dir: Path, data_root: Path, tmp_path: Path):
    """A folder copied from a Mac holds an AppleDouble ``._X`` beside each file (and a folder may hold
    a ``.cache/``): tile took them for scenes or image + mask pairs, and each failed the run."""
    scenes = tmp_path / "scenes"
    (scenes / ".cache").mkdir(parents=True)
    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    (scenes / "scene.tif").write_bytes(scene.read_bytes())
    (scenes / "labels.geojson").write_bytes((buildings_dir / "kampala/labels.geojson").read_bytes())
    (scenes / "._scene.tif").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (scenes / ".cache/scene.tif").write_bytes(scene.read_bytes())
    result = runner.invoke(app, ["tile", str(scenes), "--out", str(tmp_path / "b"), "--size", "256"])
    assert result.exit_code == 0, result.output
    assert {f["properties"]["scene"] for f in index_of(tmp_path / "b")} == {"scene.tif"}
    tile = tmp_path / "dubai/tile_2"
    tile.mkdir(parents=True)
    for name in ("image_part_001.jpg", "image_part_001_label.png"):
        (tile / name).write_bytes((data_root / "landcover/dubai/tile_2" / name).read_bytes())
        (tile / f"._{name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (tmp_path / "dubai/classes.json").write_bytes((data_root / "landcover/dubai/classes.json").read_bytes())
    result = runner.invoke(app, ["tile", str(tmp_path / "dubai"), "--target", "landcover", "--out", str(tmp_path / "l")])
    assert result.exit_code == 0, result.output
    assert {f["properties"]["scene"] for f in index_of(tmp_path / "l")} == {"tile_2/image_part_001.jpg"}


def test_gsd_is_refused_for_landcover_not_ignored(data_root: Path, tmp_path: Path):
    """The Dubai jpgs have no georeferencing: --gsd cannot be applied, and used to be ignored."""
    image = data_root / "landcover/dubai/tile_2/image_part_001.jpg"
    out = tmp_path / "lc"
    result = runner.invoke(app, ["tile", str(image), "--target", "landcover", "--gsd", "1.0", "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert result.output.strip() == "geoseg tile: error: image_part_001.jpg is not georeferenced: cannot resample to --gsd"


def test_landcover_masks_must_be_class_indices(data_root: Path, tmp_path: Path):
    """A colour mask (3 bands) or values outside classes.json used to be cut as if they were classes."""
    dubai = data_root / "landcover/dubai"
    with rasterio.open(dubai / "tile_2/image_part_001_label.png") as m:
        mask = m.read(1)
    bad_values = mask.copy()
    bad_values[:10, :10] = 7
    cases = {"colour": (np.stack([mask * 40, mask * 20, mask]), "3 bands; a land-cover mask must be one band"),
             "values": (bad_values[None], "values 7 are not classes of")}
    for name, (data, message) in cases.items():
        folder = tmp_path / name / "tile_2"
        folder.mkdir(parents=True)
        (tmp_path / name / "classes.json").write_bytes((dubai / "classes.json").read_bytes())
        (folder / "image_part_001.jpg").write_bytes((dubai / "tile_2/image_part_001.jpg").read_bytes())
        with rasterio.open(folder / "image_part_001_label.png", "w", driver="PNG", width=data.shape[2],
                           height=data.shape[1], count=data.shape[0], dtype="uint8") as dst:
            dst.write(data)
        result = runner.invoke(app, ["tile", str(tmp_path / name), "--target", "landcover",
                                     "--out", str(tmp_path / f"out_{name}")])
        assert result.exit_code == 1 and "image_part_001_label.png: " + message in result.output, result.output
        assert not (tmp_path / f"out_{name}/labels").exists()


def test_bad_option_values_are_one_line_errors(buildings_dir: Path, tmp_path: Path):
    """--workers 0 hung (a cluster with no worker), --gsd 0 crashed, --gsd -1 / --split foo /
    --min-valid 5 were accepted."""
    scenes = [str(buildings_dir / "kampala/kampala_z19_2.tif"), str(buildings_dir / "kampala/kampala_z19_1.tif")]
    cases = {("--workers", "0"): "--workers must be at least 1", ("--gsd", "0"): "--gsd must be a positive",
             ("--gsd", "-1"): "--gsd must be a positive", ("--gsd", "nan"): "--gsd must be a positive",
             ("--split", "foo"): "--split must be one of train, val, test",
             ("--min-valid", "5"): "--min-valid is a fraction in [0, 1]"}
    for option, message in cases.items():
        out = tmp_path / "_".join(option)
        result = runner.invoke(app, ["tile", *scenes, "--out", str(out), *option])
        assert_usage_error(result, "tile", message)  # exit 2, as click's own: it was 1, a failed run
        assert not out.exists(), option


def test_landcover_pairs_sharing_a_record_name_are_refused(data_root: Path, tmp_path: Path):
    """a/tile_2/X.jpg and b/tile_2/X.jpg have distinct chip names but one finished-scene record
    (tile_2__X.json): the second would be skipped as already done."""
    src = data_root / "landcover/dubai/tile_2"
    for d in ("a", "b"):
        (tmp_path / d / "tile_2").mkdir(parents=True)
        (tmp_path / d / "classes.json").write_bytes((src.parent / "classes.json").read_bytes())
        for name in ("image_part_001.jpg", "image_part_001_label.png"):
            (tmp_path / d / "tile_2" / name).write_bytes((src / name).read_bytes())
    result = runner.invoke(app, ["tile", str(tmp_path / "a"), str(tmp_path / "b"), "--target", "landcover",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "would both write the same finished-scene record" in result.output


def test_a_run_that_finished_no_scene_does_not_hold_the_folder(buildings_dir: Path, tmp_path: Path):
    scene = str(buildings_dir / "kampala/kampala_z19_2.tif")
    out = str(tmp_path / "chips")
    (tmp_path / "empty.geojson").write_text(_feature_collection(None))
    failed = runner.invoke(app, ["tile", scene, "--out", out, "--size", "128", "--labels", str(tmp_path / "empty.geojson")])
    assert failed.exit_code == 1
    later = runner.invoke(app, ["tile", scene, "--out", out, "--size", "64"])
    assert later.exit_code == 0, later.output
    assert len(list((tmp_path / "chips/parts").iterdir())) == 1


def three_class_pair(dubai: Path, folder: Path, classes: list[dict]) -> None:
    """A 256 px Dubai crop whose mask is remapped to 3 classes, with ``classes.json`` beside it."""
    folder.mkdir(parents=True)
    with rasterio.open(dubai / "tile_2/image_part_001_label.png") as m:
        mask = np.array([0, 1, 1, 2, 3, 3], np.uint8)[m.read(1, window=Window(0, 0, 256, 256))]
    with rasterio.open(dubai / "tile_2/image_part_001.jpg") as im:
        rgb = im.read(window=Window(0, 0, 256, 256))
    for name, data in (("a.png", rgb), ("a_label.png", mask[None])):
        with rasterio.open(folder / name, "w", driver="PNG", width=256, height=256, count=len(data),
                           dtype="uint8") as dst:
            dst.write(data)
    (folder / "classes.json").write_text(json.dumps(classes))


THREE_CLASSES = [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "built", "colour": "#FF0000"},
                 {"index": 2, "name": "green", "colour": "#00FF00"}, {"index": 3, "name": "open"}]


def test_landcover_chips_record_the_masks_class_list(data_root: Path, tmp_path: Path):
    """The masks' classes.json never reached the chips, so `geoseg train` gave a 3-class data set a
    model and a card with Dubai's six classes. It is now OUT/classes.json; a run whose masks use
    another list is refused, into the same OUT or beside it in one run."""
    dubai = data_root / "landcover/dubai"
    three_class_pair(dubai, tmp_path / "mine", THREE_CLASSES)
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(tmp_path / "mine"), "--target", "landcover", "--out", str(out),
                                 "--size", "128"])
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads((out / "classes.json").read_text())] == ["unlabeled", "built", "green",
                                                                                   "open"]
    assert [c["name"] for c in load_dataset(out)["classes"]] == ["unlabeled", "built", "green", "open"]
    other = [dict(c, name=c["name"].upper()) for c in THREE_CLASSES]
    three_class_pair(dubai, tmp_path / "theirs", other)
    result = runner.invoke(app, ["tile", str(tmp_path / "theirs"), "--target", "landcover", "--out", str(out),
                                 "--size", "128"])
    assert result.exit_code == 1 and "holds chips of other classes" in result.output, result.output
    result = runner.invoke(app, ["tile", str(tmp_path / "mine"), str(tmp_path / "theirs"), "--target", "landcover",
                                 "--out", str(tmp_path / "both"), "--size", "128"])
    assert result.exit_code == 1 and "the masks use different class lists" in result.output, result.output
    bad = tmp_path / "gap"
    three_class_pair(dubai, bad, [c for c in THREE_CLASSES if c["index"] != 2])
    result = runner.invoke(app, ["tile", str(bad), "--target", "landcover", "--out", str(tmp_path / "g")])
    assert result.exit_code == 1 and "class indices must be 0..2, each once" in result.output, result.output


def test_runs_that_differ_only_by_split_share_an_out(buildings_dir: Path, tmp_path: Path):
    """A user's own scenes (areas the built-in rules do not know) are all cut as train, and
    `--split val` into the same OUT was refused as "other options": no chip set could hold a
    validation split, which `geoseg train` requires. Runs that differ only by --split now share an
    OUT; a scene cut again under another split moves there, listed once in the index."""
    labels = ["--labels", str(buildings_dir / "kampala/labels.geojson")]
    site_a, site_b = tmp_path / "site_a.tif", tmp_path / "site_b.tif"
    with rasterio.open(buildings_dir / "kampala/kampala_z19_2.tif") as src:  # a file of the user's: not
        for site in (site_a, site_b):  # byte for byte a shared Kampala scene, whose chips are test ground
            with rasterio.open(site, "w", **{**src.profile, "compress": "deflate", "photometric": "rgb"}) as dst:
                dst.write(src.read())
                dst.update_tags(site=site.stem)  # two scenes, not one scene's copy (refused)
    out = tmp_path / "chips"
    first = runner.invoke(app, ["tile", str(site_a), str(site_b), "--out", str(out), "--size", "128", *labels])
    assert first.exit_code == 0, first.output

    def splits() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for f in index_of(out):
            found.setdefault(f["properties"]["scene"], set()).add(f["properties"]["split"])
        return found

    assert splits() == {"site_a.tif": {"train"}, "site_b.tif": {"train"}}
    val = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "128", "--split", "val", *labels])
    assert val.exit_code == 0, val.output
    assert "site_b.tif: cut before under the split by area, now under val" in val.output
    assert splits() == {"site_a.tif": {"train"}, "site_b.tif": {"val"}}
    again = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "128", "--split", "val", *labels])
    assert again.exit_code == 0 and "1 already done" in again.output
    assert len(index_of(out)) == 8
    other = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "64", "--split", "val", *labels])
    assert other.exit_code == 1 and "holds chips cut with other options" in other.output


def test_scenes_of_one_chip_set_may_have_their_own_label_files(buildings_dir: Path, tmp_path: Path):
    """A team's training scene came with one label file and its validation scene with another: the
    second `geoseg tile ... --labels b.shp --split val` into the same OUT was refused as 'other options
    (..., labels=a.gpkg)', though the chips were of one kind (and scenes with a labels.geojson beside
    each were cut into one OUT all along). Runs that differ only by their labels now share an OUT; a
    scene cut again with other labels is listed once, with those labels' chips."""
    import geopandas as gpd

    site_a, site_b = tmp_path / "site_a.tif", tmp_path / "site_b.tif"
    for site, scene in ((site_a, "nairobi_z19_1"), (site_b, "nairobi_z19_2")):
        with rasterio.open(buildings_dir / f"nairobi/{scene}.tif") as src:  # the team's own files
            with rasterio.open(site, "w", **{**src.profile, "compress": "deflate", "photometric": "rgb"}) as dst:
                dst.write(src.read())
    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson").to_crs(32737)
    frame.to_file(tmp_path / "a.gpkg", layer="footprints")
    frame.to_file(tmp_path / "b.shp")
    out = tmp_path / "chips"
    first = runner.invoke(app, ["tile", str(site_a), "--out", str(out), "--size", "256", "--labels",
                                str(tmp_path / "a.gpkg")])
    assert first.exit_code == 0, first.output
    val = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "256", "--split", "val", "--labels",
                              str(tmp_path / "b.shp")])
    assert val.exit_code == 0, val.output
    chips = index_of(out)
    assert {(f["properties"]["scene"], f["properties"]["split"]) for f in chips} == {
        ("site_a.tif", "train"), ("site_b.tif", "val")}
    assert len(chips) == 24 and all(f["properties"]["status"] == "ok" for f in chips[-8:])
    again = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "256", "--split", "val",
                                "--labels", str(tmp_path / "a.gpkg")])
    assert again.exit_code == 0 and "site_b.tif: cut before with labels b.shp, now with labels a.gpkg" in again.output
    assert len(index_of(out)) == 24
    other = runner.invoke(app, ["tile", str(site_b), "--out", str(out), "--size", "128", "--labels",
                                str(tmp_path / "b.shp")])
    assert other.exit_code == 1 and "holds chips cut with other options" in other.output


def test_landcover_pairs_take_a_geotiff_class_raster(buildings_dir: Path, tmp_path: Path):
    """Only X_label.png masks were found: a georeferenced scene with its class raster as a GeoTIFF
    (scene.tif + scene_label.tif) gave "no input rasters found"."""
    folder = tmp_path / "mine" / "north"
    folder.mkdir(parents=True)
    scene = folder / "scene.tif"
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    with rasterio.open(scene) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform}
        valid = src.dataset_mask() > 0
    mask = np.ones((256, 256), np.uint8)
    mask[:, 128:] = 2
    with rasterio.open(folder / "scene_label.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    mask[~valid] = 0  # the scene's nodata is unlabeled in the chips
    (tmp_path / "mine" / "classes.json").write_text(json.dumps(
        [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "trees"}, {"index": 2, "name": "fields"}]))
    for source, out in ((tmp_path / "mine", tmp_path / "a"), (scene, tmp_path / "b")):
        result = runner.invoke(app, ["tile", str(source), "--target", "landcover", "--out", str(out),
                                     "--size", "128"])
        assert result.exit_code == 0, result.output
        feats = index_of(out)
        assert len(feats) == 4 and all(f["geometry"] is not None for f in feats)
        for f in feats:
            x, y, w, h = f["properties"]["window"]
            with rasterio.open(out / f["properties"]["label"]) as lb:
                np.testing.assert_array_equal(lb.read(1), mask[y:y + h, x:x + w])
        assert json.loads((out / "classes.json").read_text())[2]["name"] == "fields"
    # a pair at another GSD beside it: refused before cutting, with what works for pairs (tile refuses
    # --gsd for them, which is what geoseg train asked for once the mixed folder was cut)
    south = tmp_path / "mine" / "south"
    south.mkdir()
    (south / "fine.tif").write_bytes((buildings_dir / "kampala/kampala_z20_2.tif").read_bytes())
    with rasterio.open(south / "fine.tif") as src:
        fine = {**profile, "width": src.width, "height": src.height, "transform": src.transform}
    with rasterio.open(south / "fine_label.tif", "w", **fine) as dst:
        dst.write(np.ones((1, fine["height"], fine["width"]), np.uint8))
    mixed = runner.invoke(app, ["tile", str(tmp_path / "mine"), "--target", "landcover", "--out",
                                str(tmp_path / "mixed"), "--size", "128"])
    assert_one_line_error(mixed, "tile", "image + mask pairs of different GSD (fine.tif 0.149 m, scene.tif 0.298 m)",
                          "different --out folders", "gdalwarp -tr, with -r near for the masks")
    assert not (tmp_path / "mixed" / "index.geojson").exists()
    # a pair without georeferencing beside it: cut, it made chips with and without a GSD, which train refuses
    import shutil

    from PIL import Image

    shutil.rmtree(south)
    with rasterio.open(scene) as src:
        Image.fromarray(np.moveaxis(src.read([1, 2, 3], window=Window(0, 0, 128, 128)), 0, -1)).save(
            tmp_path / "mine" / "photo.png")
    Image.fromarray(np.ones((128, 128), np.uint8)).save(tmp_path / "mine" / "photo_label.png")
    plain = runner.invoke(app, ["tile", str(tmp_path / "mine"), "--target", "landcover", "--out",
                                str(tmp_path / "plain"), "--size", "128"])
    assert_one_line_error(plain, "tile", "image + mask pairs with and without georeferencing (photo.png has no GSD, "
                          "scene.tif 0.298 m)", "different --out folders", "geoseg train --gsd METRES")
    assert not (tmp_path / "plain" / "index.geojson").exists()
    later = runner.invoke(app, ["tile", str(tmp_path / "mine" / "photo.png"), "--target", "landcover", "--out",
                                str(tmp_path / "a"), "--size", "128"])  # into the folder of the georeferenced pair
    assert_one_line_error(later, "tile", "image + mask pairs with and without georeferencing (photo.png has no GSD, "
                          f"north/scene.tif (chips in {tmp_path / 'a'}) 0.298 m)")


def test_a_shapefile_without_its_prj_is_told_to_bring_its_crs(buildings_dir: Path, tmp_path: Path):
    """UTM metres in a shapefile whose .prj was left behind were refused with advice for a GeoJSON
    ("a GeoJSON without a crs member is lon/lat: reproject it to EPSG:4326")."""
    import geopandas as gpd

    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    labels = gpd.read_file(buildings_dir / "kampala/labels.geojson").to_crs(32636)
    labels.to_file(tmp_path / "utm.shp")
    (tmp_path / "utm.prj").unlink()
    result = runner.invoke(app, ["tile", str(scene), "--labels", str(tmp_path / "utm.shp"), "--out",
                                 str(tmp_path / "chips")])
    assert result.exit_code == 1
    assert "utm.shp has no CRS and its coordinates" in result.output and "the .prj beside a shapefile" in result.output


def test_chip_functions_refuse_a_scene_opened_otherwise_than_the_options_say(buildings_dir: Path, tmp_path: Path):
    """From Python, ``ChipOptions(gsd=0.3)`` with a scene opened at its own 0.15 m cut 0.15 m chips without a
    word (gsd and bands act when the scene is opened); land-cover chips ignored a gsd the CLI refuses."""
    from tiles import ChipOptions, LabelIndex, Scene, building_chips, landcover_chips

    path = buildings_dir / "kampala/kampala_z20_2.tif"
    opts = ChipOptions(size=256, gsd=0.3)
    with Scene(path) as scene:
        labels = LabelIndex.from_files([buildings_dir / "kampala/labels.geojson"], scene.crs)
        with pytest.raises(ValueError, match=r"opened with gsd=None but the chip options say gsd=0.3"):
            next(building_chips(scene, labels, tmp_path, opts, path.name, "kampala", "test"))
        with pytest.raises(ValueError, match=r"reads bands \(1, 2, 3\) but the chip options say bands=\(3, 2, 1\)"):
            next(building_chips(scene, labels, tmp_path, ChipOptions(bands=(3, 2, 1)), path.name, "kampala", "test"))
        with pytest.raises(ValueError, match="cut at native resolution"):
            next(landcover_chips(scene, path, tmp_path, opts, path.name, chip_prefix="x", area="kampala",
                                 split="test"))
    with Scene(path, gsd=opts.gsd) as scene:  # labels of another city: all-background chips, before
        elsewhere = LabelIndex.from_files([buildings_dir / "nairobi/labels.geojson"], scene.crs)
        with pytest.raises(ValueError, match=r"no label polygon overlaps kampala_z20_2.tif \(\d+ polygons, their "
                                             r"extent misses the scene"):
            next(building_chips(scene, elsewhere, tmp_path, opts, path.name, "kampala", "test"))
    assert not list(tmp_path.iterdir())
    with Scene(path, gsd=opts.gsd, bands=opts.bands) as scene:
        records = list(building_chips(scene, labels, tmp_path, opts, path.name, "kampala", "test"))
    assert records and all(abs(r.gsd - 0.3) < 0.01 for r in records)
    assert {r.status for r in records} <= {"ok", "empty"} and any(r.n_objects for r in records)
    with rasterio.open(tmp_path / records[0].image) as img, rasterio.open(tmp_path / records[0].label) as lab:
        assert img.shape == lab.shape == (256, 256) and img.crs == lab.crs and img.transform == lab.transform
        assert abs(img.res[0] - 0.3) < 0.01  # Web Mercator metres at 0.3 N: ground metres


def test_a_tile_batch_leaves_a_summary_and_ctrl_c_says_how_to_resume(buildings_dir: Path, tmp_path: Path,
                                                                    monkeypatch):
    """Ctrl-C ended a tile batch without a word (exit 130), and no file said which scenes were cut:
    OUT/batch.json now does, per scene (as for predict), and Ctrl-C says what is kept."""
    from tiles.scene_chips import SceneJob  # the class geoseg tile runs each scene with

    scenes = [str(buildings_dir / "kampala" / name) for name in ("kampala_z19_2.tif", "kampala_z19_1.tif")]
    out = tmp_path / "chips"
    real = SceneJob.__call__

    def interrupted(self, scene_path, part):
        if scene_path.name == "kampala_z19_1.tif":
            raise KeyboardInterrupt
        return real(self, scene_path, part)

    monkeypatch.setattr(SceneJob, "__call__", interrupted)
    args = ["tile", *scenes, "--out", str(out), "--size", "128", "--scheduler", "sync"]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert stopped.stderr.strip().splitlines()[-1] == (
        "geoseg tile: interrupted: finished scenes are kept, run the same command again to resume")
    summary = json.loads((out / "batch.json").read_text())
    assert (summary["command"], summary["state"], summary["exit_code"]) == ("geoseg tile", "interrupted", 130)
    assert [e["status"] for e in summary["inputs"]] == ["done", "pending"]
    monkeypatch.setattr(SceneJob, "__call__", real)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "batch.json").read_text())
    assert [e["status"] for e in summary["inputs"]] == ["skipped", "done"] and summary["exit_code"] == 0
    windows = [e["windows"] for e in summary["inputs"]]
    assert sum(w["ok"] + w["empty"] + w["skipped"] for w in windows) == len(index_of(out))


def test_a_full_disk_when_the_index_is_written_is_one_line(buildings_dir: Path, tmp_path: Path, monkeypatch):
    """A disk that filled up as `geoseg tile` wrote OUT/index.geojson ended in a 60-line traceback,
    left index.geojson.tmp half written and batch.json saying 'running'."""
    import errno
    import os

    from checks import assert_one_line_error

    real = Path.write_text

    def disk_fills_up(self, data, *args, **kwargs):
        if self.name == "index.geojson.tmp":
            real(self, data[:100], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_fills_up)
    out = tmp_path / "chips"
    result = CliRunner().invoke(app, ["tile", str(buildings_dir / "kampala/kampala_z19_2.tif"), "--labels",
                                      str(buildings_dir / "kampala/labels.geojson"), "--out", str(out),
                                      "--size", "256"])
    assert_one_line_error(result, "tile", f"cannot write {out / 'index.geojson'}: No space left on device")
    assert not (out / "index.geojson.tmp").exists() and not (out / "index.geojson").exists()
    summary = json.loads((out / "batch.json").read_text())
    assert (summary["state"], summary["exit_code"]) == ("aborted", 1) and "No space left" in summary["error"]


def test_a_batch_summary_that_cannot_be_written_is_one_warning_line(data_root: Path, tmp_path: Path):
    """batch.json that cannot be written (here a folder of that name; a full disk does the same)
    warns and the run goes on; tile printed Python's two-line form, a file:line and a source line."""
    import subprocess
    import sys

    out = tmp_path / "out"
    (out / "batch.json").mkdir(parents=True)
    scene = data_root / "buildings" / "nairobi" / "nairobi_z19_1.tif"
    run = subprocess.run([sys.executable, "-m", "geoseg", "tile", str(scene), "--out", str(out), "--size", "512"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [f"warning: cannot write the batch summary {out / 'batch.json'}: Is a directory"], lines
    assert (out / "index.geojson").is_file()


def test_vector_labels_for_landcover_are_refused_not_ignored(data_root: Path, buildings_dir: Path, tmp_path: Path):
    """Land-cover chips take their classes from the X_label masks: a --labels file was silently unused.
    Without --labels-class-field it still is refused."""
    image = data_root / "landcover/dubai/tile_2/image_part_001.jpg"
    out = tmp_path / "lc"
    result = runner.invoke(app, ["tile", str(image), "--target", "landcover", "--labels",
                                 str(buildings_dir / "nairobi/labels.geojson"), "--out", str(out), "--size", "256"])
    assert_usage_error(result, "tile", "--labels labels.geojson with --target landcover needs --labels-class-field",
                          "X_label")
    assert not out.exists()


TREES_FIELDS = [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "trees"}, {"index": 2, "name": "fields"}]


def _class_polygons(buildings_dir: Path, folder: Path, values: list) -> tuple[Path, Path]:
    """kampala_z19_2 in ``folder/scenes`` and a GeoPackage of two class polygons over it: the west half
    ``values[0]``, the south-east quarter ``values[1]`` (the north-east quarter unlabelled), and a
    classes.json (1 trees, 2 fields) beside it."""
    import geopandas as gpd
    import shapely

    (folder / "scenes").mkdir(parents=True)
    scene = folder / "scenes/scene.tif"
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    with rasterio.open(scene) as src:
        b = src.bounds
    mid_x, mid_y = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    polygons = [shapely.box(b.left - 10, b.bottom - 10, mid_x, b.top + 10), shapely.box(mid_x, b.bottom - 10,
                                                                                       b.right + 10, mid_y)]
    labels = folder / "landcover.gpkg"
    gpd.GeoDataFrame({"class": values}, geometry=polygons, crs=src.crs).to_crs(4326).to_file(labels)
    (folder / "classes.json").write_text(json.dumps(TREES_FIELDS))
    return scene, labels


def test_vector_landcover_polygons_are_rasterised_onto_each_image_by_class_field(buildings_dir: Path, tmp_path: Path):
    """Vector land cover (polygons with a class field) was refused by --target landcover: it had to be
    rasterised onto each image's grid by hand. --labels-class-field matches the field's values to the
    classes.json's names (or indices) and the chips' masks are rasterised from the polygons."""
    masks = {}
    for name, values in (("names", ["trees", "fields"]), ("indices", [1, 2])):
        scene, labels = _class_polygons(buildings_dir, tmp_path / name, values)
        out = tmp_path / name / "chips"
        result = runner.invoke(app, ["tile", str(scene.parent), "--target", "landcover", "--labels", str(labels),
                                     "--labels-class-field", "class", "--out", str(out), "--size", "128"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "classes.json").read_text()) == TREES_FIELDS
        full = np.zeros((256, 256), np.uint8)
        for f in index_of(out):
            x, y, w, h = f["properties"]["window"]
            full[y:y + h, x:x + w] = rasterio.open(out / f["properties"]["label"]).read(1)
        masks[name] = full
    with rasterio.open(scene) as src:
        valid = src.dataset_mask() > 0
    expected = np.zeros((256, 256), np.uint8)
    expected[:, :128], expected[128:, 128:] = 1, 2
    expected[~valid] = 0
    np.testing.assert_array_equal(masks["names"], expected)
    np.testing.assert_array_equal(masks["indices"], expected)
    assert {f["properties"]["status"] for f in index_of(tmp_path / "names/chips")} == {"ok", "empty"}


def test_vector_landcover_is_cut_at_gsd_on_the_resampled_grid(buildings_dir: Path, tmp_path: Path):
    """Class polygons have no resolution of their own, so vector land cover can be cut at --gsd (it was
    refused, as for class masks): chips on the 0.6 m grid, the polygons rasterised on that grid, the
    chips' GSD recorded for the card. Mixed GSDs without --gsd are refused as for buildings."""
    scene, labels = _class_polygons(buildings_dir, tmp_path, ["trees", "fields"])
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(scene), "--target", "landcover", "--labels", str(labels),
                                 "--labels-class-field", "class", "--out", str(out), "--size", "64", "--gsd", "0.6"])
    assert result.exit_code == 0, result.output
    feats = index_of(out)
    with rasterio.open(scene) as src:
        side = round(src.width * src.res[0] / 0.6)  # 256 px at 0.3 m -> about 128 px at 0.6 m
    full = np.zeros((side, side), np.uint8)
    for f in feats:
        assert f["properties"]["gsd"] == pytest.approx(0.6, rel=0.02)
        if f["properties"]["label"]:
            x, y, w, h = f["properties"]["window"]
            with rasterio.open(out / f["properties"]["label"]) as chip:
                assert chip.res[0] == pytest.approx(0.6, rel=0.02)
                full[y:y + h, x:x + w] = chip.read(1)[:max(0, min(h, side - y)), :max(0, min(w, side - x))]
    half = side // 2
    inner = np.s_[4:-4]  # off the polygon edges and the scene's border
    assert (full[inner, 4:half - 4][full[inner, 4:half - 4] > 0] == 1).all()
    assert (full[half + 4:side - 4, half + 4:side - 4][full[half + 4:side - 4, half + 4:side - 4] > 0] == 2).all()
    assert (full[4:half - 4, half + 4:side - 4] == 0).all() and (full == 1).mean() > 0.3
    z20 = tmp_path / "scenes" / "z20.tif"
    z20.write_bytes((buildings_dir / "kampala/kampala_z20_2.tif").read_bytes())
    result = runner.invoke(app, ["tile", str(tmp_path / "scenes"), "--target", "landcover", "--labels", str(labels),
                                 "--labels-class-field", "class", "--out", str(tmp_path / "mixed")])
    assert_one_line_error(result, "tile", "z20.tif 0.149 m", "--gsd")


def test_vector_landcover_values_that_name_no_class_are_refused_in_one_line(buildings_dir: Path, tmp_path: Path):
    """A value the classes.json does not know (a typo, a class not listed) must not be cut as
    unlabelled ground: one line naming the values, before anything is written."""
    scene, labels = _class_polygons(buildings_dir, tmp_path, ["trees", "lake"])
    args = ["tile", str(scene), "--target", "landcover", "--labels", str(labels), "--out", str(tmp_path / "c")]
    result = runner.invoke(app, [*args, "--labels-class-field", "class"])
    assert_one_line_error(result, "tile", "landcover.gpkg field class: class values 'lake' are no class",
                          "1 trees, 2 fields")
    assert_one_line_error(runner.invoke(app, [*args, "--labels-class-field", "kind"]), "tile",
                          "landcover.gpkg has no field 'kind' (its fields: class)")
    (tmp_path / "classes.json").unlink()
    assert_one_line_error(runner.invoke(app, [*args, "--labels-class-field", "class"]), "tile",
                          "landcover.gpkg: no classes.json beside it")
    assert not (tmp_path / "c").exists()
    result = runner.invoke(app, ["tile", str(scene), "--labels", str(labels), "--labels-class-field", "class",
                                 "--out", str(tmp_path / "c")])
    assert_usage_error(result, "tile", "--labels-class-field is for --target landcover")


def test_vector_landcover_that_cannot_label_a_scene_is_its_error(buildings_dir: Path, tmp_path: Path):
    """Polygons of another place were cut into chips that were all unlabeled, exit 0 and no word (building
    labels are refused there); a scene without a CRS failed with geopandas' 'Must pass either crs or epsg'."""
    _, labels = _class_polygons(buildings_dir, tmp_path, ["trees", "fields"])
    elsewhere = tmp_path / "elsewhere.tif"
    elsewhere.write_bytes((buildings_dir / "zanzibar/zanzibar_z19_1.tif").read_bytes())
    with rasterio.open(buildings_dir / "kampala/kampala_z19_2.tif") as src:
        pixels = src.read(window=Window(0, 0, 128, 128))
    unplaced = tmp_path / "unplaced.tif"
    with rasterio.open(unplaced, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8") as dst:
        dst.write(pixels)
    args = ["--target", "landcover", "--labels", str(labels), "--labels-class-field", "class", "--size", "128",
            "--scheduler", "sync"]
    for scene, words in ((elsewhere, "no land-cover polygon of landcover.gpkg overlaps elsewhere.tif: its chips "
                                     "would all be unlabeled"),
                         (unplaced, "unplaced.tif has no CRS: vector labels cannot be placed")):
        result = runner.invoke(app, ["tile", str(scene), "--out", str(tmp_path / scene.stem), *args])
        assert result.exit_code == 1 and words in result.stderr, result.output
        assert "Traceback" not in result.output and "Must pass" not in result.output
        assert not index_of(tmp_path / scene.stem)


def test_scenes_of_different_gsd_without_gsd_are_refused_before_cutting(buildings_dir: Path, tmp_path: Path):
    """geoseg train refuses chips of mixed GSD; the folder used to be cut in full first, then found unusable."""
    z19, z20 = buildings_dir / "nairobi/nairobi_z19_2.tif", buildings_dir / "nairobi/nairobi_z20_2.tif"
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(z19), str(z20), "--out", str(out), "--size", "256"])
    assert_one_line_error(result, "tile", "nairobi_z20_2.tif 0.149 m", "nairobi_z19_2.tif 0.298 m", "--gsd")
    assert not (out / "index.geojson").exists() and not (out / "images").exists()
    # a later run adding a scene of another GSD to the chips already there is refused the same way
    assert runner.invoke(app, ["tile", str(z19), "--out", str(out), "--size", "256"]).exit_code == 0
    before = (out / "index.geojson").read_text()
    result = runner.invoke(app, ["tile", str(z20), "--out", str(out), "--size", "256", "--split", "val"])
    assert_one_line_error(result, "tile", f"nairobi_z19_2.tif (chips in {out}) 0.298 m", "--gsd")
    assert (out / "index.geojson").read_text() == before


def test_a_class_raster_s_nodata_is_unlabeled(buildings_dir: Path, tmp_path: Path):
    """A GIS-exported class raster marks unlabelled ground with its nodata value (255), which was read
    as a class and the mask refused ('values 255 are not classes'); it now reads as 0, unlabeled."""
    folder = tmp_path / "mine"
    folder.mkdir()
    scene = folder / "scene.tif"
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    with rasterio.open(scene) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255}
        valid = src.dataset_mask() > 0
    mask = np.ones((256, 256), np.uint8)
    mask[:, 128:] = 2
    mask[:64, :64] = 255
    with rasterio.open(folder / "scene_label.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    (folder / "classes.json").write_text(json.dumps(
        [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "trees"}, {"index": 2, "name": "fields"}]))
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(folder), "--target", "landcover", "--out", str(out), "--size", "128"])
    assert result.exit_code == 0, result.output
    expected = np.where((mask == 255) | ~valid, 0, mask)
    for f in index_of(out):
        x, y, w, h = f["properties"]["window"]
        with rasterio.open(out / f["properties"]["label"]) as lb:
            np.testing.assert_array_equal(lb.read(1), expected[y:y + h, x:x + w])


def test_labels_where_keeps_only_the_buildings_of_a_mixed_layer(buildings_dir: Path, tmp_path: Path):
    """A team's label layer held parking lots beside buildings (a `class` field) and every polygon was
    taken for a building; --labels-where selects the buildings, and a condition the file cannot
    answer is one line before any chip is cut."""
    import geopandas as gpd

    scene = buildings_dir / "nairobi/nairobi_z19_2.tif"
    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson")
    frame["class"] = ["parking" if i % 3 == 0 else "building" for i in range(len(frame))]
    mixed, only = tmp_path / "mixed.gpkg", tmp_path / "only.gpkg"
    frame.to_file(mixed)
    frame[frame["class"] == "building"].to_file(only)
    for labels, where, out in ((mixed, "class = 'building'", "where"), (only, None, "only"), (mixed, None, "all")):
        args = ["tile", str(scene), "--out", str(tmp_path / out), "--size", "256", "--labels", str(labels)]
        result = runner.invoke(app, args + (["--labels-where", where] if where else []))
        assert result.exit_code == 0, result.output

    def footprint(out: str) -> np.ndarray:
        return np.stack([np.isin(rasterio.open(tmp_path / out / f["properties"]["label"]).read(1), (1, 2))
                         for f in index_of(tmp_path / out)])

    np.testing.assert_array_equal(footprint("where"), footprint("only"))
    assert footprint("all").sum() > footprint("where").sum()
    result = runner.invoke(app, ["tile", str(scene), "--out", str(tmp_path / "bad"), "--labels", str(mixed),
                                 "--labels-where", "kind = 'building'"])
    assert_one_line_error(result, "tile", "mixed.gpkg", "kind = 'building'", "fields: osm_id, class")
    assert not (tmp_path / "bad").exists()


def test_a_bad_labels_file_is_one_line_before_any_scene(buildings_dir: Path, tmp_path: Path):
    """A missing or unreadable --labels file was found by every scene in turn (one error line per
    scene) and left an OUT holding an empty index.geojson."""
    scenes = [str(buildings_dir / "nairobi" / n) for n in ("nairobi_z19_1.tif", "nairobi_z19_2.tif")]
    (tmp_path / "notes.geojson").write_text("not json")
    for labels, words in (("missing.gpkg", ("--labels", "missing.gpkg: no such file")),
                          ("notes.geojson", ("notes.geojson: cannot be read as vector labels",))):
        out = tmp_path / labels.split(".")[0]
        result = runner.invoke(app, ["tile", *scenes, "--out", str(out), "--labels", str(tmp_path / labels)])
        assert_one_line_error(result, "tile", *words)
        assert not out.exists()


def test_landcover_masks_without_a_class_list_are_refused(data_root: Path, tmp_path: Path):
    """A team's own masks without a classes.json were cut and trained as Dubai's six classes: the card
    named their class 1 'building' and 2 'road', whatever they were."""
    three_class_pair(data_root / "landcover/dubai", tmp_path / "mine", THREE_CLASSES)
    (tmp_path / "mine/classes.json").unlink()
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(tmp_path / "mine"), "--target", "landcover", "--out", str(out)])
    assert_one_line_error(result, "tile", "a_label.png: no classes.json beside it or one folder up", "write one")
    assert not out.exists()


def test_a_rerun_cuts_a_scene_whose_chips_went_missing_again(buildings_dir: Path, tmp_path: Path):
    """A re-run skipped a finished scene by its record alone: a chip deleted since stayed missing however
    often the command was re-run, and geoseg train failed on it without saying how to get it back."""
    from geoseg.training.data import ChipDataError

    out = tmp_path / "chips"
    args = ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out), "--size", "256"]
    assert runner.invoke(app, args).exit_code == 0
    chip = out / "images/nairobi_z19_2_r000_c001.tif"
    before = chip.read_bytes()
    chip.unlink()
    with pytest.raises(ChipDataError, match="delete it and run the geoseg tile command that made"):
        load_dataset(out)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "note: nairobi_z19_2.tif: 1 chip file(s) missing (images/nairobi_z19_2_r000_c001.tif), cut again" in (
        result.stderr)
    assert chip.read_bytes() == before and len(load_dataset(out)["chip_id"]) == 8


def test_a_labels_file_given_twice_is_read_once_and_is_the_same_option(buildings_dir: Path, tmp_path: Path):
    """``--labels L --labels L`` (or L and a link to it) read every polygon twice and recorded L twice in
    the chip set's options: a re-run naming L once was refused as 'other options'. Each file counts once."""
    labels = buildings_dir / "kampala/labels.geojson"
    link = tmp_path / "link.geojson"
    link.symlink_to(labels)
    out = tmp_path / "chips"
    args = ["tile", str(buildings_dir / "kampala/kampala_z19_2.tif"), "--out", str(out), "--size", "128"]
    first = runner.invoke(app, [*args, "--labels", str(labels), "--labels", str(labels), "--labels", str(link)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*args, "--labels", str(labels)])
    assert again.exit_code == 0 and "1 already done" in again.output, again.output


def test_a_rerun_after_the_labels_were_corrected_cuts_the_scene_again(buildings_dir: Path, tmp_path: Path):
    """A re-run skipped a finished scene by its record alone: after a team corrected its labels and ran
    the same command again, the chips kept the old labels while the run said '1 already done'."""
    import geopandas as gpd

    labels = tmp_path / "labels.gpkg"
    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson")
    frame.to_file(labels, layer="buildings")
    out = tmp_path / "chips"
    args = ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out), "--size", "256",
            "--labels", str(labels)]

    def building_pixels() -> int:
        return sum(int(np.isin(rasterio.open(out / f["properties"]["label"]).read(1), (1, 2)).sum())
                   for f in index_of(out))

    assert runner.invoke(app, args).exit_code == 0
    before = building_pixels()
    assert "1 already done" in runner.invoke(app, args).output
    frame.iloc[::2].to_file(labels, layer="buildings")  # half the buildings removed as wrong
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 already done" in result.output, result.output
    assert "note: nairobi_z19_2.tif: labels.gpkg changed since it was cut, cut again" in result.stderr
    assert 0 < building_pixels() < before
    assert "1 already done" in runner.invoke(app, args).output


def test_labels_layer_names_the_building_layer_of_a_geopackage(buildings_dir: Path, tmp_path: Path):
    """A GeoPackage with two polygon layers (buildings, parcels) could only be refused: the building
    layer had to be saved in a file of its own. --labels-layer names it."""
    import geopandas as gpd

    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson")
    labels = tmp_path / "survey.gpkg"
    frame.to_file(labels, layer="buildings")
    gpd.GeoDataFrame(geometry=[frame.union_all().envelope], crs=frame.crs).to_file(labels, layer="parcels")
    args = ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--size", "256", "--labels", str(labels)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert_one_line_error(result, "tile", "2 of them are polygons", "--labels-layer")
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--labels-layer", "buildings"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--labels-layer", "building"])
    assert_one_line_error(result, "tile", "survey.gpkg has no layer 'building' (its layers: buildings, parcels)")
    assert not (tmp_path / "b").exists()


def test_a_labels_file_of_points_is_refused_not_cut_as_empty(buildings_dir: Path, tmp_path: Path):
    """Building centroids (points) instead of footprints: read by the scene's surroundings, the file's
    extent met the scene and every chip was cut as 'empty' (no building), exit 0."""
    import geopandas as gpd

    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson").to_crs(32737)
    points = tmp_path / "centroids.gpkg"
    frame.set_geometry(frame.geometry.centroid).to_file(points)
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out),
                                 "--labels", str(points)])
    assert_one_line_error(result, "tile", "centroids.gpkg holds Point features, not building polygons")
    assert not out.exists()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        index = LabelIndex.from_files(points, src.crs, near=tuple(src.bounds))
        assert not index.meets(tuple(src.bounds)) and index.in_files == 0


def test_labels_where_matching_nothing_is_refused_not_cut_as_empty(buildings_dir: Path, tmp_path: Path):
    """A --labels-where that no feature matches ('house' in a file that says 'building'): read by the
    scene's surroundings, the file's whole extent met the scene and every chip was cut as empty."""
    import geopandas as gpd

    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson")
    frame["class"] = "building"
    labels = tmp_path / "mine.gpkg"
    frame.to_file(labels)
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out),
                                 "--labels", str(labels), "--labels-where", "class = 'house'"])
    assert_one_line_error(result, "tile", "no feature of mine.gpkg matches where \"class = 'house'\"")
    assert not out.exists()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        index = LabelIndex.from_files(labels, src.crs, "class = 'house'", near=tuple(src.bounds))
        assert not index.meets(tuple(src.bounds)) and index.in_files == 0
        index = LabelIndex.from_files(labels, src.crs, "class = 'building'", near=tuple(src.bounds))
        assert index.meets(tuple(src.bounds)) and index.in_files == len(frame)


def test_a_class_raster_on_another_grid_is_read_onto_the_image_s(buildings_dir: Path, tmp_path: Path):
    """A class raster at another pixel size was refused for its size, and one of the same size but
    shifted was cut misaligned without a word; a georeferenced mask is now read onto the image's grid
    (nearest neighbour)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    scene = folder / "scene.tif"
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    (folder / "classes.json").write_text(json.dumps(
        [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "trees"}, {"index": 2, "name": "fields"}]))
    with rasterio.open(scene) as src:
        t, crs, valid = src.transform, src.crs, src.dataset_mask() > 0
    west_x = t.c + 100 * t.a  # the ground x where the fields begin: image column 100
    cases = {  # mask pixel size, its west edge (ground x), its size, the image column where fields start
        "coarse": (2 * t.a, t.c - 10 * t.a, 150, 100),
        "shifted": (t.a, t.c + 30 * t.a, 256, 100),
    }
    for name, (pixel, x0, n, column) in cases.items():
        mask = np.ones((n, n), np.uint8)
        mask[:, round((west_x - x0) / pixel):] = 2
        transform = rasterio.Affine(pixel, 0, x0, 0, -pixel, t.f + 5 * pixel)
        with rasterio.open(folder / "scene_label.tif", "w", driver="GTiff", width=n, height=n, count=1,
                           dtype="uint8", crs=crs, transform=transform) as dst:
            dst.write(mask, 1)
        out = tmp_path / name
        result = runner.invoke(app, ["tile", str(folder), "--target", "landcover", "--out", str(out), "--size", "256"])
        assert result.exit_code == 0, result.output
        (feature,) = index_of(out)
        with rasterio.open(out / feature["properties"]["label"]) as lb:
            label = lb.read(1)
        row = 128
        expected = np.where(np.arange(256) < column, 1, 2)
        if name == "shifted":
            expected[:30] = 0  # west of the mask: unlabeled
        expected[~valid[row]] = 0
        np.testing.assert_array_equal(label[row], expected)


def test_chips_cut_with_bands_record_them_for_the_model_card(buildings_dir: Path, tmp_path: Path):
    """`geoseg tile --bands 4,3,2` was recorded only in the option-set bookkeeping: the chip records
    said nothing, so `geoseg train` wrote bands 1,2,3 into the card and predict fed the model the
    raster's first three bands. Each record now names the bands read; without --bands, null."""
    from geoseg.training.pack import pack_chip_dir

    scene = buildings_dir / "nairobi/nairobi_z19_2.tif"
    with rasterio.open(scene) as src:
        rgb, profile = src.read(), src.profile
    four = tmp_path / "xbgr.tif"  # stored X, B, G, R without colour labels (a 4-band product)
    profile.update(count=4, photometric="MINISBLACK", compress="deflate")
    with rasterio.open(four, "w", **profile) as dst:
        dst.write(np.concatenate([np.full_like(rgb[:1], 7), rgb[::-1]]))
    labels = ["--labels", str(buildings_dir / "nairobi/labels.geojson"), "--size", "256", "--split", "train"]
    assert runner.invoke(app, ["tile", str(four), "--out", str(tmp_path / "c"), "--bands", "4,3,2", *labels]).exit_code == 0
    assert runner.invoke(app, ["tile", str(scene), "--out", str(tmp_path / "rgb"), *labels]).exit_code == 0
    assert {tuple(f["properties"]["bands"]) for f in index_of(tmp_path / "c")} == {(4, 3, 2)}
    assert {f["properties"]["bands"] for f in index_of(tmp_path / "rgb")} == {None}
    data, plain = load_dataset(tmp_path / "c"), load_dataset(tmp_path / "rgb")
    assert data["bands"] == [4, 3, 2] and "bands" not in plain
    np.testing.assert_array_equal(data["images"], plain["images"])  # the same red, green, blue
    pack_chip_dir(tmp_path / "c", tmp_path / "c.npz")
    assert load_dataset(tmp_path / "c.npz")["bands"] == [4, 3, 2]


def test_a_rerun_cuts_a_vrt_scene_again_when_a_file_it_reads_was_replaced(buildings_dir: Path, tmp_path: Path):
    """A VRT's own bytes and time stay the same when a tile under it is replaced: a re-run said
    '1 already done' and kept the chips of the old tile."""
    from tiles.mosaic import plan_mosaic, write_vrt

    source = buildings_dir / "nairobi/nairobi_z19_2.tif"
    tile = tmp_path / "tiles" / "t.tif"
    tile.parent.mkdir()
    with rasterio.open(source) as src:
        window = Window(0, 0, 256, 256)
        profile = {**src.profile, "width": 256, "height": 256, "transform": src.window_transform(window)}
        pixels = src.read(window=window)
    with rasterio.open(tile, "w", **profile) as dst:
        dst.write(pixels)
    scene = tmp_path / "scene.vrt"
    write_vrt(plan_mosaic([tile]), scene)
    out = tmp_path / "chips"
    args = ["tile", str(scene), "--out", str(out), "--size", "256", "--scheduler", "sync",
            "--labels", str(buildings_dir / "nairobi/labels.geojson")]
    assert runner.invoke(app, args).exit_code == 0
    chip = out / index_of(out)[0]["properties"]["image"]
    before = chip.read_bytes()
    with rasterio.open(tile, "w", **profile) as dst:  # a new delivery of the tile under the same name
        dst.write(255 - pixels)
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 already done" in result.output, result.output
    assert "note: scene.vrt: t.tif changed since it was cut, cut again" in result.stderr
    assert chip.read_bytes() != before
    assert "1 already done" in runner.invoke(app, args).output


def test_a_vrt_beside_the_scenes_it_reads_is_refused_before_any_is_cut(buildings_dir: Path, tmp_path: Path):
    """A scene folder holding two tiles and the gdalbuildvrt index over them: the same ground was cut
    into chips twice, through the VRT and through each tile, with no word."""
    from tiles.mosaic import plan_mosaic, write_vrt

    folder = tmp_path / "scenes"
    folder.mkdir()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        for n, x in enumerate((0, 128)):
            window = Window(x, 0, 128, 128)
            profile = {**src.profile, "width": 128, "height": 128, "transform": src.window_transform(window)}
            with rasterio.open(folder / f"t{n}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    write_vrt(plan_mosaic([folder / "t0.tif", folder / "t1.tif"]), folder / "mosaic.vrt")
    out = tmp_path / "chips"
    args = ["tile", str(folder), "--out", str(out), "--size", "128", "--scheduler", "sync",
            "--labels", str(buildings_dir / "nairobi/labels.geojson")]
    assert_one_line_error(runner.invoke(app, args), "tile", "mosaic.vrt reads 2 other scenes of this run (t0.tif, t1.tif)")
    assert not out.exists()
    result = runner.invoke(app, [*args[:1], str(folder / "mosaic.vrt"), *args[2:]])  # the VRT alone is a scene
    assert result.exit_code == 0, result.output
    assert {f["properties"]["scene"] for f in index_of(out)} == {"mosaic.vrt"}


def test_landcover_images_without_a_mask_are_named_not_dropped_unseen(data_root: Path, tmp_path: Path):
    """An image whose mask is named otherwise (b_mask.png) or missing was left out of the chips with no
    word; a folder of only such images was 'no input rasters found'."""
    tile_1 = data_root / "landcover/dubai/tile_1"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "classes.json").write_bytes((data_root / "landcover/dubai/classes.json").read_bytes())
    for name, source in (("b.jpg", "image_part_002.jpg"), ("b_mask.png", "image_part_002_label.png")):
        (folder / name).write_bytes((tile_1 / source).read_bytes())
    args = ["tile", str(folder), "--target", "landcover", "--size", "256", "--scheduler", "sync"]
    assert_one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "a")]), "tile",
                          "no land-cover image + mask pairs found", "2 images (b.jpg, b_mask.png) without such a mask")
    for name, source in (("a.jpg", "image_part_001.jpg"), ("a_label.png", "image_part_001_label.png")):
        (folder / name).write_bytes((tile_1 / source).read_bytes())
    result = runner.invoke(app, [*args, "--out", str(folder / "chips")])  # chips inside: no images of the user's
    assert result.exit_code == 0, result.output
    assert "note: left out 2 images (b.jpg, b_mask.png) with no class mask X_label.png|tif beside them" in (
        result.stderr.splitlines())
    assert {f["properties"]["scene"] for f in index_of(folder / "chips")} == {"mine/a.jpg"}
    again = runner.invoke(app, [*args, "--out", str(folder / "chips")])
    assert again.exit_code == 0 and "note: left out 2 images (b.jpg, b_mask.png) with" in again.stderr  # not the chips


def test_chips_of_other_options_are_refused_when_their_records_are_gone(buildings_dir: Path, tmp_path: Path):
    """Chips whose parts/ records are gone (deleted as scratch, a chip folder copied without them) did
    not count as a chip set: a run at another --size merged its chips into their index, silently."""
    import shutil

    out = tmp_path / "chips"
    args = ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out), "--scheduler", "sync"]
    assert runner.invoke(app, [*args, "--size", "256"]).exit_code == 0
    shutil.rmtree(out / "parts")
    before = index_of(out)
    assert_one_line_error(runner.invoke(app, [*args, "--size", "128"]), "tile",
                          "holds chips cut with other options (size=256, listed in its index.geojson)")
    assert_one_line_error(runner.invoke(app, [*args, "--size", "256", "--bands", "3,2,1"]), "tile",
                          "(bands=the rasters' own, listed in its index.geojson)")
    assert index_of(out) == before
    assert runner.invoke(app, [*args, "--size", "256"]).exit_code == 0  # the same options: cut again
    assert index_of(out) == before
    (out / "index.geojson").write_text("not json")
    assert_one_line_error(runner.invoke(app, [*args, "--size", "256"]), "tile", "index.geojson is no chip index")


def test_a_linked_scene_keeps_its_own_name_folder_and_labels(buildings_dir: Path, tmp_path: Path):
    """Scenes were resolved through their links: a folder of links into a store (git-annex, DVC, a share)
    gave chips named after the stored file (SHA256E-s253483--a28e_r000_c000), the store's folder as
    their area, and looked for labels.geojson beside the stored file, not beside the link."""
    import shutil

    store = tmp_path / "store"
    store.mkdir()
    stored = store / "SHA256E-s1--a28e.tif"
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        window = Window(0, 0, 256, 256)
        profile = {**src.profile, "width": 256, "height": 256, "transform": src.window_transform(window)}
        with rasterio.open(stored, "w", **profile) as dst:
            dst.write(src.read(window=window))
    block = tmp_path / "westlands"
    block.mkdir()
    (block / "block7.tif").symlink_to(stored)
    shutil.copy(buildings_dir / "nairobi/labels.geojson", block / "labels.geojson")  # beside the link only
    out = tmp_path / "chips"
    args = ["tile", str(block), "--out", str(out), "--size", "256", "--scheduler", "sync"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (chip,) = index_of(out)
    assert (chip["properties"]["chip_id"], chip["properties"]["scene"], chip["properties"]["area"]) == (
        "block7_r000_c000", "block7.tif", "westlands")
    assert "1 already done" in runner.invoke(app, args).output
    # the stored file cut by its own name before: the link is the same ground, refused, not listed twice
    other = tmp_path / "other"
    shutil.copy(block / "labels.geojson", store / "labels.geojson")
    assert runner.invoke(app, ["tile", str(stored), "--out", str(other), *args[4:]]).exit_code == 0
    assert_one_line_error(runner.invoke(app, [*args[:3], str(other), *args[4:]]), "tile",
                          "block7.tif and ", "SHA256E-s1--a28e.tif are one file", "as SHA256E-s1--a28e and as block7")
    (block / "block7_copy.tif").symlink_to(stored)  # two links to one file in one run: refused too
    assert_one_line_error(runner.invoke(app, [*args[:3], str(tmp_path / "third"), *args[4:]]), "tile",
                          "are one file", "as block7 and as block7_copy")


def test_labels_in_an_esri_file_geodatabase_folder(buildings_dir: Path, tmp_path: Path):
    """An Esri File Geodatabase is a folder (survey.gdb/) that GDAL reads as one vector source: --labels
    survey.gdb was refused as 'no such file'. Its edits (tables rewritten inside it) cut the scene again."""
    import shutil

    import geopandas as gpd

    frame = gpd.read_file(buildings_dir / "nairobi/labels.geojson").to_crs(32737)
    survey = tmp_path / "survey.gdb"
    frame.to_file(survey, driver="OpenFileGDB", layer="buildings")
    out = tmp_path / "chips"
    args = ["tile", str(buildings_dir / "nairobi/nairobi_z19_2.tif"), "--out", str(out), "--size", "256",
            "--scheduler", "sync", "--labels", str(survey)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sum(f["properties"]["n_objects"] for f in index_of(out)) > 0
    assert "1 already done" in runner.invoke(app, args).output
    shutil.rmtree(survey)
    frame.iloc[::2].to_file(survey, driver="OpenFileGDB", layer="buildings")  # half of them removed as wrong
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "note: nairobi_z19_2.tif: survey.gdb changed since it was cut, cut again" in (
        result.stderr), result.output
    assert_one_line_error(runner.invoke(app, [*args[:-1], str(tmp_path / "missing.gdb")]), "tile",
                          "missing.gdb: no such file or folder")


def test_jpeg_and_png_files_in_a_scene_folder_are_named_not_dropped_unseen(buildings_dir: Path, tmp_path: Path):
    """A folder's JPEG and PNG files are no scenes (give them by name), but they were dropped with no
    word: a folder of drone JPEGs with world files was 'no input rasters found', and beside a GeoTIFF
    they were silently not cut."""
    folder = tmp_path / "drone"
    folder.mkdir()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        window = Window(0, 0, 256, 256)
        profile = {"width": 256, "height": 256, "count": 3, "dtype": "uint8", "crs": src.crs,
                   "transform": src.window_transform(window)}
        pixels = src.read(window=window)
    with rasterio.open(folder / "drone_001.jpg", "w", driver="JPEG", **profile) as dst:
        dst.write(pixels)
    args = ["tile", str(folder), "--size", "256", "--scheduler", "sync",
            "--labels", str(buildings_dir / "nairobi/labels.geojson")]
    assert_one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "a")]), "tile",
                          "no input rasters found", "1 image (drone_001.jpg) left out: a JPEG or PNG scene is cut "
                          "only when given by its file name")
    with rasterio.open(folder / "scene.tif", "w", driver="GTiff", **profile) as dst:
        dst.write(pixels)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "note: 1 image (drone_001.jpg) in the scene folders left out" in result.stderr


def test_a_scene_whose_every_window_is_skipped_is_named(buildings_dir: Path, tmp_path: Path):
    """A 256 px scene cut at the default --size 512 is three quarters padding: its one window was skipped
    and only a count said so ('1 windows (0 ok, 0 empty, 1 skipped)'); geoseg train then found no chip."""
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(buildings_dir / "kampala/kampala_z19_2.tif"),
                                 str(buildings_dir / "kampala/kampala_z19_1.tif"), "--out", str(out), "--scheduler",
                                 "sync"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "every window skipped" in line]
    assert notes == ["note: kampala_z19_2.tif: every window skipped, none has --min-valid 0.5 of valid pixels (at "
                     "best 0.25; nodata and the padding past a scene smaller than --size 512 are invalid): a smaller "
                     "--size or --min-valid cuts it"]


def test_two_images_of_one_landcover_mask_are_refused(data_root: Path, tmp_path: Path):
    """X.tif and its X.jpg preview beside X_label.png: the first by name (the preview) was cut and the
    other left out, silently."""
    tile_1 = data_root / "landcover/dubai/tile_1"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "classes.json").write_bytes((data_root / "landcover/dubai/classes.json").read_bytes())
    for name, source in (("a.jpg", "image_part_001.jpg"), ("a.png", "image_part_001.jpg"),
                         ("a_label.png", "image_part_001_label.png")):
        (folder / name).write_bytes((tile_1 / source).read_bytes())
    result = runner.invoke(app, ["tile", str(folder), "--target", "landcover", "--out", str(tmp_path / "chips")])
    assert_one_line_error(result, "tile", "a_label.png: two images beside it (a.jpg, a.png): keep one")


def test_scenes_moved_into_train_and_val_folders_are_cut_again_from_there(buildings_dir: Path, tmp_path: Path):
    """After a team sorted mine/ into mine/train/ and mine/val/ (the README's layout) and ran tile again
    into the same --out, each run was refused: '.../train/north.tif and .../north.tif would both write
    chips named north_rNNN_cNNN', naming a file that was gone."""
    import shutil

    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("north.tif", "south.tif"):
        shutil.copy(buildings_dir / "kampala/kampala_z19_2.tif", mine / name)
        with rasterio.open(mine / name, "r+") as scene:
            scene.update_tags(site=name)  # two scenes, not one scene's copy (refused)
    out = tmp_path / "chips"
    args = ["--out", str(out), "--size", "128", "--scheduler", "sync",
            "--labels", str(buildings_dir / "kampala/labels.geojson")]
    assert runner.invoke(app, ["tile", str(mine), *args]).exit_code == 0
    for name, split in (("north.tif", "train"), ("south.tif", "val")):
        (mine / split).mkdir()
        (mine / name).rename(mine / split / name)
    train = runner.invoke(app, ["tile", str(mine / "train"), *args, "--split", "train"])
    assert train.exit_code == 0, train.output
    assert f"note: north.tif: cut before from {mine / 'north.tif'}, which is gone: cut again from {mine / 'train'}" in (
        train.stderr.splitlines())
    assert runner.invoke(app, ["tile", str(mine / "val"), *args, "--split", "val"]).exit_code == 0
    splits = {(f["properties"]["scene"], f["properties"]["split"]) for f in index_of(out)}
    assert splits == {("north.tif", "train"), ("south.tif", "val")} and len(index_of(out)) == 8
    again = runner.invoke(app, ["tile", str(mine / "val"), *args, "--split", "val"])
    assert "1 already done" in again.output and "gone" not in again.stderr
    # the parent folder without --split: the val scene was moved into train, with no more than a note
    whole = runner.invoke(app, ["tile", str(mine), *args])
    assert_one_line_error(whole, "tile", "south.tif is kept in a folder named val", "its chips would go to train",
                          f"geoseg tile {mine / 'val'} --split val", "--split train")
    assert {(f["properties"]["scene"], f["properties"]["split"]) for f in index_of(out)} == splits


def test_sidecars_a_shell_pattern_sweeps_in_are_no_scenes(rasters_dir: Path, tmp_path: Path):
    """``geoseg tile rasterio/RGB2.byte.tif*``: the shell passes the raster's external mask too, which
    was cut as a scene of its own and failed the run ('RGB2.byte.tif.msk: 1 band(s)', exit 1); as
    ``geoseg predict`` does, sidecars of a raster given with it are left out with a note, and a sidecar
    given alone (an ``x.tif.ovr``, GDAL's overviews without georeferencing) is one line naming its raster."""
    scene = rasters_dir / "rasterio/RGB2.byte.tif"
    labels = labels_around(scene, tmp_path / "around.geojson")
    result = runner.invoke(app, ["tile", str(scene), f"{scene}.msk", "--labels", str(labels), "--out",
                                 str(tmp_path / "o"), "--size", "256", "--scheduler", "sync"])
    assert result.exit_code == 0, result.output
    assert "note: left out 1 sidecar file of the scenes (RGB2.byte.tif.msk): GDAL reads each with its raster" \
           in result.stderr
    assert {f["properties"]["scene"] for f in index_of(tmp_path / "o")} == {"RGB2.byte.tif"}
    (tmp_path / "s").mkdir()
    (tmp_path / "s/RGB2.byte.tif").write_bytes(scene.read_bytes())
    (tmp_path / "s/RGB2.byte.tif.ovr").write_bytes(scene.read_bytes())
    result = runner.invoke(app, ["tile", str(tmp_path / "s/RGB2.byte.tif.ovr"), "--labels", str(labels), "--out",
                                 str(tmp_path / "p"), "--size", "256"])
    assert_one_line_error(result, "tile", "RGB2.byte.tif.ovr is the external overviews of RGB2.byte.tif, which GDAL "
                          "reads with it, not a scene: give RGB2.byte.tif")
    assert not (tmp_path / "p").exists()


def test_a_gsd_far_finer_than_a_scene_is_refused_before_any_work(rasters_dir: Path, tmp_path: Path):
    """``geoseg tile RGB.byte.tif --gsd 0.3`` (a 300 m Landsat scene; a typo for a 0.3 m one) said
    nothing for 10 minutes while its memory grew past 5 GB, on its way to ~8 million windows of
    upsampled pixels. More than 10x finer than a scene (as predict refuses an input 10x coarser than
    a model) is one line naming both GSDs and the window count, unless --allow-coarse."""
    scene = rasters_dir / "rasterio/RGB.byte.tif"
    labels = labels_around(scene, tmp_path / "around.geojson")
    result = runner.invoke(app, ["tile", str(scene), "--labels", str(labels), "--gsd", "0.3", "--out",
                                 str(tmp_path / "o"), "--size", "256"])
    assert_one_line_error(result, "tile", "RGB.byte.tif: its GSD 300 m is 1,000x the --gsd 0.3 m",
                          "--allow-coarse")
    assert not (tmp_path / "o").exists()
    small = tmp_path / "small.tif"  # 32 px of 300 m: 384 px at 25 m, 12x
    with rasterio.open(scene) as src:
        window = Window(300, 300, 32, 32)
        profile = {**src.profile, "width": 32, "height": 32, "transform": src.window_transform(window)}
        with rasterio.open(small, "w", **profile) as dst:
            dst.write(src.read(window=window))
    result = runner.invoke(app, ["tile", str(small), "--labels", str(labels), "--gsd", "25", "--out",
                                 str(tmp_path / "o"), "--size", "256", "--scheduler", "sync"])
    assert_one_line_error(result, "tile", "small.tif: its GSD 300 m is 12x the --gsd 25 m")
    result = runner.invoke(app, ["tile", str(small), "--labels", str(labels), "--gsd", "25", "--out",
                                 str(tmp_path / "o"), "--size", "256", "--allow-coarse", "--scheduler", "sync"])
    assert result.exit_code == 0, result.output  # asked for
    assert len(index_of(tmp_path / "o")) == 4
    # 10.07x: within predict's 1 % of slack (geoseg.coarse_input.GSD_SLACK), cut without --allow-coarse
    result = runner.invoke(app, ["tile", str(small), "--labels", str(labels), "--gsd", "29.8", "--out",
                                 str(tmp_path / "p"), "--size", "256", "--scheduler", "sync"])
    assert result.exit_code == 0, result.output


def test_a_table_without_geometry_given_as_labels_is_one_line(rasters_dir: Path, tmp_path: Path):
    """``--labels OSBS_029.csv`` (DeepForest's tree boxes in pixel columns, a table OGR reads without
    geometry) failed the scene with Python's "AttributeError: 'DataFrame' object has no attribute
    'set_crs'"; it is one line naming the file and its fields, before any scene is cut."""
    folder = rasters_dir / "deepforest_neon"
    result = runner.invoke(app, ["tile", str(folder / "OSBS_029.tif"), "--labels", str(folder / "OSBS_029.csv"),
                                 "--out", str(tmp_path / "o"), "--size", "256"])
    assert_one_line_error(result, "tile", "OSBS_029.csv holds no geometry (a table of 61 rows; its fields: "
                          "image_path, xmin, ymin, xmax, ymax, label): building labels are polygons (footprints)")
    assert not (tmp_path / "o").exists()


def test_a_scene_given_twice_is_cut_and_listed_once(buildings_dir: Path, tmp_path: Path):
    """``geoseg tile scenes/ scenes/a.tif`` (or ``a.tif a.tif``): the scene was run twice, the second job
    'waiting for another run still writing' its own record, and index.geojson listed each of its chips
    twice (8 windows for 4), so ``geoseg train`` weighed them double. A scene is one input however
    often it is given (as ``geoseg predict`` takes it)."""
    scene = buildings_dir / "kampala/kampala_z19_2.tif"
    folder = tmp_path / "kampala"
    folder.mkdir()
    (folder / scene.name).symlink_to(scene)
    (folder / "labels.geojson").symlink_to(buildings_dir / "kampala/labels.geojson")
    result = runner.invoke(app, ["tile", str(folder), str(folder / scene.name), str(folder / ".." / "kampala" / scene.name),
                                 "--out", str(tmp_path / "o"), "--size", "128", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "waiting" not in result.output and "from 1 file(s)" in result.stdout, result.output
    chips = [f["properties"]["chip_id"] for f in index_of(tmp_path / "o")]
    assert len(chips) == len(set(chips)) == 4


def test_a_copy_of_a_scene_under_another_name_is_refused_as_a_link_is(buildings_dir: Path, tmp_path: Path):
    """Two links to one file were refused (its ground listed twice), but a ``cp`` copy beside the scene
    was cut again under its own name: the index listed the same chips twice, train weighing them double."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        window = Window(0, 0, 256, 256)
        profile = {**src.profile, "width": 256, "height": 256, "transform": src.window_transform(window)}
        with rasterio.open(scenes / "a.tif", "w", **profile) as dst:
            dst.write(src.read(window=window))
    (scenes / "copy_of_a.tif").write_bytes((scenes / "a.tif").read_bytes())
    args = ["tile", str(scenes), "--labels", str(buildings_dir / "nairobi/labels.geojson"), "--size", "256",
            "--scheduler", "sync"]
    assert_one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "chips")]), "tile",
                          "copy_of_a.tif is a copy of", "a.tif (the same bytes)", "as a and as copy_of_a")
    assert not (tmp_path / "chips" / "images").exists()
    copy = tmp_path / "copy_of_a.tif"
    (scenes / "copy_of_a.tif").rename(copy)
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "chips")]).exit_code == 0
    # the copy given to a later run into the same --out: its ground is there already
    later = runner.invoke(app, [*args[:1], str(copy), *args[2:], "--out", str(tmp_path / "chips")])
    assert_one_line_error(later, "tile", "copy_of_a.tif is a copy of", "cut by an earlier run into this --out",
                          "as a and as copy_of_a")


def test_reading_same_size_scenes_through_shows_progress_in_tile_as_in_predict(buildings_dir: Path, tmp_path: Path,
                                                                                monkeypatch):
    """tile's check for copies reads same-size scenes through (SHA-256): multi-GB scenes took minutes
    with no word before its bar, where predict shows ``tiles.hashing_progress`` (a line in a log).
    Two distinct scenes of one size; the threshold lowered to them, then the default (quiet)."""
    import tiles.hashing_progress

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with rasterio.open(buildings_dir / "nairobi/nairobi_z19_2.tif") as src:
        window = Window(0, 0, 512, 512)
        pixels = src.read(window=window)
        profile = {**src.profile, "width": 512, "height": 512, "transform": src.window_transform(window),
                   "compress": None, "tiled": False}
    profile.pop("photometric", None)
    other = pixels.copy()
    other[:, 200:300] = 255 - other[:, 200:300]  # uncompressed: the same size; other pixels in the middle only,
    for name, data in (("a.tif", pixels), ("b.tif", other)):  # so the ends agree and both are read through
        with rasterio.open(scenes / name, "w", **profile) as dst:
            dst.write(data)
    size = (scenes / "a.tif").stat().st_size
    assert (scenes / "b.tif").stat().st_size == size
    args = ["tile", str(scenes), "--labels", str(buildings_dir / "nairobi/labels.geojson"), "--size", "256",
            "--scheduler", "sync"]
    quiet = runner.invoke(app, [*args, "--out", str(tmp_path / "quiet")])
    assert quiet.exit_code == 0 and "SHA-256" not in quiet.stdout, quiet.output
    monkeypatch.setattr(tiles.hashing_progress, "QUIET_BYTES", size)
    told = runner.invoke(app, [*args, "--out", str(tmp_path / "told")])
    assert told.exit_code == 0, told.output
    assert told.stdout.splitlines()[0] == (f"tile: reading 2 inputs through ({2 * size / 1e6:.1f} MB, SHA-256) "
                                           "to find those of the same content"), told.stdout
    assert "from 2 file(s)" in told.stdout and "copy" not in told.output


def test_tile_refuses_a_predict_output_or_a_model_folder_as_out(buildings_dir: Path, tmp_path: Path):
    """``geoseg tile ... --out r/`` where r/ held one scene's predict results (or a folder of models) wrote
    chips among them; predict already refused a chip folder."""
    from geoseg.paths import weights_dir

    scene = tmp_path / "crop.tif"
    with rasterio.open(buildings_dir / "kampala/kampala_z19_2.tif") as src:
        window = Window(0, 0, 128, 128)
        profile = {**src.profile, "width": 128, "height": 128, "transform": src.window_transform(window)}
        pixels = src.read(window=window)
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(pixels)
    predicted = runner.invoke(app, ["predict", str(scene), "--out", str(tmp_path / "r"), "--profile", "fast",
                                    "--no-classmap"])
    assert predicted.exit_code == 0, predicted.output
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.json").write_bytes((weights_dir() / "buildings-u2net-fast.json").read_bytes())
    labels = ["--labels", str(buildings_dir / "kampala/labels.geojson"), "--size", "128"]
    for out, words in ((tmp_path / "r", "holds the results of a geoseg predict (report.json)"),
                       (tmp_path / "models", "holds models (mine.json)")):
        before = sorted(p.name for p in out.iterdir())
        assert_one_line_error(runner.invoke(app, ["tile", str(scene), "--out", str(out), *labels]), "tile", words)
        assert sorted(p.name for p in out.iterdir()) == before


def test_a_class_corrected_in_a_shapefile_s_dbf_cuts_the_scene_again(buildings_dir: Path, tmp_path: Path):
    """A shapefile's attributes are in its .dbf: a class corrected there changed no byte of the .shp,
    which alone was watched, and a re-run kept the chips of the old class ('1 already done')."""
    import geopandas as gpd

    labels = tmp_path / "survey.shp"
    frame = gpd.read_file(buildings_dir / "kampala/labels.geojson")[["geometry"]]
    frame["kind"] = "roof"
    frame.to_file(labels)
    args = ["tile", str(buildings_dir / "kampala/kampala_z19_2.tif"), "--labels", str(labels), "--labels-where",
            "kind = 'roof'", "--out", str(tmp_path / "chips"), "--size", "128", "--split", "train", "--scheduler", "sync"]
    assert runner.invoke(app, args).exit_code == 0
    assert "1 already done" in runner.invoke(app, args).output
    dbf = labels.with_suffix(".dbf")
    data = dbf.read_bytes()
    at = data.rfind(b"roof")
    dbf.write_bytes(data[:at] + b"shed" + data[at + 4:])  # the last feature's class, in place
    assert gpd.read_file(labels)["kind"].tolist()[-1] == "shed"
    again = runner.invoke(app, args)
    assert "0 already done" in again.output, again.output
    assert "kampala_z19_2.tif: survey.shp changed since it was cut, cut again" in again.stderr


def test_points_and_lines_in_a_label_file_are_named_before_cutting(buildings_dir: Path, tmp_path: Path):
    """Building nodes and ways mixed into the footprints (an OSM export) were left out without a word, and
    the buildings they mark were cut as background. The chips are the same; a note says how many."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    scene = tmp_path / "scenes" / "k.tif"
    scene.parent.mkdir()
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())
    labels = gpd.read_file(buildings_dir / "kampala/labels.geojson")
    extra = gpd.GeoDataFrame(geometry=[labels.geometry.iloc[0].centroid,
                                       shapely.LineString(labels.geometry.iloc[1].exterior.coords)], crs=labels.crs)
    pd.concat([labels, extra], ignore_index=True).to_file(scene.parent / "labels.geojson", driver="GeoJSON")
    result = runner.invoke(app, ["tile", str(scene), "--out", str(tmp_path / "out"), "--size", "256"])
    assert result.exit_code == 0, result.output
    assert ("note: labels.geojson: 2 of its features are points or lines, not footprints: they are left out, and "
            "the buildings they mark count as no building (building labels are polygons)") in result.stderr.splitlines()
    assert any(f["properties"]["status"] == "ok" for f in index_of(tmp_path / "out"))


def test_chip_options_out_of_range_are_refused_from_python():
    """``ChipOptions(min_valid=2)`` skipped every window without a word; ``geoseg tile`` checked its
    flags, but the options object itself took anything."""
    from tiles import ChipOptions

    for bad, says in [(dict(min_valid=2), r"min_valid is a fraction of a window, in \[0, 1\], got 2"),
                      (dict(size=256, overlap=256), r"overlap must be in \[0, size\), got 256 for size 256"),
                      (dict(gsd=-0.3), "gsd must be a positive number of metres or None, got -0.3"),
                      (dict(size=0), "size must be at least 1 pixel, got 0")]:
        with pytest.raises(ValueError, match=f"ChipOptions.{says}"):
            ChipOptions(**bad)
    assert ChipOptions(size=256, overlap=32, gsd=0.3, min_valid=0.0).min_valid == 0.0

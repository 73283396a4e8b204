"""`geoseg train` warns when the validation chips' ground lies inside the training chips' ground, and
its card records the share (``training.val_ground_in_train``): a validation scene of a training
scene's ground at another zoom (`geoseg tile --split val`) gave ``metrics.val`` on ground trained on,
99.9 % of it, without a word (QA session 33)."""
import json

import pytest
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.training.split_overlap import (
    LEAK_SHARE,
    Footprint,
    chip_dir_overlap,
    val_ground_in_train,
)


def box(west: float, south: float, east: float, north: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                [west, south]]]}


def test_the_share_of_val_ground_inside_train_ground_from_hand_made_boxes():
    train = [Footprint("train", "a.tif", box(39.0, -6.0, 39.001, -5.999)),
             Footprint("train", "a.tif", box(39.001, -6.0, 39.002, -5.999))]
    # val: one box half inside a.tif's ground, and the same box twice (its ground counted once)
    half = Footprint("val", "b.tif", box(39.0015, -6.0, 39.0025, -5.999))
    found = val_ground_in_train([*train, half, half])
    assert found is not None
    assert found.share == pytest.approx(0.5, abs=1e-3)
    assert [(v, t) for v, t, _ in found.scenes] == [("b.tif", "a.tif")]
    # a second val scene far away, with as much ground: the share is weighted by ground
    far = Footprint("val", "c.tif", box(-70.0, -6.0, -69.999, -5.999))
    assert val_ground_in_train([*train, half, far]).share == pytest.approx(0.25, abs=1e-3)
    # test chips are no training ground
    assert val_ground_in_train([*train, Footprint("test", "d.tif", box(39.0015, -6.0, 39.0025, -5.999)),
                                far]).share == 0.0


def test_ground_is_measured_in_area_not_in_degrees():
    """At 60 degrees north a degree of longitude is half as long as at the equator: a val box whose
    lon/lat extent is half inside the train box in degrees of latitude, measured as it lies."""
    train = Footprint("train", "a.tif", box(10.0, 60.0, 10.002, 60.001))
    val = Footprint("val", "b.tif", box(10.001, 60.0, 10.003, 60.001))
    assert val_ground_in_train([train, val]).share == pytest.approx(0.5, abs=1e-3)


def test_a_chip_across_the_antimeridian_is_measured_whole():
    train = Footprint("train", "a.tif", {"type": "Polygon", "coordinates": [[[179.9995, -17.0], [-179.9995, -17.0],
                                                                             [-179.9995, -16.999], [179.9995, -16.999],
                                                                             [179.9995, -17.0]]]})
    val = Footprint("val", "b.tif", box(179.9995, -17.0, 180.0, -16.999))
    assert val_ground_in_train([train, val]).share == pytest.approx(1.0, abs=1e-3)


def test_chips_without_footprints_are_left_out_and_none_is_unknown():
    train = Footprint("train", "a.tif", box(39.0, -6.0, 39.001, -5.999))
    val = Footprint("val", "b.tif", box(39.0, -6.0, 39.001, -5.999))
    assert val_ground_in_train([train, Footprint("val", "b.tif", None)]) is None
    assert val_ground_in_train([Footprint("train", "a.tif", None), val]) is None
    assert val_ground_in_train([]) is None
    assert val_ground_in_train([train, val, Footprint("train", "x.tif", None), Footprint("val", "y.tif", None)]
                               ).share == pytest.approx(1.0)


@pytest.fixture(scope="module")
def zanzibar_crops(tmp_path_factory):
    """Crops of Zanzibar block 1: train at zoom 19; val of the same ground at zoom 20, and val of the
    neighbouring ground at zoom 20 (east of it, sharing an edge), each in a folder of its own."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.paths import data_root

    root = tmp_path_factory.mktemp("overlap")
    zanzibar = data_root() / "buildings" / "zanzibar"
    crops = {"own/mine_a.tif": ("zanzibar_z19_1.tif", Window(768, 256, 128, 128)),
             "ownval/mine_b.tif": ("zanzibar_z20_1.tif", Window(1536, 512, 256, 256)),  # the same ground
             "otherval/mine_c.tif": ("zanzibar_z20_1.tif", Window(1792, 512, 256, 256))}  # east of it
    for name, (scene, window) in crops.items():
        (root / name).parent.mkdir(exist_ok=True)
        with rasterio.open(zanzibar / scene) as src:
            profile = {**src.profile, "width": window.width, "height": window.height, "compress": "deflate",
                       "transform": src.window_transform(window)}
            profile.pop("jpeg_quality", None)
            profile.pop("photometric", None)
            with rasterio.open(root / name, "w", **profile) as dst:
                dst.write(src.read(window=window))
    return root, zanzibar / "labels.geojson"


def cut_and_train(root, labels, val_folder: str, chips: str):
    for folder, split in (("own", []), (val_folder, ["--split", "val"])):
        tiled = CliRunner().invoke(app, ["tile", str(root / folder), "--labels", str(labels), "--out",
                                         str(root / chips), "--size", "64", "--gsd", "0.3", "--scheduler", "sync",
                                         *split])
        assert tiled.exit_code == 0, tiled.output
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(root / chips), "--out",
                                      str(root / f"{chips}-model"), "--epochs", "1", "--crop", "32",
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    card = json.loads((root / f"{chips}-model" / "buildings-u2net-custom.json").read_text())
    return result, card


def test_train_warns_of_val_chips_on_the_training_ground_and_the_card_says_how_much(zanzibar_crops):
    root, labels = zanzibar_crops
    result, card = cut_and_train(root, labels, "ownval", "chips-same")
    share = card["training"]["val_ground_in_train"]
    assert share > 0.95
    assert list(card["training"]).index("val_ground_in_train") == list(card["training"]).index("splits") + 1
    warnings = [line for line in result.stderr.splitlines() if "lies inside the train" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {share:.0%} of the ground of the val chips in ")
    assert "mine_b.tif on mine_a.tif" in warnings[0] and "memory, not generalisation" in warnings[0]
    assert "split by area" in warnings[0]
    assert card["metrics"]["val"]  # the run is not refused: the user may know what they do
    student = CliRunner().invoke(app, ["train", "buildings", "--data", str(root / "chips-same"), "--out",
                                       str(root / "student"), "--teacher", str(root / "chips-same-model"),
                                       "--epochs", "1", "--crop", "32", "--batch-size", "2"])
    assert student.exit_code == 0, student.output
    assert "lies inside the train" in student.stderr  # a student's run says it, and its card records it
    (student_card,) = [json.loads(p.read_text()) for p in (root / "student").glob("*.json")]
    assert student_card["training"]["val_ground_in_train"] == share


def test_val_chips_of_other_ground_give_no_warning_and_a_small_share(zanzibar_crops):
    root, labels = zanzibar_crops
    result, card = cut_and_train(root, labels, "otherval", "chips-other")
    assert card["training"]["val_ground_in_train"] < LEAK_SHARE
    assert "lies inside the train" not in result.stderr
    assert chip_dir_overlap(root / "chips-other").scenes == ()  # neighbours sharing an edge meet in no ground


def test_a_pack_s_share_is_unknown(tmp_path):
    (tmp_path / "b.npz").write_bytes(b"")
    assert chip_dir_overlap(tmp_path / "b.npz") is None

"""The teacher's model card tells the truth about its chips: the working GSD is the chips' own
(``geoseg predict`` resamples scenes to it), the splits and data path are those of the chips used."""
import numpy as np
import pytest

from geoseg.augment import AugmentConfig
from geoseg.card import (
    CREDITS_BUILDINGS,
    CREDITS_LANDCOVER,
    LANDCOVER_CLASSES,
    landcover_card_classes,
)
from geoseg.training.chip_provenance import DUBAI_GSD_M, data_credits, data_splits, working_gsd
from geoseg.training.loop import TrainConfig, train_buildings, train_landcover

TINY_U2NET = {"in_channels": 3, "n_classes": 3, "mid": 4, "out": 8}


def building_chips(gsd: list[float]) -> dict:
    """Random 32 px chips from two Nairobi scenes (train/val) and one Kampala scene (test)."""
    rng = np.random.default_rng(0)
    n = len(gsd)
    ids = ["nairobi_z19_1_r000_c000", "nairobi_z19_2_r000_c000", "kampala_z19_2_r000_c000"] * (n // 3)
    return {
        "images": rng.integers(0, 255, (n, 3, 32, 32), np.uint8),
        "labels": rng.integers(0, 3, (n, 32, 32), np.uint8),
        "split": np.array(["train", "val", "test"] * (n // 3)),
        "area": np.array(["nairobi", "nairobi", "kampala"] * (n // 3)),
        "chip_id": np.array(ids),
        "gsd": np.array(gsd, np.float32),
        "target": "buildings",
        "source": "/chips/nairobi-0.6",
    }


def test_working_gsd_is_the_chips_gsd():
    assert working_gsd(building_chips([0.6] * 3)) == (0.6, False)
    assert working_gsd(building_chips([0.2976, 0.3, 0.3])) == (0.3, False)  # native scenes near one GSD


@pytest.mark.parametrize("gsd", [[0.3, 0.6, 0.3], [0.3, np.nan, 0.3]])
def test_mixed_or_partly_missing_gsd_is_refused(gsd):
    with pytest.raises(ValueError, match="one --gsd"):
        working_gsd(building_chips(gsd))


def test_missing_gsd_uses_the_estimate_or_fails():
    data = building_chips([np.nan] * 3)
    assert working_gsd(data, estimate=DUBAI_GSD_M) == (DUBAI_GSD_M, True)
    with pytest.raises(ValueError, match="no GSD"):
        working_gsd(data)


def test_buildings_card_gsd_splits_and_data_come_from_the_chips():
    data = building_chips([0.6] * 3)
    cfg = TrainConfig(steps=1, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=32))
    _, card = train_buildings(data, cfg, arch_kwargs=TINY_U2NET, log=lambda s: None)
    assert card["gsd_m"] == 0.6
    assert card["training"]["splits"] == {"train": "nairobi-1", "val": "nairobi-2", "test": "kampala-2"}
    assert card["training"]["data"] == "/chips/nairobi-0.6"
    assert card["metrics"]["val"]["area"].startswith("nairobi-2 ")
    # the kept weights' building pixel IoU beside the binary mIoU they were chosen by: a student's card gives
    # pixel IoU, and the two cards' val figures had no figure in common
    val = card["metrics"]["val"]
    assert 0 <= val["pixel_iou"] <= 1 and val["binary_miou"] >= val["pixel_iou"] / 2 - 1e-4  # both rounded


def test_the_card_names_the_bands_the_chips_were_cut_with():
    """Every card said bands 1,2,3, also of a model trained on chips cut with `geoseg tile --bands
    4,3,2`; predict follows the card's bands (geoseg.heads.bands_of_models)."""
    cfg = TrainConfig(steps=1, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=32))
    _, card = train_buildings(building_chips([0.3] * 3) | {"bands": [4, 3, 2]}, cfg, arch_kwargs=TINY_U2NET,
                              log=lambda s: None)
    assert card["bands"] == [4, 3, 2]
    _, card = train_landcover(landcover_chips(3, THREE_CLASSES) | {"bands": [3, 2, 1]}, cfg,
                              arch_kwargs={**TINY_ATTRESUNET, "n_classes": 4}, log=lambda s: None)
    assert card["bands"] == [3, 2, 1]
    _, card = train_buildings(building_chips([0.3] * 3), cfg, arch_kwargs=TINY_U2NET, log=lambda s: None)
    assert card["bands"] == [1, 2, 3]  # the rasters' own red, green, blue, as the shipped cards say


def test_data_splits_names_a_missing_split():
    data = building_chips([0.3] * 3)
    data["split"] = np.array(["train", "val", "val"])
    assert data_splits(data)["test"] == "none"


TINY_ATTRESUNET = {"in_channels": 3, "widths": [4, 8, 8, 8, 8]}
THREE_CLASSES = [{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "built", "colour": "#FF0000"},
                 {"index": 2, "name": "green"}, {"index": 3, "name": "open"}]


def landcover_chips(top_class: int, classes: list[dict] | None) -> dict:
    """Random 32 px land-cover chips (train, val, test) with classes 0..top_class."""
    rng = np.random.default_rng(0)
    data = {
        "images": rng.integers(0, 255, (3, 3, 32, 32), np.uint8),
        "labels": rng.integers(0, top_class + 1, (3, 32, 32), np.uint8),
        "split": np.array(["train", "val", "test"]), "area": np.array(["tile_1", "tile_5", "tile_6"]),
        "gsd": np.full(3, np.nan, np.float32), "target": "landcover",
    }
    return data | ({"classes": classes} if classes else {})


def test_landcover_card_takes_the_chips_class_list():
    """A 3-class data set trained a 6-output model whose card named Dubai's classes, so its class map
    was labelled building/road/vegetation/water/land with Dubai's colours."""
    cfg = TrainConfig(steps=1, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=32))
    model, card = train_landcover(landcover_chips(3, THREE_CLASSES), cfg,
                                  arch_kwargs={**TINY_ATTRESUNET, "n_classes": 4}, log=lambda s: None)
    assert [c["name"] for c in card["classes"]] == ["unlabeled", "built", "green", "open"]
    assert card["classes"][1]["colour"] == "#FF0000" and card["classes"][2]["colour"].startswith("#")
    assert model.head.out_channels == 3 and set(card["metrics"]["val"]) >= {"miou"}
    _, dubai = train_landcover(landcover_chips(5, None), cfg, arch_kwargs={**TINY_ATTRESUNET, "n_classes": 6},
                               log=lambda s: None)
    assert dubai["classes"] == LANDCOVER_CLASSES  # no classes.json: the Dubai list, as shipped
    recoloured = [dict(c, colour="#010203") for c in LANDCOVER_CLASSES]
    assert landcover_card_classes(recoloured)[1]["colour"] == "#010203"  # Dubai's names, the user's colours


def test_landcover_masks_past_the_class_list_are_refused():
    cfg = TrainConfig(steps=1, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=32))
    with pytest.raises(ValueError, match="masks hold class 4, their class list stops at 3"):
        train_landcover(landcover_chips(4, THREE_CLASSES), cfg, arch_kwargs={**TINY_ATTRESUNET, "n_classes": 4})
    with pytest.raises(ValueError, match="the model has 6 classes, the chips 4"):
        train_landcover(landcover_chips(3, THREE_CLASSES), cfg, arch_kwargs={**TINY_ATTRESUNET, "n_classes": 6})


def test_credits_name_the_shared_data_only_when_the_chips_come_from_it():
    """Every card trained by `geoseg train` credited OpenAerialMap + OpenStreetMap (buildings) or
    Humans in the Loop (land cover), also for a mapping team's own imagery and labels."""
    shared = building_chips([0.3] * 3)
    assert data_credits(shared, "buildings") == CREDITS_BUILDINGS
    own = shared | {"area": np.array(["site", "site", "town"])}
    (line,) = data_credits(own, "buildings")
    assert "not recorded" in line and "site, town" in line and "OpenStreetMap" not in line
    dubai = landcover_chips(5, None) | {"chip_id": np.array(["dubai_tile_1_p001_r000_c000"] * 3)}
    assert data_credits(dubai, "landcover") == CREDITS_LANDCOVER
    assert "not recorded" in data_credits(dubai | {"classes": THREE_CLASSES}, "landcover")[0]
    assert "not recorded" in data_credits(dubai | {"chip_id": np.array(["mine_a_b_r000_c000"] * 3)}, "landcover")[0]


def test_a_team_s_own_scenes_in_a_folder_named_as_a_shared_area_are_not_credited_to_it():
    """A chip's area is its scene's folder when the name does not say it: chips of a team's own
    nairobi/ortho_2024.tif were credited to OpenAerialMap and OpenStreetMap."""
    own = building_chips([0.3] * 3) | {"chip_id": np.array(["ortho_2024_r000_c000", "ortho_2024_r000_c001",
                                                             "kampala_z19_2_r000_c000"])}
    (line,) = data_credits(own, "buildings")
    assert "not recorded" in line and "OpenStreetMap" not in line


def test_a_card_names_the_scenes_of_folders_named_after_their_split():
    """Scenes kept in mine/train/ and mine/val/ (as the README shows) have those folders as their area:
    the card's splits said {"train": "train", "val": "val"} and its credits "(areas train, val)",
    nothing about the ground. Such chips are named by their scene; a place-named folder stays."""
    data = building_chips([0.3] * 3) | {
        "chip_id": np.array(["ortho_north_r000_c000", "ortho_south_r001_c002", "kampala_z19_2_r000_c000"]),
        "area": np.array(["train", "val", "kampala"])}
    assert data_splits(data) == {"train": "ortho_north", "val": "ortho_south", "test": "kampala-2"}
    assert data_credits(data, "buildings") == [
        "Training data: /chips/nairobi-0.6 (areas kampala-2, ortho_north, ortho_south); its licences were not recorded"]


def test_the_card_gives_the_pixel_iou_of_the_weights_it_kept():
    """Two validations of one rounded score: the kept (best: the first of the highest) weights' pixel IoU,
    not the later, worse checkpoint's (a reviewer's case)."""
    from geoseg.training.loop import _with_pixel_iou

    scored = [{"binary_miou": 0.5, "pixel_iou": 0.2}, {"binary_miou": 0.61234, "pixel_iou": 0.45},
              {"binary_miou": 0.61226, "pixel_iou": 0.39}]
    best = _with_pixel_iou({"binary_miou": 0.6123, "area": "a (model selection)"}, scored, best=True)
    assert best == {"binary_miou": 0.6123, "pixel_iou": 0.45, "area": "a (model selection)"}
    last = _with_pixel_iou({"binary_miou": 0.6123, "area": "a (monitoring only)"}, scored, best=False)
    assert last["pixel_iou"] == 0.39

"""Chips re-split by city or block (``geoseg.training.data.resplit``) and fixed-length runs
(``TrainConfig.keep``): the pieces of the cross-city recipe choice (scripts/device_cities.py)."""
import copy

import numpy as np
import pytest
import torch

from geoseg.augment import AugmentConfig
from geoseg.losses import CEDiceLoss
from geoseg.models.attresunet import AttResUNet
from geoseg.paths import data_root
from geoseg.training.data import chip_blocks, resplit
from geoseg.training.loop import TrainConfig, train_segmenter
from test_training_smoke import dubai_chips
from tiles.splits import buildings_split, scene_area


def scene_chips():
    """A chip-id table as ``geoseg tile`` names it, two chips per shared building scene, with the
    packed split of each scene; no pixels (resplit only reads the table)."""
    scenes = sorted((data_root() / "buildings").glob("*/*.tif"))
    assert len(scenes) == 18
    ids, areas, splits = [], [], []
    for path in scenes:
        area, block = scene_area(path)
        for c in range(2):
            ids.append(f"{path.stem}_r000_c{c:03d}")
            areas.append(area)
            splits.append(buildings_split(area, block))
    n = len(ids)
    return {"images": np.zeros((n, 3, 4, 4), np.uint8), "labels": np.zeros((n, 4, 4), np.uint8),
            "chip_id": np.array(ids), "area": np.array(areas), "split": np.array(splits), "target": "buildings"}


def test_chip_blocks_read_the_scene_names():
    data = scene_chips()
    blocks = dict(zip(data["chip_id"], chip_blocks(data)))
    assert blocks["zanzibar_z21_2_r000_c001"] == "zanzibar-2"
    assert blocks["kampala_z19_1_r000_c000"] == "kampala-1"
    assert set(blocks.values()) == {f"{a}-{b}" for a in ("kampala", "nairobi", "zanzibar") for b in ("1", "2")}


def test_resplit_by_city_keeps_the_test_area_and_drops_nothing_else():
    data = scene_chips()
    out = resplit(data, {"zanzibar"}, {"nairobi"})
    assert len(out["split"]) == len(data["split"]) == 36
    by = dict(zip(out["chip_id"], out["split"]))
    assert by["zanzibar_z19_2_r000_c000"] == "train" and by["zanzibar_z20_1_r000_c000"] == "train"
    assert by["nairobi_z19_1_r000_c000"] == "val" and by["nairobi_z21_2_r000_c001"] == "val"
    assert {by[k] for k in by if k.startswith("kampala")} == {"test"}
    assert out["images"].shape[0] == 36  # per-chip arrays follow


def test_resplit_by_block_drops_the_chips_of_no_split():
    """The shipped teacher's split: Zanzibar 1+2 and Nairobi 1 train, Nairobi 2 validates."""
    out = resplit(scene_chips(), {"zanzibar", "nairobi-1"}, {"nairobi-2"})
    counts = {s: int((out["split"] == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 18, "val": 6, "test": 12}
    only_val = resplit(scene_chips(), {"zanzibar-1"}, {"nairobi-2"})
    assert len(only_val["split"]) == 6 + 6 + 12  # zanzibar-2 and nairobi-1 dropped
    assert not any(c.startswith(("zanzibar_z19_2", "nairobi_z19_1")) for c in only_val["chip_id"])


@pytest.mark.parametrize("train,val", [({"kampala"}, {"nairobi"}), ({"zanzibar"}, {"kampala-1"}),
                                       ({"zanzibar"}, {"zanzibar-2"}), ({"zanzibar"}, {"lagos"})])
def test_resplit_refuses_test_areas_overlaps_and_empty_splits(train, val):
    with pytest.raises(ValueError):
        resplit(scene_chips(), train, val)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_returns_the_best_or_the_last_validated_weights(keep):
    """Validation after every step; the first score is the best. ``best`` returns the weights
    seen then, ``last`` the final ones. The last step's weights are scored once (the loop used
    to score them a second time when the budget ended on a validation)."""
    images, labels, splits = dubai_chips()
    train = {"images": images[splits == "train"], "labels": labels[splits == "train"]}
    scores, seen = iter([0.9, 0.2, 0.4]), []

    def score(model):
        seen.append(copy.deepcopy(model.state_dict()))
        return next(scores)

    torch.manual_seed(0)
    model = AttResUNet(in_channels=3, n_classes=6, widths=(8, 16, 16, 16, 16))
    cfg = TrainConfig(steps=3, batch_size=2, val_every_s=0.0, keep=keep, augment=AugmentConfig(out_size=48))
    model, hist = train_segmenter(model, train, CEDiceLoss(6, 0, dice_classes=[1, 2, 3, 4, 5]),
                                  {"mean": [0.5] * 3, "std": [0.25] * 3}, score, cfg, log=lambda s: None)
    assert len(seen) == 3 and hist["best_step"] == 1 and hist["final_val"] == 0.4 and hist["kept"] == keep
    want = seen[0] if keep == "best" else seen[-1]
    other = seen[-1] if keep == "best" else seen[0]
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    weights = [k for k, v in state.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(state[k], want[k]) for k in weights)
    assert not all(torch.equal(state[k], other[k]) for k in weights)


def test_steps_and_budget_together_stop_at_the_first_reached():
    images, labels, splits = dubai_chips()
    train = {"images": images[splits == "train"], "labels": labels[splits == "train"]}
    cfg = TrainConfig(steps=2, budget_s=3600.0, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=48))
    _, hist = train_segmenter(AttResUNet(in_channels=3, n_classes=6, widths=(8, 16, 16, 16, 16)), train,
                              CEDiceLoss(6, 0, dice_classes=[1, 2, 3, 4, 5]), {"mean": [0.5] * 3, "std": [0.25] * 3},
                              lambda m: 0.5, cfg, log=lambda s: None)
    assert hist["steps"] == 2
    with pytest.raises(ValueError):
        TrainConfig()
    with pytest.raises(ValueError):
        TrainConfig(steps=1, keep="middle")


def test_the_cross_city_comparison_is_void_when_a_run_did_not_train_like_the_others():
    """Run 5 (session 16) put 8 runs on one GPU; the T-mix ones ran out of memory and made 7-30
    steps against ~510, one died, and T-mix 'won' on barely trained weights. Those are the step
    counts and final scores it returned; the comparison must be refused, and a fair one kept."""
    from scripts.device_cities import recipe_scores, void_reason

    got = {"T-256/z2n/s0": (503, 0.365), "T-256/z2n/s1": (517, 0.3684), "T-256/n2z/s0": (513, 0.4956),
           "T-256/n2z/s1": (508, 0.5417), "T-mix/z2n/s0": (30, 0.4282), "T-mix/z2n/s1": (13, 0.3628),
           "T-mix/n2z/s0": (30, 0.6782)}
    expected = [*got, "T-mix/n2z/s1"]
    runs = {k: {"steps": n, "final_val": v} for k, (n, v) in got.items()}
    assert recipe_scores(runs) == {"T-256": 0.4427, "T-mix": 0.4897}  # what run 5 logged
    reason = void_reason(runs, expected)
    assert reason is not None and "T-mix/n2z/s1" in reason
    runs["T-mix/n2z/s1"] = {"steps": 25, "final_val": 0.5}
    reason = void_reason(runs, expected)
    assert reason is not None and "T-mix/z2n/s1 (13 steps)" in reason and "T-256" not in reason
    fair = {k: {"steps": 500 + 10 * i, "final_val": 0.4} for i, k in enumerate(expected)}
    assert void_reason(fair, expected) is None
    fair["T-mix/z2n/s0"]["steps"] = 240  # under half the median (~535)
    assert "T-mix/z2n/s0 (240 steps)" in void_reason(fair, expected)

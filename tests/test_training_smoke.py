"""A few training steps on real chips (made here from the shared data) make the loss fall;
the training loop and the chip pack work end to end."""
import json
import time

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geoseg.augment import AugmentConfig
from geoseg.card import load_model, save_model
from geoseg.losses import CEDiceLoss
from geoseg.models.attresunet import AttResUNet
from geoseg.models.u2net import U2Net
from geoseg.paths import data_root
from geoseg.training.data import load_chip_dir, load_packed
from geoseg.training.loop import TrainConfig, train_buildings, train_landcover
from geoseg.training.pack import pack_chip_dir


def dubai_chips(size=64, per_image=4):
    """(N,3,s,s) uint8 images, (N,s,s) labels, splits: tile_1 -> train, tile_5 -> val, tile_6 -> test."""
    root = data_root() / "landcover" / "dubai"
    images, labels, splits = [], [], []
    for tile, split in (("tile_1", "train"), ("tile_5", "val"), ("tile_6", "test")):
        img = np.asarray(Image.open(root / tile / "image_part_002.jpg").convert("RGB"))
        lab = np.asarray(Image.open(root / tile / "image_part_002_label.png"))
        for k in range(per_image):
            r, c = 100 + 70 * k, 150 + 40 * k
            images.append(img[r : r + size, c : c + size].transpose(2, 0, 1))
            labels.append(lab[r : r + size, c : c + size])
            splits.append(split)
    return np.stack(images), np.stack(labels), np.array(splits)


def _fit_fixed_batch(model, loss_fn, x, y, steps=12):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_landcover_loss_falls_on_real_chips():
    torch.manual_seed(0)
    images, labels, _ = dubai_chips()
    x = torch.from_numpy(np.ascontiguousarray(images[:4])).float() / 255
    y = torch.from_numpy(labels[:4].astype(np.int64))
    losses = _fit_fixed_batch(AttResUNet(widths=(8, 16, 16, 16, 16)), CEDiceLoss(6, 0, dice_classes=[1, 2, 3, 4, 5]), x, y)
    assert losses[-1] < 0.8 * losses[0], losses


def zanzibar_windows(offsets=((256, 256),), size=64):
    """RGB windows of zanzibar_z19_1 (N,3,s,s) and their OSM footprints burnt in as interior (N,s,s)."""
    import geopandas as gpd
    from rasterio import features
    from rasterio.windows import Window

    root = data_root() / "buildings" / "zanzibar"
    images, labels = [], []
    with rasterio.open(root / "zanzibar_z19_1.tif") as src:
        gdf = gpd.read_file(root / "labels.geojson").set_crs(4326, allow_override=True).to_crs(src.crs)
        for col, row in offsets:
            win = Window(col, row, size, size)
            images.append(src.read(window=win)[:3])
            labels.append(features.rasterize(((g, 1) for g in gdf.geometry), out_shape=(size, size),
                                             transform=src.window_transform(win), dtype="uint8"))
    return np.stack(images), np.stack(labels)


def test_buildings_loss_falls_on_real_scene():
    """U2-Net (tiny width) on a Zanzibar window with OSM footprints burnt in as interior."""
    images, labels = zanzibar_windows()
    img, lab = images[0], labels[0]
    assert 0 < lab.mean() < 1  # the window holds buildings and background
    torch.manual_seed(0)
    x = torch.from_numpy(img[None]).float() / 255
    y = torch.from_numpy(lab[None].astype(np.int64))
    losses = _fit_fixed_batch(U2Net(mid=4, out=8), CEDiceLoss(3, 255, dice_classes=[1, 2]), x, y, steps=10)
    assert losses[-1] < 0.8 * losses[0], losses


def test_train_landcover_writes_a_loadable_card(tmp_path):
    images, labels, splits = dubai_chips()
    tiles = np.array([{"train": "tile_1", "val": "tile_5", "test": "tile_6"}[s] for s in splits])
    data = {"images": images, "labels": labels, "split": splits, "area": tiles, "target": "landcover"}
    cfg = TrainConfig(steps=2, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=48))
    model, card = train_landcover(data, cfg, arch_kwargs={"in_channels": 3, "n_classes": 6, "widths": [8, 16, 16, 16, 16]}, log=lambda s: None)
    assert card["training"]["steps"] == 2 and 0 <= card["metrics"]["val"]["miou"] <= 1
    assert card["gsd_m"] == 1.1 and "estimated" in card["gsd_note"]  # the chips carry no GSD
    assert card["training"]["splits"] == {"train": "tile_1", "val": "tile_5", "test": "tile_6"}
    save_model(model, card, tmp_path)
    loaded, loaded_card = load_model(tmp_path)
    assert loaded_card["classes"][0]["name"] == "unlabeled"
    with torch.no_grad():
        assert loaded(torch.zeros(1, 3, 32, 32)).shape == (1, 6, 32, 32)


def test_landcover_card_reports_the_kept_weights_validation():
    """With ``keep="last"`` the card's val mIoU is the last step's, not the best point's (it said
    the best one, for weights it had not kept), and it names its area as the buildings card does."""
    images, labels, splits = dubai_chips()
    tiles = np.array([{"train": "tile_1", "val": "tile_5", "test": "tile_6"}[s] for s in splits])
    data = {"images": images, "labels": labels, "split": splits, "area": tiles, "target": "landcover"}
    arch = {"in_channels": 3, "n_classes": 6, "widths": [8, 16, 16, 16, 16]}
    cfg = TrainConfig(steps=3, batch_size=2, val_every_s=0, keep="last", augment=AugmentConfig(out_size=48))
    _, card = train_landcover(data, cfg, arch_kwargs=arch, log=lambda s: None)
    assert card["metrics"]["val"]["miou"] == card["training"]["history"][-1]["val"]
    assert card["metrics"]["val"]["area"] == "tile_5 (monitoring only: last weights kept)"


def test_pack_round_trip(tmp_path):
    images, labels, splits = dubai_chips(per_image=1)
    chips = tmp_path / "chips"
    feats = []
    for i, (img, lab, split) in enumerate(zip(images, labels, splits)):
        for sub, arr in (("images", img), ("labels", lab[None])):
            (chips / sub).mkdir(parents=True, exist_ok=True)
            with rasterio.open(chips / sub / f"c{i}.tif", "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                               count=arr.shape[0], dtype="uint8") as dst:
                dst.write(arr)
        feats.append({"type": "Feature", "geometry": None, "properties": {
            "chip_id": f"c{i}", "area": split, "split": split, "target": "landcover", "gsd": None,
            "image": f"images/c{i}.tif", "label": f"labels/c{i}.tif"}})
    feats.append({"type": "Feature", "geometry": None, "properties": {  # a skipped window: no files
        "chip_id": "skipped", "area": "x", "split": "train", "target": "landcover", "image": None, "label": None}})
    (chips / "index.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.warns(Warning):  # the chips are not georeferenced
        direct = load_chip_dir(chips)
    summary = pack_chip_dir(chips, tmp_path / "lc.npz")
    packed = load_packed(tmp_path / "lc.npz")
    assert summary["chips"] == 3 and packed["target"] == "landcover"
    assert np.array_equal(packed["labels"], direct["labels"])
    assert packed["split"].tolist() == ["train", "val", "test"]
    assert np.abs(packed["images"].astype(int) - direct["images"]).mean() < 2.0  # JPEG q95


def test_train_command_end_to_end_on_a_pack(tmp_path):
    from typer.testing import CliRunner

    from geoseg.cli import app

    images, labels, splits = dubai_chips(size=48, per_image=2)
    arrays = {"images": images, "labels": labels, "split": splits}
    # a pack as geoseg.training.pack writes it, built directly from the arrays
    from geoseg.training.pack import encode_jpeg

    blobs = [encode_jpeg(a) for a in arrays["images"]]
    np.savez_compressed(
        tmp_path / "lc.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=splits, area=splits,
        chip_id=np.array([f"dubai_tile_1_part{i}_r000_c000" for i in range(len(splits))]),
        gsd=np.full(len(splits), np.nan, np.float32), meta=np.array(json.dumps({"target": "landcover"})),
    )
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "buildings", "--data", str(tmp_path / "lc.npz"), "--out", str(tmp_path / "m"), "--epochs", "1"])
    assert bad.exit_code == 1 and "landcover chips, not buildings" in bad.output
    ok = runner.invoke(app, ["train", "landcover", "--data", str(tmp_path / "lc.npz"), "--out", str(tmp_path / "m"),
                             "--epochs", "1", "--batch-size", "2", "--crop", "32"])
    assert ok.exit_code == 0, ok.output
    card = json.loads((tmp_path / "m" / "landcover-attresunet-custom.json").read_text())
    assert card["training"]["steps"] == 1 and "miou" in card["metrics"]["test"]
    assert "geoseg train landcover" in card["metrics"]["command"]


def test_fine_tuning_starts_from_the_given_weights():
    """``init_state`` loads a checkpoint before training: with a zero learning rate the run
    returns exactly those weights, not the seed-0 initialisation."""
    images, labels, splits = dubai_chips()
    data = {"images": images, "labels": labels, "split": splits, "area": splits, "target": "landcover"}
    arch = {"in_channels": 3, "n_classes": 6, "widths": [8, 16, 16, 16, 16]}
    torch.manual_seed(123)
    start = AttResUNet(**{**arch, "widths": tuple(arch["widths"])}).state_dict()
    cfg = TrainConfig(steps=2, batch_size=2, lr=0.0, val_every_s=1e9, augment=AugmentConfig(out_size=48))
    model, _ = train_landcover(data, cfg, arch_kwargs=arch, log=lambda s: None, init_state=start)
    fresh, _ = train_landcover(data, cfg, arch_kwargs=arch, log=lambda s: None)
    tuned = model.state_dict()
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(tuned[k], start[k]) for k in weights)
    assert not all(torch.equal(fresh.state_dict()[k], start[k]) for k in weights)


def test_fine_tuned_buildings_keep_the_given_normalisation_and_record_the_crop_range():
    """A fine-tune keeps its checkpoint's mean/std (the weights expect them) instead of the one
    measured on the new training chips; a crop range is written into the card."""
    images, labels = zanzibar_windows(((256, 256), (512, 256), (256, 512), (512, 512)))
    data = {"images": images, "labels": labels, "split": np.array(["train", "train", "val", "test"]),
            "area": np.array(["z"] * 4), "gsd": np.full(4, 0.3, np.float32), "target": "buildings"}
    cfg = TrainConfig(steps=1, batch_size=2, val_every_s=1e9, augment=AugmentConfig(out_size=32, out_size_max=64))
    arch = {"in_channels": 3, "n_classes": 3, "mid": 4, "out": 8}
    given = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    _, tuned = train_buildings(data, cfg, arch_kwargs=arch, log=lambda s: None, norm=given)
    _, fresh = train_buildings(data, cfg, arch_kwargs=arch, log=lambda s: None)
    assert tuned["normalisation"] == given
    measured = images[:2].transpose(1, 0, 2, 3).reshape(3, -1).mean(1) / 255
    assert np.allclose(fresh["normalisation"]["mean"], measured, atol=1e-3)
    assert tuned["training"]["crop"].startswith("32-64 px")


def _tiny_run(score, cfg: TrainConfig, **callbacks):
    """``train_segmenter`` on 32 px Dubai chips with an 8-wide AttResUNet: what the loop's own
    bookkeeping (validation passes, progress, time left) is tested on; ``score`` validates."""
    from geoseg.training.loop import train_segmenter

    images, labels, splits = dubai_chips(size=32, per_image=1)
    train = {"images": images[splits == "train"], "labels": labels[splits == "train"]}
    model = AttResUNet(in_channels=3, n_classes=6, widths=(8, 8, 8, 8, 8))
    return train_segmenter(model, train, CEDiceLoss(6, ignore_index=0), {"mean": [0.5] * 3, "std": [0.25] * 3},
                           score, cfg, log=lambda s: None, **callbacks)


def _sleeping_score(seconds: float):
    def score(model):
        time.sleep(seconds)
        return 0.5
    return score


def test_the_last_weights_are_scored_once_when_the_budget_ends_on_a_validation():
    # `geoseg train --minutes 0.2` on a CPU: the first step outlasts val_every_s, so the loop scored
    # step 1, found the budget spent, and scored step 1 again (a second full validation pass, 83 of
    # the run's 300 s, and a duplicate history row).
    scored = []

    def score(model):
        scored.append(1)
        return 0.5

    _, hist = _tiny_run(score, TrainConfig(steps=2, batch_size=1, val_every_s=0.0, augment=AugmentConfig(out_size=32)))
    steps = [row["step"] for row in hist["history"]]
    assert steps == [1, 2] and len(scored) == 2, steps
    assert hist["final_val"] == 0.5 and hist["steps"] == 2


def test_the_time_left_counts_the_validation_passes_to_come():
    """The training bar's time left was rich's guess from the fraction of steps done, blind to the
    validation passes: it said 0:00 while the last pass ran (a minute on the CPU). The loop now tells
    the time left with the passes to come, each as long as the last one measured, and 0 at the end."""
    told = []
    _tiny_run(_sleeping_score(0.25), TrainConfig(steps=6, batch_size=1, val_every_s=0.0, augment=AugmentConfig(out_size=32)),
              time_left=told.append)
    # after step 1 (validated): 5 steps to come, each followed by a 0.25 s pass (the last one's time)
    assert told[0] >= 5 * 0.25, told
    assert told[-2] < 0.05 and told[-1] == 0.0, told  # the last step was validated: no pass to come


def test_a_budget_spent_by_a_validation_pass_ends_the_bar_at_100_percent():
    """`geoseg train --minutes 1` on a CPU: a validation pass ran past the end of the budget, the loop
    ended, and the bar stayed at 84 %, its last value before the pass."""
    done = []
    _, hist = _tiny_run(_sleeping_score(0.6),
                        TrainConfig(budget_s=0.5, batch_size=1, val_every_s=0.0, augment=AugmentConfig(out_size=32)),
                        progress=done.append)
    assert hist["steps"] == 1 and done[-1] == 1.0, done


def test_validation_passes_take_at_most_their_share_of_the_run():
    """On the CPU a validation pass over Dubai's 225 val chips lasts minutes, and `geoseg train` ran one
    every 30-60 s of training: most of a --minutes budget went to validating. With ``val_share`` the
    next pass waits at least (1 - share) / share times the last one's length."""
    cfg = TrainConfig(steps=6, batch_size=1, val_every_s=0.0, val_share=0.1, augment=AugmentConfig(out_size=32))
    _, hist = _tiny_run(_sleeping_score(0.3), cfg)
    # a pass after step 1, then 2.7 s of steps before the next (0.3 s x 9), and the last weights'
    # pass; without val_share a pass after every step
    assert len(hist["history"]) <= 3 < hist["steps"] == 6, hist["history"]
    assert cfg.val_interval(0.3) == pytest.approx(2.7) and TrainConfig(steps=1).val_interval(9.0) == 20.0
    with pytest.raises(ValueError, match="val_share"):
        TrainConfig(steps=1, val_share=0.0)


def test_the_first_validation_pass_is_expected_from_the_steps_pace():
    """The first pass came after val_every_s whatever it would cost: on the CPU, 30 s into a 2-minute
    budget, a 5-minute pass over Dubai's 225 val chips left the run 4 steps. Before the first pass its
    length is estimated from the steps' pace and the val chips' pixels, so with ``val_share`` a pass
    that would outweigh the training is left to the end, and the time left counts it."""
    told = []
    cfg = TrainConfig(steps=4, batch_size=1, val_every_s=0.0, val_share=0.25, augment=AugmentConfig(out_size=32))
    # val chips of 10,000 steps' pixels: a pass expected as long as 2,500 steps, none before the end
    _, hist = _tiny_run(lambda m: 0.5, cfg, time_left=told.append, val_pixels=10_000 * 32 * 32)
    assert [row["step"] for row in hist["history"]] == [4], hist["history"]
    assert told[0] > 100 * hist["seconds"] / 4, told  # after step 1: the estimated last pass counted

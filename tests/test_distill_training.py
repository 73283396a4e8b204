"""Distillation on real chips cut inside the test from ../shared/data: the loss falls,
``device_phase`` writes its bundle within budget, ``train_student`` saves a loadable ``-fast`` card."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.windows import Window
from typer.testing import CliRunner

from geoseg.card import BUILDING_CLASSES, LANDCOVER_CLASSES, load_model, save_model
from geoseg.cli import app
from geoseg.models.attresunet import AttResUNet
from geoseg.models.students import FastSegNet
from geoseg.models.u2net import U2Net
from geoseg.paths import data_root
from geoseg.training.ablation import ablation_markdown, device_phase, export_students, main
from geoseg.training.chip_batches import ChipArrays, check_labels
from geoseg.training.distill import LOSS_SETS, distill, train_student
from geoseg.training.teacher_maps import cache_teacher, feature_module, teacher_outputs
from tiles.labels import LabelIndex, window_labels

torch.set_num_threads(2)
SIZE = 96
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def dubai_chips(tile: int, n: int) -> ChipArrays:
    """The first ``n`` SIZE x SIZE chips of a Dubai tile's first image (labels: class indices)."""
    folder = data_root() / "landcover" / "dubai" / f"tile_{tile}"
    image = np.asarray(Image.open(folder / "image_part_001.jpg").convert("RGB")).transpose(2, 0, 1)
    label = np.asarray(Image.open(folder / "image_part_001_label.png"))
    corners = [(r, c) for r in range(0, label.shape[0] - SIZE + 1, SIZE) for c in range(0, label.shape[1] - SIZE + 1, SIZE)]
    corners = corners[:n]
    return ChipArrays(
        np.stack([image[:, r : r + SIZE, c : c + SIZE] for r, c in corners]),
        np.stack([label[r : r + SIZE, c : c + SIZE] for r, c in corners]).astype(np.uint8),
    )


def building_chips(scene: str, n: int) -> ChipArrays:
    """SIZE x SIZE chips of a buildings scene with 0/1/2 labels rasterised from its OSM polygons."""
    area = scene.split("_")[0]
    with rasterio.open(data_root() / "buildings" / area / f"{scene}.tif") as src:
        index = LabelIndex.from_files([data_root() / "buildings" / area / "labels.geojson"], src.crs)
        images, labels = [], []
        for r in range(0, src.height - SIZE + 1, SIZE):
            for c in range(0, src.width - SIZE + 1, SIZE):
                win = Window(c, r, SIZE, SIZE)
                valid = src.dataset_mask(window=win) > 0
                label, _ = window_labels(index, src.window_transform(win), (SIZE, SIZE), valid)
                images.append(src.read([1, 2, 3], window=win))
                labels.append(label)
                if len(images) == n:
                    break
            if len(images) == n:
                break
    return ChipArrays(np.stack(images), np.stack(labels))


def teacher_pair(task: str) -> tuple[torch.nn.Module, dict]:
    """A small randomly initialised teacher of the real architecture, and its card."""
    torch.manual_seed(0)
    if task == "buildings":
        model, arch, kwargs, classes = U2Net(mid=8, out=16), "U2Net", {"mid": 8, "out": 16}, BUILDING_CLASSES
    else:
        kwargs = {"widths": [8, 16, 24, 32, 32]}
        model, arch, classes = AttResUNet(widths=(8, 16, 24, 32, 32)), "AttResUNet", LANDCOVER_CLASSES
    card = {"name": f"{task}-teacher", "task": task, "architecture": arch, "arch_kwargs": kwargs,
            "classes": classes, "normalisation": NORM, "bands": [1, 2, 3], "gsd_m": 0.3, "tile_size": 512}
    return model.eval(), card


def tiny_student(task: str, card: dict) -> FastSegNet:
    """The shipped student's architecture at test size (the 2-core CI machine is shared)."""
    return FastSegNet(len(card["classes"]), widths=(8, 12, 16, 24, 32), depths=(1, 1, 1, 1),
                      ignore_first_class=task == "landcover")


def test_distillation_steps_on_real_building_chips_lower_the_loss():
    chips = building_chips("zanzibar_z19_1", 4)
    assert (chips.labels == 1).any() and (chips.labels == 2).any()  # real buildings in the chips
    teacher, card = teacher_pair("buildings")
    cache = cache_teacher(teacher, card, chips, "cpu", batch_size=4)
    student = tiny_student("buildings", card)
    seen: list[float] = []
    run = distill(student, None, card, "buildings", chips, "ce+ace+csc", "cpu", max_steps=10,
                  batch_size=2, lr=1e-2, cache=cache, progress=lambda step, loss: seen.append(loss))
    assert run.steps == 10 == len(seen)
    assert np.mean(seen[-3:]) < 0.9 * np.mean(seen[:3]), seen


def test_a_batch_with_no_labelled_pixel_leaves_the_students_loss_and_weights_finite():
    """torch's cross-entropy over no labelled pixel is NaN: one batch of all-ignored chips (a scene's
    edge past its labels) made the CE label term, so the whole loss and then every weight, NaN."""
    import dataclasses

    from geoseg.distill_losses import IGNORE_INDEX

    chips = building_chips("zanzibar_z19_1", 2)
    unlabelled = dataclasses.replace(chips, labels=np.full_like(chips.labels, IGNORE_INDEX))
    _, card = teacher_pair("buildings")
    student = tiny_student("buildings", card)
    seen: list[float] = []
    distill(student, None, card, "buildings", unlabelled, "ce", "cpu", max_steps=3, batch_size=2, lr=1e-2,
            progress=lambda step, loss: seen.append(loss))
    assert len(seen) == 3 and all(loss == 0.0 for loss in seen), seen
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_distillation_uses_the_photometric_strengths_it_is_given(monkeypatch):
    """``augment`` reaches the student's photometric chain (a colour-invariance fine-tune sets it);
    without it the default strengths apply. With grey p=1 every student input is grey."""
    from geoseg import augment
    from geoseg.training import distill as distill_module

    chips = building_chips("zanzibar_z19_1", 2)
    teacher, card = teacher_pair("buildings")
    seen: list[tuple] = []

    def recording(images, cfg):
        out = augment.photometric(images, cfg)
        seen.append((cfg, float((out[:, 0] - out[:, 1]).abs().max()), float((images[:, 0] - images[:, 1]).abs().max())))
        return out

    monkeypatch.setattr(distill_module, "photometric_augment", recording)
    grey = augment.AugmentConfig(grey_p=1.0, channel_shuffle_p=0.0, jpeg_p=0.0, blur_p=0.0)
    distill(tiny_student("buildings", card), teacher, card, "buildings", chips, "ce", "cpu", max_steps=2,
            batch_size=2, augment=grey)
    assert [cfg for cfg, _, _ in seen] == [grey, grey]
    assert all(spread < 1e-6 < before for _, spread, before in seen)  # colour in, grey out
    seen.clear()
    distill(tiny_student("buildings", card), teacher, card, "buildings", chips, "ce", "cpu", max_steps=1, batch_size=2)
    assert seen[0][0] == augment.AugmentConfig()


def test_a_land_cover_student_sees_colour_jitter_but_keeps_its_channels(monkeypatch):
    """A land-cover class is largely its colour: with the teachers' channel shuffle, grey, blur and
    JPEG on their input, land-cover students lost 11 points of tile-6 mIoU (docs/distillation.md).
    Their default input is colour jitter alone; building students keep the whole chain."""
    from geoseg import augment
    from geoseg.training import distill as distill_module

    chips = dubai_chips(1, 2)
    teacher, card = teacher_pair("landcover")
    seen: list[augment.AugmentConfig] = []

    def recording(images, cfg):
        seen.append(cfg)
        return augment.photometric(images, cfg)

    monkeypatch.setattr(distill_module, "photometric_augment", recording)
    distill(tiny_student("landcover", card), teacher, card, "landcover", chips, "ce", "cpu", max_steps=1, batch_size=2)
    (cfg,) = seen
    assert cfg.channel_shuffle_p == cfg.grey_p == cfg.blur_p == cfg.jpeg_p == 0.0
    assert cfg.brightness > 0 and cfg.saturation > 0  # colour jitter stays


def test_teacher_outputs_take_one_pass_and_match_forward_and_features():
    teacher, _ = teacher_pair("buildings")
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()  # the probe must leave batch-norm statistics alone even in training mode
    assert feature_module(teacher) is teacher.stage1d
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    teacher.eval()
    x = torch.rand(2, 3, 48, 40)
    calls = []
    handle = teacher.stage1.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        logits, feats = teacher_outputs(teacher, x)
        assert len(calls) == 1  # one encoder pass for both outputs
        assert torch.equal(logits, teacher(x)) and torch.equal(feats, teacher.features(x))
    handle.remove()


def test_teacher_cache_matches_the_live_teacher():
    chips = dubai_chips(1, 3)
    teacher, card = teacher_pair("landcover")
    cache = cache_teacher(teacher, card, chips, "cpu", batch_size=2, grid=16)
    assert cache.logits.shape == (3, 6, SIZE, SIZE) and cache.features.shape == (3, 8, 16, 16)
    with torch.no_grad():
        from geoseg.card import normalise

        live = teacher(normalise(torch.from_numpy(chips.images), card))
    assert torch.allclose(cache.logits.float(), live, atol=2e-2)


def test_device_phase_dry_run_writes_the_bundle_within_budget(tmp_path):
    packed = {}
    for task, train, test in [
        ("buildings", building_chips("zanzibar_z19_1", 4), building_chips("kampala_z19_2", 2)),
        ("landcover", dubai_chips(1, 4), dubai_chips(6, 2)),
    ]:
        packed[task] = {
            "images": np.concatenate([train.images, test.images]),
            "labels": np.concatenate([train.labels, test.labels]),
            "split": np.array(["train"] * len(train) + ["test"] * len(test)),
        }
    teachers = {t: teacher_pair(t) for t in packed}
    out = tmp_path / "device_out"
    budget = 90.0  # generous for a busy 2-core machine; the step cap ends the runs first
    start = time.monotonic()
    device_phase(packed, teachers, out, budget_s=budget, device="cpu", batch_size=2, log=print,
                 make_student=tiny_student, max_steps=2)
    assert time.monotonic() - start < budget

    files = sorted(p.name for p in out.iterdir())
    assert files == ["students.json", "students.pt"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    bundle = json.loads((out / "students.json").read_text())
    report = bundle["report"]
    for task in packed:
        runs = report["tasks"][task]["runs"]
        assert set(runs) == set(LOSS_SETS), runs
        assert [runs[ls]["steps"] for ls in LOSS_SETS] == [2, 2, 2]  # equal steps: a fair ablation
        metric = "pixel_iou" if task == "buildings" else "miou"
        assert 0.0 <= runs["ce+ace+csc"]["test"][metric] <= 1.0
        assert metric in report["tasks"][task]["teacher_test"]
        assert bundle["cards"][task]["name"] == f"{task}-teacher-fast"
    assert {(r["task"], r["model"].split()[0]) for r in report["ablation"]} == {
        (t, kind) for t in packed for kind in ("student", "teacher")
    }

    table = ablation_markdown(report)
    assert table.count("\n") == 2 + len(report["ablation"]) - 1 and "(shipped)" in table
    assert main(["table", str(out)]) == 0 and main(["nonsense"]) == 2

    written = export_students(out, tmp_path / "weights")
    assert sorted(p.name for p in written) == ["buildings-teacher-fast.json", "landcover-teacher-fast.json"]
    model, card = load_model(tmp_path / "weights" / "landcover-teacher-fast.json")
    assert isinstance(model, FastSegNet) and card["architecture"] == "FastSegNet"
    assert card["normalisation"] == NORM and card["classes"] == LANDCOVER_CLASSES
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def write_chip_dir(root: Path, chips_by_split: dict[str, ChipArrays], target: str) -> Path:
    """A chip directory in the ARCHITECTURE.md format (non-georeferenced GeoTIFFs + index), its chips
    recorded as cut at the test teachers' 0.3 m (``geoseg tile --gsd 0.3``)."""
    features = []
    for split, chips in chips_by_split.items():
        for i in range(len(chips)):
            chip_id = f"{split}_{i}"
            for kind, data in (("images", chips.images[i]), ("labels", chips.labels[i][None])):
                (root / kind).mkdir(parents=True, exist_ok=True)
                with rasterio.open(root / kind / f"{chip_id}.tif", "w", driver="GTiff", width=SIZE, height=SIZE,
                                   count=data.shape[0], dtype="uint8") as dst:
                    dst.write(data)
            features.append({"type": "Feature", "geometry": None, "properties": {
                "chip_id": chip_id, "scene": "dubai", "area": "dubai", "split": split, "target": target, "gsd": 0.3,
                "status": "ok", "image": f"images/{chip_id}.tif", "label": f"labels/{chip_id}.tif"}})
    (root / "index.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return root


def test_train_student_saves_a_loadable_fast_card(tmp_path):
    chip_dir = write_chip_dir(tmp_path / "chips", {"train": dubai_chips(1, 4), "test": dubai_chips(6, 2)},
                              "landcover")
    teacher, tcard = teacher_pair("landcover")
    save_model(teacher, {**tcard, "name": "landcover-attresunet"}, tmp_path / "teacher")
    card = train_student("landcover", chip_dir, tmp_path / "fast", tmp_path / "teacher",
                         minutes=None, epochs=2, device="cpu")
    assert card["name"] == "landcover-attresunet-fast" and card["teacher"] == "landcover-attresunet"
    assert card["training"]["augmentation"] == ("dihedral, colour/brightness/contrast/saturation jitter on the "
                                                "student's input")
    assert card["training"]["steps"] == 2  # 4 chips, batch 4 on CPU
    assert card["training"]["lr"] == 3e-3  # the default peak learning rate, recorded as a teacher's is
    assert 0.0 <= card["metrics"]["test"]["miou"] <= 1.0
    model, loaded = load_model(tmp_path / "fast" / "landcover-attresunet-fast.json")
    assert loaded["distillation"]["losses"] == "ce+ace+csc"
    assert loaded["min_context"] == 64  # predict reads context around its tiles, as the shipped students
    assert loaded["training"]["teacher_cached_chips"] == 4  # chips within the crop: teacher run once per chip
    assert isinstance(model, FastSegNet)
    # The same through the command line (`geoseg train ... --teacher`).
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chip_dir), "--out", str(tmp_path / "cli"),
                                      "--teacher", str(tmp_path / "teacher"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "landcover-attresunet-fast-custom.pt").is_file()
    # The ablation's baseline: the same student with cross-entropy only (no teacher term, no cache).
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chip_dir), "--out", str(tmp_path / "ce"),
                                      "--teacher", str(tmp_path / "teacher"), "--epochs", "1", "--losses", "ce",
                                      "--label-loss", "teacher"])
    assert result.exit_code == 0, result.output
    ce_card = json.loads((tmp_path / "ce" / "landcover-attresunet-fast-custom.json").read_text())
    assert ce_card["distillation"]["losses"] == "ce" and "teacher_cached_chips" not in ce_card["training"]
    assert ce_card["training"]["label_loss"] == "teacher" and "--label-loss teacher" in ce_card["metrics"]["command"]
    assert loaded["training"]["label_loss"] == "ce"
    # Fine-tuning: --init starts from a saved student and the card says from which.
    tuned = train_student("landcover", chip_dir, tmp_path / "tuned", tmp_path / "teacher", minutes=None, epochs=1,
                          device="cpu", losses="ce", init=tmp_path / "fast")
    assert tuned["training"]["init"]["from"] == "landcover-attresunet-fast"
    assert tuned["training"]["init"]["steps"] == 2
    with pytest.raises(ValueError, match="not a FastSegNet"):
        train_student("landcover", chip_dir, tmp_path / "y", tmp_path / "teacher", minutes=None, epochs=1,
                      device="cpu", init=tmp_path / "teacher")
    with pytest.raises(ValueError, match="--label-loss must be one of ce, teacher"):
        train_student("landcover", chip_dir, tmp_path / "z", tmp_path / "teacher", minutes=None, epochs=1,
                      device="cpu", label_loss="dice")
    with pytest.raises(ValueError, match="not buildings"):
        train_student("buildings", chip_dir, tmp_path / "x", tmp_path / "teacher", minutes=0.1, epochs=None,
                      device="cpu")


def test_labels_outside_the_classes_are_refused_up_front():
    chips = dubai_chips(1, 1)
    check_labels(chips.labels, "landcover", 6)  # real Dubai ids 0..5 pass
    check_labels(np.array([[0, 2, 255]], np.uint8), "buildings", 3)  # 255 = ignore for buildings
    bad = ChipArrays(chips.images, np.full_like(chips.labels, 7))
    teacher, card = teacher_pair("landcover")
    with pytest.raises(ValueError, match=r"ids \[7\]"):
        distill(tiny_student("landcover", card), teacher, card, "landcover", bad, "ce", "cpu", max_steps=1)


def test_teacher_label_loss_makes_a_missed_outline_band_cost_more():
    """``label_loss='teacher'``: the teachers' weighted CE + Dice. A student that calls the outline
    band interior (touching houses merge) is barely punished by plain CE on real chips, where the
    band is a few per cent of the pixels; the teachers' loss punishes it."""
    from geoseg.training.distill import _label_term

    chips = building_chips("zanzibar_z19_1", 4)
    y = torch.from_numpy(chips.labels).long()
    assert 0 < (y == 2).float().mean() < 0.1  # a thin band
    wrong = torch.where(y == 2, torch.ones_like(y), y)  # outline called interior
    logits = 8.0 * torch.nn.functional.one_hot(torch.where(wrong == 255, 0, wrong), 3).permute(0, 3, 1, 2).float()
    plain, teacher = _label_term("buildings", "ce")(logits, y), _label_term("buildings", "teacher")(logits, y)
    assert teacher > plain + 0.4  # the Dice term alone adds ~0.5 for a class never predicted
    exact = 8.0 * torch.nn.functional.one_hot(torch.where(y == 255, 0, y), 3).permute(0, 3, 1, 2).float()
    assert _label_term("buildings", "teacher")(exact, y) < 0.05
    with pytest.raises(ValueError, match="label loss"):
        _label_term("buildings", "dice")
    _, card = teacher_pair("buildings")
    run = distill(tiny_student("buildings", card), None, card, "buildings", chips, "ce", "cpu", max_steps=2,
                  batch_size=2, label_loss="teacher")
    assert run.steps == 2 and np.isfinite(run.last_loss)


def test_ablation_tool_answers_help_on_stdout_with_exit_0(capsys):
    from geoseg.training.ablation import main

    assert main(["--help"]) == 0  # was the misuse answer: usage on stderr, exit 2
    assert "ablation export DEVICE_OUT_DIR WEIGHTS_DIR" in capsys.readouterr().out
    assert main(["bogus"]) == 2 and "usage:" in capsys.readouterr().err


def test_a_student_of_a_teacher_with_its_own_classes_trains_with_the_teachers_loss():
    """`geoseg train landcover --teacher <3-class teacher> --label-loss teacher` failed with "INDICES
    element is out of DATA bounds": the label term was sized for Dubai's six classes."""
    chips = dubai_chips(1, 2)
    chips = ChipArrays(chips.images, np.array([0, 1, 1, 2, 3, 3], np.uint8)[chips.labels])
    teacher, card = teacher_pair("landcover")
    names = ["unlabeled", "built", "green", "open"]
    card = card | {"classes": [{"index": i, "name": n, "colour": "#000000"} for i, n in enumerate(names)]}
    teacher = AttResUNet(n_classes=4, widths=(8, 16, 24, 32, 32)).eval()
    cache = cache_teacher(teacher, card, chips, "cpu", batch_size=2)
    run = distill(tiny_student("landcover", card), None, card, "landcover", chips, "ce", "cpu", max_steps=2,
                  batch_size=2, cache=cache, label_loss="teacher")
    assert run.steps == 2 and np.isfinite(run.last_loss)

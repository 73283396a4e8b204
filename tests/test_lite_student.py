"""The ImageNet-initialised student (``--student lite0``): the weights it starts from are real ImageNet
features, its output contract is the students', its card rebuilds it, and it stays a fraction of the
teacher's CPU cost."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data, transform
from typer.testing import CliRunner

from geoseg.card import REPO_ROOT, build_module, load_model, save_model
from geoseg.cli import app
from geoseg.models.efficientnet_lite import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0Encoder,
    imagenet_weights_path,
    load_imagenet,
)
from geoseg.models.lite_unet import LiteUNet
from geoseg.models.u2net import U2Net
from geoseg.training.distill import PRETRAINED_LR_SCALE, new_student, student_card, student_param_groups
from checks import assert_usage_error, one_thread_cpu_seconds

torch.set_num_threads(2)
TEACHER_CARD = json.loads((REPO_ROOT / "geoseg" / "weights" / "buildings-u2net.json").read_text())


def test_the_imagenet_encoder_recognises_a_photograph():
    """The encoder's layout matches the published weights block by block: with their own classifier
    on top, skimage's photograph of a cat is an ImageNet cat (281-285) and its coffee an espresso (967).
    A block in the wrong order or with the wrong stride would load (the shapes agree) and fail this."""
    encoder = EfficientNetLite0Encoder().eval()
    load_imagenet(encoder)
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    head = torch.nn.Conv2d(320, 1280, 1, bias=False)
    head.weight.data = state["_conv_head.weight"]
    bn = torch.nn.BatchNorm2d(1280, eps=1e-3).eval()
    bn.load_state_dict({k[len("_bn1."):]: v for k, v in state.items() if k.startswith("_bn1.")})
    fc = torch.nn.Linear(1280, 1000)
    fc.weight.data, fc.bias.data = state["_fc.weight"], state["_fc.bias"]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for image, classes in [(data.chelsea(), range(281, 286)), (data.coffee(), [967])]:
        x = torch.from_numpy(transform.resize(image, (224, 224)).astype(np.float32)).permute(2, 0, 1)
        with torch.no_grad():
            pooled = torch.clamp(bn(head(encoder(((x - mean) / std)[None])[-1])), 0, 6).mean((2, 3))
            top = int(fc(pooled).argmax())
        assert top in classes, top


def test_missing_imagenet_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_PRETRAINED", str(tmp_path / "none.pth"))
    with pytest.raises(FileNotFoundError, match="none.pth"):
        new_student("buildings", TEACHER_CARD, "lite0")


@pytest.mark.parametrize("size", [(128, 128), (97, 150)])
def test_lite_student_output_contract(size):
    x = torch.rand(2, 3, *size)
    buildings = LiteUNet(3, full_res_width=8).eval()
    with torch.no_grad():
        logits, feats = buildings.forward_with_features(x)
        lc = LiteUNet(6, ignore_first_class=True).eval()(x)
    assert logits.shape == (2, 3, *size)
    assert feats.shape[:2] == (2, buildings.feature_channels)
    assert feats.shape[2] == pytest.approx(size[0] / 4, abs=1)
    assert lc.shape == (2, 6, *size) and not (lc.argmax(1) == 0).any()


def test_the_student_reads_the_teachers_normalisation_and_feeds_the_encoder_its_own():
    """Teacher and student read one tensor, normalised by the teacher's statistics; the encoder must
    still see what its ImageNet weights expect, (rgb - 0.5) / 0.5."""
    norm = TEACHER_CARD["normalisation"]
    student = new_student("buildings", TEACHER_CARD, "lite0")
    rgb = torch.rand(1, 3, 8, 8)
    mean, std = torch.tensor(norm["mean"]).view(1, 3, 1, 1), torch.tensor(norm["std"]).view(1, 3, 1, 1)
    seen = ((rgb - mean) / std) * student.in_scale + student.in_shift
    expected = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(seen, expected, atol=1e-5)
    # it starts from the published weights, and its encoder learns at a fraction of the decoder's rate
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(student.encoder._blocks[7]._depthwise_conv.weight, state["_blocks.7._depthwise_conv.weight"])
    groups = student_param_groups(student)
    assert [g["lr_scale"] for g in groups] == [PRETRAINED_LR_SCALE, 1.0]
    assert sum(len(g["params"]) for g in groups) == len(list(student.parameters()))


def test_a_lite_student_card_rebuilds_it_through_predicts_loader(tmp_path):
    student = new_student("buildings", TEACHER_CARD, "lite0").eval()
    card = student_card(TEACHER_CARD, student, "ce", {"steps": 0}, {})
    assert card["architecture"] == "LiteUNet" and card["arch_kwargs"]["input_mean"] == TEACHER_CARD["normalisation"]["mean"]
    save_model(student, card, tmp_path)
    model, loaded = load_model(tmp_path)
    assert isinstance(model, LiteUNet) and loaded["profile"] == "fast"
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), student(x), atol=2e-2)  # weights ship as fp16
    rebuilt = build_module("LiteUNet", card["arch_kwargs"])
    assert torch.equal(rebuilt.in_shift, student.in_shift)


def test_lite_student_stays_a_fraction_of_the_teachers_cpu_time():
    student, teacher = LiteUNet(3, full_res_width=8).eval(), U2Net().eval()
    t_student, t_teacher = one_thread_cpu_seconds([student, teacher], torch.rand(1, 3, 128, 128), [3, 1])
    assert t_teacher >= 3 * t_student, (t_teacher, t_student)


def test_the_clis_student_choices_are_the_trainers():
    from geoseg.commands.train import STUDENT_NETWORKS
    from geoseg.training.distill import STUDENT_ARCHS

    assert STUDENT_NETWORKS == STUDENT_ARCHS


@pytest.mark.parametrize("options, words", [
    (["--student", "lite0"], ["--student chooses a new distilled student's network"]),
    (["--teacher", "t.json", "--student", "resnet"], ["--student must be one of fastsegnet, lite0"]),
])
def test_bad_student_options_fail_in_one_line(tmp_path, options, words):
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                      "--epochs", "1", *options])
    assert_usage_error(result, "train", *words)
    assert not (tmp_path / "m").exists()


def test_the_train_cli_distils_a_lite_student(tmp_path):
    """``geoseg train ... --teacher ... --student lite0`` trains one (real Dubai chips, a tiny teacher),
    records the choice in the card's command and where its encoder started."""
    from test_distill_training import dubai_chips, teacher_pair, write_chip_dir

    chips = write_chip_dir(tmp_path / "chips", {"train": dubai_chips(1, 4), "test": dubai_chips(6, 2)}, "landcover")
    teacher, tcard = teacher_pair("landcover")
    save_model(teacher, {**tcard, "name": "landcover-attresunet"}, tmp_path / "teacher")
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(tmp_path / "s"),
                                      "--teacher", str(tmp_path / "teacher"), "--epochs", "1", "--batch-size", "2",
                                      "--student", "lite0"])
    assert result.exit_code == 0, result.output
    card = json.loads(Path(tmp_path / "s" / "landcover-attresunet-fast-custom.json").read_text())
    assert card["architecture"] == "LiteUNet"
    assert "--student lite0" in card["metrics"]["command"]
    assert "ImageNet" in card["training"]["pretrained"] and "Apache-2.0" in card["credits"][-1]
    model, _ = load_model(tmp_path / "s")
    assert isinstance(model, LiteUNet)

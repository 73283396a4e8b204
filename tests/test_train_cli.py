"""`geoseg train` honours and records its options: a distilled student trains with the given
--batch-size and --crop, the card's command reproduces the run, bad options fail in one line."""
import json

import pytest
from typer.testing import CliRunner

from geoseg.card import save_model
from geoseg.cli import app
from test_distill_training import dubai_chips, teacher_pair, write_chip_dir


@pytest.fixture(scope="module")
def student_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    chips = write_chip_dir(root / "chips", {"train": dubai_chips(1, 4), "test": dubai_chips(6, 2)}, "landcover")
    teacher, tcard = teacher_pair("landcover")
    save_model(teacher, {**tcard, "name": "landcover-attresunet"}, root / "teacher")
    return root, chips


def run_student(root, chips, out, *options):
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / out),
                                      "--teacher", str(root / "teacher"), "--epochs", "1", *options])
    assert result.exit_code == 0, result.output
    return json.loads((root / out / "landcover-attresunet-fast.json").read_text())


def test_student_honours_batch_size_and_crop(student_setup):
    root, chips = student_setup
    card = run_student(root, chips, "b2", "--batch-size", "2", "--crop", "64")
    assert card["training"]["batch_size"] == 2 and card["training"]["crop"] == 64
    assert card["training"]["steps"] == 2  # one pass over 4 chips at batch 2

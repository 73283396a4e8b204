"""`geoseg train` honours and records its options: a distilled student trains with the given
--batch-size and --crop, the card's command reproduces the run, bad options fail in one line."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from geoseg.card import save_model
from geoseg.cli import app
from checks import assert_one_line_error, assert_usage_error
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
    return json.loads((root / out / "landcover-attresunet-fast-custom.json").read_text())


def ctrl_c_on_call(monkeypatch, module, name: str, n: int) -> None:
    """``module.name`` raises KeyboardInterrupt (Ctrl-C) on its ``n``-th call, runs as before until then."""
    real, calls = getattr(module, name), []

    def then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, then_ctrl_c)


def test_student_honours_batch_size_and_crop(student_setup):
    root, chips = student_setup
    card = run_student(root, chips, "b2", "--batch-size", "2", "--crop", "64")
    assert card["training"]["batch_size"] == 2 and card["training"]["crop"] == 64
    assert card["training"]["steps"] == 2  # one pass over 4 chips at batch 2


def test_student_card_records_the_full_command(student_setup):
    root, chips = student_setup
    card = run_student(root, chips, "cmd", "--batch-size", "2", "--crop", "64", "--seed", "3", "--losses", "ce")
    assert card["metrics"]["command"] == (
        f"geoseg train landcover --data {chips} --out {root / 'cmd'} --epochs 1 --device cpu --batch-size 2"
        f" --crop 64 --seed 3 --lr 0.003 --teacher {root / 'teacher'} --losses ce --label-loss ce")


def test_lr_sets_a_student_s_peak_learning_rate_and_its_card_records_it(student_setup, monkeypatch):
    """The learning rate was fixed in code (a student 3e-3, a teacher 2e-3): a fine-tune that wanted
    5e-4 (docs/models.md, session 24) could not be run from the command line."""
    from geoseg.training import distill as distill_module

    seen = []
    real = distill_module.distill
    monkeypatch.setattr(distill_module, "distill", lambda *a, **k: seen.append(k["lr"]) or real(*a, **k))
    root, chips = student_setup
    card = run_student(root, chips, "lr", "--batch-size", "2", "--crop", "64", "--losses", "ce", "--lr", "1e-4")
    assert seen == [1e-4] and card["training"]["lr"] == 1e-4
    assert "--seed 0 --lr 0.0001 --teacher" in card["metrics"]["command"]
    default = run_student(root, chips, "lr-default", "--batch-size", "2", "--crop", "64", "--losses", "ce")
    assert seen == [1e-4, 3e-3] and default["training"]["lr"] == 3e-3


def test_the_default_learning_rates_named_for_help_are_the_trainers():
    from geoseg.commands.train import STUDENT_LR, TEACHER_LR
    from geoseg.training import distill as distill_module
    from geoseg.training.loop import TrainConfig

    assert TEACHER_LR == TrainConfig(steps=1).lr and STUDENT_LR == distill_module.STUDENT_LR


def landcover_pack(path: Path, scene: str, per_split: int = 1) -> Path:
    """A pack of 48 px land-cover chips of Dubai's pixels and classes, without a GSD (as images without
    georeferencing give), their chips named after ``scene`` (``dubai_tile_1``: the shared set's),
    ``per_split`` of them in each of train, val and test."""
    from test_training_smoke import dubai_chips as dubai_arrays

    from geoseg.training.pack import encode_jpeg

    images, labels, splits = dubai_arrays(size=48, per_image=per_split)
    blobs = [encode_jpeg(a) for a in images]
    np.savez_compressed(
        path, jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=splits, area=splits,
        chip_id=np.array([f"{scene}_part{i}_r000_c000" for i in range(len(splits))]),
        gsd=np.full(len(splits), np.nan, np.float32), meta=np.array(json.dumps({"target": "landcover"})),
    )
    return path


def test_teacher_card_records_the_full_command(tmp_path):
    landcover_pack(tmp_path / "lc.npz", "dubai_tile_1")
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(tmp_path / "lc.npz"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2", "--crop", "32",
                                      "--seed", "5"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "landcover-attresunet-custom.json").read_text())
    assert card["metrics"]["command"] == (
        f"geoseg train landcover --data {tmp_path / 'lc.npz'} --out {tmp_path / 'm'} --epochs 1 --device cpu"
        " --batch-size 2 --crop 32 --seed 5 --lr 0.002")
    assert card["training"]["seed"] == 5 and card["training"]["batch_size"] == 2 and card["training"]["crop"] == 32
    assert card["training"]["data"] == str(tmp_path / "lc.npz") and card["training"]["lr"] == 2e-3
    # a teacher named with --name: its own card and files beside the first, the command says how
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(tmp_path / "lc.npz"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2", "--crop", "32",
                                      "--name", "dubai-lc"])
    assert result.exit_code == 0, result.output
    named = json.loads((tmp_path / "m" / "dubai-lc.json").read_text())
    assert named["name"] == "dubai-lc" and (tmp_path / "m" / "dubai-lc.pt").is_file()
    assert named["metrics"]["command"].endswith("--name dubai-lc")


def test_own_chips_without_a_gsd_need_gsd_and_the_card_says_it(tmp_path):
    """A team's land-cover images without georeferencing were trained into a card that said Dubai's
    estimated 1.1 m (and Dubai's note), so predict resampled the team's 0.3 m scenes to 1.1 m."""
    landcover_pack(tmp_path / "own.npz", "site")
    args = ["train", "landcover", "--data", str(tmp_path / "own.npz"), "--out", str(tmp_path / "m"), "--epochs", "1",
            "--batch-size", "2", "--crop", "32"]
    assert_one_line_error(CliRunner().invoke(app, args), "train", "the chips carry no GSD", "give --gsd METRES")
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(app, [*args, "--gsd", "0.3"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "landcover-attresunet-custom.json").read_text())
    assert card["gsd_m"] == 0.3 and "gsd_note" not in card and card["metrics"]["command"].endswith("--gsd 0.3")
    assert_usage_error(CliRunner().invoke(app, [*args, "--gsd", "nan"]), "train",
                       "--gsd must be a positive number of metres")
    # a student took its teacher's GSD unchecked: chips of 0.6 m photos were labelled by this 0.3 m
    # teacher at a scale it never saw, and the student's card said 0.3 m
    student = [*args[:5], str(tmp_path / "s"), *args[6:], "--teacher", str(tmp_path / "m")]
    assert_one_line_error(CliRunner().invoke(app, student), "train", "the chips carry no GSD",
                          "give --gsd METRES", "the 0.3 m the teacher landcover-attresunet-custom works at")
    assert_one_line_error(CliRunner().invoke(app, [*student, "--gsd", "0.6"]), "train",
                          "--gsd 0.6: the chips measure 0.6 m a pixel, the teacher landcover-attresunet-custom "
                          "works at 0.3 m")
    assert not (tmp_path / "s").exists()
    landcover_pack(tmp_path / "own.npz", "site", per_split=2)  # a student's batch norm needs 2 train chips
    distilled = CliRunner().invoke(app, [*student, "--gsd", "0.3"])  # what they measure, stated: it fits
    assert distilled.exit_code == 0, distilled.output
    student_card = json.loads((tmp_path / "s" / "landcover-attresunet-custom-fast.json").read_text())
    assert student_card["gsd_m"] == 0.3 and student_card["metrics"]["command"].endswith("--gsd 0.3")
    from geoseg.training.distill import check_teacher_fits
    check_teacher_fits(card, tmp_path / "own.npz", "landcover", 0.3)  # what they measure, stated: it fits
    dubai = landcover_pack(tmp_path / "dubai.npz", "dubai_tile_1")  # the shared set's: its ~1.1 m estimate
    check_teacher_fits(card | {"gsd_m": 1.1}, dubai, "landcover")
    with pytest.raises(ValueError, match="the Dubai chips measure about 1.1 m a pixel, the teacher "
                                         "landcover-attresunet-custom works at 0.3 m"):
        check_teacher_fits(card, dubai, "landcover")
    with pytest.raises(ValueError, match="card states no GSD to check it against"):  # a --gsd never dropped
        check_teacher_fits({k: v for k, v in card.items() if k != "gsd_m"}, tmp_path / "own.npz", "landcover", 0.3)
    georeferenced = buildings_pack(tmp_path / "b.npz")  # chips that carry theirs
    assert_one_line_error(CliRunner().invoke(app, ["train", "buildings", "--data", str(georeferenced), "--out",
                                                   str(tmp_path / "b"), "--epochs", "1", "--crop", "32", "--gsd", "0.3"]),
                          "train", "the chips carry their own GSD (0.3 m)")


@pytest.mark.parametrize("budget, message", [
    (["--minutes", "nan"], "--minutes/--epochs must be positive"),  # trained forever
    (["--minutes", "inf"], "--minutes/--epochs must be positive"),  # trained forever
    (["--minutes", "0"], "--minutes/--epochs must be positive"),
])
def test_a_budget_that_never_ends_is_refused(tmp_path, budget, message):
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "none"), "--out",
                                      str(tmp_path / "m"), *budget])
    assert_usage_error(result, "train", message)


@pytest.mark.parametrize("option, message", [
    (["--device", "gpu"], "--device must be auto, cpu or cuda, got 'gpu'"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--crop", "0"], "--crop must be at least 32 px, got 0"),
    # 0 never trained; nan made every weight nan; both ran to the end and wrote a card
    (["--lr", "0"], "--lr must be a positive, finite number, got 0"),
    (["--lr", "-1"], "--lr must be a positive, finite number, got -1"),
    (["--lr", "nan"], "--lr must be a positive, finite number, got nan"),
    (["--lr", "inf"], "--lr must be a positive, finite number, got inf"),
    (["--lr", "0", "--teacher", "none"], "--lr must be a positive, finite number, got 0"),
    # trained to the first step, then failed below the bar: "Expected more than 1 value per channel"
    (["--batch-size", "1", "--crop", "32"], "--batch-size 1 with --crop 32 leaves one pixel in the network's deepest "
                                            "stage, which batch norm cannot train on: use --crop 64 or more, or "
                                            "--batch-size 2"),
])
def test_bad_options_fail_in_one_line_before_training(tmp_path, option, message):
    """Checked before the data is even looked at: the chip directory here does not exist. A usage error
    (exit 2), as click's own for a value of the wrong type: it was exit 1, a failed run."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "none"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", *option])
    assert result.exit_code == 2
    assert result.output.strip() == f"geoseg train: error: {message} (see 'geoseg train --help')"
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("option, message", [
    (["--losses", "ce+kd"], "--losses must combine ce, ace, csc with '+' (e.g. ce+ace+csc), got 'ce+kd'"),
    (["--label-loss", "dice"], "--label-loss must be one of ce, teacher, got 'dice'"),
])
def test_bad_distillation_losses_fail_in_one_line_before_the_teacher_loads(tmp_path, option, message):
    """--losses was checked after the teacher and chips loaded, both below a drawn progress bar: the
    teacher and chip directory here do not exist, so only the check itself can answer."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                      "--teacher", str(tmp_path / "none"), "--epochs", "1", *option])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"geoseg train: error: {message} (see 'geoseg train --help')"
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("option", [["--losses", "ce"], ["--label-loss", "teacher"]])
def test_distillation_losses_without_a_teacher_are_refused(tmp_path, option):
    """--losses and --label-loss say "With --teacher": without one they were ignored and a teacher
    trained as if they had not been given. The chip directory here does not exist: refused first."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "none"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", *option])
    assert_usage_error(result, "train", "--losses and --label-loss choose a distilled student's terms: "
                                           "give them with --teacher")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("teacher, message", [
    ("none.json", "model card not found"),
    ("weights", "holds 3 buildings model cards"),  # the shipped folder: teacher, student and the accurate ensemble
])
def test_a_teacher_that_cannot_be_found_fails_in_one_line_without_a_bar(tmp_path, teacher, message):
    """A missing teacher card was found only once the distilling bar was drawn: two lines on stderr."""
    from geoseg.paths import weights_dir

    path = weights_dir() if teacher == "weights" else tmp_path / teacher
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                      "--teacher", str(path), "--epochs", "1"])
    assert_one_line_error(result, "train", message)
    assert not (tmp_path / "m").exists()


def test_device_auto_resolves_to_an_available_device(student_setup):
    root, chips = student_setup
    card = run_student(root, chips, "auto", "--device", "auto", "--losses", "ce")
    import torch  # noqa: PLC0415

    resolved = "cuda" if torch.cuda.is_available() else "cpu"
    assert card["training"]["device"] == resolved
    assert f"--device {resolved} " in card["metrics"]["command"]  # the device that ran, so the run reproduces


def test_student_training_shows_a_progress_bar(student_setup):
    root, chips = student_setup
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / "bar"),
                                      "--teacher", str(root / "teacher"), "--epochs", "2", "--batch-size", "2",
                                      "--losses", "ce"])
    assert result.exit_code == 0, result.output
    bar = [line for line in result.output.splitlines() if line.startswith("distilling landcover")]
    assert bar and "100%" in bar[-1] and "step 4 loss" in bar[-1], result.output


def test_ctrl_c_while_distilling_keeps_the_student_so_far(student_setup, monkeypatch):
    """Ctrl-C during `geoseg train ... --teacher` lost the whole student run (the teacher's loop
    kept its weights, the distillation loop did not): now the student so far is scored and written,
    its card says where it stopped, and the exit status says the run did not finish."""
    from geoseg.training import distill

    root, chips = student_setup
    ctrl_c_on_call(monkeypatch, distill, "photometric_augment", 3)
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / "stop"),
                                      "--teacher", str(root / "teacher"), "--epochs", "5", "--batch-size", "2",
                                      "--crop", "64", "--losses", "ce"])
    assert result.exit_code == 130, result.output
    card = json.loads((root / "stop" / "landcover-attresunet-fast-custom.json").read_text())
    assert card["training"]["steps"] == 2 and card["training"]["interrupted"] == "Ctrl-C at step 2, 20% of the budget"
    assert (root / "stop" / "landcover-attresunet-fast-custom.pt").is_file() and "test" in card["metrics"]
    assert result.stderr.strip().splitlines()[-1].startswith("geoseg train: interrupted (Ctrl-C at step 2")


def test_name_gives_the_model_its_own_name(student_setup):
    """Every trained model was called buildings-u2net / landcover-attresunet(-fast), like the
    shipped ones: two of a team's models could not sit in one folder, and the class map's model tag
    named the shipped model. --name names the card and its files."""
    root, chips = student_setup
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / "named"),
                                      "--teacher", str(root / "teacher"), "--epochs", "1", "--losses", "ce",
                                      "--name", "coast-2026.v1"])
    assert result.exit_code == 0, result.output
    card = json.loads((root / "named" / "coast-2026.v1.json").read_text())
    assert card["name"] == "coast-2026.v1" and card["weights"] == "coast-2026.v1.pt"
    assert (root / "named" / "coast-2026.v1.pt").is_file()
    assert card["metrics"]["command"].endswith("--name coast-2026.v1")
    for bad in ("../x", ".hidden", "a b"):  # an empty --name is a usage error (test_cli.py)
        result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / "bad"),
                                          "--epochs", "1", "--name", bad])
        assert_usage_error(result, "train", "--name must be")


def test_mixed_gsd_chips_fail_in_one_line(tmp_path):
    from test_training_card_truth import building_chips  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from geoseg.training.pack import encode_jpeg  # noqa: PLC0415

    data = building_chips([0.3, 0.6, 0.3])
    blobs = [encode_jpeg(a) for a in data["images"]]
    np.savez_compressed(
        tmp_path / "b.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=data["labels"], split=data["split"],
        area=data["area"], chip_id=data["chip_id"], gsd=data["gsd"], meta=np.array(json.dumps({"target": "buildings"})),
    )
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "b.npz"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2", "--crop", "32"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("geoseg train: error: chips of mixed GSD (0.3-0.6 m): cut them at one --gsd")


def buildings_pack(path, gsd: float = 0.3, empty: tuple[str, ...] = (), bands: list[int] | None = None):
    """A pack of three random 32 px building chips (train, val, test) at one GSD (cut with ``bands``,
    else the rasters' own red, green, blue); the chips of the splits in ``empty`` hold no building
    (labels all background)."""
    import numpy as np
    from test_training_card_truth import building_chips

    from geoseg.training.pack import encode_jpeg

    data = building_chips([gsd] * 3)
    data["labels"][np.isin(data["split"], empty)] = 0
    blobs = [encode_jpeg(a) for a in data["images"]]
    np.savez_compressed(
        path, jpeg=np.frombuffer(b"".join(blobs), np.uint8), jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]),
        labels=data["labels"], split=data["split"], area=data["area"], chip_id=data["chip_id"], gsd=data["gsd"],
        meta=np.array(json.dumps({"target": "buildings", **({"bands": bands} if bands else {})})),
    )
    return path


def test_lr_sets_a_teacher_s_peak_learning_rate_and_its_card_records_it(tmp_path, monkeypatch):
    """A fine-tune of the shipped U2-Net wanted lr 5e-4 (docs/models.md, session 24), set then by a
    script patching ``TrainConfig.lr``: ``geoseg train`` had no --lr."""
    import torch

    peaks = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: peaks.append(k["lr"]) or real(*a, **k))
    pack = buildings_pack(tmp_path / "b.npz")
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(pack), "--out", str(tmp_path / "m"),
                                      "--epochs", "1", "--batch-size", "2", "--crop", "32", "--lr", "1e-4"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())
    assert peaks == [1e-4] and card["training"]["lr"] == 1e-4
    assert card["metrics"]["command"].endswith("--crop 32 --seed 0 --lr 0.0001")


def test_init_fine_tunes_a_teacher_from_a_card(tmp_path):
    """--init was read only with --teacher: `geoseg train buildings --init <card>` trained from random
    weights with the default architecture and said nothing, even for a path that did not exist."""
    from test_training_card_truth import TINY_U2NET

    from geoseg.card import BUILDING_CLASSES
    from geoseg.models.u2net import U2Net

    pack = buildings_pack(tmp_path / "b.npz")
    norm = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    start = save_model(U2Net(**TINY_U2NET), {"name": "mine", "task": "buildings", "architecture": "U2Net",
                                            "arch_kwargs": TINY_U2NET, "classes": BUILDING_CLASSES,
                                            "normalisation": norm, "credits": ["Labels: the start's own"]},
                       tmp_path / "start")
    base = ["train", "buildings", "--data", str(pack), "--epochs", "1", "--batch-size", "2", "--crop", "32"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "m"), "--init", str(start)])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())
    assert card["arch_kwargs"] == TINY_U2NET and card["normalisation"] == norm
    assert card["training"]["init"] == str(start.resolve()) and card["metrics"]["command"].endswith(f"--init {start}")
    assert card["credits"][-1] == "Labels: the start's own"
    labels = tmp_path / "a_labels.gpkg"  # an existing file that is not a card
    labels.write_bytes(b"not a card")
    for init, message in ((tmp_path / "nowhere", "--init: no model directory or card at"),
                          (labels, "--init: no model directory or card at"),
                          (tmp_path / "start", None)):
        if message is None:  # a card of another task
            card = json.loads(start.read_text()) | {"task": "landcover"}
            start.write_text(json.dumps(card))
            message = "is a landcover model, not buildings"
        result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x"), "--init", str(init)])
        assert_one_line_error(result, "train", message)


def test_init_of_another_gsd_or_bands_is_refused(tmp_path):
    """A 0.3 m model of bands 4,3,2 given as --init fine-tuned on chips cut at 0.6 m, or with --bands
    1,2,3, in silence: the run taught it another scale or other bands, and its card said the chips' GSD
    and bands as if the start knew them. Both are refused in one line before training (as --teacher
    is); chips within 5 % of the card's GSD and of its bands train."""
    from test_training_card_truth import TINY_U2NET

    from geoseg.card import BUILDING_CLASSES
    from geoseg.models.u2net import U2Net

    start = save_model(U2Net(**TINY_U2NET), {"name": "start", "task": "buildings", "architecture": "U2Net",
                                            "arch_kwargs": TINY_U2NET, "classes": BUILDING_CLASSES, "gsd_m": 0.3,
                                            "bands": [4, 3, 2], "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}},
                       tmp_path / "start")
    base = ["train", "buildings", "--epochs", "1", "--batch-size", "2", "--crop", "32", "--init", str(start)]
    for pack, message in ((buildings_pack(tmp_path / "g.npz", gsd=0.6, bands=[4, 3, 2]), "the chips were cut at 0.6 m, --init "),
                          (buildings_pack(tmp_path / "b.npz", bands=[1, 2, 3]),
                           "the chips were cut with --bands 1,2,3, --init ")):
        result = CliRunner().invoke(app, [*base, "--data", str(pack), "--out", str(tmp_path / "x")])
        assert_one_line_error(result, "train", message)
        assert not (tmp_path / "x").exists()
    fits = CliRunner().invoke(app, [*base, "--data", str(buildings_pack(tmp_path / "ok.npz", gsd=0.3 * 1.04,
                                                                        bands=[4, 3, 2])), "--out", str(tmp_path / "m")])
    assert fits.exit_code == 0, fits.output


def test_ctrl_c_keeps_the_weights_so_far(tmp_path, monkeypatch):
    """Ctrl-C during `geoseg train` lost the whole run: exit 130, no message, nothing written. The
    weights so far are now scored and written, the card says where the run stopped, and the exit
    status still says it did not finish."""
    from test_training_card_truth import TINY_U2NET

    from geoseg.card import BUILDING_CLASSES
    from geoseg.models.u2net import U2Net
    from geoseg.training import loop

    start = save_model(U2Net(**TINY_U2NET), {"name": "tiny", "task": "buildings", "architecture": "U2Net",
                                            "arch_kwargs": TINY_U2NET, "classes": BUILDING_CLASSES,
                                            "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}},
                       tmp_path / "start")
    ctrl_c_on_call(monkeypatch, loop, "augment_batch", 3)
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "m"), "--epochs", "50", "--batch-size", "2",
                                      "--crop", "32", "--init", str(start)])
    assert result.exit_code == 130, result.output
    card = json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())
    assert card["training"]["steps"] == 2 and card["training"]["interrupted"] == "Ctrl-C at step 2, 4% of the budget"
    assert (tmp_path / "m" / "buildings-u2net-custom.pt").is_file()
    assert result.stderr.strip().splitlines()[-1].startswith("geoseg train: interrupted (Ctrl-C at step 2")


def test_val_chips_without_a_labelled_pixel_are_refused(tmp_path):
    """Land-cover val chips that are all 'unlabeled' scored NaN at every validation: the run went to
    the end and wrote a card with val mIoU -1.0 (the initial best) and NaN in its history."""
    from geoseg.training.pack import encode_jpeg

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 3, 32, 32), np.uint8)
    labels = rng.integers(1, 6, (3, 32, 32), np.uint8)
    labels[1] = 0  # the val chip
    blobs = [encode_jpeg(a) for a in images]
    splits = np.array(["train", "val", "test"])
    np.savez_compressed(
        tmp_path / "lc.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=splits, area=splits,
        chip_id=np.array(["c0", "c1", "c2"]), gsd=np.full(3, np.nan, np.float32),
        meta=np.array(json.dumps({"target": "landcover"})),
    )
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(tmp_path / "lc.npz"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", "--crop", "32"])
    assert_one_line_error(result, "train", "its 1 val chips hold no labelled pixel")
    assert not (tmp_path / "m").exists()


def test_an_out_that_cannot_be_written_fails_before_training(tmp_path, monkeypatch):
    """`--out` naming a file trained for the whole budget, then failed with "[Errno 17] File exists"."""
    from geoseg.training import loop

    def no_training(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr(loop, "train_segmenter", no_training)
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "afile"), "--epochs", "1", "--crop", "32"])
    assert_one_line_error(result, "train", "is a file, not a folder")


def test_a_crop_larger_than_the_chips_is_refused(tmp_path):
    """128 px chips with the default --crop 256 trained on every sample magnified 2x (the crop window
    is clamped to the chip, then resized up): a 0.3 m card for a model that saw 0.15 m pixels."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "m"), "--epochs", "1", "--crop", "64"])
    assert_one_line_error(result, "train", "--crop 64 px is larger than the chips (32 px)", "--crop 32 or less")
    assert not (tmp_path / "m").exists()


def test_without_crop_chips_smaller_than_the_default_train_at_their_own_side(tmp_path):
    """`geoseg tile --size 128` then `geoseg train` without --crop was refused (the default 256 was
    larger than the chips); the crop is now the chips' side there, and the card's command says so."""
    pack = buildings_pack(tmp_path / "b.npz")
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(pack), "--out", str(tmp_path / "m"),
                                      "--epochs", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())
    assert card["training"]["crop"] == 32
    assert card["metrics"]["command"].endswith("--batch-size 2 --crop 32 --seed 0 --lr 0.002")


def test_without_crop_chips_under_the_minimum_crop_are_refused(tmp_path):
    """16 px chips (geoseg tile --size 16) took a default crop of 16, under the 32 px an explicit --crop
    is refused below, and failed inside the network."""
    import numpy as np
    from test_training_card_truth import building_chips

    from geoseg.training.pack import encode_jpeg

    data = building_chips([0.3] * 3)
    images, labels = data["images"][..., :16, :16].copy(), data["labels"][..., :16, :16].copy()
    blobs = [encode_jpeg(a) for a in images]
    np.savez_compressed(
        tmp_path / "b.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=data["split"],
        area=data["area"], chip_id=data["chip_id"], gsd=data["gsd"], meta=np.array(json.dumps({"target": "buildings"})))
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "b.npz"), "--out",
                                      str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2"])
    assert_one_line_error(result, "train", "the chips are 16 px, under the 32 px crop", "geoseg tile --size")
    assert not (tmp_path / "m").exists()


def test_sigterm_keeps_the_weights_so_far_as_ctrl_c_does(tmp_path, monkeypatch):
    """SIGTERM (timeout, systemctl stop, a cancelled CI job) ended `geoseg train` at once: Python's
    default action, nothing written, minutes or hours of training lost, while Ctrl-C kept them. Now
    it stops the run as Ctrl-C does: the weights so far are written, the card says SIGTERM, one line,
    exit 143."""
    import os
    import signal

    from geoseg.training import loop

    class OldDefault(Exception):
        """Stands for Python's default action (the end of this test process) had SIGTERM not been handled."""

    def default(signum, frame):
        raise OldDefault

    calls = []
    augment = loop.augment_batch

    def augment_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return augment(*args, **kwargs)

    monkeypatch.setattr(loop, "augment_batch", augment_then_sigterm)
    previous = signal.signal(signal.SIGTERM, default)
    try:
        result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                          "--out", str(tmp_path / "m"), "--epochs", "50", "--batch-size", "2",
                                          "--crop", "32"])
        assert signal.getsignal(signal.SIGTERM) is default  # given back after the command
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, (result.exception, result.output)
    card = json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())
    assert card["training"]["steps"] == 2 and card["training"]["interrupted"] == "SIGTERM at step 2, 4% of the budget"
    assert (tmp_path / "m" / "buildings-u2net-custom.pt").is_file()
    assert result.stderr.strip().splitlines()[-1].startswith("geoseg train: terminated (SIGTERM at step 2, 4% of")


def test_a_student_s_card_names_the_bands_its_chips_were_cut_with(student_setup, tmp_path):
    """A student distilled on chips cut with `geoseg tile --bands 4,3,2` copied its teacher's bands
    (1,2,3 for the shipped teachers), so predict fed it the raster's bands 1,2,3; a teacher trained
    on other bands than the chips' is refused before it sees them."""
    import shutil

    root, chips = student_setup
    mine = shutil.copytree(chips, tmp_path / "chips")
    index = json.loads((mine / "index.geojson").read_text())
    for feature in index["features"]:
        feature["properties"]["bands"] = [4, 3, 2]
    (mine / "index.geojson").write_text(json.dumps(index))
    card = run_student(root, mine, "bands", "--batch-size", "2", "--crop", "64", "--losses", "ce")
    assert card["bands"] == [4, 3, 2]
    other = json.loads((root / "teacher" / "landcover-attresunet.json").read_text()) | {"bands": [3, 2, 1]}
    shutil.copytree(root / "teacher", tmp_path / "teacher")
    (tmp_path / "teacher" / "landcover-attresunet.json").write_text(json.dumps(other))
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(mine), "--out", str(tmp_path / "x"),
                                      "--teacher", str(tmp_path / "teacher"), "--epochs", "1"])
    assert_one_line_error(result, "train", "the chips were cut with --bands 4,3,2",
                          "trained on bands 3,2,1: it would see other bands")


def test_a_teacher_of_other_classes_or_another_gsd_than_the_chips_is_refused(student_setup, tmp_path):
    """A student takes its teacher's classes and GSD into its card. Dubai's teacher distilled on a
    team's chips of classes built / natural trained 'built' as 'building' and 'natural' as 'road'
    under a card naming Dubai's six; a 0.3 m teacher on chips cut at 0.6 m gave a card saying 0.3 m,
    the scale predict resamples scenes to. Both are refused in one line before the bar, nothing written."""
    import shutil

    root, chips = student_setup
    three = shutil.copytree(chips, tmp_path / "three")
    (three / "classes.json").write_text(json.dumps([{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "built"},
                                                    {"index": 2, "name": "natural"}]))
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(three), "--out", str(tmp_path / "x"),
                                      "--teacher", str(root / "teacher"), "--epochs", "1"])
    assert_one_line_error(result, "train", "the teacher landcover-attresunet predicts building, road, vegetation, "
                                           "water, land; the chips hold built, natural")
    coarse = shutil.copytree(chips, tmp_path / "coarse")
    index = json.loads((coarse / "index.geojson").read_text())
    for feature in index["features"]:
        feature["properties"]["gsd"] = 0.6
    (coarse / "index.geojson").write_text(json.dumps(index))
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(coarse), "--out", str(tmp_path / "x"),
                                      "--teacher", str(root / "teacher"), "--epochs", "1"])
    assert_one_line_error(result, "train", "the chips were cut at 0.6 m, the teacher landcover-attresunet works at "
                                           "0.3 m", "--gsd 0.3")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("empty, message", [
    (("train", "val", "test"), "its 1 train chips hold no building pixel: nothing to learn"),
    (("val",), "its 1 val chips hold no building pixel: nothing to choose the model on"),
])
def test_building_chips_without_a_building_are_refused(tmp_path, empty, message):
    """Building chips that were all `empty` (labels of another place, a --labels-where matching no
    roof near the scenes) trained to the end and wrote a card of val binary mIoU 0.0, exit 0: a
    model that never saw a building. Val chips without one would choose the model that finds none."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz",
                                                                                          empty=empty)),
                                      "--out", str(tmp_path / "m"), "--epochs", "1", "--crop", "32"])
    assert_one_line_error(result, "train", message)
    assert not (tmp_path / "m").exists()


def test_scoring_the_val_and_test_chips_shows_on_the_bar(tmp_path):
    """Once the budget was spent the bar sat at 100 %, 0:00:00 left, while the weights were scored on
    the val and test chips with no sign of life (on the CPU, --minutes 0.1 on Dubai's 225 val and 144
    test chips ran 6 min 50 s). Each split's scoring is now a row of its own, chips done of its chips."""
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "m"), "--epochs", "1", "--crop", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split("━")[0].strip(): line for line in result.stderr.splitlines() if "━" in line}
    assert rows.keys() == {"training buildings", "scoring val", "scoring test"}, result.stderr
    assert "100%" in rows["scoring val"] and "1/1 chips" in rows["scoring val"]
    assert "100%" in rows["scoring test"] and "1/1 chips" in rows["scoring test"]


def test_the_shipped_models_folder_is_refused_as_out(tmp_path, monkeypatch):
    """`geoseg train buildings --out geoseg/weights` replaced the shipped buildings-u2net.pt and its card
    (tuned rules included) with the run's weights, without a word. The weights folder is a copy here."""
    import shutil

    from geoseg import paths

    shipped = tmp_path / "weights"
    shipped.mkdir()
    shutil.copy(paths.weights_dir() / "buildings-u2net.json", shipped)
    monkeypatch.setattr(paths, "weights_dir", lambda: shipped)
    before = (shipped / "buildings-u2net.json").read_bytes()
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "." / "weights"), "--epochs", "1", "--crop", "32"])
    assert_one_line_error(result, "train", "is the folder of the shipped models")
    # a folder inside it put a model's files into the package too
    inside = CliRunner().invoke(app, ["train", "buildings", "--data", str(tmp_path / "b.npz"),
                                      "--out", str(shipped / "sub"), "--epochs", "1", "--crop", "32"])
    assert_one_line_error(inside, "train", "is in the folder of the shipped models")
    assert (shipped / "buildings-u2net.json").read_bytes() == before
    assert sorted(p.name for p in shipped.iterdir()) == ["buildings-u2net.json"]


def test_a_model_of_another_task_is_not_replaced_under_its_name(tmp_path):
    """``geoseg train buildings --name mine-lc`` replaced the land-cover model mine-lc in --out with a
    building one, without a word."""
    from geoseg.paths import weights_dir

    out = tmp_path / "models"
    out.mkdir()
    (out / "mine-lc.json").write_bytes((weights_dir() / "landcover-attresunet-fast.json").read_bytes())
    before = (out / "mine-lc.json").read_bytes()
    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(out), "--epochs", "1", "--crop", "32", "--name", "mine-lc"])
    assert_one_line_error(result, "train", "mine-lc.json is a landcover model", "a buildings model named mine-lc",
                          "another --name")
    assert (out / "mine-lc.json").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["mine-lc.json"]


def test_a_student_s_credits_name_its_chips_as_well_as_its_teacher(student_setup):
    """A student distilled on a team's own chips was credited with its teacher's data alone (the
    shipped teacher's OpenAerialMap / OpenStreetMap, or Dubai's), as if it had seen no other; its card
    now says its chips' licences were not recorded, before the teacher's credits, as a fine-tuned
    teacher's card does with its --init model's."""
    from geoseg.card import CREDITS_LANDCOVER

    root, chips = student_setup
    card = run_student(root, chips, "credits", "--losses", "ce")
    assert card["credits"] == [f"Training data: {chips} (areas dubai); its licences were not recorded",
                               *CREDITS_LANDCOVER]


def test_scoring_a_student_shows_on_the_bar(student_setup):
    """A student's val and test chips were scored after its bar reached 100 %, with no sign of it."""
    root, chips = student_setup
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(root / "scored"),
                                      "--teacher", str(root / "teacher"), "--epochs", "1", "--losses", "ce"])
    assert result.exit_code == 0, result.output
    rows = {line.split("━")[0].strip(): line for line in result.stderr.splitlines() if "━" in line}
    assert rows.keys() == {"distilling landcover", "scoring test"}, result.stderr
    assert "100%" in rows["scoring test"] and "2/2 chips" in rows["scoring test"]


def test_ctrl_c_of_a_retrain_keeps_the_finished_model_of_its_name(tmp_path, monkeypatch):
    """A team retraining into the folder of its finished model (same name) that pressed Ctrl-C a few
    steps in had that model replaced by the run's first steps. The interrupted run is now written
    beside it as <name>-interrupted; a finished run still replaces it (retraining in place)."""
    from geoseg.training import loop

    pack = buildings_pack(tmp_path / "b.npz")
    base = ["train", "buildings", "--data", str(pack), "--out", str(tmp_path / "m"), "--batch-size", "2",
            "--crop", "32", "--name", "mine"]
    assert CliRunner().invoke(app, [*base, "--epochs", "1"]).exit_code == 0
    finished = (tmp_path / "m" / "mine.pt").read_bytes(), (tmp_path / "m" / "mine.json").read_text()
    ctrl_c_on_call(monkeypatch, loop, "augment_batch", 2)
    result = CliRunner().invoke(app, [*base, "--epochs", "50"])
    assert result.exit_code == 130, result.output
    assert ((tmp_path / "m" / "mine.pt").read_bytes(), (tmp_path / "m" / "mine.json").read_text()) == finished
    card = json.loads((tmp_path / "m" / "mine-interrupted.json").read_text())
    assert card["name"] == "mine-interrupted" and card["weights"] == "mine-interrupted.pt"
    assert card["training"]["interrupted"].startswith("Ctrl-C at step 1")
    assert card["training"]["kept_beside"] == str(tmp_path / "m" / "mine.json")
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"the weights so far are in {tmp_path / 'm' / 'mine-interrupted.json'} ({tmp_path / 'm' / 'mine.json'}, "
        f"the model of that name already there, is kept)")


def test_a_model_fine_tuned_in_place_records_the_weights_it_started_from(tmp_path):
    """`--init models/mine.json --out models --name mine` wrote a card whose training.init named itself:
    nothing said which weights the run started from, nor how many steps they had had."""
    import hashlib

    pack = buildings_pack(tmp_path / "b.npz")
    base = ["train", "buildings", "--data", str(pack), "--out", str(tmp_path / "m"), "--epochs", "1",
            "--batch-size", "2", "--crop", "32", "--name", "mine"]
    assert CliRunner().invoke(app, base).exit_code == 0
    first = json.loads((tmp_path / "m" / "mine.json").read_text())
    sha = hashlib.sha256((tmp_path / "m" / "mine.pt").read_bytes()).hexdigest()
    result = CliRunner().invoke(app, [*base, "--init", str(tmp_path / "m" / "mine.json")])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "mine.json").read_text())
    assert card["training"]["init_model"] == {"name": "mine", "date": first["date"], "steps": 1,
                                              "weights_sha256": sha}


def test_a_student_s_card_names_the_areas_of_its_splits(student_setup):
    """A student's card gave only chip counts per split ({"train": 4, "test": 2}), so it could not say
    which area its test figure came from; it names each split's areas, and the counts as `chips`, as a
    teacher's card does."""
    root, chips = student_setup
    card = run_student(root, chips, "splits", "--losses", "ce")
    assert card["training"]["splits"] == {"train": "dubai", "val": "none", "test": "dubai"}
    assert card["training"]["chips"] == {"train": 4, "test": 2}


def test_a_card_names_its_paths_absolutely_and_predicts_from_another_folder(tmp_path, monkeypatch):
    """A card trained with `--data b.npz --out models` recorded `b.npz` and `--out models` (its data,
    its command, its --init), which named nothing once the card was read from another folder or moved
    to another machine. The paths are absolute, and `geoseg predict --model buildings=CARD` runs the
    model moved with its weights to another folder, from another working directory."""
    import shlex
    import shutil

    from test_cli_predict import KAMPALA

    (tmp_path / "work").mkdir()
    buildings_pack(tmp_path / "work" / "b.npz")
    monkeypatch.chdir(tmp_path / "work")
    base = ["train", "buildings", "--data", "b.npz", "--epochs", "1", "--batch-size", "2", "--crop", "32"]
    assert CliRunner().invoke(app, [*base, "--out", "first", "--name", "start"]).exit_code == 0
    result = CliRunner().invoke(app, [*base, "--out", "models", "--name", "mine", "--init", "first/start.json"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "work" / "models" / "mine.json").read_text())
    work = (tmp_path / "work").resolve()
    assert card["training"]["data"] == str(work / "b.npz")
    assert card["training"]["init"] == str(work / "first" / "start.json")
    command = shlex.split(card["metrics"]["command"])
    assert [command[command.index(o) + 1] for o in ("--data", "--out", "--init")] == [
        str(work / "b.npz"), str(work / "models"), str(work / "first" / "start.json")]
    shutil.move(tmp_path / "work" / "models", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    scene = KAMPALA / "kampala_z19_2.tif"  # 256 px: the untrained U2-Net runs in torch here
    result = CliRunner().invoke(app, ["predict", str(scene), "--out", "r", "--model", "buildings=../moved/mine.json",
                                      "--no-classmap", "--runtime", "torch"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "elsewhere" / "r" / "report.json").read_text())
    assert report["models"]["buildings"]["name"] == "mine"


def test_a_model_trained_without_a_name_is_not_named_as_a_shipped_one(student_setup, tmp_path):
    """Without --name a team's model was named buildings-u2net (a student of the shipped teacher
    buildings-u2net-fast), files and card as the shipped model's: its report could not tell them apart
    and `geoseg serve --models` refused two models of one name. Such a default name gets -custom; a
    name that no shipped model has (a student of the team's own teacher) and an explicit --name stay."""
    from api.catalog import ModelCatalog

    pack = buildings_pack(tmp_path / "b.npz")
    base = ["train", "buildings", "--data", str(pack), "--epochs", "1", "--batch-size", "2", "--crop", "32"]
    assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "m")]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "m").glob("*.*")) == ["buildings-u2net-custom.json",
                                                                   "buildings-u2net-custom.pt"]
    assert json.loads((tmp_path / "m" / "buildings-u2net-custom.json").read_text())["name"] == "buildings-u2net-custom"
    assert {m.name for m in ModelCatalog.load(tmp_path / "m").models} >= {"buildings-u2net", "buildings-u2net-custom"}
    root, chips = student_setup
    assert run_student(root, chips, "s1", "--losses", "ce")["name"] == "landcover-attresunet-fast-custom"
    save_model(*teacher_pair("landcover")[:1], {**teacher_pair("landcover")[1], "name": "ours"}, tmp_path / "ours")
    result = CliRunner().invoke(app, ["train", "landcover", "--data", str(chips), "--out", str(tmp_path / "s2"),
                                      "--teacher", str(tmp_path / "ours"), "--epochs", "1", "--losses", "ce"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s2" / "ours-fast.json").read_text())["name"] == "ours-fast"
    assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "n"), "--name", "buildings-u2net"]).exit_code == 0
    assert (tmp_path / "n" / "buildings-u2net.json").is_file()


def test_a_card_s_tile_size_is_the_side_its_chips_were_cut_at(student_setup, tmp_path):
    """Every trained card said tile_size 512 whatever the chips were cut at (geoseg tile --size), and
    predict reads at least the card's tile_size around every tile: a model validated on 32 px chips was
    run on 512 px windows at --tile-size 64 (and one validated on 1024 px chips on 512 px windows). The
    card records the chips' side, a student's too, and predict's windows follow it; no window is added."""
    from geoseg.options import PredictOptions
    from geoseg.tiled_inference import plan_tiles

    result = CliRunner().invoke(app, ["train", "buildings", "--data", str(buildings_pack(tmp_path / "b.npz")),
                                      "--out", str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2",
                                      "--crop", "32", "--name", "mine"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "mine.json").read_text())
    assert card["tile_size"] == 32 and "window" not in card
    plan = plan_tiles(512, 512, card, PredictOptions(tile_size=64, overlap=0))
    assert (plan.side_x, plan.mx, plan.my) == (64, 0, 0)  # 64 px windows: more than the chips it was chosen on
    root, chips = student_setup  # Dubai chips of SIZE px, a teacher whose card says 512
    assert run_student(root, chips, "window", "--losses", "ce")["tile_size"] == dubai_chips(1, 1).images.shape[-1]


def test_the_training_row_counts_down_the_time_the_loop_tells(tmp_path):
    """The training row showed rich's guess from the fraction of steps done: 0:00 while validation
    passes still ran, and frozen during each pass. It shows the time the loop tells (passes included),
    counted down between updates; a row without one (a split's scoring) keeps rich's guess."""
    import time

    from rich.console import Console

    from geoseg.commands.train import TimeLeftColumn

    bar = Progress(TimeLeftColumn(), console=Console(file=io.StringIO()))
    told = bar.add_task("", total=1.0, deadline=time.monotonic() + 90.2)
    guessed = bar.add_task("", total=1.0)
    column = TimeLeftColumn()
    assert str(column.render(bar.tasks[told])) == "0:01:30"
    bar.tasks[told].fields["deadline"] = time.monotonic() - 5  # passed: 0, never negative
    assert str(column.render(bar.tasks[told])) == "0:00:00"
    assert str(column.render(bar.tasks[guessed])) == "-:--:--"


def test_train_warns_of_chips_cut_before_their_labels_changed(tmp_path):
    """A team corrected its labels and re-ran the tile command of its training scenes: the validation
    scene cut from the same file kept its chips of the old labels, and train chose the model on them
    without a word."""
    import geopandas as gpd

    from geoseg.paths import data_root

    import rasterio
    from rasterio.windows import Window

    shared = data_root() / "buildings" / "kampala"
    kampala = tmp_path / "kampala"  # at most 256 px square of each scene: 16 chips each, not 96 for z19_1
    kampala.mkdir()
    for n in (1, 2):
        with rasterio.open(shared / f"kampala_z19_{n}.tif") as src:
            window = Window(0, 0, min(256, src.width), min(256, src.height))
            profile = {**src.profile, "width": 256, "height": 256, "transform": src.window_transform(window)}
            with rasterio.open(kampala / f"kampala_z19_{n}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    labels = tmp_path / "buildings.gpkg"
    gpd.read_file(shared / "labels.geojson").to_file(labels)
    chips = tmp_path / "chips"
    runs = {split: ["tile", str(kampala / f"kampala_z19_{n}.tif"), "--labels", str(labels), "--out", str(chips),
                    "--size", "64", "--split", split, "--scheduler", "sync"] for split, n in (("train", 2), ("val", 1))}
    for args in runs.values():
        assert CliRunner().invoke(app, args).exit_code == 0
    train = ["train", "buildings", "--data", str(chips), "--out", str(tmp_path / "m"), "--epochs", "1", "--crop", "32",
             "--batch-size", "4"]
    assert "warning" not in CliRunner().invoke(app, train).stderr
    frame = gpd.read_file(labels)
    frame.iloc[: len(frame) // 2].to_file(labels)  # half the buildings taken out: the labels corrected
    stale = CliRunner().invoke(app, train)
    assert stale.exit_code == 0, stale.output
    assert (f"warning: the chips of 2 scenes in {chips} were cut before files they come from changed: "
            "kampala_z19_1.tif (buildings.gpkg), kampala_z19_2.tif (buildings.gpkg)") in stale.stderr
    assert CliRunner().invoke(app, runs["train"]).exit_code == 0  # the training scene cut again
    assert "were cut before files they come from changed: kampala_z19_1.tif (buildings.gpkg);" in CliRunner().invoke(
        app, train).stderr

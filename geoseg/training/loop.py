"""Training loops: buildings U2-Net, land-cover AttResUNet (the GCN's: ``geoseg.training.graphs``).

Shared recipe (CPU or CUDA): fixed seed; training chips resident on the device as uint8;
GPU-side augmentation (:mod:`geoseg.augment`); AdamW with warm-up + cosine decay on a
*wall-clock or step* schedule; bf16 autocast and channels-last on CUDA; validation on the
held-out area every few seconds, keeping the best weights (model selection on ``val``,
never on ``test``). No rasterio/typer imports: this runs on the GPU machine.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.augment import AugmentConfig, augment_batch
from geoseg.card import (
    BUILDING_CLASSES,
    DEFAULT_BANDS,
    LANDCOVER_CLASSES,
    landcover_card_classes,
)
from geoseg.losses import CEDiceLoss
from geoseg.models.attresunet import AttResUNet
from geoseg.models.u2net import U2Net
from geoseg.training.chip_provenance import (
    DUBAI_GSD_M,
    DUBAI_GSD_NOTE,
    chip_window,
    data_credits,
    data_source,
    data_splits,
    working_gsd,
)
from geoseg.training.data import IGNORE_INDEX, channel_stats, select
from geoseg.training.forward_batches import chips_per_forward
from geoseg.training.metrics import boundary_counts, boundary_f, building_iou, confusion, landcover_scores

Log = Callable[[str], None]
#: ``scoring(split, chips_done, chips_total)``: told after each batch while a split's chips are scored
#: (the validations during and after training, the test chips), so a progress bar can show them
Scoring = Callable[[str, int, int], None]
ChipsDone = Callable[[int], None]
#: ``time_left(seconds)``: told after each step and each validation how long training should still last,
#: the validation passes to come included (each as long as the last one, the first estimated), so a
#: bar's time left does not say 0:00 while they run
TimeLeft = Callable[[float], None]


def label_loss(task: str, ignore_index: int, n_classes: int = len(LANDCOVER_CLASSES)) -> CEDiceLoss:
    """The teachers' loss against the labels (students use it with ``label_loss='teacher'``).

    Buildings: CE weighted 1/1/2 (background, interior, outline) + Dice on interior and outline,
    so the thin outline band that separates touching houses is not drowned by background.
    Land cover: CE + 0.5 x Dice on the classes 1..n_classes-1 (small classes count; Dubai: five).
    """
    if task == "buildings":
        return CEDiceLoss(3, ignore_index, class_weights=[1.0, 1.0, 2.0], dice_classes=[1, 2])
    if task == "landcover":
        return CEDiceLoss(n_classes, ignore_index, dice_classes=list(range(1, n_classes)), dice_weight=0.5)
    raise ValueError(f"unknown task {task!r}")


@dataclass
class TrainConfig:
    """How long and how to train. ``budget_s`` (wall clock) and/or ``steps`` bound the run (the
    first reached ends it; the learning-rate schedule follows whichever is further along).
    ``keep``: the weights returned, "best" on validation or "last" (a fixed-length run: the best
    of a noisy validation curve is partly luck, docs/models.md "GPU run 4")."""

    budget_s: float | None = None
    steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: float = 0.04
    device: str = "cpu"
    seed: int = 0
    val_every_s: float = 20.0
    #: at most this share of the wall clock goes to the validation passes during training: the next
    #: pass waits at least (1 - share) / share times the last one's length (None: ``val_every_s`` alone)
    val_share: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_batch: int = 8
    keep: str = "best"
    #: cuDNN autotuning on CUDA. It tunes each new input shape once; with per-batch crop sizes
    #: (``augment.out_size_max``) that start-up cost a short GPU run 50-90 s (docs/models.md, run 6),
    #: and run 8 trained such crops with it off at full pace from the first seconds
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        if self.budget_s is None and self.steps is None:
            raise ValueError("give budget_s or steps (or both)")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be best or last, got {self.keep!r}")
        if self.val_share is not None and not 0 < self.val_share <= 1:
            raise ValueError(f"val_share must be in (0, 1], got {self.val_share}")

    def val_interval(self, last_pass_s: float) -> float:
        """Seconds of training before the next validation pass, after one that lasted ``last_pass_s``."""
        if self.val_share is None:
            return self.val_every_s
        return max(self.val_every_s, last_pass_s * (1 - self.val_share) / self.val_share)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _normaliser(mean: list[float], std: list[float], device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda x01: (x01 - m) / s


@torch.no_grad()
def predict_logits(
    model: nn.Module, images_u8: np.ndarray | torch.Tensor, norm: dict[str, list[float]], device: str, batch: int = 8
) -> torch.Tensor:
    """Eval-mode logits (N,K,H,W) float32 on ``device`` for uint8 images (N,3,H,W), ``batch`` chips per
    forward pass, fewer on the CPU (:func:`geoseg.training.forward_batches.chips_per_forward`)."""
    model.eval()
    normalise = _normaliser(norm["mean"], norm["std"], device)
    batch = chips_per_forward(device, batch, *images_u8.shape[-2:])
    outs = []
    for i in range(0, len(images_u8), batch):
        x = torch.as_tensor(images_u8[i : i + batch]).to(device).float() / 255.0
        x = normalise(x)
        if device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            y = model(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        outs.append(y.float())
    return torch.cat(outs)


def evaluate_buildings(model: nn.Module, data: dict[str, Any], norm: dict, device: str, batch: int = 8,
                       progress: ChipsDone | None = None) -> dict[str, float]:
    """Pixel IoU of buildings (interior+outline) over all chips, ignore 255 dropped, and the binary
    mIoU (mean of building and background IoU) used for model selection: unlike the building IoU
    it does not reward the trivial "building everywhere" output on dense validation blocks
    (GPU run 1 kept its step-1 checkpoint that way). ``progress``: told the chips scored so far (0 first)."""
    inter = union = bg_inter = bg_union = 0
    if progress is not None:
        progress(0)
    for i in range(0, len(data["images"]), batch):
        pred = predict_logits(model, data["images"][i : i + batch], norm, device, batch).argmax(1).cpu().numpy()
        truth = data["labels"][i : i + batch]
        a, b = building_iou(pred, truth)
        inter, union = inter + a, union + b
        valid = truth != 255
        p_bg, t_bg = (pred == 0) & valid, (truth == 0) & valid
        bg_inter, bg_union = bg_inter + int((p_bg & t_bg).sum()), bg_union + int((p_bg | t_bg).sum())
        if progress is not None:
            progress(min(i + batch, len(data["images"])))
    iou = inter / max(union, 1)
    return {"pixel_iou": iou, "binary_miou": (iou + bg_inter / max(bg_union, 1)) / 2, "chips": int(len(data["images"]))}


def evaluate_landcover(
    model: nn.Module, data: dict[str, Any], norm: dict, device: str, batch: int = 8, boundary: bool = False,
    classes: list[dict[str, Any]] = LANDCOVER_CLASSES, progress: ChipsDone | None = None,
) -> dict[str, Any]:
    """mIoU over classes 1.. (0 ignored) of the card's ``classes``, per-class IoU, OA, optionally
    boundary F (2 px). ``progress``: told the chips scored so far (0 first)."""
    k = len(classes)
    if progress is not None:
        progress(0)
    cm = np.zeros((k, k), np.int64)
    bcounts = np.zeros(4, np.int64)
    for i in range(0, len(data["images"]), batch):
        pred = predict_logits(model, data["images"][i : i + batch], norm, device, batch).argmax(1).cpu().numpy()
        truth = data["labels"][i : i + batch]
        cm += confusion(pred, truth, k, ignore=0)
        if boundary:
            for p, t in zip(pred, truth):
                bcounts += boundary_counts(p, t)
        if progress is not None:
            progress(min(i + batch, len(data["images"])))
    scores = landcover_scores(cm, [c["name"] for c in classes])
    if boundary:
        scores["boundary_f_2px"] = boundary_f(bcounts)
    scores["chips"] = int(len(data["images"]))
    return scores


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return max(progress / warmup, 0.02)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1 - warmup, 1e-6)))) * 0.98 + 0.02


def train_segmenter(
    model: nn.Module,
    train: dict[str, Any],
    loss_fn: nn.Module,
    norm: dict[str, list[float]],
    score: Callable[[nn.Module], float],
    cfg: TrainConfig,
    log: Log = print,
    progress: Callable[[float], None] | None = None,
    time_left: TimeLeft | None = None,
    val_pixels: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Generic loop; returns the model with the best validation ``score(model)`` and a history dict.
    ``progress``: the fraction of the budget done; ``time_left``: :data:`TimeLeft`; ``val_pixels``:
    the validation chips' pixels, from which the first pass's length is estimated (``pass_seconds``).

    Ctrl-C (KeyboardInterrupt) after the first step ends the run early instead of losing it: the
    weights so far are scored and the result returned as usual, with ``interrupted`` set and
    ``interrupted_by`` naming it (``stopped_by``: SIGTERM too, raised as one by ``geoseg train``)."""
    seed_everything(cfg.seed)
    dev = cfg.device
    cuda = dev.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    loss_fn.to(dev)
    images = torch.as_tensor(train["images"]).to(dev)
    labels = torch.as_tensor(train["labels"]).to(dev)
    n = len(images)
    if n == 0:
        raise ValueError("no training chips")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    normalise = _normaliser(norm["mean"], norm["std"], dev)
    t0 = time.monotonic()
    last_val = t0
    best_score, best_state, best_step = -1.0, None, 0
    history: list[dict[str, float]] = []
    step = 0
    running = 0.0
    validating = {"seconds": 0.0, "last": 0.0, "passes": 0}  # all validation passes so far, the last one

    def step_seconds() -> float:
        """Seconds per training step so far, validation passes left out."""
        return max(time.monotonic() - t0 - validating["seconds"], 0.0) / max(step, 1)

    def pass_seconds() -> float:
        """How long a validation pass lasts: the last one, or before the first, an estimate from the
        steps' pace: a pass runs the model forward only over ``val_pixels``, taken as a quarter of a
        training step's time per pixel (AttResUNet on the CPU, Dubai: 21 against 114 us). Why: the
        first pass over Dubai's 225 val chips, started 30 s into a 2-minute CPU budget, lasted 5
        minutes: the run trained 4 steps."""
        if validating["passes"] or not val_pixels or not step:
            return validating["last"]
        side = cfg.augment.out_size if not cfg.augment.out_size_max else (
            (cfg.augment.out_size + cfg.augment.out_size_max) / 2)
        return step_seconds() * val_pixels / (4.0 * cfg.batch_size * side * side)

    def seconds_left() -> float:
        """Expected seconds until the last validation ends: the steps to come at the pace of those
        done (validations left out), the validation passes they will trigger and the final one, each
        as long as the last; a ``budget_s`` holds the passes during training, not the final one."""
        now = time.monotonic()
        per_pass = pass_seconds()
        step_s = step_seconds()
        left = []
        if cfg.steps is not None:
            steps_left = max(cfg.steps - step, 0)
            stepping = steps_left * step_s
            interval = max(cfg.val_interval(per_pass), 1e-9)
            passes = min(steps_left, int((now - last_val + stepping) / interval))
            left.append(stepping + passes * per_pass)
        if cfg.budget_s is not None:
            left.append(max(cfg.budget_s - (now - t0), 0.0))
        ended_on_a_pass = fraction_done() >= 1.0 and bool(history) and history[-1]["step"] == step
        return min(left) + (0.0 if ended_on_a_pass else per_pass)

    def fraction_done() -> float:
        by_steps = step / cfg.steps if cfg.steps is not None else 0.0
        by_time = (time.monotonic() - t0) / cfg.budget_s if cfg.budget_s is not None else 0.0
        return max(by_steps, by_time)

    def validate() -> None:
        nonlocal best_score, best_state, best_step
        started = time.monotonic()
        s = score(model)
        validating["last"] = time.monotonic() - started
        validating["seconds"] += validating["last"]
        validating["passes"] += 1
        model.train()
        history.append({"step": step, "seconds": round(time.monotonic() - t0, 1), "loss": round(running, 4), "val": round(s, 4)})
        log(f"  step {step:5d}  {time.monotonic() - t0:6.1f}s  loss {running:.4f}  val {s:.4f}")
        if s > best_score:
            best_score, best_step = s, step
            best_state = copy.deepcopy({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    def run_steps() -> None:
        nonlocal step, running, last_val
        while fraction_done() < 1.0:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(fraction_done(), cfg.warmup)
            idx = torch.randint(0, n, (cfg.batch_size,), device=dev)
            x, y = augment_batch(images[idx], labels[idx], cfg.augment)
            x = normalise(x)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(dev):
                out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            if step % 10 == 0 or step < 10:
                lv = float(loss.detach())
                running = lv if step == 1 else 0.9 * running + 0.1 * lv
            if progress is not None:
                progress(min(fraction_done(), 1.0))
            if time.monotonic() - last_val >= cfg.val_interval(pass_seconds()):
                validate()
                last_val = time.monotonic()
                if progress is not None:  # a pass that spent the rest of a --minutes budget left the bar short of 100 %
                    progress(min(fraction_done(), 1.0))
            if time_left is not None:
                time_left(seconds_left())

    model.train()
    interrupted, by = False, ""
    try:
        run_steps()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: keep what was learnt (a second one abandons it)
        if step == 0:
            raise
        interrupted, by = True, stopped_by(stop)
    done = min(fraction_done(), 1.0)  # of the budget, before the last validation's time
    if interrupted:
        log(f"  interrupted ({by}) at step {step}: scoring the weights so far ({by} again to abandon them)")
    if not history or history[-1]["step"] != step:  # the same weights were just scored: a pass saved
        if time_left is not None:
            time_left(pass_seconds())
        validate()
    if time_left is not None:
        time_left(0.0)
    if best_state is not None and cfg.keep == "best":
        model.load_state_dict(best_state)
    model.eval()
    return model, {
        "steps": step,
        "seconds": round(time.monotonic() - t0, 1),
        "best_val": round(best_score, 4),
        "best_step": best_step,
        "final_val": history[-1]["val"],
        "kept": cfg.keep,
        "history": history,
        "final_loss": round(running, 4),
        "interrupted": interrupted,
        "interrupted_by": by,
        "budget_done": round(done, 3),
    }


#: what an interrupted run's name gets when a model of its name is in its folder already
INTERRUPTED_SUFFIX = "-interrupted"


def keep_finished_model(card: dict[str, Any], out: Path) -> None:
    """Rename an interrupted run's ``card`` (``training.interrupted``) to ``<name>-interrupted`` when
    ``out`` holds a model of its name already, so that it is written beside that model, not over it;
    ``training.kept_beside`` names the card it left alone.

    Why: a team retraining ``models/mine`` (same ``--name``) that pressed Ctrl-C a few steps in (wrong
    options) had its finished model replaced by the run's first steps; a finished run still replaces
    it (retraining in place)."""
    if not card["training"].get("interrupted"):
        return
    existing = Path(out) / f"{card['name']}.json"
    if existing.is_file():
        card["training"]["kept_beside"] = str(existing.resolve())  # a card read elsewhere still finds it
        card["name"] = f"{card['name']}{INTERRUPTED_SUFFIX}"


def stopped_by(stop: KeyboardInterrupt) -> str:
    """What stopped a training run, as its card says it: ``SIGTERM`` (``geoseg train`` raises it as
    ``Terminated("SIGTERM")``, a KeyboardInterrupt) or ``Ctrl-C``."""
    return "SIGTERM" if str(stop) == "SIGTERM" else "Ctrl-C"


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def _train_val_norm(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    """Training and validation chips, and the normalisation measured on the training chips only."""
    train, val = select(data, "train"), select(data, "val")
    mean, std = channel_stats(train["images"])
    return train, val, {"mean": mean, "std": std}


def train_buildings(
    data: dict[str, Any], cfg: TrainConfig, arch_kwargs: dict[str, Any] | None = None, log: Log = print,
    progress: Callable[[float], None] | None = None, init_state: dict[str, torch.Tensor] | None = None,
    norm: dict[str, list[float]] | None = None, splits: dict[str, str] | None = None,
    scoring: Scoring | None = None, time_left: TimeLeft | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """U2-Net 3-class head on chips of one GSD; returns (model, card without metrics.test).
    ``scoring``: told the progress of each validation (:data:`Scoring`); ``time_left``: :data:`TimeLeft`.

    ``norm`` (mean/std) replaces the one measured on the training chips: a fine-tuned model
    keeps its checkpoint's, or its first steps see shifted inputs. ``splits`` describes the
    areas of each split (default: the blocks found in the chips, :func:`data_splits`).
    """
    splits = splits or data_splits(data)
    gsd_m, _ = working_gsd(data)
    arch_kwargs = arch_kwargs or {"in_channels": 3, "n_classes": 3, "mid": 24, "out": 64}
    train, val, measured = _train_val_norm(data)
    norm = norm or measured
    torch.manual_seed(cfg.seed)
    model = U2Net(**arch_kwargs)
    if init_state is not None:  # fine-tuning: continue from a trained checkpoint of the same architecture
        model.load_state_dict(init_state)
    loss_fn = label_loss("buildings", IGNORE_INDEX["buildings"])
    scored: list[dict[str, Any]] = []  # every validation's figures: the card gives the kept weights' pixel IoU too

    def score(m: nn.Module) -> float:
        scored.append(evaluate_buildings(m, val, norm, cfg.device, cfg.eval_batch, progress=_val_progress(scoring, val)))
        return scored[-1]["binary_miou"]

    log(f"buildings: {len(train['images'])} train chips, {len(val['images'])} val chips, device {cfg.device}")
    model, hist = train_segmenter(model, train, loss_fn, norm, score, cfg, log, progress, time_left,
                                  val_pixels=int(np.prod(val["labels"].shape)))
    card = {
        "name": "buildings-u2net",
        "task": "buildings",
        "architecture": "U2Net",
        "arch_kwargs": arch_kwargs,
        "output": "logits (B,3,H,W); channel = class index; eval forward returns the fused output",
        "classes": BUILDING_CLASSES,
        "ignore_index": IGNORE_INDEX["buildings"],
        "bands": list(data.get("bands") or DEFAULT_BANDS),  # the chips' --bands: predict reads these
        "input": "uint8 RGB",
        "normalisation": norm,
        "gsd_m": gsd_m,
        "tile_size": chip_window(data),
        "training": _training_block(data, splits, cfg, hist, "CE(weights 1,1,2)+Dice(1,2), deep supervision x7"),
        "metrics": {"val": _with_pixel_iou(_val_metrics("binary_miou", hist, cfg, splits["val"]), scored,
                                           cfg.keep == "best")},
        "credits": data_credits(data, "buildings"),
    }
    return model, card


def train_landcover(
    data: dict[str, Any], cfg: TrainConfig, arch_kwargs: dict[str, Any] | None = None, log: Log = print,
    progress: Callable[[float], None] | None = None, init_state: dict[str, torch.Tensor] | None = None,
    norm: dict[str, list[float]] | None = None, scoring: Scoring | None = None,
    time_left: TimeLeft | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """AttResUNet on land-cover chips; returns (model, card without metrics.test).
    ``scoring``: told the progress of each validation (:data:`Scoring`); ``time_left``: :data:`TimeLeft`.

    ``norm`` (mean/std) replaces the one measured on the training chips: a fine-tuned model keeps
    its checkpoint's.

    The classes are the chips' (``data["classes"]``, the masks' ``classes.json``), else Dubai's:
    they decide the model's outputs and the card's names and colours. ``gsd_m`` is the chips' GSD,
    or the documented Dubai estimate when they carry none (the card's ``gsd_note`` then says so)."""
    gsd_m, estimated = working_gsd(data, estimate=DUBAI_GSD_M)
    classes = landcover_card_classes(data.get("classes"))
    n_classes = len(classes)
    check_label_values(data["labels"], n_classes)
    splits = data_splits(data)
    arch_kwargs = arch_kwargs or {"in_channels": 3, "n_classes": n_classes, "widths": [32, 64, 128, 192, 256]}
    if arch_kwargs.get("n_classes") != n_classes:
        raise ValueError(f"the model has {arch_kwargs.get('n_classes')} classes, the chips {n_classes} "
                         f"({', '.join(c['name'] for c in classes)})")
    train, val, measured = _train_val_norm(data)
    norm = norm or measured
    torch.manual_seed(cfg.seed)
    model = AttResUNet(**{**arch_kwargs, "widths": tuple(arch_kwargs["widths"])})
    if init_state is not None:  # fine-tuning: continue from a trained checkpoint of the same architecture
        model.load_state_dict(init_state)
    loss_fn = label_loss("landcover", IGNORE_INDEX["landcover"], n_classes)
    score = lambda m: evaluate_landcover(m, val, norm, cfg.device, cfg.eval_batch, classes=classes,  # noqa: E731
                                         progress=_val_progress(scoring, val))["miou"]
    log(f"landcover: {len(train['images'])} train chips, {len(val['images'])} val chips, {n_classes - 1} classes, "
        f"device {cfg.device}")
    model, hist = train_segmenter(model, train, loss_fn, norm, score, cfg, log, progress, time_left,
                                  val_pixels=int(np.prod(val["labels"].shape)))
    card = {
        "name": "landcover-attresunet",
        "task": "landcover",
        "architecture": "AttResUNet",
        "arch_kwargs": arch_kwargs,
        "output": f"logits (B,{n_classes},H,W); channel = class index of classes; channel 0 (unlabeled) is a "
                  f"constant -1e4",
        "classes": classes,
        "ignore_index": IGNORE_INDEX["landcover"],
        "bands": list(data.get("bands") or DEFAULT_BANDS),  # the chips' --bands: predict reads these
        "input": "uint8 RGB",
        "normalisation": norm,
        "gsd_m": gsd_m,
        **({"gsd_note": DUBAI_GSD_NOTE} if estimated else {}),
        "tile_size": chip_window(data),
        "training": _training_block(data, splits, cfg, hist, f"CE(ignore 0)+0.5*Dice(1..{n_classes - 1})"),
        "metrics": {"val": _val_metrics("miou", hist, cfg, splits["val"])},
        "credits": data_credits(data, "landcover"),
    }
    return model, card


def _val_progress(scoring: Scoring | None, val: dict[str, Any]) -> ChipsDone | None:
    """The ``progress`` of one validation pass for ``scoring`` (None without one)."""
    if scoring is None:
        return None
    total = len(val["images"])
    return lambda done: scoring("val", done, total)


def check_label_values(labels: np.ndarray, n_classes: int) -> None:
    """Refuse masks with values past the class list (the loss would fail on them mid-run, or
    train outputs the card never names): chips without a ``classes.json`` get Dubai's six."""
    top = int(labels.max()) if labels.size else 0
    if top >= n_classes:
        raise ValueError(f"the chips' masks hold class {top}, their class list stops at {n_classes - 1}: put a "
                         f"classes.json beside the masks (docs/tiling.md) and tile them again")


def _val_metrics(metric: str, hist: dict, cfg: TrainConfig, area: str) -> dict[str, Any]:
    """The card's validation figure: of the weights that were kept (best point, or the last step)."""
    best = cfg.keep == "best"
    return {metric: hist["best_val"] if best else hist["final_val"],
            "area": f"{area} " + ("(model selection)" if best else "(monitoring only: last weights kept)")}


def _with_pixel_iou(val: dict[str, Any], scored: list[dict[str, Any]], best: bool) -> dict[str, Any]:
    """A building teacher's ``metrics.val`` with the kept weights' building pixel IoU beside the binary mIoU
    it was chosen by (``best``: the first validation of the highest score was kept, else the last one).
    Why: a student's card gives pixel IoU, and the two cards' ``val`` shared no figure."""
    if not scored:
        return val
    kept = max(scored, key=lambda s: s["binary_miou"]) if best else scored[-1]  # max: the first of equals
    if round(kept["binary_miou"], 4) != val["binary_miou"]:
        return val
    return {"binary_miou": val["binary_miou"], "pixel_iou": round(kept["pixel_iou"], 4),
            **{k: v for k, v in val.items() if k != "binary_miou"}}


def _training_block(data: dict, splits: dict, cfg: TrainConfig, hist: dict, loss: str) -> dict[str, Any]:
    counts = {s: int((data["split"] == s).sum()) for s in ("train", "val", "test")}
    return {
        "data": data_source(data),
        "splits": splits,
        "chips": counts,
        "device": _device_name(cfg.device),
        "precision": "bf16 autocast" if cfg.device.startswith("cuda") else "fp32",
        **({"cudnn_benchmark": cfg.cudnn_benchmark} if cfg.device.startswith("cuda") else {}),
        "steps": hist["steps"],
        "minutes": round(hist["seconds"] / 60, 2),
        "batch_size": cfg.batch_size,
        "crop": (cfg.augment.out_size if not cfg.augment.out_size_max
                 else f"{cfg.augment.out_size}-{cfg.augment.out_size_max} px per batch (multiples of 32)"),
        "lr": cfg.lr,
        "seed": cfg.seed,
        "loss": loss,
        "augmentation": "dihedral, scale 0.75-1.33, colour/brightness/contrast/saturation jitter, blur, JPEG q30-90"
        f", channel shuffle p{cfg.augment.channel_shuffle_p:g}, grey p{cfg.augment.grey_p:g}",
        **({"interrupted": f"{hist.get('interrupted_by') or 'Ctrl-C'} at step {hist['steps']}, {hist['budget_done']:.0%} of the budget"}
           if hist.get("interrupted") else {}),
        **({"val_share": cfg.val_share} if cfg.val_share is not None else {}),
        "best_step": hist["best_step"],
        "kept": f"weights at step {hist['steps']} (last)" if hist["kept"] == "last"
        else f"best validation, step {hist['best_step']}",
        "history": hist["history"],
    }

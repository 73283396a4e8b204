"""Scores of a model on chips: test metrics from a confusion matrix, and forward speed.

The distillation ablation compares students and teachers with these (one headline
figure per task); ``geoseg.evaluate`` scores predicted rasters and polygons for users.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.card import normalise
from geoseg.distill_losses import IGNORE_INDEX
from geoseg.training.chip_batches import ChipArrays, loss_targets
from geoseg.training.forward_batches import chips_per_forward
from geoseg.training.teacher_maps import first_output


@torch.no_grad()
def evaluate(
    model: nn.Module,
    card: dict[str, Any],
    task: str,
    chips: ChipArrays,
    device: str,
    batch_size: int = 8,
    deadline: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Test metrics of a model on chips: buildings pixel IoU/F1; land cover per-class IoU, mIoU, OA.

    Buildings: building = interior or outline (classes 1, 2) against background,
    255 ignored. Land cover: classes 1..K-1, unlabeled (0) ignored; mIoU averages
    the classes present in the truth or the prediction. Past ``deadline``
    (time.monotonic) it stops after the current batch; ``chips`` says how many
    were scored. ``progress``: told the chips scored so far (0 first).
    """
    if progress is not None:
        progress(0)
    model.to(device).eval()
    cuda = device.startswith("cuda")
    n_classes = len(card["classes"])
    forward = chips_per_forward(device, batch_size, *chips.images.shape[-2:])
    conf = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    scored = 0
    for i in range(0, len(chips), batch_size):
        if deadline is not None and scored and time.monotonic() > deadline:
            break
        scored = min(i + batch_size, len(chips))
        images = torch.from_numpy(np.ascontiguousarray(chips.images[i : i + batch_size])).to(device)
        y = loss_targets(torch.from_numpy(np.ascontiguousarray(chips.labels[i : i + batch_size])).to(device), task)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            pred = torch.cat([first_output(model(normalise(images[j : j + forward], card))).float().argmax(1)
                              for j in range(0, len(images), forward)])
        valid = y != IGNORE_INDEX
        conf += torch.bincount(
            y[valid] * n_classes + pred[valid], minlength=n_classes * n_classes
        ).view(n_classes, n_classes)
        if progress is not None:
            progress(scored)
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

"""Scoring chips on the CPU (validation during ``geoseg train``, the test chips, a student's scores): one
256 px chip per forward pass, in eval mode without gradients, with the scores of 8 chips a pass.

Why: 8 chips of 256 px per forward made every full-resolution activation 64 MB, above glibc's largest
mmap threshold, so each was mapped and page-faulted afresh; Dubai's 225 val chips took 2.5 minutes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.card import LANDCOVER_CLASSES
from geoseg.models.attresunet import AttResUNet
from geoseg.training import chip_scores, loop
from geoseg.training.chip_batches import ChipArrays
from geoseg.training.forward_batches import chips_per_forward

NORM = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}


def _chips(n: int = 3, side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
    labels = rng.integers(0, len(LANDCOVER_CLASSES), (n, side, side), dtype=np.uint8)
    return images, labels


def _recorded_model() -> tuple[AttResUNet, list[tuple[int, bool, bool]]]:
    """A small AttResUNet that records each forward's (chips, grad enabled, training mode)."""
    torch.manual_seed(0)
    model = AttResUNet(n_classes=len(LANDCOVER_CLASSES), widths=(4, 4, 4, 4, 4))
    calls: list[tuple[int, bool, bool]] = []
    model.register_forward_hook(lambda m, args, out: calls.append((args[0].shape[0], torch.is_grad_enabled(),
                                                                    m.training)))
    return model, calls


@pytest.mark.parametrize(("device", "side", "expected"), [("cpu", 256, 1), ("cpu", 128, 4), ("cpu", 64, 8),
                                                          ("cpu", 1024, 1), ("cuda", 256, 8), ("cuda:0", 1024, 8)])
def test_chips_per_forward_caps_pixels_on_the_cpu_only(device: str, side: int, expected: int) -> None:
    assert chips_per_forward(device, 8, side, side) == expected


def test_validation_scores_one_chip_per_forward_on_the_cpu_with_the_same_scores(monkeypatch) -> None:
    images, labels = _chips()
    model, calls = _recorded_model()
    data = {"images": images, "labels": labels}
    scores = loop.evaluate_landcover(model, data, NORM, "cpu", batch=2, boundary=True)
    assert [c[0] for c in calls] == [1] * len(images)
    assert not any(grad or training for _, grad, training in calls)  # no_grad, eval mode
    monkeypatch.setattr(loop, "chips_per_forward", lambda device, requested, h, w: requested)
    calls.clear()
    assert loop.evaluate_landcover(model, data, NORM, "cpu", batch=2, boundary=True) == scores
    assert [c[0] for c in calls] == [2, 1]  # the old batching, for the comparison


def test_a_students_scores_one_chip_per_forward_on_the_cpu_with_the_same_scores(monkeypatch) -> None:
    images, labels = _chips()
    model, calls = _recorded_model()
    card = {"classes": LANDCOVER_CLASSES, "normalisation": NORM}
    scores = chip_scores.evaluate(model, card, "landcover", ChipArrays(images, labels), "cpu", batch_size=2)
    assert [c[0] for c in calls] == [1] * len(images)
    assert not any(grad or training for _, grad, training in calls)
    monkeypatch.setattr(chip_scores, "chips_per_forward", lambda device, requested, h, w: requested)
    assert chip_scores.evaluate(model, card, "landcover", ChipArrays(images, labels), "cpu", batch_size=2) == scores

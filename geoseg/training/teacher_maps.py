"""What a teacher tells its students: logits and the features the CSC loss matches.

:func:`teacher_outputs` gets both in one forward pass wherever the architecture
allows; :func:`cache_teacher` runs the teacher once per training chip so that a
student's step costs no teacher forward.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.card import normalise
from geoseg.training.chip_batches import ChipArrays


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
        logits = first_output(teacher(x))
        return logits, logits
    module = feature_module(teacher)
    if module is None:
        return first_output(teacher(x)), teacher.features(x)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = first_output(teacher(x))
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


def first_output(out: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def teacher_feature_channels(teacher: nn.Module, card: dict[str, Any], device: str) -> int:
    """Width of the teacher's CSC features (probed on a tiny input when not declared)."""
    declared = getattr(teacher, "feature_channels", None)
    if isinstance(declared, int) and hasattr(teacher, "features"):
        return declared
    with torch.no_grad():
        probe = torch.zeros(1, 3, 64, 64, dtype=torch.uint8, device=device)
        return int(teacher_outputs(teacher, normalise(probe, card))[1].shape[1])

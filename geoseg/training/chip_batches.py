"""Training chips as arrays by split, and the endless augmented batches students train on.

The students' data layer: chips from a chip directory or a packed ``.npz``
(``geoseg.training.data``), raw label ids turned into loss targets, and batches
whose flips and quarter turns apply alike to images, labels and cached teacher maps.
No rasterio at import time: this runs on the GPU machine.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from geoseg.distill_losses import IGNORE_INDEX

if TYPE_CHECKING:  # teacher_maps imports ChipArrays from here
    from geoseg.training.teacher_maps import TeacherCache

TASKS = ("buildings", "landcover")


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


def load_chips(path: Path, task: str) -> tuple[dict[str, ChipArrays], dict[str, Any]]:
    """Chips by split from a chip directory or a packed ``.npz`` (via ``geoseg.training.data``), and
    the whole data set (``geoseg.training.data.load_dataset``), whose ``bands`` (the ``geoseg tile
    --bands`` they were cut with; absent: the rasters' own red, green, blue) and areas the student's
    card must name."""
    from geoseg.training.data import load_dataset  # noqa: PLC0415 (reads rasterio lazily itself)

    dataset = load_dataset(Path(path))
    if dataset.get("target", task) != task:
        raise ValueError(f"{path} holds {dataset['target']} chips, not {task}")
    return split_packed(dataset), dataset


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

"""Segmentation losses: class-weighted cross-entropy + soft Dice, with deep supervision.

CE alone under-weights the thin outline band and small classes (roads, water); the Dice
term is computed per class over the whole batch so a rare class counts as much as a common
one. Pixels equal to ``ignore_index`` contribute to neither term.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def labelled_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy over the labelled pixels; 0 (keeping the graph) when none is labelled.

    Why: torch's mean over no pixel is NaN, and one batch of all-ignored chips (a scene's edge past
    its labels, nodata) made a student's whole loss NaN, its weights then NaN for good."""
    if not bool((target != ignore_index).any()):
        return 0.0 * logits.sum()
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, classes: Sequence[int], eps: float = 1.0
) -> torch.Tensor:
    """1 - mean over ``classes`` of (2|P.T| + eps) / (|P| + |T| + eps), softmax probabilities, batch-pooled."""
    probs = torch.softmax(logits.float(), dim=1)
    valid = (target != ignore_index).unsqueeze(1).float()
    safe_target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    one_hot = F.one_hot(safe_target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    idx = torch.as_tensor(list(classes), device=logits.device)
    p = probs.index_select(1, idx) * valid
    t = one_hot.index_select(1, idx) * valid
    inter = (p * t).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + t.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


class CEDiceLoss(torch.nn.Module):
    """``ce_weight * CE(class_weights) + dice_weight * Dice(dice_classes)``.

    Accepts a single logits tensor or a list (deep supervision: fused first, then sides);
    the list's terms are summed, the fused output weighted ``fused_weight``.
    """

    def __init__(
        self,
        n_classes: int,
        ignore_index: int,
        class_weights: Sequence[float] | None = None,
        dice_classes: Sequence[int] | None = None,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        fused_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.dice_classes = list(dice_classes) if dice_classes is not None else list(range(n_classes))
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.fused_weight = fused_weight

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if not bool((target != self.ignore_index).any()):
            return loss + 0.0 * logits.sum()  # nothing labelled: no signal, but keep the graph
        if self.ce_weight:
            ce = F.cross_entropy(logits.float(), target.long(), weight=self.class_weights, ignore_index=self.ignore_index)
            loss = loss + self.ce_weight * ce
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index, self.dice_classes)
        return loss

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.single(outputs, target)
        terms = [self.single(o, target) for o in outputs]
        return self.fused_weight * terms[0] + sum(terms[1:])

"""``ProbabilityMean``: several segmentation networks run as one head by averaging their class
probabilities.

Why: networks with different inductive biases (the U2-Net learnt from scratch, a LiteUNet whose
encoder started from ImageNet) err in different places on areas neither saw; the mean of their
softmax maps is a cheap, tuning-free way to keep what each gets right (docs/models.md,
"After session 22"). The output is the log of the mean
probability: valid logits (softmax gives the mean back exactly), so the ensemble is a drop-in
head for the pipeline, the ONNX export and the post-processing rules tuned on its output.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: floor of the averaged probability before the log (fp16/bf16 safe; e^-18.4 is far below any threshold)
PROBABILITY_FLOOR = 1e-8


class ProbabilityMean(nn.Module):
    """Members read the same normalised input and predict the same classes; ``forward`` returns
    ``log(mean_i softmax(member_i(x)))``. An inference head: each member's eval output (the fused
    logits of a deeply supervised one) is what is averaged, in train mode too."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        total = None
        for member in self.members:
            out = member(x)
            logits = out[0] if isinstance(out, (list, tuple)) else out
            probs = torch.softmax(logits.float(), dim=1)
            if total is not None and probs.shape != total.shape:
                raise ValueError(f"ensemble members disagree on the output shape: {tuple(probs.shape)} "
                                 f"vs {tuple(total.shape)}")
            total = probs if total is None else total + probs
        return torch.log((total / len(self.members)).clamp_min(PROBABILITY_FLOOR))

"""Distillation losses of Park & Heo (Sensors 2020, 20(16):4616).

* CSC (channel and spatial correlation) loss: the student learns the teacher's
  *structure* of features -- which channels fire together (C x C) and which
  positions look alike (HW x HW) -- rather than the raw activations, so the
  student's width and scale need not match the teacher's.
* ACE (adaptive cross-entropy): soft teacher targets where the teacher is right,
  hard ground truth where it is wrong, so the teacher's mistakes are not taught.

Pure torch; no I/O, no rasterio (this module runs on the GPU machine).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = 255


def channel_correlation(features: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, C, H, W) -> (B, C, C) cosine similarity between channel maps.

    Each channel's map is flattened over positions and L2-normalised, so the
    matrix is invariant to a positive rescaling of the features and to any
    permutation of positions.
    """
    flat = features.flatten(2)  # B, C, N
    flat = flat / (flat.norm(dim=2, keepdim=True) + eps)
    return flat @ flat.transpose(1, 2)


def spatial_correlation(features: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, C, H, W) -> (B, N, N) cosine similarity between positions (N = H*W).

    Each position's channel vector is L2-normalised: invariant to positive
    rescaling of the features and to permutations of channels.
    """
    flat = features.flatten(2)  # B, C, N
    flat = flat / (flat.norm(dim=1, keepdim=True) + eps)
    return flat.transpose(1, 2) @ flat


class CSCLoss(nn.Module):
    """Channel and spatial correlation matching between student and teacher features.

    The student map is projected to the teacher's width with a learned 1x1
    convolution when the widths differ (``student_channels != teacher_channels``).
    Both maps are average-pooled to a common grid (the coarser of the two, at
    most ``channel_pool`` a side) for the channel term, and to ``pool x pool``
    positions for the spatial term so the N x N matrix stays affordable (a
    64 x 64 map would need a 4096 x 4096 matrix per image).
    Loss = mean squared difference of the channel matrices
    + ``spatial_weight`` x mean squared difference of the spatial matrices.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        pool: int = 16,
        channel_pool: int = 64,
        spatial_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if pool < 1 or channel_pool < 1:
            raise ValueError(f"pool sizes must be >= 1, got {pool} and {channel_pool}")
        self.pool = pool
        self.channel_pool = channel_pool
        self.spatial_weight = spatial_weight
        self.project: nn.Module = (
            nn.Identity()
            if student_channels == teacher_channels
            else nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        )

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"CSC loss needs (B, C, H, W) maps with the same batch, got "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        teacher = teacher.detach().float()
        student = self.project(student.float())
        if student.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"student has {student.shape[1]} channels after projection, teacher {teacher.shape[1]}"
            )
        # Common grid: the coarser of the two maps, at most channel_pool x channel_pool.
        grid = tuple(min(s, t, self.channel_pool) for s, t in zip(student.shape[-2:], teacher.shape[-2:]))
        student = _pool_to(student, grid)
        teacher = _pool_to(teacher, grid)
        channel = F.mse_loss(channel_correlation(student), channel_correlation(teacher))
        small = tuple(min(g, self.pool) for g in grid)
        spatial = F.mse_loss(
            spatial_correlation(_pool_to(student, small)), spatial_correlation(_pool_to(teacher, small))
        )
        return channel + self.spatial_weight * spatial


def _pool_to(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Average-pool a map to ``size`` (no-op when it already has that size)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


def adaptive_targets(
    teacher_logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, check: bool = True
) -> Tensor:
    """Per-pixel target distribution (B, K, H, W) of the ACE loss.

    Where the teacher's argmax equals the label: the teacher's softmax; elsewhere
    the label's one-hot. Ignored pixels get an all-zero target (they add nothing).
    ``check=False`` skips the label-range check (it syncs a GPU; callers that
    validated their labels once up front pass it).
    """
    if teacher_logits.dim() != 4 or labels.dim() != 3 or teacher_logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"ACE needs logits (B, K, H, W) and labels (B, H, W) of the same size, got "
            f"{tuple(teacher_logits.shape)} and {tuple(labels.shape)}"
        )
    n_classes = teacher_logits.shape[1]
    labels = labels.long()
    valid = labels != ignore_index
    if check and bool(((labels < 0) | (labels >= n_classes))[valid].any()):
        raise ValueError(f"labels outside 0..{n_classes - 1} (other than ignore {ignore_index})")
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    one_hot = F.one_hot(safe, n_classes).permute(0, 3, 1, 2).float()
    probs = teacher_logits.detach().float().softmax(dim=1)
    agree = (probs.argmax(dim=1) == safe) & valid
    target = torch.where(agree.unsqueeze(1), probs, one_hot)
    return target * valid.unsqueeze(1)


def adaptive_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    check: bool = True,
) -> Tensor:
    """ACE loss: cross-entropy of the student against :func:`adaptive_targets`.

    Averaged over non-ignored pixels; equals ordinary cross-entropy wherever the
    teacher is wrong. Returns 0 (with a gradient path) when every pixel is ignored.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    target = adaptive_targets(teacher_logits, labels, ignore_index, check)
    log_p = F.log_softmax(student_logits.float(), dim=1)
    per_pixel = -(target * log_p).sum(dim=1)
    n_valid = (labels != ignore_index).sum()
    return per_pixel.sum() / n_valid.clamp(min=1)

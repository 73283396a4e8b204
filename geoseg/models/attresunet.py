"""AttResUNet: residual encoder, U-shaped decoder, attention gates on the skips.

Why attention *gates* (Oktay et al. 2018) rather than channel/spatial attention blocks:
the skips of a U-Net carry full-resolution texture from everywhere in the tile; a gate
driven by the coarser decoder signal suppresses skip activations that the context says
are irrelevant (e.g. road texture inside a parking lot labelled "land"), which is where
the land-cover errors of a plain U-Net sit. A gate costs two 1x1 convolutions per level,
so the model stays small enough for CPU inference.

Output convention: ``forward`` returns logits with one channel per class *index* of
``classes.json`` (6 channels for Dubai). Channel 0 ("unlabeled") is a constant -1e4, so
softmax/argmax never pick it and ``argmax`` is directly the class index.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UNLABELED_LOGIT = -1e4


class ResidualBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a projected shortcut when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        # ResNet-D shortcut: average-pool, then a 1x1 conv. Besides using every input pixel, it
        # avoids a strided 1x1 conv, whose CPU backward corrupts memory on channels-last
        # input in torch 2.13 ("double free or corruption").
        layers: list[nn.Module] = [nn.AvgPool2d(stride, ceil_mode=True)] if stride != 1 else []
        if cin != cout:
            layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.shortcut: nn.Module = nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x), inplace=True)


class AttentionGate(nn.Module):
    """Additive attention gate: alpha = sigmoid(psi(relu(Wx skip + Wg gate))); returns skip * alpha."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = F.interpolate(self.phi(gate), size=skip.shape[2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(skip) + g)))
        return skip * alpha


class DecoderBlock(nn.Module):
    """Upsample the coarse signal, concatenate the gated skip, refine with a residual block."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.gate = AttentionGate(skip, cin, max(skip // 2, 8))
        self.block = ResidualBlock(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        gated = self.gate(skip, x)
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, gated], 1))


class AttResUNet(nn.Module):
    """Residual U-Net with attention-gated skips over 4 downsamplings (any input size)."""

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 6,
        widths: tuple[int, ...] = (32, 64, 128, 192, 256),
        ignore_first_class: bool = True,
    ) -> None:
        super().__init__()
        w = list(widths)
        self.n_classes = n_classes
        self.ignore_first_class = ignore_first_class
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True)
        )
        self.enc = nn.ModuleList([ResidualBlock(w[0], w[0])])
        for cin, cout in zip(w[:-1], w[1:]):
            self.enc.append(nn.Sequential(ResidualBlock(cin, cout, stride=2), ResidualBlock(cout, cout)))
        self.dec = nn.ModuleList()
        cin = w[-1]
        for skip in reversed(w[:-1]):
            self.dec.append(DecoderBlock(cin, skip, skip))
            cin = skip
        n_out = n_classes - 1 if ignore_first_class else n_classes
        self.head = nn.Conv2d(w[0], n_out, 1)
        self.feature_channels = w[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder feature map (B, widths[0], H, W): the GCN pools it per superpixel."""
        skips = []
        h = self.stem(x)
        for stage in self.enc:
            h = stage(h)
            skips.append(h)
        h = skips.pop()
        for block in self.dec:
            h = block(h, skips.pop())
        return h

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from the features of :meth:`features` (lets callers reuse one pass)."""
        logits = self.head(feats)
        if self.ignore_first_class:
            fill = torch.full_like(logits[:, :1], UNLABELED_LOGIT)
            logits = torch.cat([fill, logits], 1)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

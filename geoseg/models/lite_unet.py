"""``LiteUNet``: a student with an EfficientNet-Lite0 encoder that can start from ImageNet.

Same contract as ``FastSegNet`` (``forward(x) -> logits`` at the input size,
``forward_with_features`` for the CSC loss, land-cover channel 0 a constant low logit,
an optional thin full-resolution correction for the buildings' outline band); only the
encoder differs: EfficientNet-Lite0's blocks (``geoseg.models.efficientnet_lite``),
which ``pretrained_encoder`` fills with ImageNet weights before training.

The model receives inputs normalised by its card (the teacher's statistics, so teacher and
student read one tensor); a fixed per-channel affine (``input_mean`` / ``input_std`` are
that normalisation) turns them into what the ImageNet weights expect.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from geoseg.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Encoder, load_imagenet
from geoseg.models.students import DecoderStage, decode_skips, full_resolution_correction


class LiteUNet(nn.Module):
    """EfficientNet-Lite0 encoder, separable-convolution U-Net decoder, head at 1/2 resolution.

    ``decoder_widths``: output channels of the decoder stages at 1/16, 1/8, 1/4 and 1/2;
    the 1/4 map feeds the CSC loss (``feature_channels``).
    """

    def __init__(
        self,
        n_classes: int,
        decoder_widths: Sequence[int] = (128, 64, 48, 32),
        in_channels: int = 3,
        ignore_first_class: bool = False,
        full_res_width: int = 0,
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if len(decoder_widths) != 4:
            raise ValueError("LiteUNet needs 4 decoder widths (1/16, 1/8, 1/4, 1/2)")
        if in_channels != 3 or len(input_mean) != 3 or len(input_std) != 3:
            raise ValueError("LiteUNet reads 3 bands (its ImageNet encoder is RGB)")
        self.n_classes = n_classes
        self.ignore_first_class = ignore_first_class
        self.full_res_width = full_res_width
        self.decoder_widths = tuple(int(w) for w in decoder_widths)
        self.input_mean = tuple(float(v) for v in input_mean)
        self.input_std = tuple(float(v) for v in input_std)
        # card-normalised x -> RGB in [0, 1] -> the encoder's own normalisation, as one affine
        mean, std = torch.tensor(self.input_mean), torch.tensor(self.input_std)
        enc_mean, enc_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("in_scale", (std / enc_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((mean - enc_mean) / enc_std).view(1, 3, 1, 1), persistent=False)
        self.encoder = EfficientNetLite0Encoder(in_channels)
        e = self.encoder.channels
        d = self.decoder_widths
        self.decoder = nn.ModuleList(
            [DecoderStage(e[4], e[3], d[0]), DecoderStage(d[0], e[2], d[1]),
             DecoderStage(d[1], e[1], d[2]), DecoderStage(d[2], e[0], d[3])]
        )
        self.feature_channels = d[2]
        n_out = n_classes - 1 if ignore_first_class else n_classes
        self.head = nn.Conv2d(d[3], n_out, 1)
        if full_res_width:
            self.full_skip, self.full_refine = full_resolution_correction(in_channels, n_out, full_res_width)

    def pretrained_encoder(self) -> LiteUNet:
        """Fill the encoder with the ImageNet weights (training starts here); returns self."""
        load_imagenet(self.encoder)
        return self

    def arch_kwargs(self) -> dict:
        """Constructor kwargs, for the model card."""
        return {
            "n_classes": self.n_classes,
            "decoder_widths": list(self.decoder_widths),
            "in_channels": 3,
            "ignore_first_class": self.ignore_first_class,
            "full_res_width": self.full_res_width,
            "input_mean": list(self.input_mean),
            "input_std": list(self.input_std),
        }

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits at the input size and the 1/4-resolution decoder features, in one pass."""
        if x.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) input, got {tuple(x.shape)}")
        return decode_skips(self, self.encoder(x * self.in_scale + self.in_shift), x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]

    def features(self, x: Tensor) -> Tensor:
        """Decoder features at 1/4 resolution (``feature_channels`` wide) for the CSC loss."""
        return self.forward_with_features(x)[1]

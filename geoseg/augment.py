"""Batch augmentation on torch tensors (runs where the batch lives: CPU or GPU).

Geometry (dihedral flips/rot90, scale + crop) is applied to images and labels alike;
photometry (colour/brightness jitter, blur, JPEG quality, channel shuffle / grey) to images only. The building
model is judged on other continents and sensors, so photometric augmentation is strong:
generalisation is the goal, not fitting the three training cities.

Images are float in 0..1, shape (B, 3, H, W); labels integer (B, H, W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (probabilities are per sample unless stated)."""

    out_size: int = 384
    #: when set, each batch's side is drawn from the multiples of 32 in [out_size, out_size_max]:
    #: a network trained on one crop size feels a window's edge deep inside bigger windows
    #: (the 256 px teacher, 256 px in: docs/models.md "Context and crop size")
    out_size_max: int | None = None
    scale_min: float = 0.75  # zoom factor range (per batch)
    scale_max: float = 1.33
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    channel_gain: float = 0.08
    blur_p: float = 0.2
    blur_sigma_max: float = 1.5
    jpeg_p: float = 0.25
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 90
    # cross-area colour: roof colour must not be the cue (GPU run 2: Kampala IoU 0.27 -> 0.445)
    channel_shuffle_p: float = 0.2
    grey_p: float = 0.1


def dihedral(img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random one of the 8 flips/rotations per sample (square tensors keep their shape)."""
    ops = torch.randint(0, 8, (img.shape[0],)).tolist()
    imgs, labs = [], []
    for i, op in enumerate(ops):
        x, y = img[i], lab[i]
        if op & 4:
            x, y = x.flip(-1), y.flip(-1)
        k = op & 3
        if k:
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        imgs.append(x)
        labs.append(y)
    return torch.stack(imgs), torch.stack(labs)


def scale_crop(
    img: torch.Tensor, lab: torch.Tensor, out_size: int, scale_min: float, scale_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop a random window of ``out_size / s`` px per sample and resize it to ``out_size`` (s per batch)."""
    _, _, h, w = img.shape
    s = math.exp(float(torch.empty(1).uniform_(math.log(scale_min), math.log(scale_max))))
    crop = int(round(out_size / s))
    crop = max(8, min(crop, h, w))
    tops = torch.randint(0, h - crop + 1, (img.shape[0],)).tolist()
    lefts = torch.randint(0, w - crop + 1, (img.shape[0],)).tolist()
    ci = torch.stack([img[i, :, t : t + crop, l : l + crop] for i, (t, l) in enumerate(zip(tops, lefts))])
    cl = torch.stack([lab[i, t : t + crop, l : l + crop] for i, (t, l) in enumerate(zip(tops, lefts))])
    if crop != out_size:
        ci = F.interpolate(ci, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=crop > out_size)
        cl = F.interpolate(cl[:, None].float(), size=(out_size, out_size), mode="nearest")[:, 0].to(lab.dtype)
    return ci, cl


def colour_jitter(img: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and per-channel gain."""
    b = img.shape[0]
    dev = img.device

    def u(scale: float, shape: tuple[int, ...]) -> torch.Tensor:
        return 1.0 + (torch.rand(shape, device=dev) * 2 - 1) * scale

    grey = img.mean(1, keepdim=True)
    img = grey + (img - grey) * u(cfg.saturation, (b, 1, 1, 1))
    mean = img.mean((1, 2, 3), keepdim=True)
    img = mean + (img - mean) * u(cfg.contrast, (b, 1, 1, 1))
    img = img * u(cfg.brightness, (b, 1, 1, 1)) * u(cfg.channel_gain, (b, 3, 1, 1))
    return img.clamp(0.0, 1.0)


def gaussian_blur(img: torch.Tensor, p: float, sigma_max: float) -> torch.Tensor:
    """Blur a random subset of the batch with one Gaussian sigma in (0.5, sigma_max)."""
    pick = torch.rand(img.shape[0], device=img.device) < p
    if not bool(pick.any()):
        return img
    sigma = float(torch.empty(1).uniform_(0.5, sigma_max))
    radius = max(1, int(math.ceil(2.5 * sigma)))
    xs = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[1]
    blurred = F.pad(img, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(blurred, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return torch.where(pick.view(-1, 1, 1, 1), blurred, img)


_JPEG_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_JPEG_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32  # fmt: skip


def _dct_matrix(device: torch.device) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float32, device=device)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _quant_tables(quality: int, device: torch.device) -> torch.Tensor:
    q = max(1, min(100, quality))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    tabs = []
    for base in (_JPEG_LUMA, _JPEG_CHROMA, _JPEG_CHROMA):
        t = torch.tensor(base, dtype=torch.float32, device=device).view(8, 8)
        tabs.append(((t * scale + 50) / 100).floor().clamp(1, 255))
    return torch.stack(tabs)  # (3, 8, 8)


def jpeg_approx(img: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-like degradation on the device: YCbCr, 8x8 DCT, quantisation at ``quality``, inverse.

    No chroma subsampling or entropy coding (they do not change pixels beyond what the
    quantisation does at the qualities used); blocking and ringing artefacts are reproduced.
    """
    b, c, h, w = img.shape
    x = img.float() * 255.0
    r, g, bl = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * bl
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * bl
    ycc = torch.stack([y, cb, cr], 1) - 128.0
    ph, pw = (-h) % 8, (-w) % 8
    ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    hh, ww = ycc.shape[2] // 8, ycc.shape[3] // 8
    blocks = ycc.view(b, 3, hh, 8, ww, 8).permute(0, 1, 2, 4, 3, 5)  # (b,3,hh,ww,8,8)
    d = _dct_matrix(img.device)
    q = _quant_tables(quality, img.device).view(1, 3, 1, 1, 8, 8)
    coef = d @ blocks @ d.t()
    coef = torch.round(coef / q) * q
    blocks = d.t() @ coef @ d
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, 3, hh * 8, ww * 8)[:, :, :h, :w] + 128.0
    y, cb, cr = ycc[:, 0], ycc[:, 1] - 128, ycc[:, 2] - 128
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    bl = y + 1.772 * cb
    return (torch.stack([r, g, bl], 1) / 255.0).clamp(0, 1).to(img.dtype)


def random_jpeg(img: torch.Tensor, p: float, qmin: int, qmax: int) -> torch.Tensor:
    """JPEG-degrade a random subset of the batch at one random quality."""
    pick = torch.rand(img.shape[0], device=img.device) < p
    if not bool(pick.any()):
        return img
    quality = int(torch.randint(qmin, qmax + 1, (1,)))
    return torch.where(pick.view(-1, 1, 1, 1), jpeg_approx(img, quality), img)


def channel_shuffle_grey(img: torch.Tensor, shuffle_p: float, grey_p: float) -> torch.Tensor:
    """Per sample: a random RGB channel order (p ``shuffle_p``) or grey scale (p ``grey_p``)."""
    b = img.shape[0]
    perms = torch.stack([torch.randperm(3) for _ in range(b)]).to(img.device)
    shuffled = img[torch.arange(b, device=img.device)[:, None], perms]
    pick = (torch.rand(b, device=img.device) < shuffle_p).view(b, 1, 1, 1)
    img = torch.where(pick, shuffled, img)
    grey = (torch.rand(b, device=img.device) < grey_p).view(b, 1, 1, 1)
    return torch.where(grey, img.mean(1, keepdim=True).expand_as(img), img)


def batch_side(cfg: AugmentConfig) -> int:
    """This batch's output side: ``out_size``, or a random multiple of 32 up to ``out_size_max``."""
    if cfg.out_size_max is None or cfg.out_size_max <= cfg.out_size:
        return cfg.out_size
    lo, hi = -(-cfg.out_size // 32), cfg.out_size_max // 32
    if hi < lo:
        return cfg.out_size
    return 32 * int(torch.randint(lo, hi + 1, (1,)))


def augment_batch(
    images_u8: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig = AugmentConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B,3,H,W) images + labels -> augmented float 0..1 images and labels at ``cfg.out_size``
    (or a per-batch side up to ``cfg.out_size_max``, :func:`batch_side`)."""
    img = images_u8.float() / 255.0
    img, lab = scale_crop(img, labels, batch_side(cfg), cfg.scale_min, cfg.scale_max)
    img, lab = dihedral(img, lab)
    return photometric(img, cfg), lab


def photometric(img: torch.Tensor, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """The image-only augmentations, in order: colour jitter, blur, JPEG, channel shuffle / grey.

    Shared by the teachers' :func:`augment_batch` and the distilled students, whose teacher
    maps must stay aligned (so students get no geometry from here). Students trained without
    it stayed at a Kampala chip IoU of 0.26-0.27; 852 CPU steps with it added 5 points
    (docs/distillation.md).
    """
    img = colour_jitter(img, cfg)
    img = gaussian_blur(img, cfg.blur_p, cfg.blur_sigma_max)
    img = random_jpeg(img, cfg.jpeg_p, cfg.jpeg_quality_min, cfg.jpeg_quality_max)
    if cfg.channel_shuffle_p or cfg.grey_p:
        img = channel_shuffle_grey(img, cfg.channel_shuffle_p, cfg.grey_p)
    return img

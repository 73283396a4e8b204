"""Augmentation keeps images and labels aligned; the GPU JPEG matches real JPEG."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from geoseg.augment import AugmentConfig, augment_batch, batch_side, colour_jitter, dihedral, jpeg_approx, scale_crop
from geoseg.paths import data_root


def _real_crop(size=128):
    path = data_root() / "landcover" / "dubai" / "tile_4" / "image_part_005.jpg"
    return np.array(Image.open(path).convert("RGB"))[:size, :size]


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_geometry_moves_labels_with_images():
    torch.manual_seed(0)
    lab = torch.randint(0, 3, (6, 32, 32), dtype=torch.uint8)
    img = lab[:, None].repeat(1, 3, 1, 1).float() / 2.0  # image encodes the label
    di, dl = dihedral(img, lab)
    assert torch.equal(di[:, 0] * 2, dl.float())
    assert not torch.equal(dl, lab)  # something was flipped/rotated
    si, sl = scale_crop(img, lab, 24, 1.33, 1.34)  # crop 18 px, upsample to 24
    assert si.shape == (6, 3, 24, 24) and sl.shape == (6, 24, 24)
    assert set(sl.unique().tolist()) <= {0, 1, 2}  # nearest: no invented classes


@pytest.mark.parametrize("quality", [20, 50])
def test_jpeg_approx_matches_real_jpeg(quality):
    img = _real_crop()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling=0)
    real = np.asarray(Image.open(buf))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    approx = (jpeg_approx(x, quality)[0].permute(1, 2, 0).numpy() * 255).round()
    assert _psnr(approx, real) > 35  # close to the real codec
    assert _psnr(approx, img) == pytest.approx(_psnr(real, img), abs=1.0)  # same amount of degradation


def test_augment_batch_output_range_and_colour_change():
    torch.manual_seed(1)
    img = torch.from_numpy(_real_crop(64).copy()).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    lab = torch.zeros(4, 64, 64, dtype=torch.uint8)
    x, y = augment_batch(img, lab, AugmentConfig(out_size=48, blur_p=1.0, jpeg_p=1.0))
    assert x.shape == (4, 3, 48, 48) and y.shape == (4, 48, 48)
    assert x.min() >= 0 and x.max() <= 1
    jittered = colour_jitter(img.float() / 255, AugmentConfig())
    assert not torch.allclose(jittered[0], jittered[1])  # per-sample jitter


def test_channel_shuffle_and_grey_keep_pixel_values():
    from geoseg.augment import channel_shuffle_grey

    torch.manual_seed(0)
    img = torch.rand(64, 3, 8, 8)
    out = channel_shuffle_grey(img, 0.5, 0.2)
    changed = 0
    for a, b in zip(img, out):
        grey = torch.allclose(b, a.mean(0, keepdim=True).expand_as(a))
        permuted = sorted(b[:, 0, 0].tolist()) == sorted(a[:, 0, 0].tolist())
        assert grey or permuted  # never invents colours
        changed += int(not torch.equal(a, b))
    assert 10 < changed < 60  # a random subset


def test_photometric_keeps_geometry_and_can_reorder_channels():
    """Students get the image-only augmentations: pixels stay where they are (teacher maps stay
    aligned), values stay in 0..1, and with p=1 the channel shuffle reorders the bands."""
    from geoseg.augment import photometric

    torch.manual_seed(0)
    img = torch.zeros(8, 3, 32, 32)
    img[:, 0, :16] = 0.9  # a red block on the top half: position must survive
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, channel_gain=0, blur_p=0, jpeg_p=0,
                        channel_shuffle_p=1.0, grey_p=0.0)
    out = photometric(img, cfg)
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.all(out[:, :, 16:] == 0)  # nothing moved into the bottom half
    moved = [int(out[i, :, :16].mean((1, 2)).argmax()) for i in range(8)]
    assert any(c != 0 for c in moved)  # red went to another band in some samples


def test_batch_side_varies_over_multiples_of_32_within_the_range():
    torch.manual_seed(2)
    cfg = AugmentConfig(out_size=64, out_size_max=128)
    sides = {batch_side(cfg) for _ in range(200)}
    assert sides == {64, 96, 128}  # every multiple of 32 in range, nothing else
    assert batch_side(AugmentConfig(out_size=64)) == 64  # no range: the fixed side
    img = torch.from_numpy(_real_crop(128).copy()).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    lab = torch.zeros(2, 128, 128, dtype=torch.uint8)
    shapes = {augment_batch(img, lab, cfg)[0].shape[-1] for _ in range(30)}
    assert len(shapes) > 1 and shapes <= {64, 96, 128}

"""CE + Dice on a hand-computed case; ignore pixels; deep supervision sum."""
import math

import pytest
import torch

from geoseg.losses import CEDiceLoss, soft_dice_loss

# three pixels: (logits [0, 0], class 0), (logits [ln 3, 0] -> p1 = 1/4, class 1), (ignored)
LOGITS = torch.tensor([[0.0, math.log(3.0), 5.0], [0.0, 0.0, -5.0]]).view(1, 2, 1, 3)  # (B, class, H, W)
TARGET = torch.tensor([[[0, 1, 255]]])


def test_cross_entropy_term_by_hand():
    loss = CEDiceLoss(2, ignore_index=255, dice_weight=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    weighted = CEDiceLoss(2, ignore_index=255, class_weights=[1.0, 2.0], dice_weight=0.0)(LOGITS, TARGET)
    assert weighted.item() == pytest.approx((math.log(2) + 2 * math.log(4)) / 3, rel=1e-6)


def test_dice_term_by_hand():
    # class 1: p = [0.5, 0.25], t = [0, 1]; (2*0.25 + 1) / (0.75 + 1 + 1)
    expected = 1 - 1.5 / 2.75
    assert soft_dice_loss(LOGITS, TARGET, 255, [1]).item() == pytest.approx(expected, rel=1e-6)
    total = CEDiceLoss(2, 255, dice_classes=[1], dice_weight=0.5)(LOGITS, TARGET)
    assert total.item() == pytest.approx(1.5 * math.log(2) + 0.5 * expected, rel=1e-6)


def test_ignored_pixels_change_nothing_and_all_ignored_is_zero():
    fn = CEDiceLoss(2, 255, dice_classes=[1])
    other = LOGITS.clone()
    other[0, :, 0, 2] = torch.tensor([-9.0, 9.0])  # only the ignored pixel differs
    assert fn(other, TARGET).item() == pytest.approx(fn(LOGITS, TARGET).item())
    none = fn(LOGITS.requires_grad_(), torch.full_like(TARGET, 255))
    assert none.item() == 0.0
    none.backward()  # still differentiable


def test_deep_supervision_sums_fused_and_sides():
    fn = CEDiceLoss(2, 255, dice_classes=[1], fused_weight=2.0)
    single = fn(LOGITS, TARGET).item()
    assert fn([LOGITS, LOGITS, LOGITS], TARGET).item() == pytest.approx(4 * single, rel=1e-6)

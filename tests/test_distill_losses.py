"""CSC and ACE distillation losses on hand-computed cases."""
import math

import pytest
import torch
import torch.nn.functional as F

from geoseg.distill_losses import (
    IGNORE_INDEX,
    CSCLoss,
    adaptive_cross_entropy,
    adaptive_targets,
    channel_correlation,
    spatial_correlation,
)


def test_identical_and_rescaled_features_cost_nothing():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 12, 10)
    loss = CSCLoss(8, 8, pool=4)
    assert loss(f, f).item() == pytest.approx(0.0, abs=1e-10)
    assert loss(3.5 * f, f).item() == pytest.approx(0.0, abs=1e-10)


def test_hand_computed_two_by_two_case():
    # student: channel 0 only at position 0, channel 1 only at position 1 -> both matrices = I.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    # teacher: every entry equal -> both matrices all ones. MSE(I, ones) = 2/4 per term.
    teacher = torch.ones(1, 2, 1, 2)
    assert channel_correlation(student)[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert torch.allclose(spatial_correlation(teacher)[0], torch.ones(2, 2))
    assert CSCLoss(2, 2, spatial_weight=1.0)(student, teacher).item() == pytest.approx(1.0)
    assert CSCLoss(2, 2, spatial_weight=0.0)(student, teacher).item() == pytest.approx(0.5)


def test_correlations_respect_permutations():
    torch.manual_seed(1)
    f = torch.randn(1, 5, 4, 4)
    pos = torch.randperm(16)
    moved = f.flatten(2)[:, :, pos].view_as(f)
    # Channel correlation ignores where things are; spatial correlation permutes with positions.
    assert torch.allclose(channel_correlation(moved), channel_correlation(f), atol=1e-6)
    assert torch.allclose(spatial_correlation(moved), spatial_correlation(f)[:, pos][:, :, pos], atol=1e-6)
    ch = torch.randperm(5)
    assert torch.allclose(spatial_correlation(f[:, ch]), spatial_correlation(f), atol=1e-6)
    # A student whose positions are shuffled is penalised, by the spatial term only.
    loss = CSCLoss(5, 5, pool=4)
    assert loss(moved, f).item() > 1e-3
    assert CSCLoss(5, 5, pool=4, spatial_weight=0.0)(moved, f).item() == pytest.approx(0.0, abs=1e-10)


def test_projection_and_resolution_mismatch_learn():
    torch.manual_seed(2)
    student = torch.randn(2, 6, 32, 32, requires_grad=True)
    teacher = torch.randn(2, 16, 64, 64)
    loss_fn = CSCLoss(6, 16, pool=8)
    loss = loss_fn(student, teacher)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert loss_fn.project.weight.grad is not None and loss_fn.project.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same batch"):
        loss_fn(student[:1], teacher)


def test_ace_equals_cross_entropy_where_teacher_is_wrong():
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (2, 5, 5))
    student = torch.randn(2, 3, 5, 5)
    # Teacher confidently predicts (label + 1) mod 3: wrong everywhere.
    teacher = 10 * F.one_hot((labels + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert adaptive_cross_entropy(student, teacher, labels).item() == pytest.approx(
        F.cross_entropy(student, labels).item(), rel=1e-6
    )


def test_ace_hand_computed_mixed_case_with_ignore():
    # Three pixels, two classes. Teacher logits (0, ln 3) -> probs (0.25, 0.75), argmax 1.
    teacher = torch.tensor([[0.0, math.log(3.0)]] * 3).T.reshape(1, 2, 1, 3)
    student = torch.zeros(1, 2, 1, 3)  # log p = ln 0.5 for both classes
    labels = torch.tensor([[[1, 0, IGNORE_INDEX]]])
    target = adaptive_targets(teacher, labels)
    assert target[0, :, 0, 0].tolist() == pytest.approx([0.25, 0.75])  # teacher right: soft target
    assert target[0, :, 0, 1].tolist() == [1.0, 0.0]  # teacher wrong: one-hot truth
    assert target[0, :, 0, 2].tolist() == [0.0, 0.0]  # ignored
    # Each valid pixel costs -ln 0.5 whatever its target; mean over the 2 valid pixels.
    assert adaptive_cross_entropy(student, teacher, labels).item() == pytest.approx(math.log(2.0))
    student = torch.tensor([[0.0, 0.0, 5.0], [math.log(3.0), 0.0, -5.0]]).reshape(1, 2, 1, 3)
    expected = (-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(2.0)) / 2
    assert adaptive_cross_entropy(student, teacher, labels).item() == pytest.approx(expected, rel=1e-6)


def test_ace_all_ignored_and_bad_input():
    student = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), IGNORE_INDEX)
    loss = adaptive_cross_entropy(student, student.detach(), labels)
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="outside"):
        adaptive_cross_entropy(student, student.detach(), torch.full((1, 4, 4), 7))
    with pytest.raises(ValueError, match="differ"):
        adaptive_cross_entropy(student, torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))

"""Segmentation losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stitchnet.models.losses import (
    check_loss_kind,
    cross_entropy,
    focal_loss,
    segmentation_loss,
    soft_dice_loss,
)


def two_pixel_case() -> tuple[torch.Tensor, torch.Tensor]:
    """One row, two classes, two pixels.

    Pixel a: logits (ln 3, 0), target 0 -> softmax (3/4, 1/4), p_target = 3/4.
    Pixel b: logits (0, 0),    target 1 -> softmax (1/2, 1/2), p_target = 1/2.
    """
    logits = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    logits[0, 0, 0, 0] = math.log(3.0)
    target = torch.tensor([[[0, 1]]])
    return logits, target


def test_cross_entropy_two_pixels():
    logits, target = two_pixel_case()
    expected = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    assert cross_entropy(logits, target).item() == pytest.approx(expected, abs=1e-12)


def test_focal_two_pixels_gamma_two():
    logits, target = two_pixel_case()
    expected = ((1 / 4) ** 2 * -math.log(3 / 4) + (1 / 2) ** 2 * -math.log(1 / 2)) / 2
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, abs=1e-12)


def test_focal_with_gamma_zero_equals_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target))


def test_dice_two_pixels():
    logits, target = two_pixel_case()
    # eps = 0: class 0 has intersection 3/4 and sums 5/4 + 1 -> Dice 2/3;
    # class 1 has intersection 1/2 and sums 3/4 + 1 -> Dice 4/7; loss 1 - (2/3 + 4/7) / 2 = 8/21.
    assert soft_dice_loss(logits, target, eps=0.0).item() == pytest.approx(8 / 21, abs=1e-12)
    # eps = 1: Dice (1.5 + 1) / (2.25 + 1) = 10/13 and (1 + 1) / (1.75 + 1) = 8/11 -> 36/143.
    assert soft_dice_loss(logits, target, eps=1.0).item() == pytest.approx(36 / 143, abs=1e-12)


def test_dice_of_a_perfect_prediction_is_near_zero():
    target = torch.tensor([[[0, 1, 2], [3, 3, 0]]])
    logits = 50.0 * torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(logits, target, eps=1e-6).item() == pytest.approx(0.0, abs=1e-5)


def test_ce_plus_dice_is_the_sum():
    logits, target = two_pixel_case()
    expected = (-math.log(3 / 4) - math.log(1 / 2)) / 2 + 36 / 143
    assert segmentation_loss(logits, target, "ce+dice").item() == pytest.approx(expected, abs=1e-12)
    assert segmentation_loss(logits, target, "dice").item() == pytest.approx(36 / 143, abs=1e-12)


def test_every_kind_has_a_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    for kind in ("ce", "dice", "focal", "ce+dice"):
        logits.grad = None
        segmentation_loss(logits, target, kind).backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_unknown_kind_lists_the_valid_ones():
    logits, target = two_pixel_case()
    with pytest.raises(ValueError, match=r"'bce'.*'ce', 'dice', 'focal', 'ce\+dice'"):
        segmentation_loss(logits, target, "bce")
    with pytest.raises(ValueError, match=r"UNetConfig\.loss is 'dise'"):
        check_loss_kind("dise", "UNetConfig")


def test_class_id_out_of_range_is_named():
    logits = torch.zeros(1, 2, 1, 2)
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[0, 3\]"):
        cross_entropy(logits, torch.tensor([[[0, 3]]]))


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\).*\(1, 3, 3\)"):
        cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))

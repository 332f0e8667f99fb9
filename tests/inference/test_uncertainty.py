"""Uncertainty maps and calibration metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stitchnet.inference.uncertainty import (
    auroc,
    brier_score,
    calibration_report,
    expected_calibration_error,
    mutual_information,
    pearson,
    predictive_entropy,
    prob_samples,
    slice_lesion_dice,
    spearman,
    stitchnet_posterior_probs,
    tta_probs,
)
from stitchnet.models import build_model


def _pixels(*rows: list[float]) -> torch.Tensor:
    """Per-pixel class distributions -> (1, C, 1, W)."""
    return torch.tensor(rows, dtype=torch.float64).T[None, :, None, :]


def test_entropy_of_one_hot_uniform_and_a_coin():
    probs = _pixels([1, 0, 0, 0], [0.25] * 4, [0.5, 0.5, 0, 0])
    h = predictive_entropy(probs)
    assert h.shape == (1, 1, 3)
    assert h[0, 0].tolist() == pytest.approx([0.0, math.log(4), math.log(2)])


def test_mutual_information_zero_when_draws_agree_and_log2_when_they_split():
    flat = _pixels([0.5, 0.5, 0, 0])  # (1, 4, 1, 1), a coin in every draw
    agree = torch.stack([flat, flat, flat])  # (3, 1, 4, 1, 1)
    assert mutual_information(agree).item() == pytest.approx(0.0, abs=1e-12)
    # Two confident draws that disagree: mean is the coin (log 2 nats), each draw has 0.
    split = torch.stack([_pixels([1, 0, 0, 0]), _pixels([0, 1, 0, 0])])
    assert mutual_information(split).item() == pytest.approx(math.log(2))
    assert predictive_entropy(split.mean(0)).item() == pytest.approx(math.log(2))


def test_ece_zero_for_a_perfectly_calibrated_toy():
    # 10 pixels at confidence 0.7 with 7 right, 20 at 0.95 with 19 right: each bin's accuracy
    # equals its confidence.
    p7 = np.tile([0.7, 0.3], (10, 1))
    t7 = np.array([0] * 7 + [1] * 3)
    p95 = np.tile([0.05, 0.95], (20, 1))
    t95 = np.array([1] * 19 + [0])
    probs, targets = np.vstack([p7, p95]), np.r_[t7, t95]
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_toy_by_hand():
    # 4 pixels at confidence 0.9, only 2 right -> one bin, gap |0.5 - 0.9| = 0.4.
    probs = np.tile([0.9, 0.1], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 1, 1])) == pytest.approx(0.4)
    # Add 4 pixels at 0.6, all right (their own bin, gap |1 - 0.6| = 0.4):
    # (4 * 0.4 + 4 * 0.4) / 8 = 0.4.
    more = np.tile([0.6, 0.4], (4, 1))
    probs2, t2 = np.vstack([probs, more]), np.array([0, 0, 1, 1, 0, 0, 0, 0])
    assert expected_calibration_error(probs2, t2) == pytest.approx(0.4)


def test_brier_by_hand():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # pixel 1: 0; pixel 2: 0.25 + 0.25; pixel 3 (truth 0): 1 + 1 -> mean 2.5 / 3
    assert brier_score(probs, np.array([0, 0, 0])) == pytest.approx(2.5 / 3)


def test_auroc_perfect_reversed_tied_and_hand_case():
    err = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), err) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), err) == 0.0
    assert auroc(np.full(4, 0.3), err) == 0.5
    # positives 0.5, 0.2; negatives 0.5, 0.1: pairs (0.5 vs 0.5) = 1/2, (0.5 vs 0.1) = 1,
    # (0.2 vs 0.5) = 0, (0.2 vs 0.1) = 1 -> 2.5 / 4
    assert auroc(np.array([0.5, 0.2, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.625)
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_pearson_and_spearman():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    # Monotone but not linear: Spearman 1, Pearson below 1.
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, x**3) < 0.99
    assert math.isnan(pearson(x, np.ones(4)))


def test_slice_lesion_dice_rule_for_empty_slices():
    pred = np.array([[[2, 3, 1, 0]], [[1, 1, 0, 0]], [[2, 0, 0, 0]]])
    true = np.array([[[2, 2, 2, 0]], [[1, 0, 0, 0]], [[1, 0, 0, 0]]])
    d = slice_lesion_dice(pred, true)
    assert d[0] == pytest.approx(2 * 2 / (2 + 3))
    assert math.isnan(d[1])  # no lesion anywhere: left out
    assert d[2] == 0.0


def test_calibration_report_on_a_hand_case():
    # Two slices of 1 x 2 pixels; slice 0 fully lung, slice 1 one lung pixel.
    probs = np.zeros((2, 4, 1, 2))
    probs[0, :, 0, 0] = [0, 0, 1, 0]  # confident GGO, right
    probs[0, :, 0, 1] = [0, 0.5, 0.5, 0]  # coin, argmax healthy (first max), truth GGO: error
    probs[1, :, 0, 0] = [0, 1, 0, 0]  # confident healthy, right
    targets = np.array([[[2, 2]], [[1, 0]]])
    lung = targets >= 1
    ent = predictive_entropy(torch.from_numpy(probs)).numpy()
    rep = calibration_report(probs, targets, ent, lung)
    assert rep["n_pixels"] == 3
    assert rep["error_rate"] == pytest.approx(1 / 3)
    assert rep["auroc"] == 1.0  # the only error is the only uncertain pixel
    assert rep["brier"] == pytest.approx((0 + 0.5 + 0) / 3)
    # Confidences 1, 0.5, 1: bin 15 holds two right (gap 0), bin 7 one wrong at 0.5 -> 0.5 / 3
    assert rep["ece"] == pytest.approx(0.5 / 3)
    assert rep["n_slices_with_dice"] == 1  # slice 1 has no lesion in truth or prediction
    assert math.isnan(rep["pearson"])  # one slice: no correlation


def test_posterior_draws_differ_and_are_reproducible():
    torch.manual_seed(0)
    model = build_model("stitchnet", preset="debug")
    x = torch.rand(2, 1, 32, 32)
    g = torch.Generator().manual_seed(3)
    p = stitchnet_posterior_probs(model, x, n_samples=3, generator=g)
    assert p.shape == (3, 2, 4, 32, 32)
    assert torch.allclose(p.sum(dim=2), torch.ones(3, 2, 32, 32), atol=1e-5)
    assert not torch.equal(p[0], p[1])  # z is drawn, not the mean
    again = stitchnet_posterior_probs(model, x, 3, torch.Generator().manual_seed(3))
    assert torch.equal(p, again)
    assert model.training  # mode restored
    mi = mutual_information(p)
    assert mi.shape == (2, 32, 32) and float(mi.max()) > 0


def test_tta_undoes_each_flip():
    # A "model" whose logits are the image itself in class 0: every flipped draw, flipped back,
    # must equal the unflipped one exactly.
    class Echo(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x * 5, torch.zeros_like(x)], dim=1)  # (B, 2, H, W)

    x = torch.rand(1, 1, 5, 7)
    p = tta_probs(Echo(), x)
    assert p.shape == (4, 1, 2, 5, 7)
    for k in range(1, 4):
        assert torch.equal(p[k], p[0])
    assert mutual_information(p).abs().max() < 1e-6
    assert prob_samples(Echo(), x).shape == (4, 1, 2, 5, 7)

"""Calibration statistics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stitchnet.inference.uncertainty import predictive_entropy
from stitchnet.study.calibration import (
    auroc,
    brier_score,
    calibration_report,
    expected_calibration_error,
    pearson,
    slice_lesion_dice,
    spearman,
)


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

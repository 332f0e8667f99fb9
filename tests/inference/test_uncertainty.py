"""Uncertainty maps (entropy, mutual information, posterior and flip draws) against values worked
out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stitchnet.inference.uncertainty import (
    mutual_information,
    predictive_entropy,
    prob_samples,
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

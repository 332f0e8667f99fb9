"""Probability functions against hand-worked values and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Beta, Categorical, MixtureSameFamily, Normal, kl_divergence

from stitchnet.probability import (
    beta_log_prob,
    beta_mean,
    categorical_log_likelihood,
    expected_nll,
    focal_nll,
    gaussian_kl,
    gaussian_kl_standard,
    gaussian_sample,
    labelled_log_likelihood,
    mixture_log_likelihood,
    positive,
    precision_weighted,
    style_log_likelihood,
)


def _random_maps(b=2, k=4, h=3, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, h, w, generator=g) * 0.98 + 0.01
    alpha = torch.rand(b, k, h, w, generator=g) * 5 + 0.2
    beta = torch.rand(b, k, h, w, generator=g) * 5 + 0.2
    log_pi = torch.log_softmax(torch.randn(b, k, h, w, generator=g), dim=1)
    y = torch.randint(0, k, (b, h, w), generator=g)
    return x, alpha, beta, log_pi, y


def test_positive_is_softplus_plus_eps():
    out = positive(torch.tensor([0.0, 30.0, -30.0]), eps=1e-3)
    assert out[0].item() == pytest.approx(math.log(2.0) + 1e-3)
    assert out[1].item() == pytest.approx(30.0 + 1e-3)  # softplus is linear for large inputs
    assert out[2].item() == pytest.approx(1e-3, abs=1e-9)  # never below eps


def test_gaussian_sample_is_mean_plus_scaled_noise():
    mu, var = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.25])
    noise = torch.randn(2, generator=torch.Generator().manual_seed(3))
    got = gaussian_sample(mu, var, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, mu + torch.tensor([2.0, 0.5]) * noise)


def test_gaussian_sample_is_reparameterised():
    mu = torch.tensor([0.5], requires_grad=True)
    var = torch.tensor([4.0], requires_grad=True)
    noise = torch.randn(1, generator=torch.Generator().manual_seed(1))
    gaussian_sample(mu, var, torch.Generator().manual_seed(1)).sum().backward()
    assert mu.grad.item() == pytest.approx(1.0)
    # d/dvar sqrt(var) * e = e / (2 sqrt(var)) = e / 4
    assert var.grad.item() == pytest.approx(noise.item() / 4)


def test_gaussian_kl_hand_worked():
    # Shifted mean, unit variances: KL = (1 - 0)^2 / 2 = 0.5.
    assert gaussian_kl(*map(torch.tensor, (1.0, 1.0, 0.0, 1.0))).item() == pytest.approx(0.5)
    # q = N(0, 4), p = N(0, 1): 0.5 * (log 1/4 + 4 - 1) = 1.5 - log 2.
    kl = gaussian_kl_standard(torch.tensor(0.0), torch.tensor(4.0))
    assert kl.item() == pytest.approx(1.5 - math.log(2.0))
    # Identical distributions have zero KL.
    assert gaussian_kl(*map(torch.tensor, (0.3, 2.0, 0.3, 2.0))).item() == pytest.approx(0.0)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(6, generator=g), torch.randn(6, generator=g)
    var_q, var_p = torch.rand(6, generator=g) + 0.1, torch.rand(6, generator=g) + 0.1
    want = kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_p, var_p.sqrt()))
    torch.testing.assert_close(gaussian_kl(mu_q, var_q, mu_p, var_p), want)
    want_std = kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl_standard(mu_q, var_q), want_std)


@pytest.mark.parametrize(
    "mu1, var1, mu2, var2, mu, var",
    [
        (1.0, 1.0, 3.0, 1.0, 2.0, 0.5),  # equal precisions: the average, half the variance
        (0.0, 1.0, 4.0, 3.0, 1.0, 0.75),  # 1/(1 + 1/3) = 3/4; (0 + 4/3) * 3/4 = 1
    ],
)
def test_precision_weighted_hand_worked(mu1, var1, mu2, var2, mu, var):
    got_mu, got_var = precision_weighted(*map(torch.tensor, (mu1, var1, mu2, var2)))
    assert got_mu.item() == pytest.approx(mu)
    assert got_var.item() == pytest.approx(var)


def test_beta_log_prob_matches_torch_distributions():
    x, alpha, beta, _, _ = _random_maps()
    want = Beta(alpha, beta).log_prob(x.expand_as(alpha))
    torch.testing.assert_close(beta_log_prob(x, alpha, beta), want, rtol=1e-5, atol=1e-5)


def test_beta_log_prob_clips_x_into_the_open_interval():
    a, b = torch.tensor([2.0, 0.5]), torch.tensor([3.0, 0.7])
    eps = 1e-3
    want_lo = Beta(a, b).log_prob(torch.full((2,), eps))
    want_hi = Beta(a, b).log_prob(torch.full((2,), 1 - eps))
    torch.testing.assert_close(beta_log_prob(torch.zeros(2), a, b, eps), want_lo)
    torch.testing.assert_close(beta_log_prob(torch.ones(2), a, b, eps), want_hi)


def test_beta_mean_hand_worked():
    assert beta_mean(torch.tensor(2.0), torch.tensor(6.0)).item() == pytest.approx(0.25)


def test_labelled_log_likelihood_matches_torch_distributions():
    x, alpha, beta, log_pi, y = _random_maps()
    log_px = beta_log_prob(x, alpha, beta)
    cat = Categorical(logits=log_pi.permute(0, 2, 3, 1))
    a_y = alpha.gather(1, y.unsqueeze(1)).squeeze(1)
    b_y = beta.gather(1, y.unsqueeze(1)).squeeze(1)
    want_cat = cat.log_prob(y).sum(dim=(1, 2))
    want_beta = Beta(a_y, b_y).log_prob(x.squeeze(1)).sum(dim=(1, 2))
    torch.testing.assert_close(categorical_log_likelihood(log_pi, y), want_cat)
    torch.testing.assert_close(style_log_likelihood(log_px, y), want_beta, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        labelled_log_likelihood(log_pi, log_px, y), want_cat + want_beta, rtol=1e-5, atol=1e-4
    )


def test_mixture_log_likelihood_matches_mixture_same_family():
    x, alpha, beta, log_pi, _ = _random_maps()
    # Per pixel: a 4-component mixture of Betas; components last for torch.distributions.
    mix = MixtureSameFamily(
        Categorical(logits=log_pi.permute(0, 2, 3, 1)),
        Beta(alpha.permute(0, 2, 3, 1), beta.permute(0, 2, 3, 1)),
    )
    want = mix.log_prob(x.squeeze(1)).sum(dim=(1, 2))  # (B,)
    got = mixture_log_likelihood(log_pi, beta_log_prob(x, alpha, beta))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_expected_nll_hand_worked_and_bounds_the_mixture():
    # One pixel, pi = (0.25, 0.75), log Beta_k(x) = (-1, -3): 0.25 * 1 + 0.75 * 3 = 2.5.
    log_pi = torch.log(torch.tensor([0.25, 0.75])).view(1, 2, 1, 1)
    log_px = torch.tensor([-1.0, -3.0]).view(1, 2, 1, 1)
    assert expected_nll(log_pi, log_px).item() == pytest.approx(2.5)
    # Jensen: the expected NLL is never below the mixture's NLL.
    x, alpha, beta, log_pi, _ = _random_maps()
    log_px = beta_log_prob(x, alpha, beta)
    assert (expected_nll(log_pi, log_px) >= -mixture_log_likelihood(log_pi, log_px)).all()


def test_focal_nll_hand_worked():
    # p_y = 0.5 at one pixel: -(1 - 0.5)^2 log 0.5 = 0.25 log 2.
    log_pi = torch.log(torch.tensor([0.5, 0.3, 0.2])).view(1, 3, 1, 1)
    y = torch.zeros(1, 1, 1, dtype=torch.long)
    assert focal_nll(log_pi, y, gamma=2.0).item() == pytest.approx(0.25 * math.log(2.0))
    # gamma 0 is plain cross-entropy.
    x, alpha, beta, log_pi, y = _random_maps()
    torch.testing.assert_close(
        focal_nll(log_pi, y, gamma=0.0), -categorical_log_likelihood(log_pi, y)
    )


def test_label_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        categorical_log_likelihood(torch.zeros(2, 4, 3, 5), torch.zeros(2, 3, 4, dtype=torch.long))

"""Small pure functions for the probability code of the SVAE and StitchNet.

Gaussians are described by a mean and a variance (not a standard deviation), because the ladder
VAE's precision-weighted combination and the closed-form KL are both simplest in variances.
Tensors broadcast elementwise; nothing here reduces over the batch. Functions that sum "over
pixels" take maps (B, K, H, W) or (B, 1, H, W) and return one value per row, shape (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Pixels of a CT slice are exactly 0 or 1 after windowing; the Beta log-density is infinite there,
# so x is clipped into the open interval by this much.
BETA_EPS = 1e-4


def positive(raw: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Map an unconstrained tensor to (eps, inf) with softplus.

    softplus grows linearly for large inputs (unlike exp), which keeps gradients bounded; eps keeps
    scales and Beta parameters away from zero, where log-densities blow up.
    """
    return F.softplus(raw) + eps


def gaussian_sample(
    mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A reparameterised sample mu + sqrt(var) * noise, differentiable in mu and var."""
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + var.sqrt() * noise


def gaussian_kl(
    mu_q: torch.Tensor, var_q: torch.Tensor, mu_p: torch.Tensor, var_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu_q, var_q) || N(mu_p, var_p)) in nats."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)


def gaussian_kl_standard(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu, var) || N(0, 1)) in nats (the top level's prior)."""
    return 0.5 * (var + mu**2 - 1.0 - torch.log(var))


def precision_weighted(
    mu1: torch.Tensor, var1: torch.Tensor, mu2: torch.Tensor, var2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine two Gaussian estimates of one variable as the ladder VAE does.

    The result is the normalised product of the two densities: its precision is the sum of the
    precisions, and its mean is the precision-weighted average of the means.
    Returns (mu, var).
    """
    prec1, prec2 = 1.0 / var1, 1.0 / var2
    var = 1.0 / (prec1 + prec2)
    mu = (mu1 * prec1 + mu2 * prec2) * var
    return mu, var


def beta_log_prob(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, eps: float = BETA_EPS
) -> torch.Tensor:
    """Elementwise log Beta(x | alpha, beta), with x clipped to [eps, 1 - eps]."""
    x = x.clamp(eps, 1.0 - eps)
    log_norm = torch.lgamma(alpha + beta) - torch.lgamma(alpha) - torch.lgamma(beta)
    return log_norm + (alpha - 1.0) * torch.log(x) + (beta - 1.0) * torch.log1p(-x)


def beta_mean(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return alpha / (alpha + beta)


def labelled_log_likelihood(
    log_pi: torch.Tensor, log_px: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """log p(x, y | z) of the stitched model, summed over pixels.

    Args:
        log_pi: (B, K, H, W) log class probabilities.
        log_px: (B, K, H, W) log Beta(x | alpha_k, beta_k) of every class's style at each pixel.
        y: (B, H, W) class ids.
    Returns (B,): sum over pixels of log pi_y + log Beta(x | alpha_y, beta_y).
    """
    return (_gather(log_pi, y) + _gather(log_px, y)).sum(dim=(1, 2))


def categorical_log_likelihood(log_pi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,): sum over pixels of log pi_y; the label part of `labelled_log_likelihood`."""
    return _gather(log_pi, y).sum(dim=(1, 2))


def focal_nll(log_pi: torch.Tensor, y: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """(B,): sum over pixels of -(1 - pi_y)^gamma log pi_y (the focal loss, a negative)."""
    log_p = _gather(log_pi, y)  # (B, H, W)
    return (-((1.0 - log_p.exp()) ** gamma) * log_p).sum(dim=(1, 2))


def style_log_likelihood(log_px: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,): sum over pixels of log Beta(x | alpha_y, beta_y); the image part of the stitch."""
    return _gather(log_px, y).sum(dim=(1, 2))


def mixture_log_likelihood(log_pi: torch.Tensor, log_px: torch.Tensor) -> torch.Tensor:
    """log p(x | z) with the label summed out, summed over pixels.

    Shapes as in `labelled_log_likelihood`. Returns (B,): sum over pixels of
    logsumexp_k(log pi_k + log Beta(x | alpha_k, beta_k)).
    """
    return torch.logsumexp(log_pi + log_px, dim=1).sum(dim=(1, 2))


def expected_nll(log_pi: torch.Tensor, log_px: torch.Tensor) -> torch.Tensor:
    """The authors' code's unlabelled term: sum over pixels of sum_k pi_k * (-log Beta_k(x)).

    This is an upper bound on the mixture's negative log-likelihood (Jensen), reached when pi is
    one-hot; it is returned as a negative log-likelihood, shape (B,).
    """
    return (log_pi.exp() * -log_px).sum(dim=(1, 2, 3))


def _gather(maps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pick maps[b, y[b, i, j], i, j]: (B, K, H, W), (B, H, W) -> (B, H, W)."""
    if maps.shape[0] != y.shape[0] or maps.shape[2:] != y.shape[1:]:
        raise ValueError(
            f"labels of shape {tuple(y.shape)} do not match maps of shape {tuple(maps.shape)}; "
            f"expected (B, H, W) = {(maps.shape[0], *maps.shape[2:])}"
        )
    return maps.gather(1, y.unsqueeze(1)).squeeze(1)

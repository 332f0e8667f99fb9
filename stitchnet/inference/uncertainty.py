"""Where is the model unsure? Predictive entropy and mutual information of a model's draws.

Two sources of several predictive distributions per pixel:
    StitchNet (and the ladder ablation): S draws of z from the posterior q(z | x), each decoded to
        class probabilities (`stitchnet_posterior_probs`);
    every other model: test-time augmentation by the four flips, each prediction flipped back
        (`tta_probs`).
From the stack (S, B, C, H, W):
    predictive entropy  H[mean_s p_s]               total uncertainty, in nats (0 .. log C);
    mutual information  H[mean_s p_s] - mean_s H[p_s]   the part the draws disagree on (epistemic).

Whether that confidence is honest (calibration against labelled slices) is a question of the
study, answered in `stitchnet.study.calibration`.

For whole scans (`stitchnet segment --uncertainty`), `label_uncertainty` scores the label that
`segment` writes inside the lung (background folded into healthy, so 0 .. log 3 nats),
`paste_map` takes a map back onto the slice, and `uncertainty_csv` summarises it per slice.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the class axis: (B, C, H, W) probabilities -> (B, H, W).

    0 log 0 is taken as 0, so a one-hot pixel has entropy exactly 0.
    """
    if probs.ndim != 4:
        raise ValueError(
            f"predictive_entropy: expected (B, C, H, W) probabilities, got {probs.shape}"
        )
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def mutual_information(prob_samples: torch.Tensor) -> torch.Tensor:
    """H[mean_s p_s] - mean_s H[p_s]: (S, B, C, H, W) -> (B, H, W), >= 0 up to rounding.

    It is 0 where every draw gives the same distribution, however flat that distribution is.
    """
    if prob_samples.ndim != 5:
        raise ValueError(
            f"mutual_information: expected (S, B, C, H, W) probability draws, got "
            f"{prob_samples.shape}"
        )
    total = predictive_entropy(prob_samples.mean(dim=0))  # (B, H, W)
    expected = torch.stack([predictive_entropy(p) for p in prob_samples]).mean(dim=0)
    return (total - expected).clamp_min(0.0)


@torch.no_grad()
def stitchnet_posterior_probs(
    model: torch.nn.Module,
    x: torch.Tensor,
    n_samples: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Class probabilities under n_samples draws of z ~ q(z | x): (B, 1, H, W) -> (S, B, 4, H, W).

    The model's train/eval mode is restored; eval mode keeps batch norm on its running stats, so
    the only randomness is the latent draw.
    """
    if not hasattr(model, "outputs"):
        raise TypeError(
            f"stitchnet_posterior_probs needs a StitchNet-like model with outputs(x, sample=True); "
            f"got {type(model).__name__}. Use tta_probs for other models."
        )
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    was_training = model.training
    model.eval()
    try:
        draws = [
            model.outputs(x, sample=True, generator=generator)["logits"].softmax(dim=1)
            for _ in range(n_samples)
        ]  # S x (B, 4, H, W)
    finally:
        model.train(was_training)
    return torch.stack(draws)


# Each flip is its own inverse: flip the input, predict, flip the prediction back.
_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@torch.no_grad()
def tta_probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities under the four flips (none, left-right, up-down, both), each mapped back
    onto the input's pixels: (B, 1, H, W) -> (4, B, C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        draws = []
        for dims in _FLIPS:
            xf = x.flip(dims) if dims else x
            p = model(xf).softmax(dim=1)  # (B, C, H, W) in flipped coordinates
            draws.append(p.flip(dims) if dims else p)
    finally:
        model.train(was_training)
    return torch.stack(draws)


def prob_samples(
    model: torch.nn.Module,
    x: torch.Tensor,
    n_samples: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(S, B, C, H, W) draws: posterior samples for StitchNet-like models, flips for the rest."""
    if hasattr(model, "outputs"):
        return stitchnet_posterior_probs(model, x, n_samples, generator)
    return tta_probs(model, x)


# ---------------------------------------------------------------------------------------------
# Whole scans: the uncertainty of the lung-bounded label map (`stitchnet segment --uncertainty`)


def lung_label_probs(probs: torch.Tensor) -> torch.Tensor:
    """Fold background into healthy: (..., 4, H, W) -> (..., 3, H, W) over (lung, GGO, cons).

    Inside the scan's lung mask `segment` writes "healthy" wherever the model says background, so
    the label written there has these three outcomes; their entropy is 0 .. log 3. Without the
    fold every lung edge would glow with background-vs-healthy doubt that no label reflects.
    """
    if probs.ndim < 3 or probs.shape[-3] != 4:
        raise ValueError(
            f"lung_label_probs: expected (..., 4, H, W) probabilities, got {probs.shape}"
        )
    return torch.cat([probs[..., :2, :, :].sum(dim=-3, keepdim=True), probs[..., 2:, :, :]], -3)


@torch.no_grad()
def label_uncertainty(
    model: torch.nn.Module,
    x: torch.Tensor,
    n_samples: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive entropy and mutual information of the lung label: (B, 1, S, S) -> two (B, S, S).

    Draws as `prob_samples` (n_samples posterior draws of z for StitchNet-like models, the four
    flips otherwise), each folded by `lung_label_probs`; so 0 <= MI <= entropy <= log 3.
    """
    draws = lung_label_probs(prob_samples(model, x, n_samples, generator))  # (D, B, 3, S, S)
    return predictive_entropy(draws.mean(dim=0)), mutual_information(draws)


def paste_map(
    values: np.ndarray | torch.Tensor, box: tuple[int, int, int, int], shape: tuple[int, int]
) -> np.ndarray:
    """A (S, S) map on the model's input back onto the slice: (H, W) float32, resized bilinearly
    into the crop `box` (y0, y1, x0, x1), 0 outside it (the model was not asked there).

    Bilinear weights are convex, so the pasted values stay within the map's own range."""
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
        raise ValueError(f"paste_map: box {box} does not lie inside the slice {tuple(shape)}")
    t = torch.as_tensor(np.asarray(values, dtype=np.float32))[None, None]  # (1, 1, S, S)
    crop = F.interpolate(t, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    out = np.zeros(shape, dtype=np.float32)
    out[y0:y1, x0:x1] = crop[0, 0].numpy()
    return out


def uncertainty_csv(entropy: np.ndarray, mi: np.ndarray, lung: np.ndarray) -> str:
    """uncertainty.csv: per display slice, `slice,lung_voxels,mean_entropy,mean_mi` inside the
    lung (nats); the means are empty on a slice without lung (nothing to average)."""
    if not entropy.shape == mi.shape == lung.shape or entropy.ndim != 3:
        raise ValueError(
            f"uncertainty_csv: entropy {entropy.shape}, mi {mi.shape}, lung {lung.shape}; "
            f"expected one (Z, Y, X) shape"
        )
    inside = np.asarray(lung) > 0
    rows = ["slice,lung_voxels,mean_entropy,mean_mi"]
    for z in range(entropy.shape[0]):
        n = int(inside[z].sum())
        means = (
            f"{float(entropy[z][inside[z]].mean()):.6f},{float(mi[z][inside[z]].mean()):.6f}"
            if n
            else ","
        )
        rows.append(f"{z},{n},{means}")
    return "\n".join(rows) + "\n"

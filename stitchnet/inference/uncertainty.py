"""Where is the model unsure, and is its confidence honest? (issue 11, part 1)

Two sources of several predictive distributions per pixel:
    StitchNet (and the ladder ablation): S draws of z from the posterior q(z | x), each decoded to
        class probabilities (`stitchnet_posterior_probs`);
    every other model: test-time augmentation by the four flips, each prediction flipped back
        (`tta_probs`).
From the stack (S, B, C, H, W):
    predictive entropy  H[mean_s p_s]               total uncertainty, in nats (0 .. log C);
    mutual information  H[mean_s p_s] - mean_s H[p_s]   the part the draws disagree on (epistemic).

Calibration is scored on flat arrays of pixels inside the lung (the caller picks them):
    expected_calibration_error  top-label ECE, 15 equal-width confidence bins (Guo et al. 2017);
    brier_score                 mean over pixels of sum_c (p_c - [y = c])^2, so 0 .. 2;
    auroc                       how well a score (entropy) ranks wrong pixels above right ones,
                                by the Mann-Whitney statistic with mid-ranks (a tie counts 1/2);
    pearson / spearman          of per-slice mean uncertainty against per-slice lesion Dice.
Undefined values (no errors at all, a constant input) are NaN, never a silent 0 or 1.

For whole scans (`stitchnet segment --uncertainty`), `label_uncertainty` scores the label that
`segment` writes inside the lung (background folded into healthy, so 0 .. log 3 nats),
`paste_map` takes a map back onto the slice, and `uncertainty_csv` summarises it per slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ECE_BINS = 15  # Guo et al., "On calibration of modern neural networks" (2017)


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


# ---------------------------------------------------------------------------------------------
# Calibration, on flat arrays of lung pixels


def _flat(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(np.int64).ravel()
    if probs.ndim != 2 or probs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected probs (N, C) and targets (N,), got {probs.shape} and {targets.shape}"
        )
    if targets.size and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(
            f"targets must be class ids in 0..{probs.shape[1] - 1}, found "
            f"{targets.min()}..{targets.max()}"
        )
    return probs, targets


def expected_calibration_error(
    probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label ECE: sum over bins b of |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|.

    probs (N, C), targets (N,). Confidence is the top probability; bin b holds confidences in
    (b / n_bins, (b + 1) / n_bins] (the first bin also takes 0). NaN for N = 0.
    """
    probs, targets = _flat(probs, targets)
    if targets.size == 0:
        return math.nan
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (N,)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    gap = np.abs(
        np.bincount(bins, weights=correct, minlength=n_bins)
        - np.bincount(bins, weights=conf, minlength=n_bins)
    )  # per bin: |sum of correct - sum of confidence| = |B_b| * |acc - conf|
    return float(gap.sum() / count.sum())


def brier_score(probs: np.ndarray, targets: np.ndarray) -> float:
    """Multi-class Brier score: mean over pixels of sum_c (p_c - [y = c])^2 (0 best, 2 worst)."""
    probs, targets = _flat(probs, targets)
    if targets.size == 0:
        return math.nan
    onehot = np.zeros_like(probs)
    onehot[np.arange(targets.size), targets] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    # Start index of each run of equal values, and each element's run.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], values.size]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted 1/2.

    Here: scores = per-pixel entropy, positives = the pixel is misclassified. 1 means every error
    is more uncertain than every correct pixel; 0.5 is chance (or all scores tied). NaN when
    there are no positives or no negatives.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(positives).astype(bool).ravel()
    if scores.shape != pos.shape:
        raise ValueError(f"auroc: scores {scores.shape} and labels {pos.shape} differ in size")
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _midranks(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN where fewer than 2 points or either side is constant."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pearson: x {x.shape} and y {y.shape} differ in size")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson of the mid-ranks."""
    return pearson(_midranks(x), _midranks(y))


def slice_lesion_dice(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-slice Dice of lesion (GGO or consolidation, classes 2-3) vs the rest: (N, H, W) -> (N,).

    Rule for empty masks: a slice with no lesion in either prediction or truth has no Dice (NaN)
    and is left out of the correlations, so lesion-free slices cannot inflate them.
    """
    p = (np.asarray(pred) >= 2).reshape(len(pred), -1)
    t = (np.asarray(target) >= 2).reshape(len(target), -1)
    inter = (p & t).sum(axis=1).astype(np.float64)
    total = (p.sum(axis=1) + t.sum(axis=1)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * inter / total, np.nan)


def calibration_report(
    probs: np.ndarray, targets: np.ndarray, uncertainty: np.ndarray, lung: np.ndarray
) -> dict[str, float]:
    """Every calibration number of issue 11 for one model on one labelled set.

    Args:
        probs: (N, C, H, W) mean predictive probabilities.
        targets: (N, H, W) true class ids.
        uncertainty: (N, H, W) per-pixel score, e.g. predictive entropy.
        lung: (N, H, W) bool, the pixels scored (e.g. the true lung field, targets >= 1).
    Returns:
        ece, brier, auroc (uncertainty vs pixel error), pearson / spearman of per-slice mean
        uncertainty in the lung against per-slice lesion Dice, and the counts behind them.
    """
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    lung = np.asarray(lung).astype(bool)
    unc = np.asarray(uncertainty, dtype=np.float64)
    n = probs.shape[0]
    if not (n, *probs.shape[2:]) == targets.shape == lung.shape == unc.shape:
        raise ValueError(
            f"calibration_report: expected probs (N, C, H, W) and targets, uncertainty, lung "
            f"(N, H, W); got {probs.shape}, {targets.shape}, {unc.shape}, {lung.shape}"
        )
    flat_p = np.moveaxis(probs, 1, -1)[lung]  # (P, C) lung pixels
    flat_t = targets[lung]  # (P,)
    errors = flat_p.argmax(axis=1) != flat_t
    pred = probs.argmax(axis=1)  # (N, H, W)
    dice = slice_lesion_dice(np.where(lung, pred, 0), np.where(lung, targets, 0))
    lung_px = lung.reshape(n, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slice_unc = np.where(lung, unc, 0.0).reshape(n, -1).sum(axis=1) / lung_px
    keep = ~np.isnan(dice) & (lung_px > 0)
    return {
        "ece": expected_calibration_error(flat_p, flat_t),
        "brier": brier_score(flat_p, flat_t),
        "auroc": auroc(unc[lung], errors),
        "pearson": pearson(slice_unc[keep], dice[keep]),
        "spearman": spearman(slice_unc[keep], dice[keep]),
        "error_rate": float(errors.mean()) if errors.size else math.nan,
        "n_pixels": int(flat_t.size),
        "n_slices": int(n),
        "n_slices_with_dice": int(keep.sum()),
    }

"""Is a trained run's confidence honest? Calibration on its own test split.

`run_calibration(run_dir)` pre-processes the labelled folder with the run's own data config, cuts
it by the run's split (`splits.json` in the run folder, or in a folder above it, as `reproduce`
leaves one split for all its runs) and scores the test part inside the true lung field (mask
classes 1-3): ECE (top label, 15 bins), Brier score, the AUROC of predictive entropy against pixel
errors, and Pearson / Spearman of per-slice mean entropy against per-slice lesion Dice.
Probabilities are the mean over draws: S posterior draws of z for StitchNet-like models, the four
flips for every other model (`stitchnet.inference.uncertainty.prob_samples`). The mean mutual
information of the draws is reported beside them.

`calibrate_runs` writes `test/calibration.json` into each run folder that has a best.pt and none
yet; `reproduce` calls it for the U-Net and the recommended model, and the report tabulates it.

The statistics, on flat arrays of pixels inside the lung (the caller picks them):
    expected_calibration_error  top-label ECE, 15 equal-width confidence bins (Guo et al. 2017);
    brier_score                 mean over pixels of sum_c (p_c - [y = c])^2, so 0 .. 2;
    auroc                       how well a score (entropy) ranks wrong pixels above right ones,
                                by the Mann-Whitney statistic with mid-ranks (a tie counts 1/2);
    pearson / spearman          of per-slice mean uncertainty against per-slice lesion Dice.
Undefined values (no errors at all, a constant input) are NaN, never a silent 0 or 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from stitchnet import pipeline
from stitchnet.checkpoint import BEST_NAME, model_from_checkpoint
from stitchnet.config import NUM_CLASSES, RunConfig
from stitchnet.inference.uncertainty import mutual_information, predictive_entropy, prob_samples
from stitchnet.metrics import any_lesion_dice, confusion_matrix

CALIBRATION_NAME = "calibration.json"  # in the run's test/ folder
ECE_BINS = 15  # Guo et al., "On calibration of modern neural networks" (2017)


def find_splits(run_dir: Path) -> Path:
    """The split a run trained on: its own splits.json, else the nearest one above it."""
    for folder in (run_dir, *run_dir.parents):
        if (folder / "splits.json").is_file():
            return folder / "splits.json"
    raise FileNotFoundError(
        f"{run_dir}: no splits.json in it or above it; expected a folder written by "
        "`stitchnet train` or `stitchnet reproduce`"
    )


def run_calibration(
    run_dir: str | Path,
    labelled: str,
    n_samples: int = 8,
    seed: int = 0,
    batch_size: int = 8,
    cache_dir: str | None = None,
) -> dict:
    """Calibration numbers of one run on its own test split (see the module doc)."""
    run_dir = Path(run_dir)
    splits = find_splits(run_dir)
    model, ckpt = model_from_checkpoint(run_dir)
    cfg = RunConfig.from_dict(ckpt["run_config"])
    data = pipeline.prepare_folder(
        labelled, cfg.data, cache_dir, progress=False, require_masks=True
    )
    test = pipeline.split_parts(data, splits)[1]["test"]
    g = torch.Generator().manual_seed(seed)
    probs, ent, mi = [], [], []
    for start in range(0, len(test), batch_size):
        x = test.images[start : start + batch_size]  # (b, 1, S, S)
        draws = prob_samples(model, x, n_samples, g)  # (D, b, 4, S, S)
        mean = draws.mean(dim=0)  # (b, 4, S, S)
        probs.append(mean.numpy())
        ent.append(predictive_entropy(mean).numpy())
        mi.append(mutual_information(draws).numpy())
    targets = test.masks.numpy()  # (N, S, S)
    lung = targets >= 1
    report = calibration_report(np.concatenate(probs), targets, np.concatenate(ent), lung)
    mi_a = np.concatenate(mi)
    report["mean_mi"] = float(mi_a[lung].mean()) if lung.any() else math.nan
    report["method"] = (
        f"{n_samples} posterior draws" if hasattr(model, "outputs") else "4 flips (TTA)"
    )
    report["model"] = ckpt["model_name"]
    return report


def calibrate_runs(run_dirs: list[Path], labelled: str, cache_dir: str | None = None) -> int:
    """Write test/calibration.json for each run with a best.pt and no such file; returns how
    many were written (runs without weights, e.g. copied back without checkpoints, are skipped)."""
    written = 0
    for run_dir in run_dirs:
        path = run_dir / "test" / CALIBRATION_NAME
        if path.exists() or not (run_dir / BEST_NAME).is_file():
            continue
        report = run_calibration(run_dir, labelled, cache_dir=cache_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        written += 1
    return written


# ---------------------------------------------------------------------------------------------
# The statistics, on flat arrays of lung pixels


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

    `metrics.any_lesion_dice` on class-id maps. Rule for empty masks: a slice with no lesion in
    either prediction or truth has no Dice (NaN) and is left out of the correlations, so
    lesion-free slices cannot inflate them.
    """
    matrix = confusion_matrix(torch.as_tensor(pred), torch.as_tensor(target), NUM_CLASSES)
    return any_lesion_dice(matrix).numpy()  # (N,) float64


def calibration_report(
    probs: np.ndarray, targets: np.ndarray, uncertainty: np.ndarray, lung: np.ndarray
) -> dict[str, float]:
    """Every calibration number for one model on one labelled set.

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

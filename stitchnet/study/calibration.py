"""Is a trained run's confidence honest? Calibration on its own test split (issue 11).

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
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from stitchnet import pipeline
from stitchnet.checkpoint import BEST_NAME, model_from_checkpoint
from stitchnet.config import RunConfig
from stitchnet.inference.uncertainty import (
    calibration_report,
    mutual_information,
    predictive_entropy,
    prob_samples,
)

CALIBRATION_NAME = "calibration.json"  # in the run's test/ folder


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

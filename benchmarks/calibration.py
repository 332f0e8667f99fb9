"""Is the confidence of trained runs honest? Calibration and uncertainty on their test split.

For each run folder (best.pt + splits.json, as `stitchnet train` / `reproduce` leave them), the
labelled folder is pre-processed with the run's own data config and cut by the run's saved split;
on the test part, inside the true lung field (mask classes 1-3), it prints (issue 11):
    ECE (top label, 15 bins), Brier score, AUROC of predictive entropy against pixel errors, and
    Pearson / Spearman of per-slice mean entropy against per-slice lesion Dice.
Probabilities are the mean over draws: S posterior draws of z for StitchNet-like models, the four
flips for every other model (`stitchnet.inference.uncertainty.prob_samples`). Mean mutual
information (StitchNet draws or flips) is printed beside them.

    python benchmarks/calibration.py runs/cpu-small/unet_s0 runs/cpu-small/stitchnet_s0
    python benchmarks/calibration.py RUN... --samples 16 --labelled data/medseg_covid19_train50
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from stitchnet import pipeline
from stitchnet.checkpoint import model_from_checkpoint
from stitchnet.config import RunConfig
from stitchnet.inference.uncertainty import (
    calibration_report,
    mutual_information,
    predictive_entropy,
    prob_samples,
)

LABELLED = "data/medseg_covid19_train50"


def run_metrics(
    run_dir: Path, labelled: str, n_samples: int, seed: int = 0, batch_size: int = 8
) -> dict:
    """Calibration numbers of one run on its own test split (see the module doc)."""
    splits = run_dir / "splits.json"
    if not splits.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no splits.json; expected a run folder written by `stitchnet train`"
        )
    model, ckpt = model_from_checkpoint(run_dir)
    cfg = RunConfig.from_dict(ckpt["run_config"])
    data = pipeline.prepare_folder(labelled, cfg.data, progress=False, require_masks=True)
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
    probs_a, ent_a, mi_a = np.concatenate(probs), np.concatenate(ent), np.concatenate(mi)
    report = calibration_report(probs_a, targets, ent_a, lung)
    report["mean_mi"] = float(mi_a[lung].mean()) if lung.any() else math.nan
    report["method"] = (
        f"{n_samples} posterior draws" if hasattr(model, "outputs") else "4 flips (TTA)"
    )
    report["model"] = ckpt["model_name"]
    return report


def _cell(v: float) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def markdown(rows: dict[str, dict]) -> str:
    head = (
        "| Run | Model | Draws | ECE | Brier | AUROC (entropy vs error) | Pearson | Spearman "
        "| Error rate | Mean MI | Lung px | Slices (with Dice) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {name} | {r['model']} | {r['method']} | {_cell(r['ece'])} | {_cell(r['brier'])} "
        f"| {_cell(r['auroc'])} | {_cell(r['pearson'])} | {_cell(r['spearman'])} "
        f"| {_cell(r['error_rate'])} | {_cell(r['mean_mi'])} | {r['n_pixels']} "
        f"| {r['n_slices']} ({r['n_slices_with_dice']}) |"
        for name, r in rows.items()
    ]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (best.pt, splits.json)")
    parser.add_argument("--labelled", default=LABELLED, help="the folder the runs trained on")
    parser.add_argument("--samples", type=int, default=8, help="posterior draws for StitchNet")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = {str(r): run_metrics(r, args.labelled, args.samples, args.seed) for r in args.runs}
    print(markdown(rows))
    print(
        "\nInside the true lung field (mask classes 1-3) of each run's test split. ECE: top-label, "
        "15 bins. Brier: sum over the 4 classes, 0..2. Pearson/Spearman: per-slice mean entropy "
        "vs per-slice lesion Dice, slices without lesion in truth and prediction left out."
    )


if __name__ == "__main__":
    main()

"""Is the confidence of trained runs honest? Calibration and uncertainty on their test split.

For each run folder (best.pt, and splits.json in it or above it, as `stitchnet train` /
`reproduce` leave them) it prints the numbers of `stitchnet.study.calibration.run_calibration`: ECE,
Brier, AUROC of entropy against pixel errors, per-slice entropy vs lesion Dice, mean mutual
information, on the run's own test split inside the true lung field.

    python experiments/ssl_comparison/calibration.py runs/cpu-small/unet_s0 \
        runs/cpu-small/stitchnet_s0
    python experiments/ssl_comparison/calibration.py RUN... --samples 16 \
        --labelled data/medseg_covid19_train50
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from stitchnet.study.calibration import run_calibration

LABELLED = "data/medseg_covid19_train50"


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
    rows = {str(r): run_calibration(r, args.labelled, args.samples, args.seed) for r in args.runs}
    print(markdown(rows))
    print(
        "\nInside the true lung field (mask classes 1-3) of each run's test split. ECE: top-label, "
        "15 bins. Brier: sum over the 4 classes, 0..2. Pearson/Spearman: per-slice mean entropy "
        "vs per-slice lesion Dice, slices without lesion in truth and prediction left out."
    )


if __name__ == "__main__":
    main()

"""StitchNet with and without the unlabelled pool, and the U-Net, at 4x the CPU demo's budget.

Not part of `make demo` (it takes ~45 min on 2 CPU cores): the demo trains every model 144 steps,
where the unlabelled slices do not measurably help StitchNet. This trains the same three models
600 steps (150 epochs of 4 steps at the `cpu-small` preset, 64 px), validating every 10 epochs,
on the demo's split (the same seeded split), and prints test lesion Dice per seed.

    python experiments/long_budget/run.py                 # seeds 0 and 1, under runs/long_budget
    python experiments/long_budget/run.py --seeds 0 --epochs 2   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from stitchnet import pipeline

LABELLED = "data/medseg_covid19_train50"
UNLABELLED = "data/covid19_ct_seg_20cases_unlabelled"
# (label in the table, model, unlabelled folder or None)
VARIANTS = (
    ("StitchNet (labelled + unlabelled)", "stitchnet", UNLABELLED),
    ("StitchNet (labelled only)", "stitchnet", None),
    ("U-Net (MobileNetV2, from scratch)", "unet", None),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--out", default="runs/long_budget")
    args = parser.parse_args()
    out = Path(args.out)
    dice: dict[str, list[float]] = {label: [] for label, _, _ in VARIANTS}
    started = time.perf_counter()
    for seed in args.seeds:
        for label, model, unlabelled in VARIANTS:
            key = f"{model}_{'ssl' if unlabelled else 'sup'}"
            result = pipeline.fit(
                model,
                LABELLED,
                out / key / f"seed{seed}",
                preset="cpu-small",
                unlabelled=unlabelled,
                seed=seed,
                splits_path=out / "splits.json",
                progress=False,
                epochs=args.epochs,
                eval_every=10,
                checkpoint_every=25,
            )
            dice[label].append(result.test.lesion_dice)
            print(f"{label}, seed {seed}: test lesion Dice {dice[label][-1]:.3f}", flush=True)
    print(
        f"\n{args.epochs} epochs (x4 steps), seeds {args.seeds}; {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    print("| Method | lesion Dice per seed | mean ± std |")
    print("|---|---|---|")
    for label, values in dice.items():
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {label} | {per_seed} | {statistics.mean(values):.3f} ± {spread:.3f} |")


if __name__ == "__main__":
    main()

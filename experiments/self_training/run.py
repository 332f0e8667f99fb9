"""Does self-training from a finished supervised U-Net beat that U-Net?

    python experiments/self_training/run.py RUNS_DIR [--counts 5 30] [--epochs 120] [--scale K]
    python experiments/self_training/run.py RUNS_DIR --table > docs/results/cpu/self-training.md

RUNS_DIR/splits.json is the split of the earlier comparison (a copy of
`runs/gpu/cpu/splits.json`), so the labelled subsets are the same slices. For each labelled
count and seed (0-3 at 5 and 15 slices, 0-2 at 30, the protocol's counts), one after the other:
  1. `unet_long`: the supervised U-Net at preset cpu for EPOCHS epochs: the baseline, and the
     teacher;
  2. `st_unet`: a U-Net trained from scratch for as many epochs with objective `self_training`,
     its pseudo-labels from run 1's best.pt (ST, Yang et al. 2022: every pixel, no threshold).
The gain of 2 over 1 is paired by seed and by labelled slices, and the teacher is the very model
it is compared with. A finished run is skipped on a rerun. `--scale K` divides the epochs (a smoke
test). `--table` prints the per-seed table with the report's rule (a mean gain inside the seeds'
spread is "not shown").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stitchnet import pipeline
from stitchnet.study import protocol as P
from stitchnet.study import run as R
from stitchnet.study.results import collect, paired_gains, seed_table

L, U = "data/medseg_covid19_train50", "data/covid19_ct_seg_20cases_unlabelled"
SEEDS = {5: range(4), 15: range(4), 30: range(3)}
LABELS = {"unet_long": "U-Net (supervised): the teacher", "st_unet": "U-Net + self-training"}


def train_pair(out: Path, n: int, seed: int, epochs: int) -> None:
    count = None if n == 30 else n  # 30: the whole training part, in reproduce's runs/
    common = ("cpu", seed, L, U, out / "splits.json", None, True, count, epochs)
    teacher = R.run_path(out, "unet_long", seed, count)
    R._run(R.Variant("unet_long", LABELS["unet_long"], "unet"), teacher, *common)
    student = P._ssl("st_unet", LABELS["st_unet"], "unet", "self_training", teacher=str(teacher))
    R._run(student, R.run_path(out, "st_unet", seed, count), *common)


def table(out: Path) -> str:
    lines = [
        "# Self-training from the supervised U-Net",
        "",
        f"Made by `python experiments/self_training/run.py {out} --table`; test lesion Dice "
        "(per-slice mean) on the project's split, both runs trained for the same epochs at "
        "preset cpu.",
    ]
    for n, pattern in (
        (30, "runs/*/seed*"),
        (15, "efficiency/*/n15/seed*"),
        (5, "efficiency/*/n5/seed*"),
    ):
        runs = {k: v for k, v in collect(out, pattern).items() if k in LABELS}
        if not runs:
            continue
        lines += ["", f"## {n} labelled slices", "", *seed_table(runs, LABELS), ""]
        lines += paired_gains(runs, LABELS, (("st_unet", "unet_long"),))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--counts", type=int, nargs="+", default=[5, 30], choices=sorted(SEEDS))
    p.add_argument("--seeds", type=int, nargs="+", help="these seeds (default: the protocol's)")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--scale", type=int, default=1, help="divide the epochs (smoke test)")
    p.add_argument("--table", action="store_true", help="print the table of finished runs")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    t0 = time.time()
    cfg = pipeline.run_config("unet", "cpu")
    pipeline.prepare_folder(L, cfg.data, None, False, True)
    pipeline.prepare_folder(U, cfg.data, None, False)
    epochs = max(1, args.epochs // args.scale)
    for n in args.counts:
        for seed in args.seeds if args.seeds is not None else SEEDS[n]:
            train_pair(args.out, n, seed, epochs)
            print(f"n={n} seed {seed} done after {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

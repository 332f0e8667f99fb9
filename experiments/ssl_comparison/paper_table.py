"""The comparison at the `paper` preset: the recommended model against the supervised U-Net.

    python experiments/ssl_comparison/paper_table.py docs/results/cpu-gpu/extra/paper \
        > docs/results/cpu-gpu/extra/paper.md

The folder holds MODEL/seedN run folders (config.json, log.csv, test/metrics.json) for MODEL
`unet` (`stitchnet train --model unet --preset paper`) and `recommended` (`stitchnet train
--preset paper`, no --model; experiments/ssl_comparison/paper_preset.sh), all on the project's
split. Prints the per-seed test scores, the gain paired by seed with the report's rule (a mean
gain inside the seeds' spread is "not shown"), GGO and consolidation F1, and the validation peak
of each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from schedule_table import best_epoch

from stitchnet.figures import read_log
from stitchnet.study.results import paired_gains, pooled_lesion_dice, seed_table

LABEL = {"unet": "U-Net (supervised)", "recommended": "recommended model"}


def load(folder: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for key in LABEL:
        for run_dir in sorted((folder / key).glob("seed*")):
            metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
            runs.setdefault(key, {})[int(run_dir.name[4:])] = {"metrics": metrics, "dir": run_dir}
    return runs


def details(runs: dict[str, dict[int, dict]]) -> list[str]:
    md = [
        "| Model | GGO F1 per seed | consolidation F1 per seed | epochs x steps "
        "| best validated epoch |",
        "|---|---|---|---|---|",
    ]
    for key, by_seed in runs.items():
        seeds = sorted(by_seed)
        f1 = {
            c: [by_seed[s]["metrics"]["groups"][c]["f1"]["mean"] for s in seeds]
            for c in ("ggo", "consolidation")
        }
        cfg = json.loads((by_seed[seeds[0]]["dir"] / "config.json").read_text())
        log = read_log(by_seed[seeds[0]]["dir"] / "log.csv")
        steps_per_epoch = int(np.nanmax([r["step"] for r in log])) // cfg["train"]["epochs"]
        cells = [
            ", ".join(f"{v:.3f}" for v in f1["ggo"]) + f" ({np.mean(f1['ggo']):.3f})",
            ", ".join(f"{v:.3f}" for v in f1["consolidation"])
            + f" ({np.mean(f1['consolidation']):.3f})",
            f"{cfg['train']['epochs']} x {steps_per_epoch} "
            f"(batch {cfg['train']['batch_size']} labelled"
            + (
                f" + {cfg['train']['unlabelled_batch_size']} unlabelled)"
                if cfg["train"]["unlabelled_batch_size"]
                else ")"
            ),
            ", ".join(str(best_epoch(by_seed[s]["dir"])) for s in seeds),
        ]
        md.append(f"| {LABEL[key]} | " + " | ".join(cells) + " |")
    return md


def pooled_gain(runs: dict[str, dict[int, dict]]) -> str:
    """Pooled lesion Dice (over all test pixels) of the recommended model minus the U-Net's."""
    a, b = runs["recommended"], runs["unet"]
    gains = [
        pooled_lesion_dice(a[s]["metrics"]) - pooled_lesion_dice(b[s]["metrics"])
        for s in sorted(set(a) & set(b))
    ]
    return (
        "Pooled lesion Dice, recommended model minus U-Net, per seed: "
        + ", ".join(f"{g:+.3f}" for g in gains)
        + f" (mean {np.mean(gains):+.3f})."
    )


def main(folder: Path) -> None:
    runs = load(folder)
    lines = [
        "# The comparison at the `paper` preset (352 px, 80 epochs, one H100)",
        "",
        f"Made by `python experiments/ssl_comparison/paper_table.py {folder}`; test lesion Dice "
        "(per-slice mean) on the project's 10 test slices, the same split for every run.",
        "",
        *seed_table(runs, LABEL),
        "",
        *paired_gains(runs, LABEL, (("recommended", "unet"),)),
        "",
        pooled_gain(runs),
        "",
        *details(runs),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""The schedule check: is preset cpu's 60-epoch schedule long enough to compare on?

    python experiments/ssl_comparison/schedule_table.py BASE LONGER \
        > docs/results/cpu-gpu/extra/schedule.md

BASE is the `reproduce --preset cpu` folder (60 epochs); LONGER holds the runs of
schedule.py on the same split and seeds (the recommended model and the U-Net at 120
epochs; paste p = 1 and an EMA teacher at 60). Prints, per labelled count, every run's test lesion
Dice per seed and the per-seed gains of the pairs below (same seed, same labelled slices), with the
report's rule: a mean gain inside the seeds' spread is "not shown". Also the epoch at which each
run's validation peaked (`log.csv`), since a peak at the last epochs says the run was still
learning when it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stitchnet.figures import read_log
from stitchnet.study.results import collect, paired_gains, seed_table

OLD = {"unet": "U-Net, 60 epochs", "skip_onepass_paste": "recommended, 60 epochs"}
NEW = {
    "unet_long": "U-Net, 120 epochs",
    "long": "recommended, 120 epochs",
    "paste1": "recommended with paste p=1, 60 epochs",
    "ema": "recommended with an EMA teacher (0.99), 60 epochs",
}
PAIRS = (
    ("skip_onepass_paste", "unet"),  # the targets as the report states them
    ("long", "unet_long"),  # the same, both trained twice as long
    ("unet_long", "unet"),
    ("long", "skip_onepass_paste"),
    ("paste1", "skip_onepass_paste"),
    ("ema", "skip_onepass_paste"),
)


def best_epoch(run_dir: Path) -> int | None:
    """The epoch whose validation lesion Dice was highest (the one best.pt holds)."""
    rows = [r for r in read_log(run_dir / "log.csv") if not np.isnan(r["val_lesion_dice"])]
    return int(max(rows, key=lambda r: r["val_lesion_dice"])["epoch"]) if rows else None


def section(base: Path, longer: Path, pattern: str) -> list[str]:
    runs = {k: v for k, v in collect(base, pattern).items() if k in OLD}
    runs.update({k: v for k, v in collect(longer, pattern).items() if k in NEW})
    label = {**OLD, **NEW}
    runs = {k: runs[k] for k in label if k in runs}
    md = seed_table(runs, label) + [""]
    md += paired_gains(runs, label, PAIRS) + [""]
    for k, by_seed in runs.items():
        peaks = [best_epoch(by_seed[s]["dir"]) for s in sorted(by_seed)]
        val = [by_seed[s]["info"]["val_lesion_dice"] for s in sorted(by_seed)]
        md.append(
            f"- {label[k]}: validation lesion Dice {np.mean(val):.3f}; best validated epoch per "
            f"seed {', '.join(str(p) for p in peaks)}"
        )
    return md


def main(base: Path, longer: Path) -> None:
    lines = [
        "# Schedule check: preset cpu at 60 and 120 epochs",
        "",
        f"Made by `python experiments/ssl_comparison/schedule_table.py {base} {longer}`; "
        "test lesion Dice (per-slice mean) on the project's split.",
    ]
    for title, pattern in (
        ("30 labelled slices (the full training part)", "runs/*/seed*"),
        ("15 labelled slices", "efficiency/*/n15/seed*"),
        ("5 labelled slices", "efficiency/*/n5/seed*"),
    ):
        lines += ["", f"## {title}", "", *section(base, longer, pattern)]
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

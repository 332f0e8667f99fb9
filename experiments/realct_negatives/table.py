"""Print the runs with lesion-free slices beside the same configuration without them.

    python experiments/realct_negatives/table.py [RUNS_DIR] [--base BASE_DIR]

RUNS_DIR (default runs/realct_negatives) holds what run.sh wrote: HELD_OUT/seedS with
test/metrics.json and specificity.json; BASE_DIR (default runs/realct_default/new) the same
configuration trained without lesion-free slices (experiments/realct_default/run.sh). Every
seed found is printed; the held-out scan is the one to read (the others were trained on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCANS = ("lidc_lungmask_slice", "cip_copdgene_crop2", "cip_testinput64")


def row(run: Path) -> list[str]:
    dice = json.loads((run / "test" / "metrics.json").read_text())["lesion_dice"]
    spec = json.loads((run / "specificity.json").read_text())
    cells = [f"{dice:.3f}"]
    for scan in SCANS:
        pct = {r["shift"]: r["lesion_pct"] for r in spec["rows"] if r["scan"] == scan}
        cells.append(" / ".join(f"{pct[s]:.1f}" for s in (0, -25, 25)))
    return cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="?", type=Path, default=Path("runs/realct_negatives"))
    p.add_argument("--base", type=Path, default=Path("runs/realct_default/new"))
    a = p.parse_args()
    head = ["runs", "held out", "seed", "test lesion Dice"] + [
        f"{s}: lesion % at 0/-25/+25 HU" for s in SCANS
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for held in sorted(
        d.name for d in a.runs.iterdir() if d.is_dir() and not d.name.startswith("data_")
    ):
        for run in sorted((a.runs / held).glob("seed*")):
            if not (run / "specificity.json").is_file():
                continue
            base = a.base / run.name
            if (base / "specificity.json").is_file():
                print(
                    "| "
                    + " | ".join(["without lesion-free slices", "-", run.name[4:]] + row(base))
                    + " |"
                )
            print(
                "| " + " | ".join(["with lesion-free slices", held, run.name[4:]] + row(run)) + " |"
            )


if __name__ == "__main__":
    main()

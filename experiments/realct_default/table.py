"""Print the comparison of the old default, the new default and the new one without the pool.

    python experiments/realct_default/table.py [RUNS_DIR] [--old-spec JSON]

RUNS_DIR (default runs/realct_default) holds what run.sh wrote: new/seedS and no_pool/seedS,
each with test/metrics.json and specificity.json. The old default is the model shipped before the
data were calibrated (`--old-model`, a checkpoint), scored here on the same test split through
today's pipeline, and its specificity from `benchmarks/specificity.py --json` (`--old-spec`).
Every seed is printed; a difference smaller than the seeds' spread is "not shown".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SCANS = ("lidc_lungmask_slice", "cip_copdgene_crop2", "cip_testinput64")
KINDS = {
    "new": "new default (calibrated, scanner aug.)",
    "no_aug": "calibrated, no scanner aug.",
    "no_pool": "new, no unlabelled pool",
}


def old_default_dice(checkpoint: Path, splits: Path) -> float:
    """The old shipped model's test lesion Dice on today's (calibrated) inputs."""
    from stitchnet.config import RunConfig
    from stitchnet.evaluate import evaluate
    from stitchnet.inference.defaults import load_segmentation_model
    from stitchnet.pipeline import prepare_folder

    model, cfg, _ = load_segmentation_model(checkpoint)
    assert isinstance(cfg, RunConfig)
    data = prepare_folder(ROOT / "data/medseg_covid19_train50", cfg.data, None, False, True)
    test = json.loads(splits.read_text())["test"]
    index = {s: i for i, s in enumerate(data.ids)}
    return evaluate(model, data.subset([index[s] for s in test])).to_dict()["lesion_dice"]


def spec_cells(rows: list[dict]) -> dict[str, str]:
    """scan -> 'lesion % at 0 / -25 / +25 HU' and the GGO-above-healthy check."""
    out = {}
    for scan in SCANS:
        by_shift = {r["shift"]: r for r in rows if r["scan"] == scan}
        pct = [by_shift.get(s, {}).get("lesion_pct") for s in (0.0, -25.0, 25.0)]
        out[scan] = " / ".join("-" if p is None else f"{p:.1f}" for p in pct)
    ok = [
        r["median_hu_ggo"] > r["median_hu_healthy"]
        for r in rows
        if r["scan"] in SCANS and r.get("median_hu_ggo") is not None
    ]
    out["order"] = f"{sum(ok)}/{len(ok)}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", default="runs/realct_default")
    ap.add_argument("--old-model", default=None, help="the old shipped checkpoint")
    ap.add_argument("--old-spec", default=None, help="its specificity.py --json output")
    args = ap.parse_args()
    runs = Path(args.runs)
    head = "| model | seed | test lesion Dice | " + " | ".join(
        f"{s}: lesion % at 0 / -25 / +25 HU" for s in SCANS
    )
    print(head + " | GGO median HU above healthy |")
    print("|---" * (4 + len(SCANS)) + "|")
    if args.old_model:
        dice = old_default_dice(Path(args.old_model), runs / "new/seed0/splits.json")
        cells = spec_cells(json.loads(Path(args.old_spec).read_text())["rows"])
        print(
            f"| old default (shipped) | 0 | {dice:.3f} | "
            + " | ".join(cells[s] for s in SCANS)
            + f" | {cells['order']} |"
        )
    for kind, name in KINDS.items():
        dices = []
        for seed in (0, 1, 2):
            run = runs / kind / f"seed{seed}"
            metrics, spec = run / "test/metrics.json", run / "specificity.json"
            if not metrics.is_file():
                print(f"| {name} | {seed} | not run | | | | |")
                continue
            dices.append(json.loads(metrics.read_text())["lesion_dice"])
            cells = spec_cells(json.loads(spec.read_text())["rows"]) if spec.is_file() else {}
            print(
                f"| {name} | {seed} | {dices[-1]:.3f} | "
                + " | ".join(cells.get(s, "-") for s in SCANS)
                + f" | {cells.get('order', '-')} |"
            )
        if len(dices) > 1:
            print(
                f"| {name} | mean ± std | {statistics.mean(dices):.3f} ± "
                f"{statistics.pstdev(dices):.3f} | | | | |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

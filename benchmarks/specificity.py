"""Specificity on real CT without COVID-19 lesions: how much lesion does a model call?

Runs a model (the shipped default, or --model RUN_DIR_OR_CHECKPOINT) through the same path as
`stitchnet segment` (read_volume -> segment_volume -> lesion_burden) on each scan of
data/realct_nonlesion_dev, at the scan's own HU and with every body voxel shifted by each
--shifts value (default -25 and +25 HU: a scanner's calibration drifts by about +-20 HU). Prints
one row per scan and shift: lesion % of lung, lung mL, and the median HU of the voxels labelled
healthy lung, GGO and consolidation. A scan with no lung in view (the abdomen control) reports
its lung mL and no lesion %.

    python benchmarks/specificity.py [--model RUN] [--shifts -25 25] [--json OUT.json]

Targets: lesion <= 2 % of the lung on every lung-containing scan at every shift, and the median
HU of GGO voxels above that of healthy-lung voxels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stitchnet.data.volumes import VolumeError, read_volume  # noqa: E402
from stitchnet.inference.burden import lesion_burden  # noqa: E402
from stitchnet.inference.defaults import load_segmentation_model  # noqa: E402
from stitchnet.inference.fast import inference_copy  # noqa: E402
from stitchnet.inference.segment import segment_volume  # noqa: E402
from stitchnet.lungfield.volume import NoLungError  # noqa: E402

DEV = ROOT / "data" / "realct_nonlesion_dev"
# (name, path inside DEV, whether lung is in view)
SCANS = (
    ("lidc_lungmask_slice", "lidc_lungmask_slice", True),
    ("cip_copdgene_crop2", "cip_copdgene_crop2/crop_ct_2slices.nii.gz", True),
    ("cip_testinput64", "cip_testinput64/TestInput.nii.gz", True),
    ("cip_copdgene_abdomen2", "cip_copdgene_abdomen2", False),
)
LABELS = {1: "healthy", 2: "ggo", 3: "consolidation"}


def measure(net, run_cfg, path: Path, shift: float) -> dict:
    """One scan at one HU shift: lesion %, lung mL and the median HU of each label."""
    vol = read_volume(path)
    # Shift the patient, not the field-of-view padding (body marks voxels inside the FOV).
    vol.hu = np.where(vol.body, vol.hu + np.float32(shift), vol.hu).astype(np.float32)
    try:
        seg = segment_volume(net, run_cfg.data, vol, None, 32, progress=False)
    except NoLungError as e:
        return {"lung_ml": 0.0, "lesion_pct": None, "error": str(e).splitlines()[0]}
    total = lesion_burden(seg.labels, seg.lung, vol.voxel_volume_ml())["total"]
    row = {
        "lung_ml": total["lung_ml"],
        "lesion_pct": total["lesion_pct"],
        "ggo_pct": None if not total["lung_ml"] else 100 * total["ggo_ml"] / total["lung_ml"],
    }
    for k, name in LABELS.items():
        sel = seg.labels == k
        row[f"median_hu_{name}"] = float(np.median(vol.hu[sel])) if sel.any() else None
    return row


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="run folder or checkpoint (default: shipped)")
    ap.add_argument("--shifts", type=float, nargs="*", default=[-25.0, 25.0])
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    net, run_cfg, info = load_segmentation_model(args.model)
    net = inference_copy(net, channels_last=True)
    shifts = [0.0] + [s for s in args.shifts if s != 0.0]
    rows = []
    print(f"model: {info['path']} ({info['model_name']})")
    print(
        "| scan | HU shift | lung mL | lesion % of lung | GGO % | median HU healthy | GGO | "
        "consolidation |\n|---|---|---|---|---|---|---|---|"
    )
    for name, rel, has_lung in SCANS:
        for shift in shifts:
            try:
                row = measure(net, run_cfg, DEV / rel, shift)
            except VolumeError as e:
                row = {"lung_ml": None, "lesion_pct": None, "error": str(e).splitlines()[0]}
            row.update(scan=name, shift=shift, lung_in_view=has_lung)
            rows.append(row)
            print(
                f"| {name} | {shift:+.0f} | {_fmt(row.get('lung_ml'), '.1f')} | "
                f"{_fmt(row.get('lesion_pct'), '.1f')} | {_fmt(row.get('ggo_pct'), '.1f')} | "
                f"{_fmt(row.get('median_hu_healthy'), '.0f')} | "
                f"{_fmt(row.get('median_hu_ggo'), '.0f')} | "
                f"{_fmt(row.get('median_hu_consolidation'), '.0f')} |"
                + (f" {row['error']}" if row.get("error") else "")
            )
    lung_rows = [r for r in rows if r["lung_in_view"] and r.get("lesion_pct") is not None]
    worst = max((r["lesion_pct"] for r in lung_rows), default=None)
    order_ok = all(
        r["median_hu_ggo"] > r["median_hu_healthy"]
        for r in lung_rows
        if r.get("median_hu_ggo") is not None and r.get("median_hu_healthy") is not None
    )
    print(
        f"\nworst lesion % on a lung-containing scan: {_fmt(worst, '.2f')} (target <= 2); "
        f"GGO median HU above healthy wherever both are present: {order_ok}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"model": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`stitchnet cohort` speed and output size: a cohort of synthetic scans built from real slices.

python benchmarks/cohort_speed.py [--scans 6] [--slices 300] [--size 512] [--skip-jobs2]

Each scan is segment_speed.synthetic_scan (the bundled labelled slices in HU, cycled to
--slices, in soft tissue with air around the body and FOV padding), its slices rolled by a
different offset per scan so that no two scans are alike, written as an uncompressed NIfTI.
Then, all in this one run, on the same scans and the shipped default model:

  1. plain: `segment_scan` on each scan with what cohort writes (no overlays, report or
     twin), one after the other: the sum of their wall times is the baseline;
  2. `segment_cohort(--jobs 1)`: wall time, scans/hour and its overhead over the baseline
     (target <= 5 %); and, immune to load that falls on one step and not the other, the
     cohort's own bookkeeping: its wall time less the seconds its scans took (model check,
     scan list, tables);
  3. `segment_cohort(--jobs 2)`: wall time and scans/hour (two worker processes, each with
     cores // 2 torch threads);
  4. the bytes of one scan's cohort folder against one `stitchnet segment` folder as written
     by default (overlays, report.html and the healthy twin; target <= 10 %).

Torch uses every core of the machine for the plain runs and --jobs 1. Run it alone (other
work on the machine lands on whichever step runs then): `flock /tmp/stitchnet-heavy.lock ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_speed import synthetic_scan  # noqa: E402

from stitchnet.inference.cohort import segment_cohort  # noqa: E402
from stitchnet.inference.scan import segment_scan  # noqa: E402


def write_scans(folder: Path, n: int, slices: int, size: int) -> list[Path]:
    """n NIfTI scans of `slices` x size^2, each the synthetic scan rolled by 7 k slices."""
    folder.mkdir(parents=True)
    base = synthetic_scan(slices, size)  # (size, size, slices) int16 HU
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])  # RAS: voxels along L, P, S; 0.7 x 0.7 x 1 mm
    paths = []
    for k in range(n):
        path = folder / f"scan_{k:02d}.nii"
        nib.save(nib.Nifti1Image(np.roll(base, 7 * k, axis=2), affine), str(path))
        paths.append(path)
    return paths


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=6)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--skip-jobs2", action="store_true", help="only the plain and --jobs 1 runs")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    print(
        f"{args.scans} scans of {args.slices} x {args.size}^2, shipped default model, {cores} "
        f"cores, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="cohort-speed-") as tmp:
        root = Path(tmp)
        paths = write_scans(root / "scans", args.scans, args.slices, args.size)
        segment_scan(paths[0], root / "warm", overlays=False, report=False, twin=False,
                     progress=False)  # fmt: skip
        plain = []
        for path in paths:
            start = time.perf_counter()
            segment_scan(path, root / "plain" / path.stem, overlays=False, report=False,
                         twin=False, progress=False)  # fmt: skip
            plain.append(time.perf_counter() - start)
        baseline = sum(plain)
        print(f"plain segment_scan: {baseline:.1f} s in all, {baseline / len(paths):.1f} s a scan")

        runs = [1] if args.skip_jobs2 else [1, 2]
        for jobs in runs:
            start = time.perf_counter()
            rows = segment_cohort(root / "scans", root / f"cohort{jobs}", jobs=jobs,
                                  progress=False)  # fmt: skip
            wall = time.perf_counter() - start
            failed = [r["scan_id"] for r in rows if r["status"] != "ok"]
            line = (
                f"cohort --jobs {jobs}: {wall:.1f} s, {3600 * len(rows) / wall:.1f} scans/hour, "
                f"{100 * (wall / baseline - 1):+.1f} % vs plain"
            )
            print(line + (f"; FAILED {failed}" if failed else ""))
            if jobs == 1:
                inside = sum(r["seconds"] for r in rows)  # each scan's segment_scan and row
                print(
                    f"  of which outside the scans: {wall - inside:.2f} s "
                    f"({100 * (wall - inside) / inside:.2f} % of the scans' own {inside:.1f} s)"
                )

        start = time.perf_counter()
        segment_scan(paths[0], root / "segment_default", progress=False)
        print(
            f"one default `segment` (overlays, report, twin): {time.perf_counter() - start:.1f} s"
        )
        small = folder_bytes(root / "cohort1" / "scans" / paths[0].stem)
        full = folder_bytes(root / "segment_default")
        print(
            f"per-scan output: cohort {small / 1e6:.2f} MB, default segment folder "
            f"{full / 1e6:.2f} MB ({100 * small / full:.1f} %)"
        )


if __name__ == "__main__":
    main()

"""`stitchnet cohort SCANS --out OUT`: many scans in one command, parsed here, run by
`stitchnet.inference.cohort.segment_cohort` (and `merge_cohort` for --merge). cli.py registers
it with `add_cohort_command(sub)`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stitchnet.segment_cli import positive_int

DESCRIPTION = """\
Segment many CT scans with one command into one table. SCANS is a folder of scans (each
sub-folder a DICOM tree or a folder holding one NIfTI, each .nii/.nii.gz file a volume; the id
is the folder's or file's name) or a CSV with the columns scan_id,path (relative paths are
relative to the CSV). Each scan goes
through what `stitchnet segment` runs, into OUT/scans/ID/: labels.nii.gz, lung.nii.gz,
burden.json and burden.csv (overlays/ and report.html only with --viewer; no healthy twin).
OUT/cohort.csv has one row per scan: id, status (ok or error), series UID, slices, voxel
spacing, lung, GGO and consolidation in mL and GGO / consolidation / lesion as % of lung, for
both lungs together, each lung, and each zone of each lung (upper / middle / lower third and
ventral / dorsal half of that lung's mask along its own extent, oriented by the scan's affine;
zones of the mask, not anatomical lobes), the model and its version, and the seconds taken.
OUT/errors.csv has the one-line reason of every scan that failed (bad input, no lung found);
a failing scan never stops the others. OUT/cohort.html is a self-contained page: a sortable
table of the scans, a histogram of total lesion %, links to each scan's report.html.
Resumable: killed at any moment, the same command again skips every finished scan and loses
at most the ones in progress; a scan folder or row is never left looking complete when it is
not. A scan that failed is not tried again unless --retry-errors. OUT holds one cohort with one
model: another --model, another list of scans or another shard count is refused.
--shard I/N does every N-th scan of the list sorted by id, from the I-th; shards may run at the
same time into one OUT. The run that finds every scan done writes the tables; `stitchnet
cohort --merge OUT` writes them too, and refuses, naming the unfinished shards, until then.
--jobs K segments K scans side by side in worker processes, each with cores / K torch threads.
Bad input for the whole run (SCANS, OUT, --model, --shard) ends with one line on stderr and
exit status 2 before any scan is read.
"""


def add_cohort_command(sub: Any) -> argparse.ArgumentParser:
    """Add the `cohort` subcommand to `stitchnet`'s subparsers; its run function is the default
    `func` of the parsed namespace."""
    p = sub.add_parser(
        "cohort",
        help="segment many scans into one table (resumable, shardable, burden by zone)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scans", nargs="?", help="folder of scans, or a CSV with scan_id,path")
    p.add_argument(
        "--out",
        metavar="OUT",
        help="the cohort's output folder: new, empty, or an earlier run of this same cohort",
    )
    p.add_argument(
        "--merge",
        metavar="OUT",
        default=None,
        help="write OUT's cohort.csv, errors.csv and cohort.html from its finished shards",
    )
    p.add_argument(
        "--model",
        default=None,
        help="run folder (uses best.pt) or .pt checkpoint; default: shipped",
    )
    p.add_argument("--shard", default=None, metavar="I/N", help="do shard I of N (1-based)")
    p.add_argument(
        "--jobs", type=positive_int, default=1, help="scans side by side (processes; default 1)"
    )
    p.add_argument(
        "--viewer", action="store_true", help="also write overlays/ and report.html per scan"
    )
    p.add_argument(
        "--retry-errors", action="store_true", help="try scans that failed in an earlier run again"
    )
    p.add_argument("--quiet", action="store_true", help="no line per scan")
    p.set_defaults(func=run_cohort)
    return p


def run_cohort(args: argparse.Namespace) -> None:
    """Run the parsed `cohort` command; errors propagate for cli.main to map to exit status 2."""
    from stitchnet.inference.cohort import merge_cohort, segment_cohort

    if args.merge is not None:
        if args.scans is not None or args.out is not None:
            raise ValueError("--merge OUT takes no SCANS and no --out; expected --merge OUT alone")
        rows = merge_cohort(args.merge)
        _summary(rows, Path(args.merge), merged=True)
        return
    if args.scans is None or args.out is None:
        raise ValueError("expected SCANS and --out OUT (or --merge OUT)")
    rows = segment_cohort(
        args.scans,
        args.out,
        model=args.model,
        shard=args.shard,
        jobs=args.jobs,
        viewer=args.viewer,
        progress=not args.quiet,
        retry_errors=args.retry_errors,
    )
    _summary(rows, Path(args.out), merged=(Path(args.out) / "cohort.csv").is_file())


def _summary(rows: list[dict[str, Any]], out: Path, merged: bool) -> None:
    errors = sum(row["status"] == "error" for row in rows)
    line = f"{len(rows)} scans: {len(rows) - errors} segmented, {errors} failed"
    if merged:
        line += f"; wrote {out}/cohort.csv, errors.csv, cohort.html"
    else:
        line += f"; other shards still running: `stitchnet cohort --merge {out}` when they are done"
    print(line)
    if errors:
        print(f"errors: see {out}/errors.csv", file=sys.stderr)

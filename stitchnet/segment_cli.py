"""`stitchnet segment SCAN --out DIR`: the whole-scan command, parsed here, run by
`stitchnet.inference.scan.segment_scan`. cli.py registers it with `add_segment_command(sub)`."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Segment a whole chest CT scan: SCAN is a DICOM folder (searched recursively, files of any name; the
CT series is chosen when there are several, or --series UID), a NIfTI volume (.nii/.nii.gz) or a
folder of slices. Writes DIR/labels.nii.gz (0 background, 1 healthy lung, 2 ground-glass opacity,
3 consolidation; the input's shape and affine, so it overlays the scan in any viewer),
DIR/lung.nii.gz (1 the patient's right lung, 2 the left), DIR/burden.json and DIR/burden.csv (lung,
GGO and consolidation in mL and as % of lung, per lung and in total), DIR/overlays/ (one PNG per
slice: GGO green, consolidation blue) and DIR/report.html (one self-contained HTML viewer: slice
scroller, label overlay, lung and soft-tissue windows, burden table, GGO/consolidation mL per
slice; --no-report skips it).
--uncertainty adds DIR/uncertainty.nii.gz (predictive entropy of the lung label, nats),
DIR/uncertainty_mi.nii.gz (mutual information of --samples posterior draws of z for StitchNet
models, of the four flips for the others) and DIR/uncertainty.csv (per-slice means in the lung).
StitchNet-family models also write DIR/healthy_twin.nii.gz (the scan in HU, every lesion voxel
brought to the density of the healthy lung around it, its vessels kept) and
DIR/healthy_twin_diff.nii.gz (--no-twin skips; --twin style takes the level from the model).
--dicom-seg (DICOM input only) adds DIR/labels_seg.dcm: the three classes as one DICOM
Segmentation over the source series, for PACS and DICOM viewers.
Lesions are reported only inside the lung field found by the shipped lung segmenter, kept inside
the patient's body (never the table or the air around it) and cleaned in 3-D; inside it, pixels
the model calls background count as healthy lung. Overlays and report.html show each slice in
radiological view: anterior up, the patient's right on the image's left, marked A/P/R/L.
DIR must be new, empty, or an earlier output of segment, which is replaced only once the new one
is complete; the input, a folder holding it, the working folder or one above it are refused. The
four required files are written in full or not at all. An optional output that fails (overlays,
report, uncertainty maps, twin, DICOM SEG) is left out whole, named in a warning on stderr and in
burden.json's "failed_outputs", and the run still exits 0.
A DICOM or NIfTI volume whose values are not Hounsfield units (a missing RescaleIntercept, an
8-bit image) is refused, as is a header that would give wrong mL (NaN voxels, a voxel size of 0,
PixelSpacing that differs across the series); burden.json's "notes" say what was assumed instead
of refusing (files skipped, no rescale tags). Bad input ends with one line on stderr and exit
status 2.
"""


def positive_int(text: str) -> int:
    """An argparse `type`: a whole number of at least 1 (slices per batch, posterior draws)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def add_segment_command(sub: Any) -> argparse.ArgumentParser:
    """Add the `segment` subcommand to `stitchnet`'s subparsers; its run function is the default
    `func` of the parsed namespace."""
    from stitchnet.inference.defaults import default_model_summary

    p = sub.add_parser(
        "segment",
        help="segment a whole CT scan (DICOM folder or NIfTI): 3-D labels and burden in mL",
        description=DESCRIPTION + "\n" + default_model_summary(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scan", help="DICOM folder, .nii/.nii.gz volume, or folder of slices")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: a new or empty one, or an earlier output of segment, which is "
        "replaced once the new one is complete; not the input, a folder holding it, or the "
        "working folder or one above it",
    )
    p.add_argument(
        "--model",
        default=None,
        help="run folder (uses best.pt) or .pt checkpoint; default: shipped",
    )
    p.add_argument("--series", default=None, help="SeriesInstanceUID when the folder has several")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="slices per batch (default 32)"
    )
    p.add_argument("--no-overlays", action="store_true", help="skip the per-slice PNGs")
    p.add_argument("--no-report", action="store_true", help="skip DIR/report.html")
    p.add_argument(
        "--uncertainty", action="store_true", help="write the uncertainty maps and uncertainty.csv"
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=8,
        help="posterior draws of z for --uncertainty with StitchNet models (default 8)",
    )
    p.add_argument("--no-twin", action="store_true", help="skip the healthy twin (StitchNet)")
    p.add_argument(
        "--twin",
        choices=("level", "style"),
        default="level",
        help="level (default): lesions brought to the nearby healthy lung's mean HU, no model "
        "pass; style: to StitchNet's healthy style of the slice with its lesions hidden",
    )
    p.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write DIR/labels_seg.dcm, a DICOM SEG over the source series (DICOM input)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_segment)
    return p


def run_segment(args: argparse.Namespace) -> None:
    """Run the parsed `segment` command; errors propagate for cli.main to map to exit status 2.
    An optional output that failed gets a warning on stderr and the run still succeeds."""
    import sys

    from stitchnet.inference.outputs import failure_note
    from stitchnet.inference.scan import segment_scan

    burden = segment_scan(
        args.scan,
        args.out,
        model=args.model,
        series_uid=args.series,
        batch_size=args.batch_size,
        overlays=not args.no_overlays,
        progress=not args.quiet,
        report=not args.no_report,
        uncertainty=args.uncertainty,
        samples=args.samples,
        twin=not args.no_twin,
        twin_mode=args.twin,
        dicom_seg=args.dicom_seg,
    )
    written = ["labels.nii.gz", "lung.nii.gz", "burden.json", "burden.csv"]
    written += [] if args.no_report else ["report.html"]
    written += ["labels_seg.dcm"] if args.dicom_seg else []
    written += (burden.get("uncertainty") or {}).get("files", [])
    written += (burden.get("healthy_twin") or {}).get("files", [])
    failed = burden.get("failed_outputs", [])
    left_out = {name for failure in failed for name in failure["files"]}
    written = [name for name in written if name not in left_out]
    total = burden["regions"]["total"]
    pct = total["lesion_pct"]
    print(
        f"lung {total['lung_ml']:.1f} mL, GGO {total['ggo_ml']:.1f} mL, consolidation "
        f"{total['consolidation_ml']:.1f} mL ({'n/a' if pct is None else f'{pct:.1f}'} % of "
        f"lung); wrote {args.out}/{', '.join(written)}"
    )
    warnings = [failure_note(failure) for failure in failed]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in burden["notes"]:
        if note not in warnings:  # burden.json notes each failure too; say it once
            print(f"note: {note}")

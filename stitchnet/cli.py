"""`stitchnet` command line: a thin layer over `stitchnet.pipeline` and `stitchnet.study.run`.

Bad user input (missing folders, corrupt files, wrong checkpoints) ends with one line naming the
file and what was expected, and exit status 2 — never a bare traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stitchnet.cohort_cli import add_cohort_command
from stitchnet.config import PRESETS
from stitchnet.data.label_maps import LABEL_MAP_HELP
from stitchnet.models import MODEL_NAMES
from stitchnet.objectives import OBJECTIVES
from stitchnet.presets import (
    RECOMMENDED_MODEL,
    RECOMMENDED_OBJECTIVE,
    RECOMMENDED_OBJECTIVE_OVERRIDES,
    RECOMMENDED_SCANNER_AUG,
)
from stitchnet.segment_cli import add_segment_command

BUNDLED_LABELLED = "data/medseg_covid19_train50"
BUNDLED_UNLABELLED = "data/covid19_ct_seg_20cases_unlabelled"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, help="pre-processing cache folder (default .cache/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_window(p: argparse.ArgumentParser) -> None:
    """--window LO HI: what an 8-bit slice's gray means where its folder does not record it."""
    p.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=None,
        help="the HU window (gray 0 = LO, gray 255 = HI) that 8-bit slice folders were saved "
        "with, for slices whose index.csv records none (hu_lo/hu_hi); such slices are then "
        "mapped to the model's lung window as DICOM and NIfTI are. `python -m "
        "stitchnet.data.hu_scale annotate FOLDER` records the window per slice instead, and a "
        "recorded window wins. DICOM and NIfTI hold HU and ignore it",
    )


def _add_label_map(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-map", default=None, metavar="NAME|FILE", help=LABEL_MAP_HELP)


def _source_window(args: argparse.Namespace) -> tuple[float, float] | None:
    return None if args.window is None else tuple(args.window)


def _add_model_io(p: argparse.ArgumentParser, folder_help: str) -> None:
    """A trained model in, a folder of slices in, an output folder: evaluate's and predict's."""
    p.add_argument("checkpoint", help="run folder (uses best.pt) or a .pt checkpoint")
    p.add_argument("folder", help=folder_help)
    p.add_argument("--out", required=True)
    _add_window(p)
    _add_common(p)


def _key_values(items: list[str]) -> dict:
    """KEY=VALUE strings -> a dict; VALUE is read as JSON (a bare word stays a string)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--ssl-set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _scanner_aug(args: argparse.Namespace) -> bool:
    """--scanner-aug / --no-scanner-aug as given; unset: the recommended model's setting."""
    if args.scanner_aug is not None:
        return bool(args.scanner_aug)
    return args.model is None and RECOMMENDED_SCANNER_AUG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stitchnet",
        description=(
            "Semi-supervised segmentation of COVID-19 lung CT (StitchNet, SVAE, U-Net, SegNet). "
            "Classes: 0 background, 1 healthy lung, 2 ground-glass opacity, 3 consolidation."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prepare",
        help="pre-process a folder of slices (lung field, crop, resize) into the cache",
        description="Read a source (folder of slices, NIfTI, DICOM series, CC-CCII tree), find the "
        "lung field, crop, resize and cache the arrays so that training starts fast.",
    )
    p.add_argument(
        "source",
        help="folder with images/ (+ masks/, index.csv), .nii(.gz), or a volume dataset or "
        "folder of scans, cached slice by slice for train (docs/train-on-your-data.md)",
    )
    p.add_argument("--preset", choices=PRESETS, default="cpu-small")
    _add_window(p)
    _add_label_map(p)
    _add_common(p)

    p = sub.add_parser(
        "train",
        help="train one model on a labelled folder (and optionally an unlabelled one)",
        description="Train a model, validating every epoch, keeping last.pt (resume) and best.pt; "
        "then score best.pt on the test part of the seeded 60/20/20 split (RUN_DIR/test/).",
    )
    p.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default=None,
        help=f"default: the recommended model, {RECOMMENDED_MODEL} with --ssl "
        f"{RECOMMENDED_OBJECTIVE} and --ssl-set "
        + " ".join(f"{k}={v}" for k, v in RECOMMENDED_OBJECTIVE_OVERRIDES.items())
        + " (docs/methods.md says why)",
    )
    p.add_argument(
        "--ssl",
        choices=OBJECTIVES,
        default=None,
        help="semi-supervised objective on the unlabelled slices ('none': supervised, or the "
        "ELBO alone for the generative models); default: the recommended one without --model, "
        "'none' with it",
    )
    p.add_argument(
        "--ssl-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one field of the objective's config (VALUE in JSON, e.g. threshold=0.9 or "
        "elbo_unlabelled=false); repeatable",
    )
    p.add_argument(
        "--labelled",
        required=True,
        help="slice folder (images/, masks/, optional index.csv) or labelled volumes: nnU-Net "
        "imagesTr/ + labelsTr/, CASE.nii.gz + CASE_mask.nii.gz, or images/ + masks/ of volumes "
        "(each case one patient in the split; docs/train-on-your-data.md)",
    )
    p.add_argument(
        "--unlabelled",
        default=None,
        help="folder of unlabelled slices, or of scans (DICOM trees and NIfTI files, found "
        "recursively; only slices inside the lung field), used by the generative models and by "
        "--ssl methods",
    )
    _add_label_map(p)
    p.add_argument("--preset", choices=PRESETS, default="cpu-small")
    p.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--max-labelled", type=int, default=None, help="use only N labelled slices")
    p.add_argument(
        "--encoder-weights",
        default=None,
        help="'imagenet' (MobileNetV2 ImageNet file, first conv summed to 1 channel) or a .pth "
        "path; default: from scratch, as in the paper",
    )
    p.add_argument(
        "--splits", default=None, help="splits.json to use (default RUN_DIR/splits.json)"
    )
    p.add_argument(
        "--scanner-aug",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="scanner variation on the training images (HU offset, noise, reconstruction "
        "kernel, slice thickness; stitchnet/scanner_aug.py's default ranges); default: on for "
        "the recommended model (no --model), off with --model",
    )
    _add_window(p)
    _add_common(p)

    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a labelled folder: metrics.json and per_image.csv "
        "(labelled volumes also volumes.csv/.json: 3-D Dice and burden error per case)",
    )
    _add_model_io(p, folder_help="labelled folder (images/ and masks/) or labelled volumes")
    _add_label_map(p)

    p = sub.add_parser(
        "predict",
        help="segment slices: a class-id mask PNG and a colour overlay per image",
        description="Writes OUT/masks/<id>.png (class ids 0-3 at the input's own size), "
        "OUT/overlays/<id>.png (green GGO, blue consolidation) and OUT/lesion_burden.json.",
    )
    _add_model_io(p, folder_help="folder of slices, a NIfTI volume or a DICOM series folder")

    p = sub.add_parser(
        "reproduce",
        help="the paper's comparison on the bundled data: every model, the preset's seeds "
        "(paper 3, cpu 3, cpu-small 2), one report",
    )
    p.add_argument("--preset", choices=PRESETS, default="cpu-small")
    p.add_argument("--out", default=None, help="default runs/<preset>")
    p.add_argument("--labelled", default=BUNDLED_LABELLED)
    p.add_argument("--unlabelled", default=BUNDLED_UNLABELLED)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: preset's)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings side by side in worker processes (a GPU takes ~12; 2 CPU cores: 1)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override every run's epochs (smoke)")
    _add_common(p)

    p = sub.add_parser("report", help="(re)write the report of a reproduce folder from its runs")
    p.add_argument("run_dir", help="folder written by `stitchnet reproduce`")
    add_segment_command(sub)  # `stitchnet segment SCAN --out DIR`: stitchnet/segment_cli.py
    add_cohort_command(sub)  # `stitchnet cohort SCANS --out OUT`: stitchnet/cohort_cli.py
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        # argparse has printed the usage error; return its status 2 as every other error does
        # (--help exits 0, and that exit stays).
        if not stop.code:
            raise
        return stop.code
    # Heavy imports after parsing, so that --help is instant.
    from stitchnet import pipeline

    progress = not getattr(args, "quiet", False)
    try:
        if args.command == "prepare":
            from stitchnet.config import DATA_PRESETS

            data = pipeline.prepare_folder(
                args.source,
                DATA_PRESETS[args.preset],
                args.cache,
                progress,
                source_window=_source_window(args),
                label_map=args.label_map,
            )
            kind = "labelled" if data.labelled else "unlabelled"
            print(
                f"prepared {len(data)} {kind} slices at {DATA_PRESETS[args.preset].image_size} px"
            )
        elif args.command == "train":
            overrides = {}
            if args.encoder_weights:
                overrides["encoder_weights"] = args.encoder_weights
            model = args.model or RECOMMENDED_MODEL
            objective = args.ssl or (RECOMMENDED_OBJECTIVE if args.model is None else "none")
            objective_overrides = (
                dict(RECOMMENDED_OBJECTIVE_OVERRIDES)
                if args.model is None and args.ssl is None
                else {}
            )
            objective_overrides.update(_key_values(args.ssl_set))
            res = pipeline.fit(
                model,
                args.labelled,
                args.out,
                preset=args.preset,
                unlabelled=args.unlabelled,
                seed=args.seed,
                splits_path=args.splits,
                model_overrides=overrides,
                objective=objective,
                objective_overrides=objective_overrides,
                cache_dir=args.cache,
                progress=progress,
                epochs=args.epochs,
                max_labelled=args.max_labelled,
                scanner_aug={} if _scanner_aug(args) else None,
                source_window=_source_window(args),
                label_map=args.label_map,
            )
            import torch.distributed as dist

            from stitchnet.evaluate import format_table1

            if not dist.is_initialized() or dist.get_rank() == 0:  # one report under torchrun
                print(format_table1({model: res.test}))
                print(f"wrote {Path(args.out) / 'test' / 'metrics.json'}")
        elif args.command == "evaluate":
            from stitchnet.evaluate import format_table1

            res = pipeline.evaluate_folder(
                args.checkpoint,
                args.folder,
                args.out,
                args.cache,
                progress,
                source_window=_source_window(args),
                label_map=args.label_map,
            )
            print(format_table1({Path(args.checkpoint).name: res}))
            print(f"wrote {Path(args.out) / 'metrics.json'} and per_image.csv")
            if (Path(args.out) / "volumes.csv").is_file():
                print("and per case in 3-D: volumes.csv, volumes.json")
        elif args.command == "predict":
            written = pipeline.predict_folder(
                args.checkpoint,
                args.folder,
                args.out,
                args.cache,
                progress=progress,
                source_window=_source_window(args),
            )
            print(f"wrote {len(written)} masks and overlays under {args.out}")
        elif args.command == "reproduce":
            from stitchnet.study.run import reproduce  # the study, only for its own commands

            out = args.out or f"runs/{args.preset}"
            reproduce(
                args.preset,
                out,
                labelled=args.labelled,
                unlabelled=args.unlabelled,
                n_seeds=args.seeds,
                cache_dir=args.cache,
                jobs=args.jobs,
                epochs=args.epochs,
                progress=progress,
            )
        elif args.command in ("segment", "cohort"):
            args.func(args)
        elif args.command == "report":
            from stitchnet.study.run import write_report

            path = write_report(args.run_dir)
            print(f"wrote {path}")
    except (ValueError, OSError) as err:
        # Library errors for bad input name the file, the value found and the value expected.
        print(f"stitchnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`stitchnet reproduce`: the paper's comparison on one split and one budget, and one report.

Layout of a reproduce folder (every run resumes; a run with test/metrics.json is never retrained):
    splits.json                         the labelled split, shared by every model and seed
    runs/<variant>/seed<k>/             one training run each (config, log.csv, best.pt, test/)
    efficiency/<variant>/n<N>/seed<k>/  label-efficiency runs on the first N labelled slices
    report.md, report.html, figures/    written by `write_report`
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stitchnet import __version__, pipeline


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    model: str
    unlabelled: bool = False
    encoder_weights: str | None = None


VARIANTS = (
    Variant("stitchnet_ssl", "StitchNet (labelled + unlabelled)", "stitchnet", unlabelled=True),
    Variant("stitchnet_sup", "StitchNet (labelled only)", "stitchnet"),
    Variant(
        "ladder_ssl", "Ladder VAE, unshared (labelled + unlabelled)", "ladder", unlabelled=True
    ),
    Variant("unet", "U-Net (MobileNetV2, from scratch)", "unet"),
    Variant(
        "unet_imagenet", "U-Net (MobileNetV2, ImageNet encoder)", "unet", encoder_weights="imagenet"
    ),
    Variant("segnet", "SegNet (VGG16)", "segnet"),
)
EFFICIENCY_VARIANTS = ("unet", "stitchnet_sup", "stitchnet_ssl")


@dataclass(frozen=True)
class Protocol:
    """How much of the comparison a preset runs; all of it, unless the preset says otherwise."""

    seeds: int
    label_counts: tuple[int, ...]
    efficiency_seeds: int
    note: str = ""


PROTOCOLS = {
    "paper": Protocol(seeds=3, label_counts=(5, 10, 20), efficiency_seeds=3),
    "cpu-small": Protocol(
        seeds=2,
        label_counts=(10,),
        efficiency_seeds=1,
        note="cpu-small runs 2 seeds for the main comparison (not 3) and the label-efficiency "
        "curve at 10 labelled slices (plus the full training part from the main runs) with 1 "
        "seed, to stay under 30 minutes on 2 CPU cores: StitchNet needs ~100-125 steps to "
        "leave its 'no lesion' plateau, so every model trains 144 steps (36 epochs), and 3 "
        "seeds at that budget would not fit.",
    ),
    "debug": Protocol(seeds=1, label_counts=(5,), efficiency_seeds=1, note="debug: 1 seed."),
}

# The paper's Table 1 (test set, CC-CCII), for reference beside ours.
PAPER_TABLE1 = {
    "GGO": {
        "U-Net": ("0.391 ± 0.280", "0.499 ± 0.32", "0.608 ± 0.358", "0.47 ± 0.326"),
        "SegNet": ("0.004 ± 0.027", "0.007 ± 0.044", "0.012 ± 0.087", "0.009 ± 0.071"),
        "StitchNet": ("0.358 ± 0.257", "0.471 ± 0.303", "0.517 ± 0.331", "0.489 ± 0.328"),
    },
    "CON": {
        "U-Net": ("0.404 ± 0.331", "0.49 ± 0.368", "0.616 ± 0.378", "0.485 ± 0.38"),
        "SegNet": ("0.021 ± 0.113", "0.027 ± 0.137", "0.057 ± 0.227", "0.021 ± 0.114"),
        "StitchNet": ("0.318 ± 0.315", "0.397 ± 0.361", "0.539 ± 0.411", "0.387 ± 0.369"),
    },
    "Background": {
        "U-Net": ("0.983 ± 0.023", "0.992 ± 0.012", "0.987 ± 0.02", "0.996 ± 0.006"),
        "SegNet": ("0.97 ± 0.044", "0.984 ± 0.024", "0.999 ± 0.009", "0.971 ± 0.043"),
        "StitchNet": ("0.985 ± 0.021", "0.992 ± 0.011", "0.992 ± 0.011", "0.993 ± 0.014"),
    },
    "Overall": {
        "U-Net": ("0.593", "0.66", "0.737", "0.65"),
        "SegNet": ("0.332", "0.339", "0.356", "0.334"),
        "StitchNet": ("0.554", "0.62", "0.683", "0.623"),
    },
}


def _run(
    variant: Variant,
    run_dir: Path,
    preset: str,
    seed: int,
    labelled: str,
    unlabelled: str,
    splits_path: Path,
    cache_dir: str | None,
    progress: bool,
    max_labelled: int | None = None,
) -> dict:
    """Train and test one variant unless it already finished; returns its run_info."""
    info_path = run_dir / "run_info.json"
    if info_path.exists() and (run_dir / "test" / "metrics.json").exists():
        return json.loads(info_path.read_text())
    start = time.perf_counter()
    overrides = {}
    if variant.encoder_weights:
        # The ImageNet file is for the width-1.0 MobileNetV2, whatever the preset's width.
        overrides = {"encoder_weights": variant.encoder_weights, "width_mult": 1.0}
    pipeline.fit(
        variant.model,
        labelled,
        run_dir,
        preset=preset,
        unlabelled=unlabelled if variant.unlabelled else None,
        seed=seed,
        splits_path=splits_path,
        model_overrides=overrides,
        cache_dir=cache_dir,
        progress=progress,
        max_labelled=max_labelled,
    )
    info = {
        "variant": variant.key,
        "label": variant.label,
        "model": variant.model,
        "seed": seed,
        "max_labelled": max_labelled,
        "unlabelled": variant.unlabelled,
        "encoder_weights": variant.encoder_weights,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


def reproduce(
    preset: str,
    out_dir: str | Path,
    labelled: str = "data/medseg_covid19_train50",
    unlabelled: str = "data/covid19_ct_seg_20cases_unlabelled",
    n_seeds: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    variants: tuple[Variant, ...] = VARIANTS,
) -> Path:
    """Run the whole comparison (resuming whatever finished) and write the report."""
    protocol = PROTOCOLS[preset]
    seeds = range(n_seeds if n_seeds is not None else protocol.seeds)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits_path = out / "splits.json"
    started = time.perf_counter()
    jobs = [(v, out / "runs" / v.key / f"seed{s}", s, None) for s in seeds for v in variants]
    by_key = {v.key: v for v in variants}
    for count in protocol.label_counts:
        for key in EFFICIENCY_VARIANTS:
            if key in by_key:
                for s in range(min(protocol.efficiency_seeds, len(seeds))):
                    run_dir = out / "efficiency" / key / f"n{count}" / f"seed{s}"
                    jobs.append((by_key[key], run_dir, s, count))
    for i, (variant, run_dir, seed, count) in enumerate(jobs, 1):
        what = f"{variant.label}, seed {seed}" + (f", {count} labelled" if count else "")
        print(f"[{i}/{len(jobs)}] {what}", flush=True)
        _run(
            variant,
            run_dir,
            preset,
            seed,
            labelled,
            unlabelled,
            splits_path,
            cache_dir,
            progress,
            max_labelled=count,
        )
    meta = {
        "preset": preset,
        "seeds": list(seeds),
        "label_counts": list(protocol.label_counts),
        "efficiency_seeds": protocol.efficiency_seeds,
        "protocol_note": protocol.note,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "variants": [v.key for v in variants],
        "wall_s_this_invocation": round(time.perf_counter() - started, 1),
    }
    (out / "reproduce.json").write_text(json.dumps(meta, indent=2))
    path = write_report(out)
    print(f"report: {path}")
    return path


def environment() -> dict:
    import torch

    return {
        "report written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "stitchnet": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_report(run_dir: str | Path) -> Path:
    from stitchnet.report import build_report

    return build_report(Path(run_dir))

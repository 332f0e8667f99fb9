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
from typing import Any

import numpy as np

from stitchnet import pipeline
from stitchnet.outdir import check_output, open_output
from stitchnet.version import __version__


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    model: str
    unlabelled: bool = False
    encoder_weights: str | None = None
    objective: str = (
        "none"  # semi-supervised objective (stitchnet.objectives), "none": supervised/ELBO
    )
    # objective config overrides as (field, value) pairs (a dict would not be hashable)
    objective_overrides: tuple[tuple[str, Any], ...] = ()
    candidate: bool = False  # may become the recommended model (chosen on validation, never test)
    model_overrides: tuple[tuple[str, Any], ...] = ()  # model config fields, as (field, value)


# The paper's comparison (presets paper, cpu-small, debug).
PAPER_VARIANTS = (
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


def _ssl(key: str, label: str, model: str, objective: str, candidate: bool = True, **over: Any):
    return Variant(
        key,
        label,
        model,
        unlabelled=True,
        objective=objective,
        objective_overrides=tuple(sorted(over.items())),
        candidate=candidate,
    )


# Issue 9's comparison (preset cpu): the supervised U-Net, the U-Net with every consistency
# method, faithful StitchNet with and without the pool, the skip variant without the pool, with
# the pool through its ELBO alone, with consistency + ELBO, and with consistency alone (the ELBO
# on labelled rows only): the last pair asks whether the generative term adds anything.
SSL_VARIANTS = (
    Variant("unet", "U-Net (supervised)", "unet"),
    Variant(
        "unet_cedice",
        "U-Net (supervised, CE + Dice)",
        "unet",
        model_overrides=(("loss", "ce+dice"),),
    ),
    _ssl("unet_mt", "U-Net + Mean Teacher", "unet", "mean_teacher"),
    _ssl("unet_fixmatch", "U-Net + FixMatch", "unet", "fixmatch"),
    _ssl("unet_unimatch", "U-Net + UniMatch", "unet", "unimatch"),
    _ssl("unet_bcp", "U-Net + BCP copy-paste", "unet", "bcp"),
    Variant("stitchnet_ssl", "StitchNet (labelled + unlabelled)", "stitchnet", unlabelled=True),
    Variant("stitchnet_sup", "StitchNet (labelled only)", "stitchnet"),
    Variant("skip_sup", "StitchNet-skip (labelled only)", "stitchnet-skip"),
    Variant(
        "skip_elbo", "StitchNet-skip + unlabelled (ELBO only)", "stitchnet-skip", unlabelled=True
    ),
    _ssl("skip_unimatch", "StitchNet-skip + UniMatch + ELBO", "stitchnet-skip", "unimatch"),
    _ssl(
        "skip_unimatch_noelbo",
        "StitchNet-skip + UniMatch, no ELBO on unlabelled",
        "stitchnet-skip",
        "unimatch",
        elbo_unlabelled=False,
    ),
    # Issue 9's step-cost target: one student pass a step (objectives/one_pass.py), and with it
    # labelled lesions pasted into unlabelled slices for the few-label regime.
    _ssl("skip_onepass", "StitchNet-skip + one-pass FixMatch + ELBO", "stitchnet-skip", "one_pass"),
    _ssl(
        "skip_onepass_paste",
        "StitchNet-skip + one-pass FixMatch + lesion paste + ELBO",
        "stitchnet-skip",
        "one_pass",
        lesion_paste=0.5,
    ),
)
# "with" -> "without" pairs whose per-seed gain the report prints: the unlabelled pool, and
# (first) the class-balanced label term.
PAIRS = (
    ("unet_cedice", "unet"),
    ("unet_mt", "unet"),
    ("unet_fixmatch", "unet"),
    ("unet_unimatch", "unet"),
    ("unet_bcp", "unet"),
    ("stitchnet_ssl", "stitchnet_sup"),
    ("skip_elbo", "skip_sup"),
    ("skip_unimatch", "skip_sup"),
    ("skip_unimatch_noelbo", "skip_sup"),
    ("skip_unimatch", "skip_unimatch_noelbo"),
    ("skip_onepass", "skip_sup"),
    ("skip_onepass_paste", "skip_sup"),
    ("skip_onepass_paste", "skip_onepass"),
)


@dataclass(frozen=True)
class Protocol:
    """How much of the comparison a preset runs; all of it, unless the preset says otherwise."""

    seeds: int
    label_counts: tuple[int, ...]
    efficiency_seeds: int
    note: str = ""
    variants: tuple[Variant, ...] = PAPER_VARIANTS
    # Variant keys of the label-efficiency panel; RECOMMENDED stands for the candidate chosen on
    # validation after the main runs.
    efficiency: tuple[str, ...] = ("unet", "stitchnet_sup", "stitchnet_ssl")


RECOMMENDED = "recommended"
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
        "seeds at that budget would not fit. The semi-supervised comparison (objectives, "
        "stitchnet-skip, the recommended model) is preset cpu's, not part of this demo.",
    ),
    "cpu": Protocol(
        seeds=3,
        label_counts=(5, 15),
        efficiency_seeds=4,
        variants=SSL_VARIANTS,
        efficiency=("unet", RECOMMENDED, "skip_unimatch", "skip_onepass", "skip_onepass_paste"),
        note="cpu: every variant at 128 px, 3 seeds; the recommended model is the candidate with "
        "the best mean validation lesion Dice over seeds (never the test split); the label-"
        "efficiency panel trains it, the supervised U-Net and the StitchNet-skip recipes "
        "(UniMatch, one-pass FixMatch with and without lesion paste) on 5 and 15 labelled "
        "slices, 4 seeds.",
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


def run_path(out: Path, key: str, seed: int, count: int | None = None) -> Path:
    """Where a run lives in a `reproduce` folder: runs/KEY/seedS on the whole training part,
    efficiency/KEY/nCOUNT/seedS on its first COUNT labelled slices."""
    if count is None:
        return out / "runs" / key / f"seed{seed}"
    return out / "efficiency" / key / f"n{count}" / f"seed{seed}"


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
    epochs: int | None = None,
) -> dict:
    """Train and test one variant unless it already finished; returns its run_info."""
    info_path = run_dir / "run_info.json"
    if info_path.exists() and (run_dir / "test" / "metrics.json").exists():
        return json.loads(info_path.read_text())
    start = time.perf_counter()
    overrides = dict(variant.model_overrides)
    if variant.encoder_weights:
        # The ImageNet file is for the width-1.0 MobileNetV2, whatever the preset's width.
        overrides.update(encoder_weights=variant.encoder_weights, width_mult=1.0)
    res = pipeline.fit(
        variant.model,
        labelled,
        run_dir,
        preset=preset,
        unlabelled=unlabelled if variant.unlabelled else None,
        seed=seed,
        splits_path=splits_path,
        model_overrides=overrides,
        objective=variant.objective,
        objective_overrides=dict(variant.objective_overrides),
        cache_dir=cache_dir,
        progress=progress,
        max_labelled=max_labelled,
        epochs=epochs,
    )
    best = [r for r in res.train.history if r["epoch"] == res.train.best_epoch]
    info = {
        "variant": variant.key,
        "label": variant.label,
        "model": variant.model,
        "objective": variant.objective,
        "objective_overrides": dict(variant.objective_overrides),
        "seed": seed,
        "max_labelled": max_labelled,
        "unlabelled": variant.unlabelled,
        "encoder_weights": variant.encoder_weights,
        # Validation scores of best.pt: what the recommended model is chosen on.
        "val_lesion_dice": best[0].get("val_lesion_dice") if best else None,
        "val_overall_f1": res.train.best_metric,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


def _job(args: tuple) -> tuple[str, float]:
    """One run in a worker process (reproduce --jobs): its own share of the CPU threads."""
    import torch

    threads, *run_args = args
    torch.set_num_threads(threads)
    info = _run(*run_args)
    return str(run_args[1]), info["wall_s"]


def _run_all(jobs: list[tuple], n_jobs: int) -> None:
    """Run jobs one after the other (n_jobs 1), or side by side in worker processes (e.g. many
    small runs on one GPU); either way each finished run is skipped on a rerun."""
    if n_jobs <= 1:
        for i, job in enumerate(jobs, 1):
            variant, run_dir = job[0], job[1]
            print(f"[{i}/{len(jobs)}] {variant.label}: {run_dir}", flush=True)
            _run(*job)
        return
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    # progress bars off in workers: n bars interleaved on one terminal are unreadable.
    tasks = [(threads, *job[:8], False, *job[9:]) for job in jobs]
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_job, t) for t in tasks]
        for i, fut in enumerate(as_completed(futures), 1):
            run_dir, wall = fut.result()
            print(f"[{i}/{len(jobs)}] done in {wall:.0f} s: {run_dir}", flush=True)


def _calibrate(
    out: Path, protocol: Protocol, by_key: dict, labelled: str, cache_dir: str | None
) -> int:
    """Calibration on the test split (issue 11) for the label-efficiency panel's models (the
    U-Net, the recommended model and the rest of the panel), main and efficiency runs alike."""
    from stitchnet.calibration import calibrate_runs

    keys = list(dict.fromkeys(by_key[k].key for k in protocol.efficiency if k in by_key))
    dirs = [
        d
        for k in keys
        for pattern in (f"runs/{k}/seed*", f"efficiency/{k}/n*/seed*")
        for d in sorted(out.glob(pattern))
    ]
    return calibrate_runs(dirs, labelled, cache_dir)


def choose_recommended(out: Path, variants: tuple[Variant, ...]) -> Variant | None:
    """The candidate with the best mean validation lesion Dice over its seeds (test is never
    looked at); written to out/recommended.json with every candidate's score."""
    scores = {}
    for v in variants:
        if not v.candidate:
            continue
        vals = []
        for info_path in sorted((out / "runs" / v.key).glob("seed*/run_info.json")):
            val = json.loads(info_path.read_text()).get("val_lesion_dice")
            if val is not None and not np.isnan(val):
                vals.append(float(val))
        if vals:
            scores[v.key] = float(np.mean(vals))
    if not scores:
        return None
    key = max(scores, key=scores.get)
    chosen = next(v for v in variants if v.key == key)
    record = {
        "variant": key,
        "label": chosen.label,
        "model": chosen.model,
        "objective": chosen.objective,
        "objective_overrides": dict(chosen.objective_overrides),
        "rule": "highest mean validation lesion Dice over seeds among the candidates",
        "val_lesion_dice": scores,
    }
    (out / "recommended.json").write_text(json.dumps(record, indent=2))
    return chosen


def reproduce(
    preset: str,
    out_dir: str | Path,
    labelled: str = "data/medseg_covid19_train50",
    unlabelled: str = "data/covid19_ct_seg_20cases_unlabelled",
    n_seeds: int | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    variants: tuple[Variant, ...] | None = None,
    jobs: int = 1,
    epochs: int | None = None,
) -> Path:
    """Run the whole comparison (resuming whatever finished) and write the report.

    `jobs` > 1 runs that many trainings side by side in worker processes (for a GPU; on 2 CPU
    cores keep 1). `epochs` overrides the preset's for every run (a quick smoke run)."""
    protocol = PROTOCOLS[preset]
    variants = protocol.variants if variants is None else variants
    seeds = range(n_seeds if n_seeds is not None else protocol.seeds)
    out = check_output(out_dir, "reproduce", inputs=(labelled, unlabelled))
    open_output(out, "reproduce")
    splits_path = out / "splits.json"
    started = time.perf_counter()
    if jobs > 1:
        # Fill the pre-processing cache and write the split once, before workers race for them.
        cfg = pipeline.run_config("unet", preset)
        data = pipeline.prepare_folder(labelled, cfg.data, cache_dir, progress, True)
        pipeline.split_parts(data, splits_path)
        if any(v.unlabelled for v in variants):
            pipeline.prepare_folder(unlabelled, cfg.data, cache_dir, progress)

    def job(v: Variant, run_dir: Path, s: int, count: int | None) -> tuple:
        """_run's arguments, in its order."""
        common = (labelled, unlabelled, splits_path, cache_dir, progress)
        return (v, run_dir, preset, s, *common, count, epochs)

    _run_all([job(v, run_path(out, v.key, s), s, None) for s in seeds for v in variants], jobs)
    by_key = {v.key: v for v in variants}
    if RECOMMENDED in protocol.efficiency:
        chosen = choose_recommended(out, variants)
        if chosen is not None:
            by_key[RECOMMENDED] = chosen
            print(f"recommended (best mean validation lesion Dice): {chosen.label}", flush=True)
    eff_seeds = (
        protocol.efficiency_seeds if n_seeds is None else min(protocol.efficiency_seeds, n_seeds)
    )
    panel = list(dict.fromkeys(by_key[k] for k in protocol.efficiency if k in by_key))
    eff = []
    for count in protocol.label_counts:
        for v in panel:  # the recommended model may also be named in the panel: trained once
            for s in range(eff_seeds):
                eff.append(job(v, run_path(out, v.key, s, count), s, count))
    _run_all(eff, jobs)
    calibrated = _calibrate(out, protocol, by_key, labelled, cache_dir)
    meta = {
        "preset": preset,
        "seeds": list(seeds),
        "label_counts": list(protocol.label_counts),
        "efficiency_seeds": protocol.efficiency_seeds,
        "protocol_note": protocol.note,
        "labelled": labelled,
        "unlabelled": unlabelled,
        "variants": [v.key for v in variants],
        "jobs": jobs,
        "epochs_override": epochs,
        "calibrated_this_invocation": calibrated,
        "environment": environment(),
        "wall_s_this_invocation": round(time.perf_counter() - started, 1),
    }
    (out / "reproduce.json").write_text(json.dumps(meta, indent=2))
    path = write_report(out)
    print(f"report: {path}")
    return path


def environment() -> dict:
    import torch

    return {
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
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

"""`stitchnet reproduce`: the paper's comparison on one split and one budget, and one report.

Layout of a reproduce folder (every run resumes; a run with test/metrics.json is never retrained):
    splits.json                         the labelled split, shared by every model and seed
    runs/<variant>/seed<k>/             one training run each (config, log.csv, best.pt, test/)
    efficiency/<variant>/n<N>/seed<k>/  label-efficiency runs on the first N labelled slices
    report.md, report.html, figures/    written by `write_report`
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from stitchnet import pipeline
from stitchnet.outdir import check_output, open_output
from stitchnet.study.calibration import calibrate_runs
from stitchnet.study.protocol import (
    PROTOCOLS,
    RECOMMENDED,
    Protocol,
    Variant,
    environment,
    run_path,
)
from stitchnet.study.report import build_report


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
    """Calibration on the test split for the label-efficiency panel's models (the U-Net, the
    recommended model and the rest of the panel), main and efficiency runs alike."""
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


def write_report(run_dir: str | Path) -> Path:
    """(Re)write report.md, report.html and figures/ of a reproduce folder from its runs."""
    return build_report(Path(run_dir))

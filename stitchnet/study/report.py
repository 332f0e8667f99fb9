"""The reproduce report: tables from each run's test/metrics.json, figures from its checkpoints.

Everything here is read back from the reproduce folder, so `stitchnet report DIR` rebuilds the
report of an interrupted or finished comparison without training anything.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import torch

from stitchnet import figures, pipeline
from stitchnet.config import RunConfig
from stitchnet.evaluate import EvalResult
from stitchnet.metrics import ABSENT_RULE, confusion_matrix
from stitchnet.outdir import check_report_folder
from stitchnet.study.protocol import PAIRS, environment
from stitchnet.study.report_figures import report_figures
from stitchnet.study.results import (
    calibration_table,
    class_table,
    collect,
    collect_efficiency,
    efficiency_table,
    lesion_dice,
    load_json,
    paired_gains,
    paper_table,
    runs_table1,
    seed_table,
)


def _test_set(out: Path, runs: dict):
    """The labelled test part, pre-processed as the runs were (read back from the cache)."""
    first = next(iter(runs.values()))
    first = first[min(first)]
    cfg = RunConfig.from_dict(json.loads((first["dir"] / "config.json").read_text()))
    meta = load_json(out / "reproduce.json") or {}
    labelled = meta.get("labelled", "data/medseg_covid19_train50")
    data = pipeline.prepare_folder(labelled, cfg.data, progress=False, require_masks=True)
    return pipeline.split_parts(data, out / "splits.json")[1]["test"]


def constant_baseline(test, cls: int = 1) -> dict:
    """metrics.json content of predicting one class everywhere (default: all healthy lung)."""
    matrix = confusion_matrix(torch.full_like(test.masks, cls), test.masks, 4)
    return EvalResult(test.ids, test.patient_ids, matrix).to_dict()


def _targets(out: Path, runs: dict, recommended: str) -> list[str]:
    """The comparison's targets: the recommended model against the supervised U-Net on the same
    labelled slices, per seed: >= +0.05 lesion Dice at the full training part, >= +0.10 at 5
    slices."""
    md = []
    eff = collect(out, "efficiency/*/n5/seed*")
    checks = [
        ("full training part", runs.get(recommended, {}), runs.get("unet", {}), 0.05),
        ("5 labelled slices", eff.get(recommended, {}), eff.get("unet", {}), 0.10),
    ]
    for what, a, b, target in checks:
        seeds = sorted(set(a) & set(b))
        if not seeds:
            md.append(f"- {what}: not run")
            continue
        gains = [lesion_dice(a[s]["metrics"]) - lesion_dice(b[s]["metrics"]) for s in seeds]
        met = np.mean(gains) >= target and all(g > 0 for g in gains)
        md.append(
            f"- {what}: gain over the supervised U-Net per seed "
            + ", ".join(f"{g:+.3f}" for g in gains)
            + f", mean {np.mean(gains):+.3f} against a target of +{target:.2f} with every seed "
            f"positive: **{'met' if met else 'missed'}**"
        )
    return md


def _ssl_sections(out: Path, runs: dict, label: dict) -> list[str]:
    """Paired per-seed gains, the recommended model and the targets (preset cpu's comparison)."""
    md = []
    if any(a in runs and b in runs for a, b in PAIRS):
        md += [
            "## Does the unlabelled pool help? Per-seed gains, paired by seed",
            "",
            "Gain = lesion Dice of the run with unlabelled slices minus that of the same seed "
            "without. 'not shown': the mean gain is smaller than the two variants' seed spreads "
            "(standard deviations) added.",
            "",
            *paired_gains(runs, label, PAIRS),
            "",
        ]
    rec = load_json(out / "recommended.json")
    if rec is not None:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in rec["val_lesion_dice"].items())
        options = "".join(
            f" --ssl-set {k}={json.dumps(v)}" for k, v in rec.get("objective_overrides", {}).items()
        )
        md += [
            "## The recommended model",
            "",
            f"**{rec['label']}** (`--model {rec['model']} --ssl {rec['objective']}{options}`): "
            f"{rec['rule']}. Candidates' mean validation lesion Dice: {scores}.",
            "",
            "Targets (test split):",
            "",
            *_targets(out, runs, rec["variant"]),
            "",
        ]
    return md


def build_report(out: Path) -> Path:
    check_report_folder(out)  # report.md, report.html and figures/ go into reproduce folders only
    runs = collect(out)
    if not runs:
        raise ValueError(f"{out}: no finished runs (runs/*/seed*/test/metrics.json) to report on")
    meta = load_json(out / "reproduce.json") or {}
    splits = load_json(out / "splits.json") or {}
    fig_dir = out / "figures"
    label = {k: next(iter(v.values()))["info"]["label"] for k, v in runs.items()}
    seed0 = {label[k]: v[min(v)]["metrics"] for k, v in runs.items()}
    test = _test_set(out, runs)
    seed0["Constant: all healthy lung"] = constant_baseline(test)

    md = [f"# StitchNet reproduction report — preset `{meta.get('preset', '?')}`", ""]
    if splits.get("warning"):
        md += [f"> **WARNING: {splits['warning']}**", ""]
    md += [
        f"Absent-class rule: {ABSENT_RULE}",
        "",
        "## Table 1 (seed 0, test split)",
        "",
        "The last rows predict healthy lung everywhere: the floor any segmenter must clear.",
        "",
        runs_table1(seed0),
        "",
        "## The paper's Table 1 (CC-CCII test set, for reference; other data, other resolution)",
        "",
        paper_table(),
        "",
        "## Lesion Dice over seeds (mean of GGO and consolidation F1; mean ± std over seeds)",
        "",
        "Per-slice means, as everywhere else; the last column pools every test pixel instead.",
        "",
        *seed_table(runs, label),
        "",
    ]
    spread = {
        label[k]: [lesion_dice(by_seed[s]["metrics"]) for s in sorted(by_seed)]
        for k, by_seed in runs.items()
    }
    md += _ssl_sections(out, runs, label)
    ssl, sup = (
        spread.get(label.get("stitchnet_ssl", "")),
        spread.get(label.get("stitchnet_sup", "")),
    )
    if ssl and sup:
        gap = np.mean(ssl) - np.mean(sup)
        verdict = (
            "helps"
            if gap > np.std(ssl) + np.std(sup)
            else ("does not measurably help" if gap >= -(np.std(ssl) + np.std(sup)) else "hurts")
        )
        md += [
            f"**Does unlabelled data help StitchNet here?** Lesion Dice with unlabelled slices "
            f"{np.mean(ssl):.3f} vs labelled only {np.mean(sup):.3f} (difference {gap:+.3f}; the "
            f"seeds' spreads sum to {np.std(ssl) + np.std(sup):.3f}): unlabelled data "
            f"**{verdict}** in this run.",
            "",
        ]
    md += ["## Every class", "", class_table(seed0), ""]

    made = report_figures(runs, test, fig_dir)
    curves = collect_efficiency(out, runs)
    if curves:
        md += ["## Label efficiency (test lesion Dice per seed)", "", *efficiency_table(curves), ""]
        made.append(
            (
                "Label efficiency",
                figures.label_efficiency_figure(curves, fig_dir / "label_efficiency.png"),
            )
        )
    calibration = calibration_table(out)
    if calibration:
        md += [
            "## Calibration on the test split",
            "",
            "Inside the true lung field. ECE: top label, 15 bins. Brier: 0..2. AUROC: predictive "
            "entropy against pixel errors. Pearson / Spearman: per-slice mean entropy against "
            "per-slice lesion Dice (a negative value: unsure slices are the bad ones). Only runs "
            "whose weights were at hand are scored (`stitchnet.study.calibration`).",
            "",
            *calibration,
            "",
        ]
    logs = {label[k]: v[min(v)]["dir"] / "log.csv" for k, v in runs.items()}
    made.append(
        (
            "Training curves (seed 0)",
            figures.curves_figure(
                {k: p for k, p in logs.items() if p.exists()}, fig_dir / "training_curves.png"
            ),
        )
    )
    md += ["## Figures", ""]
    for title, path in made:
        md += [f"### {title}", "", f"![{title}]({path.relative_to(out).as_posix()})", ""]

    md += ["## What ran", ""]
    trained = meta.get("environment")
    if trained:
        md += ["Trained on (the last `reproduce` invocation):", ""]
        md += [f"- {k}: {v}" for k, v in trained.items()]
        md += ["", "This report written on:", ""]
    md += [f"- {k}: {v}" for k, v in environment().items()]
    md += [
        f"- preset: {meta.get('preset')}; seeds: {meta.get('seeds')}; label counts: "
        f"{meta.get('label_counts')} with {meta.get('efficiency_seeds')} seed(s) each",
        f"- split ({splits.get('by', '?')}, seed {splits.get('seed', '?')}): "
        + ", ".join(f"{p} {len(splits.get(p, []))}" for p in ("train", "val", "test")),
    ]
    if meta.get("protocol_note"):
        md.append(f"- note: {meta['protocol_note']}")
    md += ["", "| Method | seed | wall time (s) |", "|---|---|---|"]
    for k, by_seed in runs.items():
        for s in sorted(by_seed):
            md.append(f"| {label[k]} | {s} | {by_seed[s]['info']['wall_s']} |")
    total = sum(r["info"]["wall_s"] for v in runs.values() for r in v.values())
    md += ["", f"Total training+testing time of the main runs: {total / 60:.1f} min.", ""]

    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(text, out))
    return out / "report.md"


def _html(text: str, out: Path) -> str:
    """Markdown to a single self-contained HTML file (figures inlined as data URIs)."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"])

    def inline(m: re.Match) -> str:
        data = base64.b64encode((out / m.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
    )
    style += "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    head = f"<head><meta charset='utf-8'><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{body}</body></html>"

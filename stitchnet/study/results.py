"""Finished runs read back from a reproduce folder, and the tables the report makes of them.

Every score comes from a run's test/metrics.json, read back as a `metrics.Summary`, so Table 1 is
built by `stitchnet.evaluate.table1` exactly as for a fresh evaluation, and lesion Dice is
`metrics.lesion_dice` (with missing="nan": a run is compared on both lesions or not at all).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stitchnet.config import CLASS_NAMES
from stitchnet.evaluate import format_cell, table1
from stitchnet.metrics import METRICS, summary_from_dict
from stitchnet.metrics import lesion_dice as summary_lesion_dice
from stitchnet.study.protocol import PAPER_TABLE1


def lesion_dice(metrics: dict) -> float:
    """The selection and comparison metric of one run (metrics.json content): the mean of the GGO
    and consolidation F1 means, NaN when either is undefined (see `metrics.lesion_dice`)."""
    return summary_lesion_dice(summary_from_dict(metrics), missing="nan")


def runs_table1(results: dict[str, dict]) -> str:
    """The paper's Table 1 layout for several runs: label -> metrics.json content."""
    return table1({label: summary_from_dict(m) for label, m in results.items()})


def class_table(results: dict[str, dict]) -> str:
    """Every class separately (healthy lung included), F1 and IoU with n."""
    lines = [
        "| Class | Method | IoU | F1 | Recall | Precision | n (F1) |",
        "|---|---|---|---|---|---|---|",
    ]
    summaries = {label: summary_from_dict(m) for label, m in results.items()}
    for cls in CLASS_NAMES:
        for label, s in summaries.items():
            stats = s["classes"][cls]
            cells = " | ".join(format_cell(stats[k]) for k in METRICS)
            lines.append(f"| {cls} | {label} | {cells} | {stats['f1'].n} |")
    return "\n".join(lines)


def paper_table() -> str:
    """The paper's own Table 1 (PAPER_TABLE1), in the same layout."""
    lines = ["| Lesion | Method | IoU | F1 | Recall | Precision |", "|---|---|---|---|---|---|"]
    for lesion, rows in PAPER_TABLE1.items():
        for method, cells in rows.items():
            lines.append(f"| {lesion} | {method} (paper) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pooled_lesion_dice(metrics: dict) -> float:
    """Lesion Dice over all test pixels at once (metrics.json's pooled_dice); NaN if absent."""
    value = (metrics.get("pooled_dice") or {}).get("lesion_dice")
    return float("nan") if value is None else float(value)


def _mean_std(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "n/a"


def seed_table(runs: dict, label: dict) -> list[str]:
    """Per variant: lesion Dice per seed (per-slice mean), its mean ± std, and pooled Dice."""
    md = [
        "| Method | seeds | lesion Dice per seed | mean ± std | pooled lesion Dice, mean ± std |",
        "|---|---|---|---|---|",
    ]
    for k, by_seed in runs.items():
        vals = [lesion_dice(by_seed[s]["metrics"]) for s in sorted(by_seed)]
        pooled = [pooled_lesion_dice(by_seed[s]["metrics"]) for s in sorted(by_seed)]
        per = ", ".join(f"{v:.3f}" for v in vals)
        md.append(f"| {label[k]} | {len(vals)} | {per} | {_mean_std(vals)} | {_mean_std(pooled)} |")
    return md


def paired_gains(runs: dict, label: dict, pairs: tuple[tuple[str, str], ...]) -> list[str]:
    """The per-seed gain of each "with" variant over its "without" (same seed, same split)."""
    md = [
        "| With | Without | gain per seed | mean gain | positive on every seed | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for with_key, without_key in pairs:
        a, b = runs.get(with_key, {}), runs.get(without_key, {})
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        gains = [lesion_dice(a[s]["metrics"]) - lesion_dice(b[s]["metrics"]) for s in seeds]
        spread = np.std([lesion_dice(a[s]["metrics"]) for s in seeds]) + np.std(
            [lesion_dice(b[s]["metrics"]) for s in seeds]
        )
        mean = float(np.mean(gains))
        # A difference smaller than the seeds' spread is not shown, whichever its sign; one seed
        # has no spread to compare with.
        shown = len(seeds) > 1 and abs(mean) > spread
        verdict = ("gain" if mean > 0 else "loss") if shown else "not shown"
        md.append(
            f"| {label[with_key]} | {label[without_key]} | "
            + ", ".join(f"{g:+.3f}" for g in gains)
            + f" | {mean:+.3f} | {'yes' if all(g > 0 for g in gains) else 'no'} | {verdict} |"
        )
    return md


def efficiency_table(curves: dict[str, dict[int, list[float]]]) -> list[str]:
    counts = sorted({n for c in curves.values() for n in c})
    md = [
        "| Method | " + " | ".join(f"{n} labelled" for n in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for name, curve in curves.items():
        cells = [
            ", ".join(f"{v:.3f}" for v in curve[n]) + f" (mean {np.mean(curve[n]):.3f})"
            if n in curve
            else "n/a"
            for n in counts
        ]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return md


def load_json(path: Path) -> dict | None:
    """A JSON file's content, None when the file is not there (a run not finished)."""
    return json.loads(path.read_text()) if path.exists() else None


def collect(out: Path, pattern: str = "runs/*/seed*") -> dict[str, dict[int, dict]]:
    """variant -> seed -> {"metrics", "info", "dir"} for every finished run matching `pattern`
    (the main runs by default; e.g. "efficiency/*/n5/seed*" for the 5-slice runs)."""
    runs: dict[str, dict[int, dict]] = {}
    for run_dir in sorted(out.glob(pattern)):
        metrics = load_json(run_dir / "test" / "metrics.json")
        info = load_json(run_dir / "run_info.json")
        if metrics is None or info is None:
            continue
        variant = run_dir.relative_to(out).parts[1]
        runs.setdefault(variant, {})[int(run_dir.name[4:])] = {
            "metrics": metrics,
            "info": info,
            "dir": run_dir,
        }
    return runs


def collect_efficiency(out: Path, runs: dict) -> dict[str, dict[int, list[float]]]:
    """variant label -> labelled count -> lesion Dice per seed (the full set from the main runs)."""
    curves: dict[str, dict[int, list[float]]] = {}
    for run_dir in sorted(out.glob("efficiency/*/n*/seed*")):
        metrics = load_json(run_dir / "test" / "metrics.json")
        info = load_json(run_dir / "run_info.json")
        if metrics is None or info is None:
            continue
        curve = curves.setdefault(info["label"], {})
        curve.setdefault(int(info["max_labelled"]), []).append(lesion_dice(metrics))
    for by_seed in runs.values():
        info = next(iter(by_seed.values()))["info"]
        if info["label"] in curves:
            n_train = next(iter(by_seed.values()))["metrics"].get("n_train")
            full = int(n_train) if n_train else 30
            curves[info["label"]][full] = [lesion_dice(r["metrics"]) for r in by_seed.values()]
    return curves


def calibration_table(out: Path) -> list[str]:
    """Calibration on the test split (test/calibration.json, written by `reproduce` for the
    U-Net and the recommended model): mean +- std over seeds per model and labelled count."""
    groups: dict[tuple[str, int | None], list[dict]] = {}
    for path in sorted(out.glob("**/seed*/test/calibration.json")):
        info = load_json(path.parent.parent / "run_info.json")
        if info is None:
            continue
        groups.setdefault((info["label"], info.get("max_labelled")), []).append(
            json.loads(path.read_text())
        )
    if not groups:
        return []
    keys = ("ece", "brier", "auroc", "pearson", "spearman")
    lines = [
        "| Model | Labelled slices | Runs | Draws | ECE | Brier | AUROC (entropy vs error) "
        "| Pearson | Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (label, count), reports in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 1e9)
    ):
        cells = [_mean_std([r[k] for r in reports if not np.isnan(r[k])]) for k in keys]
        lines.append(
            f"| {label} | {count or 'all'} | {len(reports)} | {reports[0]['method']} | "
            + " | ".join(cells)
            + " |"
        )
    return lines

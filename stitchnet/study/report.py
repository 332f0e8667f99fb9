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

from stitchnet import figures
from stitchnet.metrics import ABSENT_RULE
from stitchnet.outdir import check_report_folder

TABLE1_ROWS = (("GGO", "ggo"), ("CON", "consolidation"), ("Background", "background"))
METRICS = ("iou", "f1", "recall", "precision")
SAMPLE_TEMPERATURES = (1.0, 0.7, 0.4, 0.0)  # rows of the samples figure


def group_stat(metrics: dict, group: str, metric: str) -> tuple[float, float, int]:
    """(mean, std, n) of one Table-1 group ("ggo", "consolidation", "background", "overall")."""
    entry = metrics["groups"][group][metric]
    # metrics.json writes undefined values (no image defines the metric; Overall's std) as null.
    mean, std = entry.get("mean"), entry.get("std")
    return (
        float("nan") if mean is None else float(mean),
        float("nan") if std is None else float(std),
        int(entry.get("n") or 0),
    )


def lesion_dice(metrics: dict) -> float:
    """The selection and comparison metric: mean of the GGO and consolidation F1 means."""
    return float(np.mean([group_stat(metrics, g, "f1")[0] for g in ("ggo", "consolidation")]))


def _num(entry: dict) -> tuple[float, float]:
    return tuple(float("nan") if entry.get(k) is None else float(entry[k]) for k in ("mean", "std"))


def _fmt(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def table1(results: dict[str, dict]) -> str:
    """The paper's Table 1 layout for several models: label -> metrics.json content."""
    lines = ["| Lesion | Method | IoU | F1 | Recall | Precision |", "|---|---|---|---|---|---|"]
    for title, group in TABLE1_ROWS:
        for label, m in results.items():
            cells = [_fmt(*group_stat(m, group, k)[:2]) for k in METRICS]
            lines.append(f"| {title} | {label} | " + " | ".join(cells) + " |")
    for label, m in results.items():
        cells = [f"{group_stat(m, 'overall', k)[0]:.3f}" for k in METRICS]
        lines.append(f"| Overall | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(results: dict[str, dict]) -> str:
    """Every class separately (healthy lung included), F1 and IoU with n."""
    lines = [
        "| Class | Method | IoU | F1 | Recall | Precision | n (F1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cls in ("background", "healthy", "ggo", "consolidation"):
        for label, m in results.items():
            stats = {k: m["classes"][cls][k] for k in METRICS}
            cells = [_fmt(*_num(stats[k])) for k in METRICS]
            lines.append(f"| {cls} | {label} | " + " | ".join(cells) + f" | {stats['f1']['n']} |")
    return "\n".join(lines)


def paper_table() -> str:
    from stitchnet.reproduce import PAPER_TABLE1

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


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect(out: Path, pattern: str = "runs/*/seed*") -> dict[str, dict[int, dict]]:
    """variant -> seed -> {"metrics", "info", "dir"} for every finished run matching `pattern`
    (the main runs by default; e.g. "efficiency/*/n5/seed*" for the 5-slice runs)."""
    runs: dict[str, dict[int, dict]] = {}
    for run_dir in sorted(out.glob(pattern)):
        metrics = _load_json(run_dir / "test" / "metrics.json")
        info = _load_json(run_dir / "run_info.json")
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
        metrics = _load_json(run_dir / "test" / "metrics.json")
        info = _load_json(run_dir / "run_info.json")
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
        info = _load_json(path.parent.parent / "run_info.json")
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


def _test_set(out: Path, runs: dict):
    """The labelled test part, pre-processed as the runs were (read back from the cache)."""
    from stitchnet import pipeline
    from stitchnet.config import RunConfig

    first = next(iter(runs.values()))
    first = first[min(first)]
    cfg = RunConfig.from_dict(json.loads((first["dir"] / "config.json").read_text()))
    meta = _load_json(out / "reproduce.json") or {}
    labelled = meta.get("labelled", "data/medseg_covid19_train50")
    data = pipeline.prepare_folder(labelled, cfg.data, progress=False, require_masks=True)
    return pipeline.split_parts(data, out / "splits.json")[1]["test"]


def constant_baseline(test, cls: int = 1) -> dict:
    """metrics.json content of predicting one class everywhere (default: all healthy lung)."""
    from stitchnet.evaluate import EvalResult
    from stitchnet.metrics import confusion_matrix

    matrix = confusion_matrix(torch.full_like(test.masks, cls), test.masks, 4)
    return EvalResult(test.ids, test.patient_ids, matrix).to_dict()


def _figures(out: Path, runs: dict, test, fig_dir: Path) -> list[tuple[str, Path]]:
    """Fig. 2 on the same test slices for every model, Fig. 6 styles and SVAE samples."""
    from stitchnet.checkpoint import BEST_NAME, model_from_checkpoint

    made: list[tuple[str, Path]] = []
    # Per variant its lowest seed whose weights are here (run folders copied back from another
    # machine without checkpoints still get every table; only their pictures are left out).
    seed0 = {}
    for k, v in runs.items():
        with_weights = [s for s in sorted(v) if (v[s]["dir"] / BEST_NAME).is_file()]
        if with_weights:
            seed0[k] = v[with_weights[0]]
    if not seed0:
        return made
    # The 4 test slices with the most lesion, so that the figure shows lesions at all.
    lesion_px = (test.masks >= 2).flatten(1).sum(1)
    pick = torch.argsort(lesion_px, descending=True)[:4].tolist()
    x = test.images[pick]
    preds = {}
    for key, run in seed0.items():
        model, _ = model_from_checkpoint(run["dir"])
        model.eval()
        with torch.no_grad():
            preds[run["info"]["label"]] = model(x).argmax(1).numpy()
        if key in ("stitchnet_ssl", "stitchnet_sup") and hasattr(model, "outputs"):
            with torch.no_grad():
                o = model.outputs(x)
            path = figures.styles_figure(
                x[:, 0].numpy(),
                o["logits"].argmax(1).numpy(),
                o["styles"].numpy(),
                o["reconstruction"][:, 0].numpy(),
                fig_dir / f"fig6_styles_{key}.png",
            )
            made.append((f"Fig. 6: styles of {run['info']['label']}", path))
            # The same draws at falling temperatures (1: the learnt prior; 0: its means).
            images, masks = [], []
            for temperature in SAMPLE_TEMPERATURES:
                s = model.sample(6, torch.Generator().manual_seed(0), temperature=temperature)
                images.append(s["image"][:, 0].numpy())
                masks.append(s["mask"].numpy())
            path = figures.samples_figure(
                np.stack(images),
                np.stack(masks),
                fig_dir / f"samples_{key}.png",
                row_labels=[f"temperature {t:g}" for t in SAMPLE_TEMPERATURES],
            )
            made.append((f"Samples from the prior, {run['info']['label']}", path))
    path = figures.comparison_figure(
        x[:, 0].numpy(),
        test.masks[pick].numpy(),
        preds,
        fig_dir / "fig2_comparison.png",
        ids=[test.ids[i] for i in pick],
    )
    made.insert(0, ("Fig. 2: the same test slices for every model", path))
    return made


def _targets(out: Path, runs: dict, recommended: str) -> list[str]:
    """Issue 9's targets: the recommended model against the supervised U-Net on the same labelled
    slices, per seed: >= +0.05 lesion Dice at the full training part, >= +0.10 at 5 slices."""
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
    from stitchnet.reproduce import PAIRS

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
    rec = _load_json(out / "recommended.json")
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
    from stitchnet.reproduce import environment

    check_report_folder(out)  # report.md, report.html and figures/ go into reproduce folders only
    runs = collect(out)
    if not runs:
        raise ValueError(f"{out}: no finished runs (runs/*/seed*/test/metrics.json) to report on")
    meta = _load_json(out / "reproduce.json") or {}
    splits = _load_json(out / "splits.json") or {}
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
        table1(seed0),
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

    made = _figures(out, runs, test, fig_dir)
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
            "whose weights were at hand are scored (`stitchnet.calibration`).",
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

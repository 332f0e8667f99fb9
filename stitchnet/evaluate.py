"""The one evaluator every model goes through, and the tables it prints.

`evaluate` predicts each slice by the argmax of the model's logits and keeps one confusion matrix
per slice; every score (per image, per class, per Table-1 group) is derived from those matrices by
`stitchnet.metrics`, under the absent-class rule printed with every result.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stitchnet.config import CLASS_NAMES, NUM_CLASSES
from stitchnet.data.types import PreparedSet
from stitchnet.metrics import (
    GROUPS,
    METRICS,
    Stat,
    Summary,
    absent_rule,
    confusion_matrix,
    lesion_dice,
    per_image_scores,
    pooled_dice,
    summarize,
)
from stitchnet.models.base import SegmentationModel
from stitchnet.outdir import atomic_write

# Table 1's row labels, in the paper's order, and the groups they show.
TABLE1_ROWS = (("GGO", "ggo"), ("CON", "consolidation"), ("Background", "background"))
METRIC_TITLES = {"iou": "IoU", "f1": "F1", "recall": "Recall", "precision": "Precision"}


@dataclass
class EvalResult:
    """Per-slice confusion matrices of one model on one set, and everything derived from them."""

    ids: list[str]
    patient_ids: list[str | None]
    matrix: torch.Tensor  # (N, C, C) int64 pixel counts [image, true class, predicted class]
    absent: str = "skip"
    summary: Summary = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.matrix, self.absent)

    @property
    def absent_rule(self) -> str:
        return absent_rule(self.absent)

    @property
    def lesion_dice(self) -> float:
        """Mean of the GGO and consolidation F1 means (the model-selection metric)."""
        return lesion_dice(self.summary)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per slice: id, patient_id and every class and group metric (NaN: undefined)."""
        scores = per_image_scores(self.matrix, self.absent)
        return [
            {
                "id": sid,
                "patient_id": pid if pid is not None else "",
                **{k: float(v[i]) for k, v in scores.items()},
            }
            for i, (sid, pid) in enumerate(zip(self.ids, self.patient_ids, strict=True))
        ]

    def to_dict(self) -> dict[str, Any]:
        """The content of metrics.json (undefined means and STDs are null)."""
        return {
            "groups": _stats_dict(self.summary["groups"]),
            "classes": _stats_dict(self.summary["classes"]),
            "lesion_dice": None if math.isnan(self.lesion_dice) else self.lesion_dice,
            # Dice over all test pixels at once, beside the per-slice means above.
            "pooled_dice": pooled_dice(self.matrix),
            "absent": self.absent,
            "absent_rule": self.absent_rule,
            "n_images": len(self.ids),
        }


def _stats_dict(table: dict[str, dict[str, Stat]]) -> dict[str, dict[str, dict]]:
    return {name: {m: s.to_dict() for m, s in stats.items()} for name, stats in table.items()}


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: SegmentationModel, dataset: PreparedSet, batch_size: int = 16, absent: str = "skip"
) -> EvalResult:
    """Score `model` on every slice of a labelled set (the model's train/eval mode is restored)."""
    if dataset.masks is None:
        raise ValueError(
            f"cannot evaluate on {dataset.name or 'this set'!r}: it has no masks (unlabelled)"
        )
    device = _model_device(model)
    was_training = model.training
    model.eval()
    matrices = []
    try:
        for start in range(0, len(dataset), batch_size):
            x = dataset.images[start : start + batch_size].to(device)  # (b, 1, S, S)
            y = dataset.masks[start : start + batch_size].to(device)  # (b, S, S)
            pred = model(x).argmax(dim=1)  # (b, 4, S, S) -> (b, S, S)
            matrices.append(confusion_matrix(pred, y, NUM_CLASSES))
    finally:
        model.train(was_training)
    matrix = (
        torch.cat(matrices)
        if matrices
        else torch.zeros(0, NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    )
    return EvalResult(list(dataset.ids), list(dataset.patient_ids), matrix, absent)


def write_evaluation(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write per_image.csv, then metrics.json, each atomically.

    metrics.json is written last, so its presence means the evaluation is complete.
    """
    out = Path(out_dir)
    rows = result.rows()
    columns = list(rows[0]) if rows else ["id", "patient_id"]  # id, patient_id, then scores
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        )
    csv_path = atomic_write(out / "per_image.csv", lambda f: f.write(buf.getvalue()), binary=False)
    text = json.dumps(result.to_dict(), indent=2)
    json_path = atomic_write(out / "metrics.json", lambda f: f.write(text + "\n"), binary=False)
    return {"metrics": json_path, "per_image": csv_path}


def format_cell(stat: Stat, with_n: bool = False) -> str:
    """One table cell: "mean ± std", the mean alone where STD is undefined, "n/a" where the
    mean is; `with_n` adds the number of images behind it."""
    if stat.mean is None:
        return "n/a"
    text = f"{stat.mean:.3f}" if stat.std is None else f"{stat.mean:.3f} ± {stat.std:.3f}"
    return f"{text} (n={stat.n})" if with_n else text


def _header(first: str) -> list[str]:
    titles = [METRIC_TITLES[m] for m in METRICS]
    return [
        f"| {first} | Method | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(titles),
    ]


def table1(summaries: dict[str, Summary]) -> str:
    """The paper's Table 1 as markdown: GGO, CON and Background rows (mean ± std) for every
    method (the dict's keys), then the Overall rows (means only). Fresh results and finished
    runs (`metrics.summary_from_dict` of their metrics.json) go through this one builder."""
    lines = _header("Lesion")
    rows = [*TABLE1_ROWS, ("Overall", "overall")]
    for title, group in rows:
        for method, summary in summaries.items():
            stats = summary["groups"][group]
            cells = " | ".join(format_cell(stats[m]) for m in METRICS)
            lines.append(f"| {title} | {method} | {cells} |")
    return "\n".join(lines)


def format_table1(results: dict[str, EvalResult], notes: bool = False) -> str:
    """Table 1 (`table1`) of fresh results; `notes` appends the absent-class rule and the group
    definitions below the table."""
    table = table1({method: res.summary for method, res in results.items()})
    return table + (_notes(results) if notes else "")


def format_class_table(results: dict[str, EvalResult], notes: bool = False) -> str:
    """Every class on its own (healthy lung included) as markdown: mean ± std (n images)."""
    lines = _header("Class")
    for name in CLASS_NAMES:
        for method, res in results.items():
            stats = res.summary["classes"][name]
            cells = " | ".join(format_cell(stats[m], with_n=True) for m in METRICS)
            lines.append(f"| {name} | {method} | {cells} |")
    return "\n".join(lines) + (_notes(results) if notes else "")


def _notes(results: dict[str, EvalResult]) -> str:
    rules = " / ".join(dict.fromkeys(res.absent_rule for res in results.values()))
    groups = ", ".join(f"{g} = classes {list(c)}" for g, c in GROUPS.items())
    return f"\n\nAbsent classes: {rules}\nGroups: {groups}; Overall = mean of the three groups."

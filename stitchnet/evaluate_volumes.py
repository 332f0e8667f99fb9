"""A trained model scored per case and in 3-D on a labelled volume dataset (data.volume_dataset).

Each case is segmented as `stitchnet segment` segments a scan (inference.segment.segment_volume:
the model on every slice, bounded by the scan's 3-D lung field) and compared with its label volume
mapped to our classes (data.label_maps):

    Dice per class   the rule of stitchnet.metrics (F1 = 2 tp / (2 tp + fp + fn)) on one confusion
                     matrix over all of the case's voxels; "lesion" is GGO and consolidation as
                     one group. A class absent from a case's truth and prediction has no Dice
                     there (None), and means over cases leave it out (metrics.ABSENT_RULE).
    burden error     predicted minus true GGO, consolidation and lesion volume in mL
                     (inference.burden.burden_row), so + is over-calling.

volumes.csv holds a row per case, volumes.json the rows with the mean and STD over cases. Slices
of a label map that takes healthy lung from a lung mask but has none get their lung from the
segmented scan's lung field, as the slice cache does.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stitchnet.config import CLASS_NAMES, NUM_CLASSES, DataConfig
from stitchnet.data.label_maps import resolve_label_map
from stitchnet.data.volume_dataset import dataset_json, detect_volume_layout, labelled_cases
from stitchnet.data.volume_slices import _companion
from stitchnet.data.volumes import read_volume
from stitchnet.inference.burden import burden_row
from stitchnet.metrics import confusion_matrix, f1, group_counts, mean_std
from stitchnet.outdir import atomic_write

DICE_GROUPS = {**{name: (k,) for k, name in enumerate(CLASS_NAMES)}, "lesion": (2, 3)}
BURDEN = ("ggo_ml", "consolidation_ml", "lesion_ml")
SLAB = 16  # slices per confusion matrix: int64 codes of a whole scan cost 8 bytes a voxel


def volume_confusion(pred: np.ndarray, truth: np.ndarray) -> torch.Tensor:
    """(C, C) voxel counts [true class, predicted class] over a (Z, Y, X) case."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape}; expected one shape")
    total = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    for z in range(0, len(pred), SLAB):
        p = torch.from_numpy(np.ascontiguousarray(pred[z : z + SLAB], dtype=np.int64))
        t = torch.from_numpy(np.ascontiguousarray(truth[z : z + SLAB], dtype=np.int64))
        total += confusion_matrix(p, t, NUM_CLASSES).sum(dim=0)  # (slab, C, C) -> (C, C)
    return total


def score_case(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, Any]:
    """3-D Dice per class and group, and the burden in mL of truth and prediction and their
    difference, of one case's (Z, Y, X) class-id volumes."""
    matrix = volume_confusion(pred, truth)[None]  # (1, C, C): the case as one image
    row: dict[str, Any] = {}
    for name, classes in DICE_GROUPS.items():
        dice = float(f1(group_counts(matrix, classes))[0])
        row[f"dice_{name}"] = None if math.isnan(dice) else dice
    true_b = burden_row(matrix[0].sum(dim=1).numpy(), voxel_ml)  # true class totals
    pred_b = burden_row(matrix[0].sum(dim=0).numpy(), voxel_ml)  # predicted class totals
    for key in BURDEN:
        row[f"true_{key}"] = true_b[key]
        row[f"pred_{key}"] = pred_b[key]
        row[f"error_{key}"] = pred_b[key] - true_b[key]
    return row


@torch.no_grad()
def evaluate_volumes(
    model: torch.nn.Module,
    cfg: DataConfig,
    path: str | Path,
    label_map: str | None = None,
    progress: bool = True,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """One row per case of a labelled volume dataset: case_id, voxel_ml and `score_case`."""
    from stitchnet.inference.segment import segment_volume

    layout = detect_volume_layout(path)
    cases = labelled_cases(path, layout)
    lmap = resolve_label_map(label_map, dataset_json(path, layout))
    was_training = model.training
    model.eval()
    rows = []
    try:
        for case in cases:
            vol = read_volume(case.image)
            result = segment_volume(model, cfg, vol, None, batch_size, progress)
            raw = _companion(case.label, vol, "label")  # (Z, Y, X) display order
            lung = None if case.lung is None else _companion(case.lung, vol, "lung") > 0
            if lmap.lung_fill and lung is None:
                lung = result.lung > 0
            truth = lmap.apply(raw, lung=lung, path=str(case.label))
            voxel_ml = vol.voxel_volume_ml()
            rows.append(
                {
                    "case_id": case.case_id,
                    "voxel_ml": voxel_ml,
                    **score_case(result.labels, truth, voxel_ml),
                }
            )
    finally:
        model.train(was_training)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and STD over cases of every Dice and burden error (None values left out), and the
    mean absolute burden errors."""
    out: dict[str, Any] = {}
    for key in [f"dice_{g}" for g in DICE_GROUPS] + [f"error_{b}" for b in BURDEN]:
        values = torch.tensor([math.nan if r[key] is None else r[key] for r in rows])
        out[key] = mean_std(values).to_dict()
    for b in BURDEN:
        out[f"abs_error_{b}"] = float(np.mean([abs(r[f"error_{b}"]) for r in rows]))
    return out


def write_volume_evaluation(rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """volumes.csv (a row per case) and volumes.json (the rows, their summary and the rule)."""
    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    csv_path = atomic_write(out / "volumes.csv", lambda f: f.write(buf.getvalue()), binary=False)
    doc = {
        "cases": rows,
        "summary": summary(rows),
        "rule": "Dice over each case's voxels in 3-D; a class absent from a case's truth and "
        "prediction has no Dice there (null) and is left out of the mean and STD. Burden error: "
        "predicted minus true volume in mL.",
    }
    text = json.dumps(doc, indent=2)
    json_path = atomic_write(out / "volumes.json", lambda f: f.write(text + "\n"), binary=False)
    return {"csv": csv_path, "json": json_path}

import csv
import json
import math
from dataclasses import dataclass

import pytest
import torch

from stitchnet import evaluate as E
from stitchnet.data.types import PreparedSet
from stitchnet.metrics import ABSENT_RULE, confusion_matrix
from stitchnet.models.base import SegmentationModel

TARGETS = [
    [[0, 1, 2], [1, 2, 2], [1, 1, 3]],
    [[1, 1, 1], [1, 2, 2], [1, 1, 1]],
]
PREDS = [
    [[1, 1, 2], [1, 1, 2], [2, 1, 1]],
    [[1, 1, 1], [3, 2, 2], [1, 1, 1]],
]


@dataclass(frozen=True)
class EchoConfig:
    pass


class Echo(SegmentationModel):
    """Predicts the class id written into the image as id / 3 (so predictions are known)."""

    name = "echo"
    config_class = EchoConfig

    def __init__(self, config: EchoConfig) -> None:
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0] * 3).round().long()  # (B, H, W)
        return torch.nn.functional.one_hot(ids, 4).permute(0, 3, 1, 2).float() * self.scale


def _dataset(masks=True) -> PreparedSet:
    preds = torch.tensor(PREDS)
    return PreparedSet(
        images=(preds.float() / 3).unsqueeze(1),
        masks=torch.tensor(TARGETS) if masks else None,
        ids=["a", "b"],
        patient_ids=["p1", None],
        boxes=[(0, 3, 0, 3)] * 2,
        orig_shapes=[(3, 3)] * 2,
        name="tiny",
    )


def test_evaluate_counts_every_slice_and_restores_mode():
    model = Echo(EchoConfig()).train()
    res = E.evaluate(model, _dataset(), batch_size=1)
    assert model.training  # put back as found
    expected = confusion_matrix(torch.tensor(PREDS), torch.tensor(TARGETS), 4)
    assert torch.equal(res.matrix, expected)
    assert torch.equal(E.evaluate(model, _dataset(), batch_size=16).matrix, expected)
    assert res.ids == ["a", "b"] and res.patient_ids == ["p1", None]
    # GGO F1: image a 2/3, image b 1; consolidation F1: 0 and 0
    assert res.lesion_dice == pytest.approx(((2 / 3 + 1) / 2 + 0) / 2)


def test_evaluate_refuses_an_unlabelled_set():
    with pytest.raises(ValueError, match="'tiny': it has no masks"):
        E.evaluate(Echo(EchoConfig()), _dataset(masks=False))


def test_write_evaluation_files(tmp_path):
    res = E.evaluate(Echo(EchoConfig()), _dataset())
    paths = E.write_evaluation(res, tmp_path / "eval")
    data = json.loads(paths["metrics"].read_text())
    assert data["absent_rule"] == ABSENT_RULE and data["n_images"] == 2
    assert set(data["groups"]) == {"ggo", "consolidation", "background", "overall"}
    assert set(data["classes"]) == {"background", "healthy", "ggo", "consolidation"}
    for table in ("groups", "classes"):
        for stats in data[table].values():
            assert set(stats) == {"iou", "f1", "recall", "precision"}
            assert all(set(s) == {"mean", "std", "n"} for s in stats.values())
    assert data["groups"]["ggo"]["iou"] == {"mean": 0.75, "std": 0.25, "n": 2}
    assert data["classes"]["background"]["recall"] == {"mean": 0.0, "std": 0.0, "n": 1}
    assert data["groups"]["overall"]["iou"]["mean"] == pytest.approx((0.75 + 0 + 5 / 7) / 3)

    with paths["per_image"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["a", "b"] and [r["patient_id"] for r in rows] == ["p1", ""]
    assert float(rows[0]["group_background_iou"]) == pytest.approx(4 / 7)
    assert rows[1]["class_background_iou"] == ""  # undefined: class 0 absent from both
    assert float(rows[1]["class_consolidation_precision"]) == 0.0
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "metrics.json",
        "per_image.csv",
    ]


def test_failed_write_leaves_no_complete_looking_output(tmp_path, monkeypatch):
    res = E.evaluate(Echo(EchoConfig()), _dataset())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(E.json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        E.write_evaluation(res, tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_format_table1_layout():
    res = E.evaluate(Echo(EchoConfig()), _dataset())
    lines = E.format_table1({"U-Net": res, "Copy": res}).splitlines()
    assert lines[0] == "| Lesion | Method | IoU | F1 | Recall | Precision |"
    assert [line.split(" | ")[0:2] for line in lines[2:]] == [
        ["| GGO", "U-Net"],
        ["| GGO", "Copy"],
        ["| CON", "U-Net"],
        ["| CON", "Copy"],
        ["| Background", "U-Net"],
        ["| Background", "Copy"],
        ["| Overall", "U-Net"],
        ["| Overall", "Copy"],
    ]
    # GGO IoU 1/2 and 1; recall 2/3 and 1; precision 2/3 and 1
    assert (
        lines[2]
        == "| GGO | U-Net | 0.750 ± 0.250 | 0.833 ± 0.167 | 0.833 ± 0.167 | 0.833 ± 0.167 |"
    )
    overall_iou = (0.75 + 0.0 + 5 / 7) / 3
    assert lines[8].startswith(f"| Overall | U-Net | {overall_iou:.3f} | ")
    assert "±" not in lines[8]
    assert ABSENT_RULE in E.format_table1({"U-Net": res}, notes=True)


def test_format_class_table_shows_every_class_with_n():
    res = E.evaluate(Echo(EchoConfig()), _dataset())
    lines = E.format_class_table({"m": res}).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| background",
        "| healthy",
        "| ggo",
        "| consolidation",
    ]
    # class 0: IoU 0 on image a, undefined on image b -> n=1
    assert lines[2].startswith("| background | m | 0.000 ± 0.000 (n=1) |")


def test_empty_result_reports_undefined():
    res = E.EvalResult([], [], torch.zeros(0, 4, 4, dtype=torch.long))
    assert math.isnan(res.lesion_dice)
    assert res.to_dict()["groups"]["ggo"]["f1"] == {"mean": None, "std": None, "n": 0}
    assert "n/a" in E.format_table1({"m": res})

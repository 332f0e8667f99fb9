"""`stitchnet evaluate RUN DS` on labelled volumes: 3-D Dice per class and burden error per case."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import volume_datasets as vd

from stitchnet.cli import main
from stitchnet.evaluate_volumes import score_case, summary, volume_confusion

# One case of 1 x 2 x 4 voxels, worked by hand below.
TRUTH = np.array([[[0, 1, 2, 2], [3, 3, 1, 0]]], dtype=np.uint8)
PRED = np.array([[[0, 1, 2, 1], [3, 2, 1, 0]]], dtype=np.uint8)


def test_dice_and_burden_of_a_hand_worked_case():
    row = score_case(PRED, TRUTH, voxel_ml=0.5)
    assert row["dice_background"] == 1.0  # tp 2, fp 0, fn 0
    assert row["dice_healthy"] == pytest.approx(4 / 5)  # tp 2, fp 1 (a GGO voxel), fn 0
    assert row["dice_ggo"] == pytest.approx(2 / 4)  # tp 1, fp 1, fn 1
    assert row["dice_consolidation"] == pytest.approx(2 / 3)  # tp 1, fp 0, fn 1
    assert row["dice_lesion"] == pytest.approx(6 / 7)  # truth 4, prediction 3, overlap 3
    # Truth: 2 GGO + 2 consolidation voxels; prediction: 2 GGO + 1 consolidation; 0.5 mL each.
    assert (row["true_ggo_ml"], row["pred_ggo_ml"], row["error_ggo_ml"]) == (1.0, 1.0, 0.0)
    assert row["error_consolidation_ml"] == -0.5 and row["error_lesion_ml"] == -0.5


def test_a_class_absent_from_truth_and_prediction_has_no_dice():
    truth = np.where(TRUTH == 3, 1, TRUTH).astype(np.uint8)  # no consolidation anywhere
    pred = np.where(PRED == 3, 1, PRED).astype(np.uint8)
    row = score_case(pred, truth, voxel_ml=1.0)
    assert row["dice_consolidation"] is None and row["error_consolidation_ml"] == 0.0
    other = score_case(PRED, TRUTH, voxel_ml=1.0)
    stats = summary([row, other])
    assert stats["dice_consolidation"] == {"mean": pytest.approx(2 / 3), "std": 0.0, "n": 1}
    assert stats["dice_ggo"]["n"] == 2


def test_the_slab_confusion_counts_every_voxel_once():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(37, 5, 6)).astype(np.uint8)  # 37: slabs of 16 + a rest
    pred = rng.integers(0, 4, size=(37, 5, 6)).astype(np.uint8)
    expected = np.zeros((4, 4), dtype=np.int64)
    np.add.at(expected, (truth.ravel(), pred.ravel()), 1)
    assert np.array_equal(volume_confusion(pred, truth).numpy(), expected)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    written = vd.nnunet_dataset(root / "ds", n_cases=3, per_case=2)
    args = ["train", "--model", "unet", "--labelled", str(root / "ds"), "--preset", "debug"]
    cache = ["--cache", str(root / "cache"), "--quiet"]
    assert main([*args, "--epochs", "1", "--out", str(root / "run"), *cache]) == 0
    return root, written


def test_evaluate_writes_per_case_3d_scores_beside_the_per_slice_ones(trained, capsys):
    root, written = trained
    out = root / "eval"
    cmd = ["evaluate", str(root / "run"), str(root / "ds"), "--out", str(out), "--quiet"]
    assert main([*cmd, "--cache", str(root / "cache")]) == 0
    assert "volumes.csv" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["n_images"] == 6  # per slice, as today
    with open(out / "volumes.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["case0", "case1", "case2"]
    for case, w in written.items():
        row = rows[case]
        # The truth's burden is the written masks' lesion voxels times the header's voxel size.
        lesion_voxels = int(np.isin(w.masks, (2, 3)).sum())
        assert float(row["true_lesion_ml"]) == pytest.approx(lesion_voxels * vd.VOXEL_ML)
        assert float(row["error_lesion_ml"]) == pytest.approx(
            float(row["pred_lesion_ml"]) - float(row["true_lesion_ml"])
        )
        for key in ("dice_background", "dice_healthy", "dice_lesion"):
            assert row[key] == "" or 0.0 <= float(row[key]) <= 1.0
    doc = json.loads((out / "volumes.json").read_text())
    assert len(doc["cases"]) == 3 and "3-D" in doc["rule"]
    assert math.isfinite(doc["summary"]["abs_error_lesion_ml"])

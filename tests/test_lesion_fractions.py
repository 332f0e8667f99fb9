"""predict's lesion_burden.json: per patient, GGO and consolidation as fractions of lung pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import UNLABELLED, copy_slices
from PIL import Image

from stitchnet.inference.defaults import DEFAULT_MODEL
from stitchnet.inference.predict import predict_folder, slice_lesion_fractions


def test_fractions_pool_each_patients_slices_by_hand():
    # Patient a, two slices: lung pixels (classes 1-3) 6 + 4 = 10, GGO 2 + 1 = 3, consolidation
    # 0 + 2 = 2. Background (class 0) never counts. Patient b: no lung at all.
    pixels = [np.array([50, 4, 2, 0]), np.array([7, 1, 1, 2]), np.array([9, 0, 0, 0])]
    got = slice_lesion_fractions(pixels, ["a", "a", None])
    assert got["a"] == {
        "lung_px": 10,
        "ggo_fraction": 0.3,
        "consolidation_fraction": 0.2,
        "lesion_fraction": 0.5,
    }
    # A slice without a patient id is pooled as "unknown"; no lung: fractions 0, not a division.
    assert got["unknown"] == {
        "lung_px": 0,
        "ggo_fraction": 0.0,
        "consolidation_fraction": 0.0,
        "lesion_fraction": 0.0,
    }


@pytest.mark.slow
def test_predict_writes_the_fractions_of_the_masks_it_wrote(tmp_path):
    # Real slices of two patients through the shipped model; the burden is counted while the
    # masks are written, so it must equal what the mask PNGs on disk hold.
    folder = copy_slices(UNLABELLED, tmp_path / "slices", 4, per_patient=2)
    out = tmp_path / "pred"
    predict_folder(DEFAULT_MODEL, folder, out, cache_dir=tmp_path / "cache", progress=False)
    burden = json.loads((out / "lesion_burden.json").read_text())
    with open(folder / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_patient: dict[str, np.ndarray] = {}
    for row in rows:
        mask = np.asarray(Image.open(out / "masks" / f"{Path(row['file']).stem}.png"))
        counts = np.bincount(mask.ravel(), minlength=4)[:4]
        pid = row["patient_id"] or "unknown"
        by_patient[pid] = by_patient.get(pid, np.zeros(4, dtype=np.int64)) + counts
    assert sorted(burden) == sorted(by_patient) and len(burden) == 2
    for pid, c in by_patient.items():
        lung = int(c[1:].sum())
        assert lung > 0
        assert burden[pid]["lung_px"] == lung
        assert burden[pid]["ggo_fraction"] == pytest.approx(c[2] / lung)
        assert burden[pid]["consolidation_fraction"] == pytest.approx(c[3] / lung)

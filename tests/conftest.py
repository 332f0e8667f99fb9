"""Shared fixtures: small folders of REAL bundled slices, copied into tmp folders."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "data" / "medseg_covid19_train50"
UNLABELLED = REPO / "data" / "covid19_ct_seg_20cases_unlabelled"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny convolutions gain nothing from threads, and on a shared 2-core machine OpenMP's
    # spinning threads make them several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def copy_slices(src: Path, dst: Path, n: int, per_patient: int | None = None) -> Path:
    """Copy the first n slices of a bundled folder (images, masks, lung, index.csv rows)."""
    with open(src / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if per_patient:
        taken: dict[str, int] = {}
        picked = []
        for r in rows:
            if taken.get(r["patient_id"], 0) < per_patient:
                taken[r["patient_id"]] = taken.get(r["patient_id"], 0) + 1
                picked.append(r)
        rows = picked
    rows = rows[:n]
    for sub in ("images", "masks", "lung"):
        if (src / sub).is_dir():
            (dst / sub).mkdir(parents=True, exist_ok=True)
    for r in rows:
        for sub in ("images", "masks", "lung"):
            stem = Path(r["file"]).stem
            for cand in (src / sub).glob(f"{stem}.*") if (src / sub).is_dir() else []:
                shutil.copy(cand, dst / sub / cand.name)
    with open(dst / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


@pytest.fixture
def real_labelled(tmp_path) -> Path:
    return copy_slices(LABELLED, tmp_path / "labelled", 12)


@pytest.fixture
def real_unlabelled(tmp_path) -> Path:
    return copy_slices(UNLABELLED, tmp_path / "unlabelled", 20, per_patient=2)

"""Splits: by patient with no leak, seeded, 60/20/20, reloaded from JSON, the slice fallback."""

from __future__ import annotations

import json

import pytest

from stitchnet.data.errors import DataError
from stitchnet.data.splits import (
    SLICE_SPLIT_WARNING,
    check_no_patient_leak,
    load_or_make_splits,
    make_splits,
    split_indices,
)


def _ten_patients():
    """10 patients p0..p9 with 3 slices each: ids p0_s0, p0_s1, p0_s2, p1_s0, ..."""
    ids = [f"p{p}_s{s}" for p in range(10) for s in range(3)]
    patients = [i.split("_")[0] for i in ids]
    return ids, patients


def test_by_patient_fractions_and_no_leak():
    ids, patients = _ten_patients()
    splits = make_splits(ids, patients, seed=0)
    assert splits["by"] == "patient" and "warning" not in splits
    # 10 patients: round(0.2 * 10) = 2 for test and val, 6 for train; 3 slices each.
    assert [len(splits["patients"][p]) for p in ("train", "val", "test")] == [6, 2, 2]
    assert [len(splits[p]) for p in ("train", "val", "test")] == [18, 6, 6]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(ids)
    check_no_patient_leak(splits, dict(zip(ids, patients, strict=True)))
    for part in ("train", "val", "test"):  # a patient's slices travel together
        assert {i.split("_")[0] for i in splits[part]} == set(splits["patients"][part])
    # ids keep the input order inside each part
    assert splits["train"] == [i for i in ids if i in set(splits["train"])]


def test_seeded_and_deterministic():
    ids, patients = _ten_patients()
    assert make_splits(ids, patients, seed=3) == make_splits(ids, patients, seed=3)
    tests = {tuple(make_splits(ids, patients, seed=s)["patients"]["test"]) for s in range(5)}
    assert len(tests) > 1  # another seed gives another split


def test_other_fractions_and_minimum_one_patient():
    ids, patients = _ten_patients()
    splits = make_splits(ids, patients, seed=0, val_fraction=0.1, test_fraction=0.3)
    assert [len(splits["patients"][p]) for p in ("train", "val", "test")] == [6, 1, 3]
    splits = make_splits(ids, patients, seed=0, val_fraction=0.01, test_fraction=0.0)
    assert [len(splits["patients"][p]) for p in ("train", "val", "test")] == [9, 1, 0]
    with pytest.raises(ValueError, match="must leave slices for training"):
        make_splits(ids, patients, seed=0, val_fraction=0.5, test_fraction=0.5)


def test_slice_fallback_carries_the_warning():
    ids = [f"z{k:03d}" for k in range(10)]
    with pytest.warns(UserWarning, match="by SLICE, not by patient"):
        splits = make_splits(ids, [None] * 10, seed=0)
    assert splits["by"] == "slice"
    assert splits["warning"] == SLICE_SPLIT_WARNING
    assert [len(splits[p]) for p in ("train", "val", "test")] == [6, 2, 2]


def test_partial_patient_ids_are_refused():
    with pytest.raises(DataError, match="1 of 3 slices have no patient id"):
        make_splits(["a", "b", "c"], ["p1", None, "p2"], seed=0)


def test_duplicate_ids_are_refused():
    with pytest.raises(DataError, match=r"slice ids repeat \(e.g. \['a'\]\)"):
        make_splits(["a", "a", "b"], [None, None, None], seed=0)


def test_leak_is_reported():
    splits = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    patients = {"a": "p1", "b": "p2", "c": "p2", "d": "p3"}
    with pytest.raises(DataError, match=r"1 patient\(s\).*'p2': \['train', 'val'\]"):
        check_no_patient_leak(splits, patients)
    check_no_patient_leak(splits, {"a": "p1", "b": "p2", "c": "p4", "d": "p3"})


def test_saved_split_is_reloaded_not_remade(tmp_path):
    ids, patients = _ten_patients()
    path = tmp_path / "run" / "splits.json"
    first = load_or_make_splits(path, ids, patients, seed=0)
    assert json.loads(path.read_text()) == first
    with pytest.warns(UserWarning, match="reusing the saved split"):
        again = load_or_make_splits(path, ids, patients, seed=7)
    assert again == first


def test_saved_split_for_other_data_is_refused(tmp_path):
    ids, patients = _ten_patients()
    path = tmp_path / "splits.json"
    load_or_make_splits(path, ids, patients, seed=0)
    with pytest.raises(
        DataError, match=r"splits\.json: saved split does not match.*1 slice\(s\) of"
    ):
        load_or_make_splits(path, ids + ["p10_s0"], patients + ["p10"], seed=0)


def test_split_indices():
    splits = {"train": ["c", "a"], "val": ["b"], "test": []}
    assert split_indices(splits, ["a", "b", "c"]) == {"train": [2, 0], "val": [1], "test": []}

"""`stitchnet train` straight on scans: an nnU-Net dataset of real slices in HU and a folder of
unlabelled DICOM + NIfTI scans, through the CLI, for the recommended model and the U-Net."""

from __future__ import annotations

import json

import pytest
import volume_datasets as vd

from stitchnet.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    vd.nnunet_dataset(root / "ds", n_cases=5, per_case=3)
    vd.unlabelled_scans(root / "scans")
    return root


def train(data, out, *extra):
    args = ["train", "--labelled", str(data / "ds"), "--preset", "debug", "--epochs", "1"]
    return main([*args, "--out", str(out), "--cache", str(data / "cache"), "--quiet", *extra])


def case_of(slice_id: str) -> str:
    return slice_id.rsplit("_z", 1)[0]


@pytest.mark.parametrize("model", [None, "unet"])  # None: the recommended model
def test_train_on_scans_splits_by_case(data, tmp_path, model, capsys):
    run = tmp_path / "run"
    extra = ["--unlabelled", str(data / "scans")] + ([] if model is None else ["--model", model])
    assert train(data, run, *extra) == 0
    shown = "stitchnet-skip" if model is None else model
    assert f"| GGO | {shown} |" in capsys.readouterr().out
    splits = json.loads((run / "splits.json").read_text())
    assert splits["by"] == "patient"
    cases = splits["patients"]
    assert sorted(cases["train"] + cases["val"] + cases["test"]) == [f"case{k}" for k in range(5)]
    for part in ("train", "val", "test"):  # no case has slices in two parts
        assert {case_of(i) for i in splits[part]} == set(cases[part])
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["n_images"] == len(splits["test"])
    if model is None:  # the recommended model also learns from the unlabelled scans
        pool = json.loads((run / "unlabelled_splits.json").read_text())
        scans = pool["patients"]["train"] + pool["patients"]["val"] + pool["patients"]["test"]
        assert sorted(scans) == ["nifti/scanC", "nifti/scanD", "patientA", "patientB"]
        # scanD's two abdomen slices (z 0, 1) are never drawn.
        drawn = pool["train"] + pool["val"] + pool["test"]
        assert not {"nifti/scanD_z000", "nifti/scanD_z001"} & set(drawn)


def test_a_binary_label_map_is_refused_in_one_line(data, tmp_path, capsys):
    assert train(data, tmp_path / "run", "--model", "unet", "--label-map", "binary") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--label-map binary: refused" in err[0]


def test_a_label_value_outside_the_map_is_refused_naming_it(tmp_path, capsys):
    root = tmp_path / "ds"
    # Healthy lung written as 5, a value in no map.
    vd.nnunet_dataset(root, n_cases=3, per_case=2, label_values={1: 5})
    args = ["train", "--model", "unet", "--labelled", str(root), "--preset", "debug"]
    assert main([*args, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "labelsTr/case" in err and "values [5] outside label map 'identity'" in err

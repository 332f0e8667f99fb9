"""Volume datasets: layout detection, cases, the slices they give and the split by case.

The scans are real bundled slices in HU with a real scanner geometry (tests/volume_datasets.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import volume_datasets as vd
import volume_factory as vf
from conftest import LABELLED, copy_slices

from stitchnet.config import DataConfig
from stitchnet.data.errors import DataError
from stitchnet.data.images import hu_window
from stitchnet.data.splits import check_no_patient_leak, make_splits
from stitchnet.data.volume_dataset import (
    detect_volume_layout,
    labelled_cases,
    prepare_volumes,
    scan_cases,
)

WHOLE = DataConfig(image_size=96, crop_to_lung=False)  # the 96 px canvas, uncropped, unresized
SMALL = DataConfig(image_size=64)  # the debug preset's data config


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    return root, vd.nnunet_dataset(root, n_cases=4, per_case=3)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    return root, vd.unlabelled_scans(root)


def test_layouts_are_told_apart(tmp_path, nnunet, scans):
    assert detect_volume_layout(nnunet[0]) == "nnunet"
    assert detect_volume_layout(scans[0]) == "scans"
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(nnunet[1]["case0"].image, flat / "a.nii.gz")
    shutil.copy(nnunet[1]["case0"].label, flat / "a_mask.nii.gz")
    assert detect_volume_layout(flat) == "pairs"
    folders = tmp_path / "folders"
    (folders / "images").mkdir(parents=True)
    (folders / "masks").mkdir()
    shutil.copy(nnunet[1]["case0"].image, folders / "images" / "a.nii.gz")
    shutil.copy(nnunet[1]["case0"].label, folders / "masks" / "a.nii.gz")
    assert detect_volume_layout(folders) == "pairs"
    # Today's slice folder and single files stay with data.sources.
    assert detect_volume_layout(copy_slices(LABELLED, tmp_path / "slices", 3)) is None
    assert detect_volume_layout(nnunet[1]["case0"].image) is None
    # Both pair layouts give the same case, its label beside it.
    for root in (flat, folders):
        (case,) = labelled_cases(root)
        assert case.case_id == "a" and case.label.name in ("a_mask.nii.gz", "a.nii.gz")


def test_nnunet_cases_drop_the_channel_suffix_and_refuse_a_second_channel(tmp_path, nnunet):
    cases = labelled_cases(nnunet[0])
    assert [c.case_id for c in cases] == ["case0", "case1", "case2", "case3"]
    assert all(c.label.name == f"{c.case_id}.nii.gz" for c in cases)
    root = tmp_path / "two_channels"
    shutil.copytree(nnunet[0], root)
    shutil.copy(root / "imagesTr" / "case0_0000.nii.gz", root / "imagesTr" / "case0_0001.nii.gz")
    with pytest.raises(DataError, match="input channel 0001"):
        labelled_cases(root)
    (root / "imagesTr" / "case0_0001.nii.gz").unlink()
    (root / "labelsTr" / "case1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case1_0000.nii.gz: no label; expected .*labelsTr/case1"):
        labelled_cases(root)


def test_scans_are_found_recursively_dicom_trees_and_nifti_files(scans):
    root, written = scans
    cases = scan_cases(root)
    assert [c.case_id for c in cases] == sorted(written)
    assert {c.case_id: c.image for c in cases} == written


def test_slices_reach_the_model_in_display_order_on_the_lung_window(nnunet, tmp_path):
    """Uncropped at the canvas size, the cached slices are the written scan's display slices,
    each through the lung window, and the masks are the bundled masks where they were placed."""
    root, written = nnunet
    data = prepare_volumes(root, WHOLE, tmp_path / "cache", progress=False)
    for case, w in written.items():
        rows = [i for i, pid in enumerate(data.patient_ids) if pid == case]
        assert [data.ids[i] for i in rows] == [f"{case}_z{z:03d}" for z in range(3)]
        expected = torch.from_numpy(hu_window(w.hu, WHOLE.lung_window))  # (Z, Y, X)
        # float16 keeps 11 bits: within 0.0005 of the window, under 1 HU.
        assert torch.allclose(data.images[rows, 0], expected, atol=5e-4)
        assert torch.equal(data.masks[rows], torch.from_numpy(w.masks).long())


def test_the_split_is_by_case(nnunet, tmp_path):
    root, written = nnunet
    data = prepare_volumes(root, SMALL, tmp_path / "cache", progress=False)
    assert sorted(set(data.patient_ids)) == sorted(written)
    splits = make_splits(data.ids, data.patient_ids, seed=0)
    assert splits["by"] == "patient"
    parts = splits["patients"]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(written)
    assert len(parts["test"]) == 1 and len(parts["val"]) == 1  # 20 % of 4 cases, at least one
    for part in ("train", "val", "test"):  # every slice lies in its case's part
        assert {i.rsplit("_z", 1)[0] for i in splits[part]} == set(parts[part])
    check_no_patient_leak(splits, dict(zip(data.ids, data.patient_ids, strict=True)))


def test_unlabelled_scans_give_only_slices_inside_the_lung_field(scans, tmp_path, capsys):
    root, _ = scans
    data = prepare_volumes(root, SMALL, tmp_path / "cache", progress=False)
    assert data.masks is None
    per_scan = {s["case_id"]: s["slices"] for s in data.meta["scans"]}
    # scanD holds two abdomen slices (soft tissue and fat, no air) below its four lung slices.
    assert per_scan == {"nifti/scanC": 4, "nifti/scanD": 4, "patientA": 4, "patientB": 5}
    scan_d = [i for i in data.ids if i.startswith("nifti/scanD")]
    assert scan_d == [f"nifti/scanD_z{z:03d}" for z in (2, 3, 4, 5)]
    assert "nifti/scanD: 4 of 6 slices inside the lung field" in capsys.readouterr().err


def test_a_labelled_layout_serves_as_unlabelled_scans(nnunet, tmp_path):
    data = prepare_volumes(nnunet[0], SMALL, tmp_path / "cache", progress=False, labelled=False)
    assert data.masks is None and sorted(set(data.patient_ids)) == sorted(nnunet[1])


def test_case_ids_must_be_unique(scans, tmp_path):
    root = tmp_path / "twice"
    shutil.copytree(scans[0], root)
    shutil.copy(root / "nifti" / "scanC.nii.gz", root / "patientA.nii.gz")
    with pytest.raises(DataError, match="case id 'patientA' also names"):
        prepare_volumes(root, SMALL, tmp_path / "cache", progress=False)


def test_a_label_volume_of_another_shape_is_refused(nnunet, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(nnunet[0], root)
    other = vd.write_case(tmp_path / "x.nii.gz", tmp_path / "x_lab.nii.gz", vd.slice_names()[:2])
    shutil.copy(other.label, root / "labelsTr" / "case2.nii.gz")
    with pytest.raises(DataError, match=r"case2.nii.gz: volume shape .* differs from its image"):
        prepare_volumes(root, SMALL, tmp_path / "cache", progress=False)
    assert np.asarray(other.masks).shape[0] == 2


MEDSEG_VALUES = {
    1: 0,
    2: 1,
    3: 2,
}  # ours -> MedSeg's: no healthy-lung value, GGO 1, consolidation 2


@pytest.mark.parametrize("lungs", [True, False])
def test_medseg_labels_get_healthy_lung_from_the_lung_mask_or_the_lung_field(tmp_path, lungs):
    root = tmp_path / "medseg"
    written = vd.nnunet_dataset(
        root, n_cases=2, per_case=2, lungs=lungs, label_values=MEDSEG_VALUES
    )
    data = prepare_volumes(root, WHOLE, tmp_path / "cache", progress=False, label_map="medseg")
    masks = data.masks.numpy()
    lesion = np.isin(masks, (2, 3))
    if lungs:  # healthy lung = the given lung mask minus the lesions, background outside
        truth = np.concatenate([w.masks for w in written.values()])
        lung = np.concatenate([w.lung for w in written.values()])
        expected = np.where(np.isin(truth, (2, 3)), truth, (lung > 0).astype(np.uint8))
        assert np.array_equal(masks, expected)
    else:  # ... or the scan's lung field, the one segment finds, where none is given
        assert (masks == 1).any()
        assert np.array_equal(masks == 1, (data.lungs.numpy() == 1) & ~lesion)


def test_dicom_files_lying_in_the_folder_make_it_one_scan(tmp_path):
    root = tmp_path / "series"
    vf.make_dicom_series(root, 3, 64, subfolder=".", seed=3)
    (case,) = scan_cases(root)
    assert case.case_id == "series" and case.image == root

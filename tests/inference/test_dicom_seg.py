"""DICOM SEG output: `stitchnet segment --dicom-seg` and `write_volume_seg`, read back with
highdicom and compared, frame by frame, with labels.nii.gz and with the source slices."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import nullcontext
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import volume_factory as vf

from stitchnet.cli import main
from stitchnet.data.volumes import read_volume
from stitchnet.inference.dicom_seg import _for_highdicom, write_volume_seg

SIZE = 64  # px per slice side
N = 4  # slices
MODEL_INFO = {"model_name": "unet", "path": "/runs/x/best.pt"}
REAL_CT = vf.REPO / "data" / "realct_nonlesion_dev" / "cip_copdgene_abdomen2"  # 2 real slices


def _sources_by_position(folder: Path) -> list[pydicom.Dataset]:
    """The factory series' headers, sorted inferior -> superior by ImagePositionPatient z (the
    factory's slices are axial with normal +z), i.e. display slice order."""
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()]
    return sorted(sources, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _frames(seg: hd.seg.Segmentation, sources: list[pydicom.Dataset]) -> np.ndarray:
    """(N, rows, cols, 3) bool: segments 1-3 on each source slice, in the given source order."""
    return seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources],
        segment_numbers=[1, 2, 3],
        combine_segments=False,
    ).astype(bool)


def test_write_volume_seg_places_each_class_on_its_source_slice(tmp_path):
    folder, _, _ = vf.make_dicom_series(tmp_path / "tree", N, SIZE)
    vol = read_volume(tmp_path / "tree")
    # Display labels (Z, Y, X) with a different, asymmetric pattern per slice and class.
    labels = np.zeros(vol.hu.shape, dtype=np.uint8)
    for z in range(N):
        labels[z, 5 + z : 20 + z, 10:40] = 1
        labels[z, 30:35, 2 + 3 * z : 9 + 3 * z] = 2
        labels[z, 50 - z : 60, 40 + z : 45 + 2 * z] = 3
    labels[1] = 0  # one empty slice: its frames are left out and read back as zeros
    path = write_volume_seg(tmp_path / "seg.dcm", vol, labels, MODEL_INFO)

    seg = hd.seg.segread(path)
    sources = _sources_by_position(folder)
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {
        ref.ReferencedSOPInstanceUID
        for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [
        "healthy lung",
        "ground-glass opacity",
        "consolidation",
    ]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    algorithm = seg.SegmentSequence[2].SegmentationAlgorithmIdentificationSequence[0]
    assert seg.SegmentSequence[2].SegmentAlgorithmType == "AUTOMATIC"
    assert algorithm.AlgorithmName == "stitchnet unet"
    # A standard axial slice's pixel_array is the transpose of its display slice (the factory's
    # own convention), so segment c on source slice z is (labels[z] == c).T.
    frames = _frames(seg, sources)
    for z in range(N):
        for c in (1, 2, 3):
            assert np.array_equal(frames[z, :, :, c - 1], (labels[z] == c).T), (z, c)
    assert not frames[1].any()


def test_cli_dicom_seg_matches_labels_nifti(tmp_path, capsys):
    folder, _, _ = vf.make_dicom_series(tmp_path / "tree", N, SIZE)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "tree"), "--out", str(out), "--dicom-seg", "--quiet"]
    args += ["--no-overlays", "--no-report", "--no-twin"]
    assert main(args) == 0
    assert "labels_seg.dcm" in capsys.readouterr().out

    seg = hd.seg.segread(out / "labels_seg.dcm")
    sources = _sources_by_position(folder)
    # DICOM input: labels.nii.gz voxels are (columns, rows, slices), slices sorted by position.
    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)  # (C, R, N)
    assert labels.shape == (SIZE, SIZE, N)
    assert (labels == 1).any()  # the model finds lung on the bundled slices
    frames = _frames(seg, sources)  # (N, R, C, 3)
    for k in range(N):
        for c in (1, 2, 3):
            assert np.array_equal(frames[k, :, :, c - 1], labels[:, :, k].T == c), (k, c)
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID


@pytest.mark.parametrize("kind", ["nifti", "slices"])
def test_dicom_seg_refused_without_dicom_source(tmp_path, capsys, kind):
    if kind == "nifti":
        scan, _, _ = vf.make_nifti(tmp_path / "scan.nii.gz", N, SIZE)
    else:
        scan = tmp_path / "slices"
        scan.mkdir()
        png = (vf.LABELLED / "images" / f"{vf.bundled_slice_names(1)[0]}.png").read_bytes()
        for k in range(2):  # one size for every slice of a folder
            (scan / f"slice_{k}.png").write_bytes(png)
    out = tmp_path / "out"
    with pytest.warns(UserWarning) if kind == "slices" else nullcontext():
        code = main(["segment", str(scan), "--out", str(out), "--dicom-seg", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--dicom-seg needs a DICOM source series" in err and kind in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _with_character_set(folder: Path, value: str | list[str]) -> None:
    """Rewrite every file of a series with SpecificCharacterSet = value."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = value
        ds.save_as(path)


def _box_labels(shape: tuple[int, ...]) -> np.ndarray:
    """(Z, Y, X) display labels with all three classes on every slice but the last."""
    labels = np.zeros(shape, dtype=np.uint8)
    y, x = shape[1] // 8, shape[2] // 8
    labels[:-1, y : 4 * y, x : 4 * x] = 1
    labels[:-1, 2 * y : 3 * y, 2 * x : 3 * x] = 2
    labels[:-1, 5 * y : 6 * y, 5 * x : 7 * x] = 3
    return labels


def test_cli_dicom_seg_of_series_with_empty_character_set(tmp_path, capsys):
    # An empty SpecificCharacterSet means the default repertoire; highdicom refuses '' itself,
    # which once cost the whole output folder.
    folder, _, _ = vf.make_dicom_series(tmp_path / "tree", 3, SIZE)
    _with_character_set(folder, "")
    assert pydicom.dcmread(next(folder.iterdir())).SpecificCharacterSet == ""
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "tree"), "--out", str(out), "--dicom-seg", "--quiet"]
    assert main([*args, "--no-overlays", "--no-report", "--no-twin"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "labels_seg.dcm" in captured.out
    assert json.loads((out / "burden.json").read_text())["failed_outputs"] == []

    seg = hd.seg.segread(out / "labels_seg.dcm")
    assert "SpecificCharacterSet" not in seg  # absent: the default repertoire, as in the source
    sources = _sources_by_position(folder)
    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)  # (C, R, N)
    frames = _frames(seg, sources)  # (N, R, C, 3)
    for k in range(3):
        for c in (1, 2, 3):
            assert np.array_equal(frames[k, :, :, c - 1], labels[:, :, k].T == c), (k, c)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("", None),  # empty: the default repertoire, as if absent
        (["", ""], None),
        (["", "ISO 2022 IR 100"], ["ISO 2022 IR 6", "ISO 2022 IR 100"]),  # PS3.3 C.12.1.1.2
        ("ISO_IR 100", "ISO_IR 100"),
    ],
)
def test_character_set_given_to_highdicom(value, expected):
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^Jane"
    ds.SpecificCharacterSet = value
    fixed = _for_highdicom(ds)
    assert fixed.get("SpecificCharacterSet") == expected
    assert ds.SpecificCharacterSet == value  # the caller's header is left as it was
    assert "PatientID" in fixed and not fixed.PatientID  # Type 2: added, empty, to the copy
    assert "PatientID" not in ds


def test_segment_codes_come_from_dicom_tables(tmp_path):
    folder, _, _ = vf.make_dicom_series(tmp_path / "tree", N, SIZE)
    vol = read_volume(tmp_path / "tree")
    seg = hd.seg.segread(
        write_volume_seg(tmp_path / "seg.dcm", vol, _box_labels(vol.hu.shape), MODEL_INFO)
    )

    def code(item):
        return (item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning)

    segments = seg.SegmentSequence
    types = [code(s.SegmentedPropertyTypeCodeSequence[0]) for s in segments]
    categories = [code(s.SegmentedPropertyCategoryCodeSequence[0]) for s in segments]
    # PS3.16: CID 6100 (Lung), CID 6102 / 6104 (Ground glass opacity), CID 7150 (categories).
    assert types == [
        ("SCT", "39607008", "Lung"),
        ("DCM", "112120", "Ground glass opacity"),
        ("99STITCHNET", "CONS", "Consolidation"),  # no code in PS3.16: a declared private one
    ]
    assert categories == [
        ("SCT", "91723000", "Anatomical Structure"),
        ("SCT", "49755003", "Morphologically Abnormal Structure"),
        ("SCT", "49755003", "Morphologically Abnormal Structure"),
    ]
    for s in segments[1:]:
        assert code(s.AnatomicRegionSequence[0]) == ("SCT", "39607008", "Lung")
    declared = [item.CodingSchemeDesignator for item in seg.CodingSchemeIdentificationSequence]
    assert declared == ["99STITCHNET"]


def test_dicom_tables_hold_the_codes_and_no_consolidation():
    # The tables the codes were taken from, as pydicom ships them: the SEG's claims stay true.
    from pydicom.sr._cid_dict import cid_concepts, name_for_cid
    from pydicom.sr._concepts_dict import concepts

    assert name_for_cid[6104] == "AbnormalOpacityFindingorFeature"
    assert "GroundGlassOpacity" in cid_concepts[6104]["DCM"]
    assert concepts["DCM"]["GroundGlassOpacity"] == {
        "112120": ("Ground glass opacity", [6102, 6104])
    }
    assert "Lung" in cid_concepts[6100]["SCT"] and "39607008" in concepts["SCT"]["Lung"]
    assert {"AnatomicalStructure", "MorphologicallyAbnormalStructure"} <= set(
        cid_concepts[7150]["SCT"]
    )
    names = [name.lower() for scheme in concepts.values() for name in scheme]
    assert not [name for name in names if "consolidat" in name]


DCIODVFY = shutil.which("dciodvfy")


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("source", ["factory_empty_charset", "real_ct"])
def test_dciodvfy_finds_no_error_in_the_seg(tmp_path, source):
    if source == "real_ct":
        folder = REAL_CT  # a real scanner's headers (GE LightSpeed VCT, ISO_IR 100)
    else:
        folder, _, _ = vf.make_dicom_series(tmp_path / "tree", 3, SIZE)
        _with_character_set(folder, "")
    vol = read_volume(folder)
    path = write_volume_seg(tmp_path / "seg.dcm", vol, _box_labels(vol.hu.shape), MODEL_INFO)
    assert _dciodvfy_errors(path) == []

    # The check itself finds errors: the same SEG without a Type 1 attribute fails it.
    broken = pydicom.dcmread(path)
    del broken.ContentLabel
    broken.save_as(tmp_path / "broken.dcm")
    errors = _dciodvfy_errors(tmp_path / "broken.dcm")
    assert len(errors) == 1 and "ContentLabel" in errors[0]


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]

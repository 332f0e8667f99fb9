"""DICOM SEG output: `stitchnet segment --dicom-seg` and `write_volume_seg`, read back with
highdicom and compared, frame by frame, with labels.nii.gz and with the source slices."""

from __future__ import annotations

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
from stitchnet.inference.dicom_seg import write_volume_seg

SIZE = 64  # px per slice side
N = 4  # slices
MODEL_INFO = {"model_name": "unet", "path": "/runs/x/best.pt"}


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

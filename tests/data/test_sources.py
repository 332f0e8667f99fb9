"""Every reader on small files written here, with values worked out by hand, and every bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from stitchnet.data.ccccii import read_ccccii
from stitchnet.data.errors import DataError
from stitchnet.data.images import hu_window
from stitchnet.data.label_maps import MEDSEG_RAW, LabelMap
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.sources import detect_layout, read_dicom_series, read_nifti, read_source


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _folder(root: Path, with_masks: bool = True) -> Path:
    """Two 4x3 slices a.png (51 everywhere) and b.png (255 top row), masks, lung, index.csv."""
    a = np.full((4, 3), 51)
    b = np.zeros((4, 3))
    b[0] = 255
    _png(root / "images" / "a.png", a)
    _png(root / "images" / "b.png", b)
    if with_masks:
        _png(root / "masks" / "a.png", [[0, 1, 2], [3, 0, 0], [0, 0, 0], [1, 1, 1]])
        _png(root / "masks" / "b.png", np.zeros((4, 3)))
    _png(root / "lung" / "a.png", np.ones((4, 3)))
    with (root / "index.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "patient_id", "other"])
        w.writerows([["a.png", "p1", "x"], ["b.png", "p2", "y"]])
    return root


def test_folder_reads_images_masks_lung_and_patients(tmp_path):
    records = read_folder(_folder(tmp_path / "set"))
    assert [r.slice_id for r in records] == ["a", "b"]
    assert [r.patient_id for r in records] == ["p1", "p2"]
    a, b = records
    assert a.image.dtype == np.float32 and a.image.shape == (4, 3)
    np.testing.assert_allclose(a.image, 0.2)  # 51 / 255
    np.testing.assert_allclose(b.image[0], 1.0)
    np.testing.assert_allclose(b.image[1:], 0.0)
    assert a.mask.dtype == np.uint8
    assert a.mask.tolist() == [[0, 1, 2], [3, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert a.lung.sum() == 12 and b.lung is None
    assert a.path.endswith("a.png")


def test_folder_without_masks_or_patient_column_is_unlabelled(tmp_path):
    root = _folder(tmp_path / "set", with_masks=False)
    (root / "index.csv").write_text("file,volume\na.png,v1\nb.png,v2\n")
    records = read_folder(root)
    assert all(r.mask is None and r.patient_id is None for r in records)


def test_folder_npy_float_taken_as_is_and_uint8_divided(tmp_path):
    images = tmp_path / "set" / "images"
    images.mkdir(parents=True)
    np.save(images / "f.npy", np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32))
    np.save(images / "u.npy", np.array([[0, 255], [51, 102]], dtype=np.uint8))
    f, u = read_folder(tmp_path / "set")
    assert f.image.tolist() == [[0.0, 0.25], [0.5, 1.0]]
    np.testing.assert_allclose(u.image, [[0.0, 1.0], [0.2, 0.4]], atol=1e-7)


def test_npy_float_outside_unit_range_is_refused(tmp_path):
    images = tmp_path / "set" / "images"
    images.mkdir(parents=True)
    np.save(images / "hu.npy", np.array([[-1000.0, 40.0]], dtype=np.float32))
    with pytest.raises(DataError, match=r"hu\.npy.*\[-1000, 40\].*expected floats in \[0, 1\]"):
        read_folder(tmp_path / "set")


def test_medseg_raw_map_fills_healthy_lung_but_not_effusion():
    raw = np.array([[0, 1], [2, 3], [0, 0]])
    lung = np.array([[1, 1], [1, 1], [0, 1]])
    # in lung: 0 -> healthy (1), GGO 1 -> 2, consolidation 2 -> 3, effusion 3 -> background 0;
    # outside the lung 0 stays background.
    assert MEDSEG_RAW.apply(raw, lung=lung).tolist() == [[1, 2], [3, 0], [0, 1]]


def test_label_map_without_needed_lung_mask_is_refused():
    with pytest.raises(DataError, match="needs a lung mask"):
        MEDSEG_RAW.apply(np.zeros((2, 2)), lung=None, path="m.png")


def test_label_outside_map_names_file_and_values(tmp_path):
    root = _folder(tmp_path / "set")
    _png(root / "masks" / "b.png", [[0, 7, 0]] * 4)
    with pytest.raises(DataError, match=r"b\.png.*values \[7\].*expected only \[0, 1, 2, 3\]"):
        read_folder(root)


def test_custom_label_map_from_dict():
    binary = LabelMap.from_dict("lesion-255", {0: 0, 255: 2})
    assert binary.apply(np.array([[0, 255]])).tolist() == [[0, 2]]
    with pytest.raises(ValueError, match="maps to \\[9\\]"):
        LabelMap.from_dict("bad", {1: 9})


def test_mask_size_mismatch_names_both_sizes(tmp_path):
    root = _folder(tmp_path / "set")
    _png(root / "masks" / "a.png", np.zeros((5, 3)))
    with pytest.raises(
        DataError, match=r"masks/a\.png: mask is 5x3 \(HxW\) but its image .* is 4x3"
    ):
        read_folder(root)


def test_missing_mask_for_one_image(tmp_path):
    root = _folder(tmp_path / "set")
    (root / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png: no mask for this image"):
        read_folder(root)


def test_corrupt_png_names_the_file(tmp_path):
    root = _folder(tmp_path / "set")
    (root / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=r"images/b\.png: cannot read as an image"):
        read_folder(root)


def test_truncated_png_names_the_file(tmp_path):
    root = _folder(tmp_path / "set")
    _png(root / "images" / "a.png", np.random.default_rng(0).integers(0, 255, (64, 64)))
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"images/a\.png"):
        read_folder(root)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: folder not found"):
        read_folder(tmp_path / "nowhere")
    (tmp_path / "set").mkdir()
    with pytest.raises(DataError, match=r"images: folder not found"):
        read_folder(tmp_path / "set")
    (tmp_path / "set" / "images").mkdir()
    with pytest.raises(DataError, match=r"images: no slices; expected files ending in"):
        read_folder(tmp_path / "set")


def test_index_missing_a_row(tmp_path):
    root = _folder(tmp_path / "set")
    (root / "index.csv").write_text("file,patient_id\na.png,p1\n")
    with pytest.raises(DataError, match=r"index\.csv: no row for b\.png"):
        read_folder(root)


# ---------------------------------------------------------------------------------------------
# NIfTI


def test_hu_window_by_hand():
    hu = np.array([-2000.0, -1250.0, -500.0, 250.0, 1000.0])
    # (hu + 1250) / 1500, clipped: -2000 -> 0, -1250 -> 0, -500 -> 0.5, 250 -> 1, 1000 -> 1
    np.testing.assert_allclose(hu_window(hu), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(hu_window(np.array([0.0]), (-100, 100)), [0.5])
    with pytest.raises(ValueError, match="low < high"):
        hu_window(hu, (10, 10))


def _nifti(path: Path, data: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> Path:
    # LPS axes (the DICOM patient frame): the display orientation itself, so slice k is
    # data[:, :, k] with its axes as stored.
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return path


def test_nifti_volume_split_windowed_and_labelled(tmp_path):
    # Stored int16 with slope 2 and intercept -1024: 137 -> -750 HU -> (-750 + 1250) / 1500 = 1/3;
    # 637 -> 250 HU -> 1; 0 -> -1024 HU -> 226 / 1500.
    stored = np.zeros((3, 2, 2), dtype=np.int16)
    stored[0, 0, 0] = 137
    stored[1, 1, 1] = 637
    image = _nifti(tmp_path / "vol.nii.gz", stored, slope=2.0, inter=-1024.0)
    labels = np.zeros((3, 2, 2), dtype=np.uint8)
    labels[0, 0, 0] = 1  # MedSeg GGO
    labels[2, 1, 1] = 3  # effusion
    lung = np.ones((3, 2, 2), dtype=np.uint8)
    lung[2, 0, 1] = 0
    records = read_nifti(
        image,
        label_path=_nifti(tmp_path / "lab.nii.gz", labels),
        lung_path=_nifti(tmp_path / "lung.nii.gz", lung),
        label_map="medseg-raw",
        patient_id="case1",
    )
    assert [r.slice_id for r in records] == ["vol_z000", "vol_z001"]
    assert all(r.path == str(image) for r in records)
    assert records[0].image.shape == (3, 2) and records[0].patient_id == "case1"
    assert records[0].image[0, 0] == pytest.approx(1 / 3, abs=1e-6)
    assert records[1].image[1, 1] == pytest.approx(1.0)
    assert records[0].image[2, 0] == pytest.approx(226 / 1500, abs=1e-6)
    assert records[0].mask.tolist() == [[2, 1], [1, 1], [1, 1]]
    # slice 1: (2, 0) is outside the lung -> background; effusion at (2, 1) -> background.
    assert records[1].mask.tolist() == [[1, 1], [1, 1], [0, 0]]


def test_nifti_label_shape_mismatch_and_bad_file(tmp_path):
    image = _nifti(tmp_path / "vol.nii", np.zeros((3, 2, 2), dtype=np.int16))
    labels = _nifti(tmp_path / "lab.nii", np.zeros((3, 3, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"lab\.nii: volume shape \(3, 3, 2\) differs"):
        read_nifti(image, label_path=labels)
    (tmp_path / "bad.nii").write_bytes(b"nonsense" * 10)
    with pytest.raises(DataError, match=r"bad\.nii: cannot read as NIfTI"):
        read_nifti(tmp_path / "bad.nii")


# ---------------------------------------------------------------------------------------------
# DICOM


def _dicom(path: Path, stored: np.ndarray, z: float | None, number: int, slope=2.0, inter=-1024.0):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientID = "dcm-patient"
    ds.Modality = "CT"
    ds.InstanceNumber = number
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, inter
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_series_ordered_by_position_and_windowed(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    # File names are in a shuffled order; positions say b (z=0), c (z=5), a (z=10).
    # A display slice is the transpose of the stored one (rows R->L, columns A->P).
    # Stored s -> HU 2 s - 1024 -> window (HU + 1250) / 1500:
    # 137 -> -750 -> 1/3; 387 -> -250 -> 2/3; 637 -> 250 -> 1; 0 -> -1024 -> 226/1500.
    _dicom(series / "a.dcm", np.full((2, 3), 637), z=10.0, number=1)
    _dicom(series / "b.dcm", np.full((2, 3), 137), z=0.0, number=3)
    _dicom(series / "c.dcm", np.array([[387, 0, 0], [0, 0, 0]]), z=5.0, number=2)
    records = read_dicom_series(series)
    assert [Path(r.path).name for r in records] == ["b.dcm", "c.dcm", "a.dcm"]
    assert [r.slice_id for r in records] == ["series_000", "series_001", "series_002"]
    assert records[0].patient_id == "dcm-patient"
    np.testing.assert_allclose(records[0].image, 1 / 3, atol=1e-6)
    assert records[1].image[0, 0] == pytest.approx(2 / 3, abs=1e-6)
    assert records[1].image.shape == (3, 2)
    assert records[1].image[2, 1] == pytest.approx(226 / 1500, abs=1e-6)
    np.testing.assert_allclose(records[2].image, 1.0)


def test_dicom_reader_is_the_scan_reader(tmp_path):
    # One reader for every command: a series without positions cannot be placed, and is
    # refused as `stitchnet segment` refuses it; file names and depth do not matter.
    series = tmp_path / "series"
    (series / "deep").mkdir(parents=True)
    _dicom(series / "deep" / "IM1", np.full((2, 2), 637), z=None, number=2)
    _dicom(series / "IM2", np.full((2, 2), 137), z=None, number=1)
    assert detect_layout(series) == "dicom"
    with pytest.raises(DataError, match=r"IM\d: no ImagePositionPatient"):
        read_dicom_series(series, patient_id="given")


def test_dicom_corrupt_and_empty(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    with pytest.raises(DataError, match=r"series: empty folder"):
        read_dicom_series(series)
    (series / "x.dcm").write_bytes(b"garbage" * 30)
    with pytest.raises(DataError, match=r"series: no DICOM files"):
        read_dicom_series(series)


# ---------------------------------------------------------------------------------------------
# CC-CCII


def _ccccii(root: Path) -> Path:
    _png(root / "NCP" / "100" / "scan1" / "0001.png", np.full((4, 4), 255))
    _png(root / "NCP" / "100" / "scan1" / "0002.png", np.zeros((4, 4)))
    _png(root / "NCP" / "100" / "scan1" / "0003.png", np.zeros((4, 4)))
    _png(root / "CP" / "200" / "scan1" / "0001.png", np.zeros((4, 4)))
    _png(root / "Normal" / "300" / "scanA" / "0001.png", np.zeros((4, 4)))
    _png(root / "ct_lesion_seg" / "image" / "100" / "7.png", np.full((4, 4), 51))
    _png(root / "ct_lesion_seg" / "mask" / "100" / "7.png", [[0, 1, 2, 3]] * 4)
    return root


def test_ccccii_layout_excludes_cp_by_default(tmp_path):
    records = read_ccccii(_ccccii(tmp_path / "cc"))
    ids = [r.slice_id for r in records]
    assert ids == [
        "seg/100/7",
        "NCP/100/scan1/0001",
        "NCP/100/scan1/0002",
        "NCP/100/scan1/0003",
        "Normal/300/scanA/0001",
    ]
    assert [r.patient_id for r in records] == ["100", "100", "100", "100", "300"]
    assert records[0].mask.tolist() == [[0, 1, 2, 3]] * 4
    assert all(r.mask is None for r in records[1:])
    np.testing.assert_allclose(records[1].image, 1.0)


def test_ccccii_subsets_classes_and_thinning(tmp_path):
    root = _ccccii(tmp_path / "cc")
    assert [r.slice_id for r in read_ccccii(root, subset="seg")] == ["seg/100/7"]
    with_cp = read_ccccii(root, classes=("CP",), subset="unlabelled")
    assert [r.slice_id for r in with_cp] == ["CP/200/scan1/0001"]
    thinned = read_ccccii(root, classes=("NCP",), subset="unlabelled", max_slices_per_scan=2)
    assert [r.slice_id for r in thinned] == ["NCP/100/scan1/0001", "NCP/100/scan1/0003"]


def test_ccccii_mask_outside_map_and_missing_root(tmp_path):
    root = _ccccii(tmp_path / "cc")
    _png(root / "ct_lesion_seg" / "mask" / "100" / "7.png", [[0, 255, 0, 0]] * 4)
    with pytest.raises(DataError, match=r"7\.png: mask holds values \[255\]"):
        read_ccccii(root, subset="seg")
    with pytest.raises(DataError, match="folder not found"):
        read_ccccii(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# Autodetection


def test_read_source_detects_each_layout(tmp_path):
    folder = _folder(tmp_path / "set")
    cc = _ccccii(tmp_path / "cc")
    series = tmp_path / "series"
    series.mkdir()
    _dicom(series / "a.dcm", np.zeros((2, 2)), z=0.0, number=1)
    _dicom(series / "b.dcm", np.zeros((2, 2)), z=1.0, number=2)
    vol = _nifti(tmp_path / "v.nii.gz", np.zeros((2, 2, 3), dtype=np.int16))
    assert [detect_layout(p) for p in (folder, cc, series, vol)] == [
        "folder",
        "ccccii",
        "dicom",
        "nifti",
    ]
    assert len(read_source(folder)) == 2
    assert len(read_source(vol)) == 3
    assert len(read_source(series)) == 2
    assert len(read_source(cc, subset="seg")) == 1
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="no known layout"):
        read_source(tmp_path / "other")

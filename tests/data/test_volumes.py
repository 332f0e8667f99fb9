"""read_volume / write_label_volume on small DICOM and NIfTI scans built from the bundled slices."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from volume_factory import (
    LABELLED,
    dicom_affine,
    dicom_to_nifti,
    display_scan,
    make_dicom_series,
    make_nifti,
)

from stitchnet.data.errors import DataError
from stitchnet.data.images import hu_window
from stitchnet.data.volumes import VolumeError, list_series, read_volume, write_label_volume

SIZE = 64  # px; every check here holds at any size, and 64 keeps each test well under a second


def _files_by_z(folder: Path) -> list[Path]:
    """The series' files sorted by their ImagePositionPatient z (they are named at random)."""
    files = [p for p in folder.iterdir() if p.is_file()]
    return sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


# ---------------------------------------------------------------------------------------------
# The training display orientation, checked on the bundled PNGs themselves


def test_bundled_slices_are_the_transposed_radiological_display():
    # Why the display is rows R->L, cols A->P (volumes.py's docstring), from anatomy alone:
    # the right lung is the larger one, and the spine is posterior.
    more_lung_on_top = spine_on_right = 0
    for path in sorted((LABELLED / "lung").glob("*.png")):
        lung = np.asarray(Image.open(path)) > 0
        rows = np.nonzero(lung)[0]
        mid = (rows.min() + rows.max()) / 2
        more_lung_on_top += int((rows < mid).sum() > (rows >= mid).sum())
        image = np.asarray(Image.open(LABELLED / "images" / path.name))
        h, w = image.shape
        _, cols = np.nonzero(image[int(0.4 * h) : int(0.6 * h)] >= 250)  # saturated bone
        spine_on_right += int(cols.mean() > w / 2)
    assert more_lung_on_top >= 45 and spine_on_right >= 45  # 46 and 46 of 50


def test_dicom_pixel_lands_where_the_display_orientation_says(tmp_path):
    # Standard axial IOP: pixel_array[0, -1] is the most anterior row, the patient's leftmost
    # column. The display has rows R->L and cols A->P, so it shows at display[k, -1, 0].
    folder, _, _ = make_dicom_series(tmp_path, 4, SIZE)
    path = _files_by_z(folder)[2]
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[0, -1] = 3000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    vol = read_volume(tmp_path)
    assert vol.hu[2, -1, 0] == 3000 - 1024
    assert np.argwhere(vol.hu == 3000 - 1024).tolist() == [[2, SIZE - 1, 0]]


# ---------------------------------------------------------------------------------------------
# Series choice, slice order, geometry


def test_ct_series_with_most_slices_chosen_in_order_from_shuffled_nested_files(tmp_path):
    _, expected, _ = make_dicom_series(tmp_path / "study", 6, SIZE, subfolder="a/ct")
    small, small_hu, _ = make_dicom_series(tmp_path / "study", 3, SIZE, subfolder="b", seed=1)
    make_dicom_series(tmp_path / "study", 5, SIZE, subfolder="mr", modality="MR", seed=2)
    vol = read_volume(tmp_path / "study")
    assert vol.kind == "dicom" and vol.hu.shape == (6, SIZE, SIZE)
    assert np.array_equal(vol.hu, expected)  # slice k of the scan is bundled slice k
    assert vol.spacing == (2.5, 0.7, 0.8)  # (slice step, column spacing, row spacing)
    assert vol.voxel_volume_ml() == pytest.approx(2.5 * 0.7 * 0.8 / 1000)
    assert np.allclose(vol.affine, dicom_affine(6))
    assert vol.shape == (SIZE, SIZE, 6)  # (columns, rows, slices)

    listed = list_series(tmp_path / "study")
    assert [(s["modality"], s["n_slices"]) for s in listed] == [("CT", 6), ("CT", 3), ("MR", 5)]
    other = read_volume(tmp_path / "study", series_uid=listed[1]["uid"])
    assert other.series_uid == listed[1]["uid"] and np.array_equal(other.hu, small_hu)


def test_dicom_and_its_nifti_conversion_give_identical_display(tmp_path):
    _, expected, _ = make_dicom_series(tmp_path / "dcm", 6, SIZE)
    dicom = read_volume(tmp_path / "dcm")
    nifti = read_volume(dicom_to_nifti(tmp_path / "conv.nii.gz", expected, dicom_affine(6)))
    assert nib.aff2axcodes(nifti.affine) == ("L", "A", "S")  # rows flipped, as dcm2niix does
    assert np.array_equal(nifti.hu, dicom.hu)
    assert np.array_equal(nifti.body, dicom.body)
    assert nifti.spacing == dicom.spacing


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR", "ILA"])
def test_nifti_in_any_voxel_order_gives_one_display(tmp_path, axcodes):
    path, expected, _ = make_nifti(tmp_path / "scan.nii.gz", 5, SIZE, axcodes=axcodes)
    vol = read_volume(path)
    assert vol.axcodes == tuple(axcodes) and vol.kind == "nifti"
    assert np.array_equal(vol.hu, expected)
    assert vol.spacing == (3.0, 0.75, 0.75)


# ---------------------------------------------------------------------------------------------
# Labels back in the input's geometry


@pytest.mark.parametrize("axcodes", ["LAS", "PSR"])
def test_write_label_volume_overlays_the_input_nifti(tmp_path, axcodes):
    path, _, _ = make_nifti(tmp_path / "scan.nii.gz", 5, SIZE, axcodes=axcodes)
    vol = read_volume(path)
    labels = (vol.hu > -500).astype(np.uint8) + (vol.hu > 100)  # (Z, Y, X) ids 0..2
    out = write_label_volume(vol, labels, tmp_path / "out" / "labels.nii.gz")
    scan, written = nib.load(path), nib.load(out)
    assert written.shape == scan.shape and np.allclose(written.affine, scan.affine)
    assert written.get_data_dtype() == np.uint8
    data = np.asarray(written.dataobj)
    hu = scan.get_fdata()
    assert np.array_equal(data, (hu > -500).astype(np.uint8) + (hu > 100))  # voxel on voxel


def test_write_label_volume_of_a_dicom_series_has_its_shape_and_affine(tmp_path):
    make_dicom_series(tmp_path / "dcm", 4, SIZE)
    vol = read_volume(tmp_path / "dcm")
    out = write_label_volume(vol, vol.body.astype(np.uint8), tmp_path / "body.nii")
    written = nib.load(out)
    assert written.shape == vol.shape and np.allclose(written.affine, dicom_affine(4))
    # Axial DICOM voxels are (column R->L, row A->P, slice): display (Z, Y, X) moved to (Y, X, Z).
    assert np.array_equal(np.asarray(written.dataobj), np.transpose(vol.body, (1, 2, 0)))
    with pytest.raises(VolumeError, match=r"body.nii: values are not Hounsfield units"):
        read_volume(out)  # a 0/1 label volume is no scan
    with pytest.raises(VolumeError, match=r"expected the display shape \(4, 64, 64\)"):
        write_label_volume(vol, vol.body[:3], tmp_path / "bad.nii.gz")


# ---------------------------------------------------------------------------------------------
# Field of view and padding


@pytest.mark.parametrize("signed", [True, False])
def test_body_mask_excludes_fov_padding(tmp_path, signed):
    _, expected, _ = make_dicom_series(tmp_path, 3, SIZE, pad=-3024, signed=signed)
    vol = read_volume(tmp_path)
    circle = display_scan(3, SIZE).body
    assert np.array_equal(vol.body, circle)
    # Unsigned storage clips the padding to stored 0 (-1024 HU, air-like); only the
    # PixelPaddingValue tag tells it from air.
    assert np.all(vol.hu[~circle] == (-3024 if signed else -1024))
    assert np.array_equal(vol.hu, expected)


def test_nifti_padding_below_minus_1500_is_outside(tmp_path):
    path, _, _ = make_nifti(tmp_path / "s.nii.gz", 3, SIZE, pad=-2048, axcodes="LAS")
    vol = read_volume(path)
    assert np.array_equal(vol.body, display_scan(3, SIZE).body)
    assert vol.body.sum() < vol.body.size  # the corners are padding


# ---------------------------------------------------------------------------------------------
# A folder of 2-D slices


def test_slice_folder_stacks_in_natural_order_with_placeholder_spacing(tmp_path):
    grays = [np.full((20, 30), v, np.uint8) for v in (10, 200, 90)]
    for name, g in zip(["s2.png", "s10.png", "s1.png"], grays, strict=True):
        Image.fromarray(g).save(tmp_path / name)
    with pytest.warns(UserWarning, match="spacing set to 1 mm"):
        vol = read_volume(tmp_path)
    assert vol.kind == "slices" and not vol.spacing_known and vol.spacing == (1.0, 1.0, 1.0)
    assert vol.hu.shape == (3, 20, 30)
    assert np.allclose(hu_window(vol.hu)[:, 0, 0] * 255, [90, 10, 200], atol=1e-3)  # s1 s2 s10


def test_slice_folder_of_different_sizes_is_refused(tmp_path):
    for name in ("z000.png", "z001.png"):
        shutil.copy(LABELLED / "images" / name, tmp_path / name)
    with pytest.raises(VolumeError, match=r"z001.png: slice is 457x351 but z000.png is 369x273"):
        read_volume(tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error each


def test_non_ct_series_is_refused(tmp_path):
    make_dicom_series(tmp_path, 4, SIZE, modality="MR")
    with pytest.raises(VolumeError, match=r"Modality 'MR'; expected a CT series"):
        read_volume(tmp_path)


def test_mixed_series_without_ct_lists_them(tmp_path):
    make_dicom_series(tmp_path, 4, SIZE, modality="MR", subfolder="t1")
    make_dicom_series(tmp_path, 3, SIZE, modality="PT", subfolder="pet", seed=3)
    with pytest.raises(VolumeError, match=r"expected a CT series") as err:
        read_volume(tmp_path)
    assert "(MR, 4 slices" in str(err.value) and "(PT, 3 slices" in str(err.value)


def test_unknown_series_uid_lists_the_series(tmp_path):
    make_dicom_series(tmp_path, 3, SIZE, series_uid="1.2.3.4")
    with pytest.raises(VolumeError, match=r"no series '9.9'; found 1.2.3.4 \(CT, 3 slices"):
        read_volume(tmp_path, series_uid="9.9")


def test_gap_in_slice_positions_is_refused(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 6, SIZE)
    _files_by_z(folder)[3].unlink()
    with pytest.raises(VolumeError, match=r"gap of 5.000 mm .* expected one slice every 2.500 mm"):
        read_volume(tmp_path)


def test_duplicate_slice_position_is_refused(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 5, SIZE)
    ds = pydicom.dcmread(_files_by_z(folder)[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "COPY")
    with pytest.raises(VolumeError, match=r"duplicate slice position -195.000 mm"):
        read_volume(tmp_path)


def test_compressed_pixels_without_decoder_name_the_package(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not a real codestream \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path)
    try:
        import pylibjpeg  # noqa: F401

        pytest.skip("a JPEG Lossless decoder is installed here")
    except ImportError:
        pass
    with pytest.raises(VolumeError, match=r"JPEG Lossless.*pip install pylibjpeg.*python-gdcm"):
        read_volume(tmp_path)


def test_single_dicom_file_is_a_2d_image(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 2, SIZE)
    with pytest.raises(VolumeError, match=r"one DICOM file is a 2-D image"):
        read_volume(next(folder.iterdir()))


def test_one_slice_series_is_a_2d_image(tmp_path):
    make_dicom_series(tmp_path, 1, SIZE)
    with pytest.raises(VolumeError, match=r"has 1 slice; a 2-D image"):
        read_volume(tmp_path)


@pytest.mark.parametrize("shape", [(SIZE, SIZE), (SIZE, SIZE, 1)])
def test_single_slice_nifti_is_a_2d_image(tmp_path, shape):
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    with pytest.raises(VolumeError, match=r"is a 2-D image; expected a 3-D volume"):
        read_volume(path)


def test_png_file_is_a_2d_image(tmp_path):
    with pytest.raises(VolumeError, match=r"z000.png: a 2-D image; expected a 3-D volume"):
        read_volume(LABELLED / "images" / "z000.png")


def test_empty_folder_and_folder_without_dicom(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(VolumeError, match=r"empty folder"):
        read_volume(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("not a scan")
    with pytest.raises(VolumeError, match=r"no DICOM files and no slices among 1 files"):
        read_volume(tmp_path / "notes")


CROP = Path(__file__).resolve().parents[2] / "data/realct_nonlesion_dev/cip_copdgene_crop2"


def test_folder_holding_one_nifti_reads_that_file(tmp_path):
    # A folder per patient with its one NIfTI inside (the real COPDGene crop, a real export).
    folder = tmp_path / "patient01"
    folder.mkdir()
    shutil.copy(CROP / "crop_ct_2slices.nii.gz", folder / "scan.nii.gz")
    (folder / "README.txt").write_text("exported from the PACS")
    direct, via_folder = read_volume(folder / "scan.nii.gz"), read_volume(folder)
    np.testing.assert_array_equal(via_folder.hu, direct.hu)
    np.testing.assert_array_equal(via_folder.affine, direct.affine)
    assert any("read its one NIfTI file, scan.nii.gz" in n for n in via_folder.notes)
    shutil.copy(CROP / "crop_ct_2slices.nii.gz", folder / "scan_b.nii")
    with pytest.raises(VolumeError, match=r"patient01: 2 NIfTI files .*give the file itself"):
        read_volume(folder)


def test_volume_error_is_a_data_error():
    # The CLI maps DataError to exit status 2.
    assert issubclass(VolumeError, DataError)

"""read_volume refuses the headers that used to give a wrong burden with exit status 0.

Each scan is built from the bundled real slices by tests/volume_factory.py, then one header is
broken with pydicom or nibabel. Each refusal is a VolumeError (a ValueError: the CLI exits 2)
whose message names the file and the value it found. The four real scans of
data/realct_nonlesion_dev are read without refusal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from volume_factory import REPO, dicom_affine, dicom_to_nifti, display_scan, make_dicom_series

from stitchnet.data.volumes import VolumeError, read_volume

SIZE = 64  # px
REAL = REPO / "data" / "realct_nonlesion_dev"
PIXDIM = 76  # byte offset of pixdim[0] in a NIfTI-1 header; pixdim[i] is at PIXDIM + 4 i


def _files_by_z(folder: Path) -> list[Path]:
    """The series' files sorted by their ImagePositionPatient z (they are named at random)."""
    files = [p for p in folder.iterdir() if p.is_file()]
    return sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def _edit(path: Path, **tags) -> None:
    """Set (value) or delete (None) DICOM tags of one file."""
    ds = pydicom.dcmread(path)
    for tag, value in tags.items():
        if value is None:
            delattr(ds, tag)
        else:
            setattr(ds, tag, value)
    ds.save_as(path)


def _measured(message: str) -> tuple[float, float]:
    """(air, soft tissue) as the HU refusal states them."""
    air = re.search(r"air \(darkest 1 %\) at (-?\d+)", message)
    tissue = re.search(r"soft tissue \(median\) at (-?\d+)", message)
    return float(air.group(1)), float(tissue.group(1))


# ---------------------------------------------------------------------------------------------
# 1. RescaleSlope / RescaleIntercept


@pytest.mark.parametrize(
    "drop, found",
    [
        ("RescaleSlope", "RescaleIntercept -1024 without RescaleSlope"),
        ("RescaleIntercept", "RescaleSlope 1 without RescaleIntercept"),
    ],
)
def test_half_a_rescale_is_refused(tmp_path, drop, found):
    # pydicom applies neither tag without the other: stored HU + 1024 would pass for HU.
    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE)
    bad = _files_by_z(folder)[1]
    _edit(bad, **{drop: None})
    with pytest.raises(VolumeError, match=rf"{bad}: {found}; expected both"):
        read_volume(tmp_path)


def test_rescale_on_some_slices_only_is_refused(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE)
    bad = _files_by_z(folder)[2]
    _edit(bad, RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(VolumeError, match=rf"{bad}: no RescaleSlope/RescaleIntercept while "):
        read_volume(tmp_path)


def test_no_rescale_at_all_reads_stored_values_as_hu_with_a_note(tmp_path):
    # The writer stored HU themselves (int16, no rescale tags): slope 1, intercept 0, said so.
    _, expected, _ = make_dicom_series(tmp_path, 3, SIZE, intercept=None)
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.hu, expected)
    assert len(vol.notes) == 1
    assert "no RescaleSlope or RescaleIntercept on its 3 slices" in vol.notes[0]
    assert "stored values read as HU (slope 1, intercept 0)" in vol.notes[0]


# ---------------------------------------------------------------------------------------------
# 2. PixelSpacing, Rows and Columns across the series


def test_one_wrong_pixel_spacing_is_named_wherever_it_is(tmp_path):
    # The first slice used to set the spacing of all: 0.01 mm there shrank every mL 5600x.
    folder, _, _ = make_dicom_series(tmp_path, 5, SIZE)  # PixelSpacing [0.8, 0.7]
    bad = _files_by_z(folder)[0]
    _edit(bad, PixelSpacing=[0.01, 0.01])
    with pytest.raises(
        VolumeError,
        match=rf"{bad}: PixelSpacing \[0.01, 0.01\] differs from \[0.8, 0.7\] in 4 of 5",
    ):
        read_volume(tmp_path)


def test_one_slice_of_another_size_is_named_by_its_header(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 4, SIZE)
    bad = _files_by_z(folder)[3]
    ds = pydicom.dcmread(bad)
    ds.PixelData = ds.pixel_array[:48].tobytes()  # 48 of the 64 rows
    ds.Rows = 48
    ds.save_as(bad)
    with pytest.raises(VolumeError, match=rf"{bad}: Rows 48 differs from 64 in 3 of 4 files"):
        read_volume(tmp_path)


def test_zero_pixel_spacing_on_every_slice_is_refused(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE)
    for path in folder.iterdir():
        _edit(path, PixelSpacing=[0, 0.7])
    with pytest.raises(VolumeError, match=r"PixelSpacing \[0, 0.7\] \(every slice\); expected two"):
        read_volume(tmp_path)


# ---------------------------------------------------------------------------------------------
# 3. Non-finite NIfTI voxels


def _nifti_of(tmp_path: Path, n_slices: int = 5) -> tuple[Path, np.ndarray]:
    """A factory scan as NIfTI in (C, R, N) = RAS-flipped LPS order, float32 for NaN/inf."""
    hu = display_scan(n_slices, SIZE).hu  # (Z, Y, X)
    data = np.transpose(hu, (1, 2, 0)).astype(np.float32)  # (Y, X, Z): DICOM's (C, R, N)
    return tmp_path / "scan.nii.gz", data


def test_a_nan_slice_is_refused_with_its_count(tmp_path):
    path, data = _nifti_of(tmp_path)
    data[:, :, 2] = np.nan  # one whole slice: 64 * 64 = 4,096 of 5 * 4,096 = 20,480 voxels
    nib.save(nib.Nifti1Image(data, dicom_affine(5)), str(path))
    with pytest.raises(
        VolumeError,
        match=r"scan.nii.gz: 4,096 of 20,480 voxels are not finite \(NaN 4,096, \+inf 0, -inf 0; "
        r"the first at voxel \(0, 0, 2\)\)",
    ):
        read_volume(path)


def test_one_percent_of_inf_voxels_is_refused(tmp_path):
    path, data = _nifti_of(tmp_path)
    np.put(data, np.random.default_rng(0).choice(data.size, 205, replace=False), np.inf)  # 1 %
    nib.save(nib.Nifti1Image(data, dicom_affine(5)), str(path))
    with pytest.raises(VolumeError, match=r"205 of 20,480 voxels .*\+inf 205, -inf 0"):
        read_volume(path)


# ---------------------------------------------------------------------------------------------
# 4. NIfTI voxel sizes


@pytest.mark.parametrize("size", [0.0, -2.5, np.nan, np.inf])
def test_unusable_pixdim_without_sform_is_refused(tmp_path, size):
    # nibabel reads pixdim 0 as 1 mm (and -2.5 as 2.5) when the affine comes from pixdim.
    _, data = _nifti_of(tmp_path, 3)
    img = nib.Nifti1Image(data.astype(np.int16), None)
    img.header.set_zooms((0.7, 0.8, 2.5))
    img.header.set_qform(dicom_affine(3), code=1)
    img.header.set_sform(None, code=0)
    path = tmp_path / "scan.nii"
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    raw[PIXDIM + 12 : PIXDIM + 16] = np.float32(size).tobytes()  # pixdim[3], the slice step
    path.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match=rf"scan.nii: pixdim\[3\] .* is {size} and no sform"):
        read_volume(path)


def test_pixdim_unused_under_an_sform_does_not_matter(tmp_path):
    # With sform_code > 0 the affine (and so the spacing) comes from the sform alone.
    path = dicom_to_nifti(tmp_path / "scan.nii", display_scan(3, SIZE).hu, dicom_affine(3))
    raw = bytearray(path.read_bytes())
    raw[PIXDIM + 12 : PIXDIM + 16] = np.float32(0.0).tobytes()
    path.write_bytes(bytes(raw))
    assert read_volume(path).spacing == (2.5, 0.7, 0.8)  # the sform's (slice, column, row) mm


# ---------------------------------------------------------------------------------------------
# 5. Files left out of a series


def _truncate(path: Path, keep: int = 600) -> None:
    """Cut a slice short after its identifying tags, before its pixel data."""
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_slice_is_named_in_the_gap_it_leaves(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 5, SIZE)
    bad = _files_by_z(folder)[2]
    _truncate(bad)
    with pytest.raises(VolumeError, match=r"gap of 5.000 mm") as err:
        read_volume(tmp_path)
    assert f"1 file skipped: {bad} (no pixel data (truncated?))" in str(err.value)
    assert "missing files?" not in str(err.value)


def test_unreadable_files_without_a_gap_are_named_in_a_note(tmp_path):
    folder, expected, _ = make_dicom_series(tmp_path, 4, SIZE)
    extra = folder / "EXTRA"
    extra.write_bytes(_files_by_z(folder)[1].read_bytes())
    _truncate(extra)
    # A header that breaks off inside a sequence: pydicom cannot parse it at all.
    damaged = folder / "DAMAGED"
    damaged.write_bytes(
        b"\0" * 128 + b"DICM" + b"\x08\x00\x16\x00SQ\x00\x00\x10\x00\x00\x00\xfe\xff\x00\xe0zz"
    )
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.hu, expected)
    (note,) = vol.notes
    assert note.startswith(f"{tmp_path}: 2 files skipped: ")
    assert f"{damaged} (cannot be read as DICOM" in note
    assert f"{extra} (no pixel data (truncated?))" in note


def test_a_dicomdir_and_a_report_beside_the_series_are_no_skipped_files(tmp_path):
    # Objects that hold no pixels by design (pydicom's own test files) are left out quietly.
    from pydicom.data import get_testdata_file

    _, expected, _ = make_dicom_series(tmp_path, 3, SIZE)
    for name in ("DICOMDIR", "test-SR.dcm"):
        (tmp_path / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.hu, expected) and vol.notes == []


# ---------------------------------------------------------------------------------------------
# 6. Compressed pixel data: corrupt, not "no decoder"


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "RLELossless"])
def test_corrupt_compressed_pixels_are_not_blamed_on_the_installation(tmp_path, syntax):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    uid = getattr(pydicom.uid, syntax)
    if not get_decoder(uid).is_available:  # RLE always is: pydicom decodes it itself
        pytest.skip(f"no {uid.name} decoder installed here")
    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([b"\x00\x00\x00\x01 not a codestream " * 3])
        ds["PixelData"].VR = "OB"
        ds.save_as(path)
    with pytest.raises(
        VolumeError, match=rf"compressed as {re.escape(uid.name)} .* is corrupt or undecodable"
    ):
        read_volume(tmp_path)


# ---------------------------------------------------------------------------------------------
# 7. Folders of links


def test_a_folder_of_linked_series_folders_is_read_once(tmp_path):
    _, expected, _ = make_dicom_series(tmp_path / "store", 4, SIZE)
    scan = tmp_path / "scan"
    scan.mkdir()
    os.symlink(tmp_path / "store" / "series_ct", scan / "ct")
    os.symlink(scan, tmp_path / "store" / "series_ct" / "loop")  # a link back up: no endless walk
    vol = read_volume(scan)
    assert np.array_equal(vol.hu, expected)
    assert all("/ct/" in str(p) for p in vol.dicom_files)  # each file once, through the link


def test_a_folder_of_dangling_links_says_so(tmp_path):
    (tmp_path / "scan").mkdir()
    os.symlink(tmp_path / "gone" / "IM1", tmp_path / "scan" / "IM1")
    with pytest.raises(VolumeError, match=r"empty folder; it holds only 1 link\(s\) to nothing"):
        read_volume(tmp_path / "scan")


# ---------------------------------------------------------------------------------------------
# 8. Values that are not Hounsfield units


def test_an_8bit_volume_saved_as_nifti_is_refused(tmp_path):
    hu = display_scan(4, SIZE).hu
    gray = np.round(np.clip((hu + 1250) / 1500, 0, 1) * 255)  # the lung window as 0..255
    path = dicom_to_nifti(tmp_path / "gray.nii.gz", gray, dicom_affine(4))
    with pytest.raises(VolumeError, match=r"gray.nii.gz: values are not Hounsfield units") as err:
        read_volume(path)
    air, tissue = _measured(str(err.value))
    # Gray = (HU + 1250) / 1500 * 255: air (-1000 HU) is 42.5, its darkest voxels (-1250) 0;
    # fat (-100 HU) is 195.5 and muscle (+60 HU) 222.7.
    assert 0 <= air <= 60 and 190 <= tissue <= 225
    assert "(an 8-bit 0-255 image?)" in str(err.value)


def test_a_forgotten_intercept_is_refused(tmp_path):
    # Stored values are HU + 1024; without both rescale tags they would pass for HU.
    folder, _, _ = make_dicom_series(tmp_path, 4, SIZE)
    for path in folder.iterdir():
        _edit(path, RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(VolumeError, match=r"are not Hounsfield units") as err:
        read_volume(tmp_path)
    air, tissue = _measured(str(err.value))
    assert air > -500 and 900 <= tissue <= 1100  # air and tissue 1024 above their HU
    assert "a missing or wrong RescaleIntercept?" in str(err.value)


@pytest.mark.parametrize("n_slices, size", [(2, 32), (3, 64), (6, 128)])
@pytest.mark.parametrize("signed", [True, False])
def test_factory_scans_are_hounsfield_units(tmp_path, n_slices, size, signed):
    _, expected, _ = make_dicom_series(tmp_path, n_slices, size, signed=signed)
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.hu, expected) and vol.notes == []


def test_a_volume_of_one_value_is_not_judged(tmp_path):
    # No air and no tissue to place: read, and left to the lung finder (which finds no lung).
    path = tmp_path / "tissue.nii.gz"
    nib.save(nib.Nifti1Image(np.full((32, 32, 4), 40, np.int16), np.diag([1, 1, 3, 1])), path)
    assert read_volume(path).hu.max() == 40


# ---------------------------------------------------------------------------------------------
# 9. A series without a Modality tag


def test_untagged_series_is_read_as_ct_with_a_note(tmp_path):
    _, expected, _ = make_dicom_series(tmp_path, 3, SIZE, modality=None, series_uid="1.2.3.9")
    vol = read_volume(tmp_path)
    assert np.array_equal(vol.hu, expected)
    (note,) = vol.notes
    assert "series 1.2.3.9 has no Modality tag; read as CT because the folder holds no CT" in note


def test_untagged_series_beside_a_ct_series(tmp_path):
    _, ct_hu, _ = make_dicom_series(tmp_path, 3, SIZE, series_uid="1.2.3.1", subfolder="ct")
    make_dicom_series(tmp_path, 5, SIZE, modality=None, series_uid="1.2.3.9", subfolder="x", seed=1)
    vol = read_volume(tmp_path)  # the CT series, though the untagged one has more slices
    assert vol.series_uid == "1.2.3.1" and np.array_equal(vol.hu, ct_hu) and vol.notes == []
    with pytest.raises(VolumeError, match=r"1.2.3.9 has no Modality tag and the folder holds CT"):
        read_volume(tmp_path, series_uid="1.2.3.9")


def test_untagged_series_that_is_not_hu_is_refused(tmp_path):
    folder, _, _ = make_dicom_series(tmp_path, 3, SIZE, modality=None, series_uid="1.2.3.9")
    for path in folder.iterdir():
        _edit(path, RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(VolumeError, match=r"series 1.2.3.9 \(no Modality tag\) are not Hounsfield"):
        read_volume(tmp_path)


def test_mr_is_refused_and_an_untagged_series_is_preferred_to_it(tmp_path):
    make_dicom_series(tmp_path, 4, SIZE, modality="MR")
    with pytest.raises(VolumeError, match=r"Modality 'MR'; expected a CT series"):
        read_volume(tmp_path)
    _, expected, _ = make_dicom_series(tmp_path, 3, SIZE, modality=None, subfolder="x", seed=1)
    assert np.array_equal(read_volume(tmp_path).hu, expected)  # untagged before MR


# ---------------------------------------------------------------------------------------------
# The real scans of data/realct_nonlesion_dev (shapes and spacings from its PROVENANCE.md)


@pytest.mark.parametrize(
    "scan, shape, spacing",
    [
        ("lidc_lungmask_slice", (512, 512, 2), (1.0, 0.625, 0.625)),
        ("cip_copdgene_crop2/crop_ct_2slices.nii.gz", (443, 349, 2), (0.5, 0.5859, 0.5859)),
        ("cip_copdgene_abdomen2", (512, 512, 2), (0.625, 0.7031, 0.7031)),
        ("cip_testinput64/TestInput.nii.gz", (64, 64, 50), (6.99, 5.2812, 5.2812)),
    ],
)
def test_real_scans_are_read_without_refusal(scan, shape, spacing):
    vol = read_volume(REAL / scan)
    assert vol.shape == shape and vol.spacing == spacing
    if scan == "lidc_lungmask_slice":  # no Modality tag (PROVENANCE.md): read as CT, said so
        (note,) = vol.notes
        assert "has no Modality tag; read as CT because the folder holds no CT series" in note
    else:
        assert vol.notes == []

# Kept whole (~510 lines) for now: the one reader of whole scans (DICOM, NIfTI, slice folders)
# into one display orientation. Its DICOM half would split off only with the Volume type in a
# module of its own (both halves build a Volume; an import back would be a loop).
"""Whole CT scans with their geometry: a DICOM tree, a NIfTI file or a folder of slices -> `Volume`.

Every source reaches the model in ONE display orientation, the one the training slices have, and
labels go back to the input's own voxel order with the input's affine, so they overlay the scan in
any viewer. nibabel does the geometry (io_orientation, ornt_transform, apply_orientation) and
pydicom the DICOM decoding (is_dicom, apply_modality_lut); this module only wires them together.

Display orientation (checked against the bundled slices, see tests/data/test_volumes.py): the
training PNGs are NOT the radiological display of an axial DICOM slice; they are its transpose, the
nibabel array order of an LPS volume (their PROVENANCE.md says "transposed relative to radiological
display"). In the labelled set, 46 of 50 slices hold more lung in the upper half (the right lung is
the larger one) and 46 of 50 have their saturated bone (the spine) in the right half of the
mediastinal rows. So a display slice (Y, X) has

    rows (axis 1): patient right -> left      (nibabel code "L": the index grows towards the left)
    cols (axis 2): anterior -> posterior      (nibabel code "P")

and axis 0 runs inferior -> superior ("S"). A standard axial DICOM slice's pixel_array (rows A->P,
cols R->L) is the transpose of a display slice. `DISPLAY_AXCODES` is the one place this is stated.

No wrong number passes quietly: a header the reader cannot trust is refused with a `VolumeError`
naming the file and the value (data.dicom_checks for DICOM headers; data.scan_checks for
non-finite voxels, NIfTI voxel sizes, and values that are not Hounsfield units), and what the
reader assumed instead of refusing is said in `Volume.notes`, which `segment` repeats.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_

from stitchnet.data.dicom_checks import (
    check_same_geometry,
    pixel_error,
    rescale_defaults,
    skipped_text,
)
from stitchnet.data.dicom_series import NO_MODALITY, Series, choose_series, scan_series
from stitchnet.data.hu_scale import gray_to_hu
from stitchnet.data.images import DEFAULT_WINDOW, IMAGE_SUFFIXES, read_image_file
from stitchnet.data.scan_checks import (
    VolumeError,
    check_finite,
    check_hounsfield,
    check_nifti_voxel_sizes,
)
from stitchnet.data.slice_scale import slice_windows

DISPLAY_AXCODES = ("S", "L", "P")  # display axes (Z, Y, X): inferior->superior, R->L, A->P
# The same axes in nibabel's (i, j, k) order: display = transpose(xyz, (2, 0, 1)).
_DISPLAY_AS_XYZ = DISPLAY_AXCODES[1:] + DISPLAY_AXCODES[:1]
OUTSIDE_HU = -1500.0  # below this is no tissue and no air: FOV padding (-2048, -3024, -2000)
MIN_SLICES = 2  # one slice is a 2-D image: no slice spacing, no volume in mL
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient axes (L, P, S) -> nibabel's (R, A, S)


@dataclass
class Volume:
    """A CT scan in display orientation, and what it takes to write labels back in its geometry."""

    hu: np.ndarray  # (Z, Y, X) float32 HU in display orientation (DISPLAY_AXCODES)
    body: np.ndarray  # (Z, Y, X) bool: inside the reconstruction field of view, not padding
    spacing: tuple[float, float, float]  # mm along (Z, Y, X) of the display array
    source: str  # the path read
    kind: str  # "dicom" | "nifti" | "slices"
    series_uid: str | None  # SeriesInstanceUID for DICOM, else None
    affine: np.ndarray  # (4, 4) RAS affine of the INPUT's own voxel order (nibabel convention)
    shape: tuple[int, ...]  # the input's own voxel array shape (i, j, k)
    ornt: np.ndarray  # (3, 2) nibabel orientation transform: input (i, j, k) -> display (L, P, S)
    spacing_known: bool = True  # False for slice folders: spacing is a 1 mm placeholder
    notes: list[str] = field(default_factory=list)  # caveats a report should repeat
    # DICOM only: the series' files in the input's slice order (index k), for a DICOM SEG.
    dicom_files: list[Path] = field(default_factory=list)

    def to_input_order(self, arr: np.ndarray) -> np.ndarray:
        """(Z, Y, X) display array -> the input's (i, j, k) voxel order (any dtype)."""
        if arr.shape[:3] != self.hu.shape:
            raise VolumeError(
                f"{self.source}: array of shape {arr.shape} given; expected the display shape "
                f"{self.hu.shape} (Z, Y, X)"
            )
        xyz = np.transpose(arr, (1, 2, 0))  # (Z, Y, X) -> (Y, X, Z), nibabel's (L, P, S) order
        inverse = ornt_.ornt_transform(
            ornt_.axcodes2ornt(_DISPLAY_AS_XYZ), ornt_.io_orientation(self.affine)
        )
        back = ornt_.apply_orientation(xyz, inverse)
        return np.ascontiguousarray(back)

    def from_input_order(self, arr: np.ndarray) -> np.ndarray:
        """An array in the input's own (i, j, k) voxel order -> display (Z, Y, X) (any dtype): a
        label volume given beside the scan, turned as the scan was."""
        xyz = ornt_.apply_orientation(arr, self.ornt)  # (i, j, k) -> (L, P, S) order
        return np.ascontiguousarray(np.transpose(xyz, (2, 0, 1)))

    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0  # mm^3 -> mL

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """nibabel axis codes of the input's voxel order, e.g. ('L', 'P', 'S') for axial DICOM."""
        return tuple(nib.aff2axcodes(self.affine))


def _to_display(data: np.ndarray, affine: np.ndarray, source: str) -> tuple[np.ndarray, Any, tuple]:
    """Input (i, j, k) array + RAS affine -> (display (Z, Y, X) array, transform, spacing)."""
    in_ornt = ornt_.io_orientation(affine)
    if np.isnan(in_ornt).any():
        raise VolumeError(
            f"{source}: affine {affine.tolist()} has a degenerate axis; expected three "
            f"independent voxel directions"
        )
    transform = ornt_.ornt_transform(in_ornt, ornt_.axcodes2ornt(_DISPLAY_AS_XYZ))
    xyz = ornt_.apply_orientation(data, transform)  # (i, j, k) -> (L, P, S) order
    sizes = nib.affines.voxel_sizes(affine)  # mm along (i, j, k)
    lps_sizes = [float(sizes[int(np.flatnonzero(transform[:, 0] == a)[0])]) for a in range(3)]
    # Along display (Z, Y, X); rounded to 0.1 um so a NIfTI's float32 header and the DICOM
    # tags' decimal strings give the same spacing.
    spacing = tuple(round(s, 4) for s in (lps_sizes[2], lps_sizes[0], lps_sizes[1]))
    return np.ascontiguousarray(np.transpose(xyz, (2, 0, 1))), transform, spacing


def _volume_from_input(
    data: np.ndarray, outside: np.ndarray, affine: np.ndarray, source: str, kind: str, **kw: Any
) -> Volume:
    """Build a `Volume` from an input-order HU array, its padding mask and its RAS affine."""
    if data.ndim != 3 or min(data.shape) < 1 or data.shape[2] < MIN_SLICES:
        raise VolumeError(
            f"{source}: voxel array of shape {data.shape} is a 2-D image; expected a 3-D volume "
            f"with at least {MIN_SLICES} slices"
        )
    check_finite(data, source)
    hu, transform, spacing = _to_display(data.astype(np.float32, copy=False), affine, source)
    outside_display, _, _ = _to_display(outside, affine, source)
    body = ~outside_display & (hu >= OUTSIDE_HU) & np.isfinite(hu)
    return Volume(
        hu=hu,
        body=body,
        spacing=spacing,
        source=source,
        kind=kind,
        affine=np.asarray(affine, dtype=np.float64),
        shape=tuple(int(s) for s in data.shape),
        ornt=transform,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Entry points


def read_volume(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read a DICOM folder (searched recursively), a .nii/.nii.gz file or a folder of 2-D slices.

    Args:
        path: the scan. A folder is DICOM when any file in it (at any depth, any name) is DICOM by
            content; else it is a folder of slices (PNG/JPG/NPY in it or in its images/).
        series_uid: the DICOM series to read when the tree holds several; None picks the CT series
            (Modality CT, axial, most slices). A series without a Modality tag is read as CT
            only when the tree holds no CT series and its values pass the HU check, with a note.

    A folder with neither DICOM nor slices is read as the one NIfTI file it holds (several are
    refused). Folders are searched through symbolic links (each real folder once). DICOM and
    NIfTI values must be Hounsfield units (scan_checks.check_hounsfield); slice folders are
    8-bit, unchecked.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: not found; expected a DICOM folder, a NIfTI file or slices")
    if path.is_file():
        name = path.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            return _read_nifti(path)
        if _is_dicom_or_false(path):
            raise VolumeError(
                f"{path}: one DICOM file is a 2-D image; expected the folder holding the whole "
                f"series"
            )
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise VolumeError(
                f"{path}: a 2-D image; expected a 3-D volume (a DICOM folder, a NIfTI file, or a "
                f"folder of slices)"
            )
        raise VolumeError(
            f"{path}: a file of unknown kind; expected .nii/.nii.gz, or a DICOM or slice folder"
        )
    files, links = _walk_files(path)
    if not files:
        held = ""
        if links:  # a link whose target is gone, or not yet mounted
            held = f"; it holds only {len(links)} link(s) to nothing that exists (e.g. {links[0]})"
        raise VolumeError(f"{path}: empty folder{held}; expected DICOM files, or 2-D slices")
    dicoms, unreadable = [], []
    for p in files:
        try:
            if _is_dicom(p):
                dicoms.append(p)
        except OSError as e:
            unreadable.append((p, f"cannot be opened: {e.strerror or e}"))
    if dicoms:
        return _read_dicom(path, dicoms, series_uid, unreadable)
    slices = _slice_files(path)
    if slices:
        return _read_slices(path, slices)
    # A folder per patient holding its one NIfTI is a common export; several are ambiguous.
    niftis = [p for p in files if p.name.lower().endswith((".nii", ".nii.gz"))]
    if len(niftis) == 1:
        vol = _read_nifti(niftis[0])
        vol.notes.append(f"{path}: read its one NIfTI file, {niftis[0].relative_to(path)}")
        return vol
    if niftis:
        names = ", ".join(str(p.relative_to(path)) for p in niftis[:3])
        raise VolumeError(
            f"{path}: {len(niftis)} NIfTI files ({names}{', ...' if len(niftis) > 3 else ''}); "
            f"expected one scan: give the file itself"
        )
    also = f"; {skipped_text(unreadable)}" if unreadable else ""
    raise VolumeError(
        f"{path}: no DICOM files and no slices among {len(files)} files (e.g. "
        f"{files[0].relative_to(path)}){also}; expected DICOM files (any name) or PNG/JPG slices"
    )


def _walk_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The files under `root`, through links to folders (each real folder and file once), and
    the links that lead nowhere. Path.rglob does not enter linked folders, so a tree made of
    links to series elsewhere would look empty."""
    files, dangling, seen_dirs, seen_files = [], [], set(), set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:  # a link back to a folder already walked: a loop or a duplicate
            dirs.clear()
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            if not p.exists():
                dangling.append(p)
            elif p.is_file() and os.path.realpath(p) not in seen_files:
                seen_files.add(os.path.realpath(p))
                files.append(p)
    return sorted(files), dangling


def write_label_volume(
    vol: Volume, labels_display: np.ndarray, path: str | Path, dtype: Any = np.uint8
) -> Path:
    """Write (Z, Y, X) display labels as NIfTI in the input's voxel order, shape and affine."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise VolumeError(f"{path}: output name has no .nii/.nii.gz suffix; expected one")
    data = vol.to_input_order(np.asarray(labels_display)).astype(dtype)
    if data.shape != vol.shape:
        raise VolumeError(
            f"{path}: labels came back as {data.shape}; expected the input shape {vol.shape}"
        )
    img = nib.Nifti1Image(data, vol.affine)
    img.set_qform(vol.affine, code=1)  # 1 = scanner coordinates, as the input's affine is
    img.set_sform(vol.affine, code=1)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def list_series(path: str | Path) -> list[dict]:
    """The DICOM series under `path`: uid, modality, n_slices, description, axial, folder."""
    path = Path(path)
    files = [p for p in _walk_files(path)[0] if _is_dicom_or_false(p)]
    return [s.summary() for s in scan_series(files)[0]]


def _is_dicom(path: Path) -> bool:
    """Whether the file is DICOM by content; OSError when it cannot be opened."""
    from pydicom.misc import is_dicom

    return bool(is_dicom(path))


def _is_dicom_or_false(path: Path) -> bool:
    try:
        return _is_dicom(path)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# NIfTI


def _read_nifti(path: Path) -> Volume:
    """A NIfTI file in HU, checked (scan_checks): a voxel size of 0, < 0 or not finite where the
    affine uses pixdim is refused; NaN and inf voxels are refused with their count, not filled
    (no one fill value is right inside and outside the lung); and the values must be HU."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))  # scl_slope/scl_inter applied: HU
    except Exception as e:  # nibabel raises several unrelated types for a bad file
        raise VolumeError(f"{path}: cannot read as NIfTI ({e}); expected a .nii/.nii.gz") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # (X, Y, Z, 1) -> (X, Y, Z)
    if data.ndim == 2:
        data = data[..., None]  # (X, Y) -> (X, Y, 1), refused below as a 2-D image
    if data.ndim != 3:
        raise VolumeError(
            f"{path}: voxel array of shape {data.shape}; expected a 3-D volume (X, Y, Z)"
        )
    check_nifti_voxel_sizes(img, path)
    # NIfTI has no padding tag; the HU threshold alone marks the field-of-view padding.
    outside = np.zeros(data.shape, dtype=bool)
    vol = _volume_from_input(data, outside, img.affine, str(path), "nifti", series_uid=None)
    check_hounsfield(vol.hu, vol.body, str(path))
    return vol


# ---------------------------------------------------------------------------------------------
# A folder of 2-D slices


def _slice_files(root: Path) -> list[Path]:
    folder = root / "images" if (root / "images").is_dir() else root
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    # Natural order, so slice_2 comes before slice_10.
    return sorted(
        files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]
    )


def _read_slices(root: Path, files: list[Path]) -> Volume:
    """Windowed 2-D slices, taken as already in display orientation, stacked in name order.

    HU: each slice's gray goes back through the HU window recorded for it in index.csv (see
    data.hu_scale), else through the default window, hu = -1250 + 1500 * gray, which
    `hu_window` maps back to the same gray exactly.
    Spacing is unknown: 1 mm on every axis, `spacing_known=False`, and a warning.
    """
    images = [read_image_file(p) for p in files]  # each (H, W) float32 in [0, 1]
    shape = images[0].shape
    for p, im in zip(files, images, strict=True):
        if im.shape != shape:
            raise VolumeError(
                f"{p}: slice is {im.shape[0]}x{im.shape[1]} but {files[0].name} is "
                f"{shape[0]}x{shape[1]}; expected one size for every slice of a volume"
            )
    # Each slice back to HU through the window it was saved with, as the slice readers do:
    # recorded in ROOT/index.csv (hu_lo, hu_hi), else the model's default window.
    windows = slice_windows(root, files) if (root / "index.csv").is_file() else {}
    known = sum(windows.get(p.name) is not None for p in files)
    hus = [
        gray_to_hu(im, windows.get(p.name) or DEFAULT_WINDOW)
        for p, im in zip(files, images, strict=True)
    ]
    hu = np.stack(hus, axis=-1)  # (H, W, Z): rows R->L, cols A->P, slices in name order
    how = (
        "HU from the windows recorded in index.csv"
        if known == len(files)
        else f"HU mapped back through the window {DEFAULT_WINDOW} (no window recorded)"
    )
    note = (
        f"{root}: slices carry no geometry; spacing set to 1 mm and {how}, so volumes in mL are "
        f"in units of voxels/1000"
    )
    warnings.warn(note, stacklevel=3)
    affine = LPS_TO_RAS.copy()  # 1 mm voxels, (i, j, k) = (L, P, S): the display itself
    outside = np.zeros(hu.shape, dtype=bool)
    return _volume_from_input(
        hu, outside, affine, str(root), "slices", series_uid=None, spacing_known=False, notes=[note]
    )


# ---------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(
    root: Path, files: list[Path], series_uid: str | None, unreadable: list[tuple[Path, str]]
) -> Volume:
    from pydicom.pixels import apply_modality_lut

    found, skipped = scan_series(files)
    skipped = unreadable + skipped
    series = choose_series(root, found, series_uid, skipped)
    # Files left out: named in the error where the series has a gap, else in a note.
    notes = [f"{root}: {skipped_text(skipped)}"] if skipped else []
    items, affine = _order_and_affine(series, skipped)
    rescale_note = rescale_defaults(items, series.uid)
    slices, outside = [], []
    for p, ds in items:
        stored = _pixels(p, ds)  # (rows, cols) stored values
        if slices and stored.shape != slices[0].T.shape:
            raise VolumeError(
                f"{p}: slice is {stored.shape} but {items[0][0].name} is "
                f"{slices[0].T.shape}; expected one size across the series"
            )
        defaults = rescale_note and "ModalityLUTSequence" not in ds
        hu = stored if defaults else apply_modality_lut(stored, ds)  # HU
        slices.append(np.asarray(hu, dtype=np.float32).T)
        outside.append(_padding(stored, ds).T)
    # DICOM's own voxel order, as dcm2niix and nibabel's nicom use it: (cols, rows, slices).
    data = np.stack(slices, axis=-1)  # (C, R, N) HU
    pad = np.stack(outside, axis=-1)  # (C, R, N) bool
    vol = _volume_from_input(
        data,
        pad,
        affine,
        str(root),
        "dicom",
        series_uid=series.uid,
        dicom_files=[p for p, _ in items],
    )
    untagged = series.modality == NO_MODALITY
    what = f"series {series.uid} (no Modality tag)" if untagged else f"series {series.uid}"
    stats = check_hounsfield(vol.hu, vol.body, str(root), f"the values of {what}")
    if untagged and stats is None:
        raise VolumeError(
            f"{root}: series {series.uid} has no Modality tag and one value throughout, so its "
            f"values cannot be shown to be HU; expected a CT series"
        )
    if rescale_note:
        found = f"; the HU check found {stats.describe()}" if stats else ""
        notes.append(f"{root}: {rescale_note}{found}")
    if untagged:
        notes.append(
            f"{root}: series {series.uid} has no Modality tag; read as CT because the folder "
            f"holds no CT series and its values are HU ({stats.describe()})"
        )
    vol.notes.extend(notes)
    return vol


def _pixels(path: Path, ds: Any) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError/ValueError here
        raise pixel_error(path, ds, e) from e
    if arr.ndim != 2:
        raise VolumeError(
            f"{path}: pixel data has shape {arr.shape}; expected one 2-D slice per file "
            f"(multi-frame and colour images are not CT series)"
        )
    return arr


def _padding(stored: np.ndarray, ds: Any) -> np.ndarray:
    """(rows, cols) bool: stored values marked as padding by PixelPaddingValue (and RangeLimit)."""
    value = getattr(ds, "PixelPaddingValue", None)
    if value is None:
        return np.zeros(stored.shape, dtype=bool)
    limit = getattr(ds, "PixelPaddingRangeLimit", None)
    lo, hi = (value, value) if limit is None else (min(value, limit), max(value, limit))
    return (stored >= lo) & (stored <= hi)


def _order_and_affine(
    series: Series, missing: list[tuple[Path, str]]
) -> tuple[list[tuple[Path, Any]], np.ndarray]:
    """Slices sorted along the normal, checked for gaps and duplicates, and the RAS affine.
    `missing`: files skipped that may belong to the series, named if the slices leave a gap."""
    items = series.items
    for p, ds in items:
        if getattr(ds, "ImagePositionPatient", None) is None:
            raise VolumeError(
                f"{p}: no ImagePositionPatient; expected it on every slice to place the slice "
                f"in the volume"
            )
    check_same_geometry(items)  # orientation, pixel spacing, rows and columns
    iop = np.asarray([float(v) for v in items[0][1].ImageOrientationPatient])
    row, col = iop.reshape(2, 3)  # LPS direction of increasing column index, of row index
    normal = np.cross(row, col)
    pos = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    depth = pos @ normal  # (N,) mm along the normal
    order = np.argsort(depth, kind="stable")
    items, pos, depth = [items[i] for i in order], pos[order], depth[order]
    if len(items) < MIN_SLICES:
        also = f" ({skipped_text(missing)})" if missing else ""
        raise VolumeError(
            f"{items[0][0]}: series {series.uid} has {len(items)} slice{also}; a 2-D image, "
            f"expected a volume of at least {MIN_SLICES} slices"
        )
    steps = np.diff(depth)  # (N-1,)
    step = float(np.median(steps))
    for k, s in enumerate(steps):
        a, b = items[k][0], items[k + 1][0]
        if s < 1e-3 or s < 0.5 * step:
            raise VolumeError(
                f"{b}: duplicate slice position {depth[k + 1]:.3f} mm along the normal, "
                f"{s:.3f} mm from {a}; expected one slice every {step:.3f} mm"
            )
        if abs(s - step) > 0.1 * step:
            why = skipped_text(missing) if missing else "missing files?"
            raise VolumeError(
                f"{a} -> {b}: gap of {s:.3f} mm between slice positions {depth[k]:.3f} and "
                f"{depth[k + 1]:.3f} mm; expected one slice every {step:.3f} mm ({why})"
            )
    dr, dc = (float(v) for v in items[0][1].PixelSpacing)  # row spacing, column spacing (mm)
    lps = np.eye(4)
    lps[:3, 0] = row * dc  # voxel index i runs along the columns of a row
    lps[:3, 1] = col * dr  # j runs down the rows
    lps[:3, 2] = (pos[-1] - pos[0]) / (len(items) - 1)  # k: the mean slice step
    lps[:3, 3] = pos[0]
    return items, LPS_TO_RAS @ lps

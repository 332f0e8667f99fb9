"""Readers for the on-disk layouts a CT segmentation dataset comes in, all returning `SliceRecord`s.

Every reader hands back the same thing: a list of 2-D slices with intensities in [0, 1], class-id
masks in our four classes (0 background, 1 healthy lung, 2 GGO, 3 consolidation) where the source
is labelled, and a patient id where the source has one. `read_source` picks the reader from what it
finds at the path: a slice folder (data.slice_folder), a NIfTI volume or a DICOM series (read
here through data.volume_slices, the reader `stitchnet segment` uses), or CC-CCII (data.ccccii).

Bad input is answered with a `DataError` (data.errors) that names the file, what was found and
what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stitchnet.data.ccccii import CCCCII_CLASSES, read_ccccii
from stitchnet.data.errors import DataError
from stitchnet.data.images import DEFAULT_WINDOW
from stitchnet.data.label_maps import IDENTITY, LabelMap
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.types import SliceRecord

# ---------------------------------------------------------------------------------------------
# NIfTI volumes


def read_nifti(
    image_path: str | Path,
    label_path: str | Path | None = None,
    label_map: str | LabelMap = IDENTITY,
    window: tuple[float, float] = DEFAULT_WINDOW,
    lung_path: str | Path | None = None,
    patient_id: str | None = None,
) -> list[SliceRecord]:
    """Split a NIfTI CT volume (values in HU) into windowed axial slices.

    The volume is read by the one NIfTI reader `stitchnet segment` uses (data.volumes), so every
    command sees the same slices in the same display orientation; see data.volume_slices.

    Args:
        image_path: .nii or .nii.gz; nibabel applies the header's scl_slope/scl_inter, giving HU.
        label_path: optional label volume of the same shape, mapped through `label_map`.
        lung_path: optional lung-field volume (>0 is lung), needed by maps with `lung_fill`.
        patient_id: given to every slice. Left None because one file is not always one patient
            (MedSeg's `tr_im.nii.gz` stacks 100 slices of more than 40 patients).
    """
    from stitchnet.data.volume_slices import volume_records

    return volume_records(image_path, window, label_path, label_map, lung_path, patient_id)


# ---------------------------------------------------------------------------------------------
# DICOM series


def read_dicom_series(
    folder: str | Path,
    window: tuple[float, float] = DEFAULT_WINDOW,
    patient_id: str | None = None,
    series_uid: str | None = None,
) -> list[SliceRecord]:
    """Read one DICOM CT series as windowed axial slices, with `stitchnet segment`'s reader.

    The folder is searched recursively and files are DICOM by content (any name); the CT series
    is chosen as `segment` chooses it (or `series_uid`), ordered along the slice normal and
    checked for gaps and inconsistent headers (data.volumes). `patient_id` defaults to the
    PatientID tag.
    """
    from stitchnet.data.volume_slices import volume_records

    return volume_records(folder, window, patient_id=patient_id, series_uid=series_uid)


# ---------------------------------------------------------------------------------------------
# Autodetection


def detect_layout(path: str | Path) -> str:
    """One of "folder", "nifti", "dicom", "ccccii" for what lies at `path`."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path}: not found; expected a dataset folder, a NIfTI file or a DICOM folder"
        )
    if path.is_file():
        if path.name.lower().endswith((".nii", ".nii.gz")):
            return "nifti"
        raise DataError(
            f"{path}: a file of unknown kind; expected a .nii/.nii.gz volume or a dataset folder"
        )
    if (path / "images").is_dir():
        return "folder"
    if (path / "ct_lesion_seg").is_dir() or any((path / c).is_dir() for c in CCCCII_CLASSES):
        return "ccccii"
    if _holds_dicom(path):
        return "dicom"
    raise DataError(
        f"{path}: no known layout; expected images/ (folder), DICOM files (any names), "
        f"class folders {CCCCII_CLASSES} or ct_lesion_seg/ (CC-CCII), or a .nii/.nii.gz file"
    )


def _holds_dicom(folder: Path) -> bool:
    """Whether any file under `folder` is DICOM by content (the name says nothing)."""
    from pydicom.misc import is_dicom

    for p in sorted(folder.rglob("*")):
        try:
            if p.is_file() and is_dicom(p):
                return True
        except OSError:
            continue
    return False


_READERS = {
    "folder": read_folder,
    "nifti": read_nifti,
    "dicom": read_dicom_series,
    "ccccii": read_ccccii,
}


def read_source(path: str | Path, layout: str | None = None, **kwargs: Any) -> list[SliceRecord]:
    """Read any layout (`layout` forces one, else it is detected); kwargs go to the reader."""
    layout = detect_layout(path) if layout is None else layout
    if layout not in _READERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(_READERS)}")
    return _READERS[layout](path, **kwargs)


# ---------------------------------------------------------------------------------------------
# The data bundled with the repository

BUNDLED = {
    "labelled": "medseg_covid19_train50",
    "unlabelled": "covid19_ct_seg_20cases_unlabelled",
}


def load_bundled(which: str = "labelled") -> Path:
    """The path of a bundled folder: `data/` beside the package in the repository checkout."""
    if which not in BUNDLED:
        raise ValueError(f"unknown bundled set {which!r}; expected one of {sorted(BUNDLED)}")
    path = Path(__file__).resolve().parents[2] / "data" / BUNDLED[which]
    if not (path / "images").is_dir():
        raise DataError(
            f"{path}: bundled {which} data not found; expected the repository's data/ folder "
            f"beside the stitchnet package (install from a git checkout with `pip install -e .`)"
        )
    return path

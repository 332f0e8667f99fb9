"""Small volume datasets for the train-on-scans tests, built from the bundled real slices.

Each case stacks real MedSeg slices (tests/volume_factory.py places them in HU on a square canvas
inside a circular field of view) and writes them as NIfTI with a real scanner affine, in a voxel
order other than the display one, so the reader must turn them. The label volume is the bundled
masks placed the same way. `abdomen_slice` is a slice below the lungs: soft tissue and fat, no air.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import volume_factory as vf

SPACING = (3.0, 0.75, 0.75)  # mm along display (Z, Y, X)
VOXEL_ML = SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
PAD = -2048.0


@dataclass
class WrittenCase:
    image: Path
    label: Path | None
    hu: np.ndarray  # (Z, Y, X) display HU
    masks: np.ndarray  # (Z, Y, X) display class ids 0..3 (ours)
    lung: np.ndarray  # (Z, Y, X) display 0/1 lung masks of the bundled set
    lung_z: list[int]  # display slices that hold lung


def slice_names() -> list[str]:
    return sorted(p.stem for p in (vf.LABELLED / "images").glob("*.png"))


def abdomen_slice(size: int) -> np.ndarray:
    """(size, size) HU: a body of soft tissue (40 HU) with a fat rim (-100 HU), no air in it."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    r2 = (yy - c) ** 2 + (xx - c) ** 2
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[r2 <= (0.33 * size) ** 2] = -100.0
    hu[r2 <= (0.28 * size) ** 2] = 40.0
    hu[r2 > (size / 2 - 1) ** 2] = PAD
    return hu


def write_case(
    image: Path,
    label: Path | None,
    names: list[str],
    size: int = 96,
    abdomen: int = 0,
    axcodes: str = "LAS",
    label_values: dict[int, int] | None = None,
    lung_path: Path | None = None,
) -> WrittenCase:
    """A NIfTI scan of `abdomen` abdomen slices (inferior) then the named bundled slices, its
    label volume (`label_values` turns our class ids into the file's values, e.g. MedSeg's) and,
    at `lung_path`, the bundled lung masks."""
    parts = [vf._placed_slice(n, size, PAD) for n in names]
    hu, masks, lung, _ = (np.stack(a) for a in zip(*parts, strict=True))
    if abdomen:
        below = np.stack([abdomen_slice(size)] * abdomen)
        hu = np.concatenate([below, hu])
        masks = np.concatenate([np.zeros(below.shape, np.uint8), masks])
        lung = np.concatenate([np.zeros(below.shape, np.uint8), lung])
    affine = vf.dicom_affine(len(hu), (SPACING[0], SPACING[2], SPACING[1]), (10.0, -20.0, 30.0))
    image.parent.mkdir(parents=True, exist_ok=True)
    vf.dicom_to_nifti(image, hu, affine, axcodes)
    if label is not None:
        label.parent.mkdir(parents=True, exist_ok=True)
        values = masks.copy()
        for ours, theirs in (label_values or {}).items():
            values[masks == ours] = theirs
        vf.dicom_to_nifti(label, values, affine, axcodes)
    if lung_path is not None:
        lung_path.parent.mkdir(parents=True, exist_ok=True)
        vf.dicom_to_nifti(lung_path, lung, affine, axcodes)
    return WrittenCase(image, label, hu, masks, lung, list(range(abdomen, len(hu))))


def nnunet_dataset(
    root: Path,
    n_cases: int = 4,
    per_case: int = 4,
    labels: dict | None = None,
    lungs: bool = False,
    **kw,
) -> dict[str, WrittenCase]:
    """root/imagesTr/caseK_0000.nii.gz + root/labelsTr/caseK.nii.gz, each case its own slices;
    dataset.json written when `labels` is given, root/lungsTr/caseK.nii.gz when `lungs`."""
    names = slice_names()
    out = {}
    for k in range(n_cases):
        case = f"case{k}"
        out[case] = write_case(
            root / "imagesTr" / f"{case}_0000.nii.gz",
            root / "labelsTr" / f"{case}.nii.gz",
            names[k * per_case : (k + 1) * per_case],
            lung_path=root / "lungsTr" / f"{case}.nii.gz" if lungs else None,
            **kw,
        )
    if labels is not None:
        (root / "dataset.json").write_text(json.dumps({"labels": labels, "name": "test"}))
    return out


def unlabelled_scans(root: Path, size: int = 96) -> dict[str, Path]:
    """Two DICOM trees (suffix-less files named at random, written in shuffled order) and two
    NIfTI scans in a subfolder, one (scanD) with two abdomen slices below its lungs."""
    names = slice_names()
    vf.make_dicom_series(root / "patientA", 4, size, subfolder="study/ct", seed=1)
    vf.make_dicom_series(root / "patientB", 5, size, subfolder="ct", seed=2)
    write_case(root / "nifti" / "scanC.nii.gz", None, names[30:34], size)
    # scanD: one slice four times over, so its lungs join in 3-D as a real scan's do (slices of
    # different patients stacked do not), above two abdomen slices.
    write_case(root / "nifti" / "scanD.nii.gz", None, [names[34]] * 4, size, abdomen=2)
    return {
        "patientA": root / "patientA",
        "patientB": root / "patientB",
        "nifti/scanC": root / "nifti" / "scanC.nii.gz",
        "nifti/scanD": root / "nifti" / "scanD.nii.gz",
    }

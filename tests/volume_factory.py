"""Realistic little CT scans built from the bundled labelled slices, for volume and segment tests.

Each scan stacks real MedSeg slices (z000, z001, ... of data/medseg_covid19_train50) as axial
slices, inferior to superior. A slice's windowed gray goes back to HU through the window recorded
for it in the set's index.csv (stitchnet.data.hu_scale), is placed in air (-1000 HU) at the
centre of a square canvas, and everything outside the scanner's circular field of view becomes
padding (-3024 or -2048 HU), as real reconstructions have it. The canvas is in the training
display orientation (stitchnet.data.volumes: rows patient right->left, cols anterior->posterior),
so a standard axial DICOM pixel_array is its transpose. Writers:

    display_scan(n_slices, size, pad)  -> DisplayScan (hu, masks, lung, body), all (Z, Y, X)
    make_dicom_series(root, n_slices)  -> (folder, expected display HU, masks)
    make_nifti(path, n_slices, axcodes) -> (path, expected display HU, masks)
    dicom_to_nifti(folder, path)       -> the series' NIfTI conversion (real affine, LAS voxels)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "data" / "medseg_covid19_train50"
WINDOW = (-1250.0, 250.0)  # the bundled data's lung window (PROVENANCE: Radiopaedia/JunMa11)
AIR_HU = -1000.0
INTERCEPT = -1024.0  # RescaleIntercept of the written DICOM (slope 1)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class DisplayScan:
    hu: np.ndarray  # (Z, Y, X) float32, whole HU (as stored integers give back)
    masks: np.ndarray  # (Z, Y, X) uint8 class ids 0..3
    lung: np.ndarray  # (Z, Y, X) uint8 0/1
    body: np.ndarray  # (Z, Y, X) bool, inside the field-of-view circle


def bundled_slice_names(n: int) -> list[str]:
    names = sorted(p.stem for p in (LABELLED / "images").glob("*.png"))
    if n > len(names):
        raise ValueError(f"{n} slices asked; the bundled labelled set has {len(names)}")
    return names[:n]


@lru_cache(maxsize=1)
def _recorded_windows() -> dict[str, tuple[float, float]]:
    from stitchnet.data.hu_scale import recorded_windows

    return recorded_windows(LABELLED)


@lru_cache(maxsize=64)
def _placed_slice(name: str, size: int, pad: float) -> tuple[np.ndarray, ...]:
    """One bundled slice in HU on a (size, size) canvas inside a circular FOV."""
    inner = int(size * 0.7)  # the inner square's corners stay inside the FOV circle
    im = Image.open(LABELLED / "images" / f"{name}.png")
    scale = inner / max(im.size)
    wh = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    gray = np.asarray(im.resize(wh, Image.BILINEAR), dtype=np.float32) / 255.0  # (h, w)
    mask = np.asarray(Image.open(LABELLED / "masks" / f"{name}.png").resize(wh, Image.NEAREST))
    lung = np.asarray(Image.open(LABELLED / "lung" / f"{name}.png").resize(wh, Image.NEAREST))
    y0, x0 = (size - wh[1]) // 2, (size - wh[0]) // 2
    hu = np.full((size, size), AIR_HU, dtype=np.float32)
    lo, hi = _recorded_windows().get(f"{name}.png", WINDOW)  # the slice's own HU window
    hu[y0 : y0 + wh[1], x0 : x0 + wh[0]] = lo + (hi - lo) * gray
    m = np.zeros((size, size), np.uint8)
    m[y0 : y0 + wh[1], x0 : x0 + wh[0]] = mask
    lu = np.zeros((size, size), np.uint8)
    lu[y0 : y0 + wh[1], x0 : x0 + wh[0]] = lung > 0
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    body = (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2 - 1) ** 2
    hu[~body] = pad
    return np.round(hu), m, lu, body


def display_scan(n_slices: int = 6, size: int = 128, pad: float = -3024.0) -> DisplayScan:
    """The expected display arrays of a scan of the first `n_slices` bundled slices."""
    parts = [_placed_slice(n, size, float(pad)) for n in bundled_slice_names(n_slices)]
    hu, masks, lung, body = (np.stack(a) for a in zip(*parts, strict=True))
    return DisplayScan(hu.astype(np.float32), masks, lung, body)


def make_dicom_series(
    root: Path,
    n_slices: int = 6,
    size: int = 128,
    pad: float = -3024.0,
    subfolder: str = "series_ct",
    modality: str | None = "CT",
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),  # mm: slice step, row, column
    origin: tuple[float, float, float] = (-50.0, -60.0, -200.0),  # LPS mm of the first voxel
    signed: bool = True,
    series_uid: str | None = None,
    seed: int = 0,
    description: str = "CHEST 2.5mm",
    intercept: float | None = INTERCEPT,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write one axial DICOM series in `root/subfolder`, files suffix-less and named at random.

    signed=True stores int16 with padding at pad - intercept (GE style); signed=False stores
    uint16 with padding 0 (-1024 HU, air-like: only PixelPaddingValue 0 marks it) and everything
    inside the field of view at >= 1. intercept=None writes no RescaleSlope/RescaleIntercept and
    stores HU as they are (int16); modality=None writes no Modality tag.
    Returns the folder, the expected display HU (Z, Y, X) and the masks (Z, Y, X).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    scan = display_scan(n_slices, size, pad)
    folder = Path(root) / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    uid = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    dz, dr, dc = spacing
    expected = scan.hu.copy()
    shift = 0.0 if intercept is None else intercept  # stored = HU - shift (slope 1)
    for k in rng.sample(range(n_slices), n_slices):  # written in shuffled order
        stored = scan.hu[k].T - shift  # display (R->L, A->P) -> pixel_array (A->P, R->L)
        if signed:
            pixels = stored.astype(np.int16)
            padding = int(pad - shift)
        else:
            # Stored 0 is the padding; tissue and air keep stored >= 1 (HU >= -1023).
            stored = np.where(scan.body[k].T, np.clip(stored, 1, None), 0)
            pixels = stored.astype(np.uint16)
            padding = 0
            expected[k] = np.where(scan.body[k], np.maximum(scan.hu[k], shift + 1), shift)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = (
            CTImageStorage if modality in ("CT", None) else MRImageStorage
        )
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, uid, frame
        ds.PatientID, ds.SeriesDescription = "FACTORY01", description
        if modality is not None:
            ds.Modality = modality
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # rows along +x (L), cols down +y (P)
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * dz]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if signed else 0
        if intercept is not None:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, intercept, "HU"
        ds.PixelPaddingValue = padding
        ds.PixelData = pixels.tobytes()
        name = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
        ds.save_as(str(folder / name), enforce_file_format=True)
        assert pydicom.misc.is_dicom(folder / name)
    return folder, expected, scan.masks


def dicom_affine(
    n_slices: int,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    origin: tuple[float, float, float] = (-50.0, -60.0, -200.0),
) -> np.ndarray:
    """RAS affine of make_dicom_series' voxels in (column, row, slice) order, from its geometry."""
    dz, dr, dc = spacing
    lps = np.array(
        [[dc, 0, 0, origin[0]], [0, dr, 0, origin[1]], [0, 0, dz, origin[2]], [0, 0, 0, 1]]
    )
    return LPS_TO_RAS @ lps


def dicom_to_nifti(
    path: Path, hu_display: np.ndarray, affine: np.ndarray, axcodes: str = "LAS"
) -> Path:
    """The NIfTI conversion of a series: its voxels with its real affine, reoriented as dcm2niix
    does (rows flipped to LAS), nibabel adjusting the affine."""
    voxels = np.transpose(hu_display, (1, 2, 0)).astype(np.int16)  # (Z,Y,X) -> (C, R, N)
    img = nib.Nifti1Image(voxels, affine)
    now = ornt_.io_orientation(affine)
    img = img.as_reoriented(ornt_.ornt_transform(now, ornt_.axcodes2ornt(tuple(axcodes))))
    nib.save(img, str(path))
    return Path(path)


def make_nifti(
    path: Path,
    n_slices: int = 6,
    size: int = 128,
    pad: float = -2048.0,
    axcodes: str = "RAS",
    spacing: tuple[float, float, float] = (3.0, 0.75, 0.75),
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write a NIfTI scan whose voxels lie in `axcodes` order; returns (path, display HU, masks)."""
    scan = display_scan(n_slices, size, pad)
    dz, dy, dx = spacing
    affine = dicom_affine(n_slices, (dz, dx, dy), (10.0, -20.0, 30.0))
    dicom_to_nifti(Path(path), scan.hu, affine, axcodes)
    return Path(path), scan.hu, scan.masks

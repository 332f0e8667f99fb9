"""Readers for the on-disk layouts a CT segmentation dataset comes in, all returning `SliceRecord`s.

Every reader hands back the same thing: a list of 2-D slices with intensities in [0, 1], class-id
masks in our four classes (0 background, 1 healthy lung, 2 GGO, 3 consolidation) where the source
is labelled, and a patient id where the source has one. `read_source` picks the reader from what it
finds at the path.

Bad input is answered with a `DataError` that names the file, what was found and what was expected.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from stitchnet.data.types import SliceRecord

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
MASK_SUFFIXES = (".png", ".npy")  # never JPEG: lossy compression blurs class ids into new values
DEFAULT_WINDOW = (-1250.0, 250.0)  # HU; the lung window the COVID-19-CT-Seg authors used
CCCCII_CLASSES = ("NCP", "CP", "Normal")


class DataError(ValueError):
    """Bad or missing input; the message names the file, the value found and the one expected."""


@dataclass(frozen=True)
class LabelMap:
    """How a source's mask values become our ids (0 bg, 1 healthy lung, 2 GGO, 3 consolidation).

    Some sources label only lesions and ship the lung field separately. For those, `lung_fill`
    lists the source values that become healthy lung (1) where the lung mask is set; everywhere
    else they keep their mapped id.
    """

    name: str
    mapping: tuple[tuple[int, int], ...]  # (source id, our id) pairs; tuples keep the map hashable
    lung_fill: tuple[int, ...] = ()  # source ids set to 1 inside the lung field (needs a lung mask)

    def __post_init__(self) -> None:
        bad = sorted({ours for _, ours in self.mapping} - {0, 1, 2, 3})
        if bad:
            raise ValueError(f"label map {self.name!r} maps to {bad}; our class ids are 0..3")

    @classmethod
    def from_dict(
        cls, name: str, mapping: Mapping[int, int], lung_fill: Iterable[int] = ()
    ) -> LabelMap:
        return cls(
            name, tuple(sorted((int(k), int(v)) for k, v in mapping.items())), tuple(lung_fill)
        )

    @property
    def source_ids(self) -> tuple[int, ...]:
        return tuple(src for src, _ in self.mapping)

    def apply(self, raw: np.ndarray, lung: np.ndarray | None = None, path: str = "") -> np.ndarray:
        """Map a (H, W) array of source ids to (H, W) uint8 class ids; `path` names it in errors."""
        values = np.unique(raw)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise DataError(
                f"{path}: mask holds non-integer values {values[np.mod(values, 1) != 0][:5]}; "
                f"expected integer class ids {list(self.source_ids)} (label map {self.name!r})"
            )
        unexpected = sorted(set(values.astype(np.int64).tolist()) - set(self.source_ids))
        if unexpected:
            raise DataError(
                f"{path}: mask holds values {unexpected} outside label map {self.name!r}; "
                f"expected only {list(self.source_ids)}. Pass another label_map (presets: "
                f"{sorted(LABEL_MAPS)}) or LabelMap.from_dict(...)"
            )
        ids = raw.astype(np.int64)
        out = np.zeros(raw.shape, dtype=np.uint8)
        for src, ours in self.mapping:
            out[ids == src] = ours
        if self.lung_fill:
            if lung is None:
                raise DataError(
                    f"{path}: label map {self.name!r} needs a lung mask to mark healthy lung "
                    f"(its source has no healthy-lung class); expected a lung/ file beside the mask"
                )
            fill = np.isin(ids, self.lung_fill) & (lung > 0)
            out[fill] = 1
        return out


IDENTITY = LabelMap.from_dict("identity", {0: 0, 1: 1, 2: 2, 3: 3})
# MedSeg's raw labels: 0 none, 1 GGO, 2 consolidation, 3 pleural effusion. Effusion is neither
# parenchyma nor a lesion class, so it becomes background (as in Inf-Net's ground truth) and is not
# filled as healthy lung even though MedSeg's lung mask covers it.
MEDSEG_RAW = LabelMap.from_dict("medseg-raw", {0: 0, 1: 2, 2: 3, 3: 0}, lung_fill=(0,))
# CC-CCII's lesion masks as publicly described: background, lung field, GGO, consolidation,
# stored as 0..3 in 8-bit PNGs: an assumption, not checked against the real files.
CCCCII = LabelMap.from_dict("cc-ccii", {0: 0, 1: 1, 2: 2, 3: 3})
LABEL_MAPS: dict[str, LabelMap] = {m.name: m for m in (IDENTITY, MEDSEG_RAW, CCCCII)}


def get_label_map(label_map: str | LabelMap) -> LabelMap:
    if isinstance(label_map, LabelMap):
        return label_map
    if label_map not in LABEL_MAPS:
        raise ValueError(f"unknown label map {label_map!r}; expected one of {sorted(LABEL_MAPS)}")
    return LABEL_MAPS[label_map]


# ---------------------------------------------------------------------------------------------
# Single files


def read_image_file(path: str | Path) -> np.ndarray:
    """A 2-D grayscale slice as (H, W) float32 in [0, 1] from PNG/JPG (8-bit, /255) or NPY."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
        if arr.dtype == np.uint8:
            return arr.astype(np.float32) / 255.0
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(
                f"{path}: NPY image has dtype {arr.dtype}; expected uint8 or float in [0, 1]"
            )
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
            raise DataError(
                f"{path}: NPY image values span [{lo:g}, {hi:g}]; expected floats in [0, 1]. "
                f"Window raw HU first (read_nifti/read_dicom_series do this)"
            )
        return arr.astype(np.float32)
    im = _open_pil(path)
    if im.mode in ("RGB", "RGBA", "P", "LA"):
        # Grayscale CT saved as colour has equal channels, and L = (299 R + 587 G + 114 B) / 1000
        # then gives back the same 8-bit value exactly.
        im = im.convert("L")
    if im.mode != "L":
        raise DataError(
            f"{path}: image mode {im.mode!r}; expected 8-bit grayscale (mode 'L'). "
            f"Save 16-bit CT as NPY floats in [0, 1] or read it as NIfTI/DICOM"
        )
    return np.asarray(im, dtype=np.float32) / 255.0


def read_label_file(path: str | Path) -> np.ndarray:
    """A 2-D array of raw integer label values from a PNG (palette index or gray level) or NPY."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    im = _open_pil(path)
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if not (np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 0] == arr[..., 2])):
            raise DataError(
                f"{path}: colour mask with differing channels; expected one channel of class ids"
            )
        return arr[..., 0].copy()
    if im.mode not in ("L", "P", "1", "I", "I;16"):
        raise DataError(
            f"{path}: mask mode {im.mode!r}; expected a single-channel PNG of class ids"
        )
    # Mode P: the palette indices are the class ids (Inf-Net's GT), so no convert("L") here.
    return np.asarray(im).astype(np.int64)


def _open_pil(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        im = Image.open(path)
        im.load()  # decode now, so a truncated file fails here and not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{path}: cannot read as an image ({e}); expected a valid PNG or JPEG"
        ) from e
    return im


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read as NPY ({e}); expected a 2-D numpy array") from e
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # (H, W, 1) -> (H, W)
    if arr.ndim != 2:
        raise DataError(f"{path}: NPY array has shape {arr.shape}; expected a 2-D (H, W) slice")
    return arr


def _check_same_size(what: str, path: Path, arr: np.ndarray, image_path: Path, image: np.ndarray):
    if arr.shape != image.shape:
        raise DataError(
            f"{path}: {what} is {arr.shape[0]}x{arr.shape[1]} (HxW) but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]}; expected the same size"
        )


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: folder not found; expected {what}")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a folder holding {what}")


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _find_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        for candidate in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


# ---------------------------------------------------------------------------------------------
# (a) a folder of images with optional masks/, lung/ and index.csv


def read_folder(
    root: str | Path,
    label_map: str | LabelMap = IDENTITY,
    file_column: str = "file",
    patient_column: str = "patient_id",
    window: tuple[float, float] = DEFAULT_WINDOW,
    source_window: tuple[float, float] | None = None,
) -> list[SliceRecord]:
    """Read `root/images/*` with optional `masks/`, `lung/` (same stem) and `index.csv`.

    An 8-bit slice holds gray = (HU - lo) / (hi - lo) for the window (lo, hi) it was saved with.
    Every slice is brought to `window`, the model's intensity scale (the one DICOM and NIfTI
    inputs are mapped through), from its own window: the one recorded per file in index.csv
    (columns hu_lo, hu_hi, written by `python -m stitchnet.data.hu_scale annotate ROOT`), else
    `source_window`. A folder with neither is taken as already in `window`, with a warning.

    Args:
        root: folder holding `images/` (PNG/JPG 8-bit, or NPY uint8 or float in [0, 1]).
        label_map: how `masks/` values become our class ids; the bundled layout is `identity`.
        file_column: the index.csv column naming the image file (name with or without suffix).
        patient_column: the index.csv column carrying patient ids; absent means no patient ids.
        window: the HU window the returned images are in (the model's `lung_window`).
        source_window: the HU window of slices that carry no recorded one (e.g. --window).
    """
    root = Path(root)
    label_map = get_label_map(label_map)
    _require_dir(root, "a dataset folder with images/ (and optional masks/, lung/, index.csv)")
    images_dir = root / "images"
    _require_dir(images_dir, "the slices as images/*.png|jpg|npy")
    files = _files(images_dir, IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{images_dir}: no slices; expected files ending in {list(IMAGE_SUFFIXES)}")
    masks_dir, lung_dir = root / "masks", root / "lung"
    patients = _read_patient_index(root / "index.csv", file_column, patient_column)
    from stitchnet.data.slice_scale import slice_windows, to_window

    windows = slice_windows(root, files, source_window)

    records = []
    for path in files:
        image = to_window(read_image_file(path), windows[path.name], window)
        lung = None
        if lung_dir.is_dir():
            lung_path = _find_stem(lung_dir, path.stem, MASK_SUFFIXES)
            if lung_path is not None:
                lung = (read_label_file(lung_path) > 0).astype(np.uint8)
                _check_same_size("lung mask", lung_path, lung, path, image)
        mask = None
        if masks_dir.is_dir():
            mask_path = _find_stem(masks_dir, path.stem, MASK_SUFFIXES)
            if mask_path is None:
                raise DataError(
                    f"{path}: no mask for this image; expected {masks_dir / path.stem}.png or .npy "
                    f"(a labelled folder needs a mask for every image)"
                )
            raw = read_label_file(mask_path)
            _check_same_size("mask", mask_path, raw, path, image)
            mask = label_map.apply(raw, lung=lung, path=str(mask_path))
        patient = None
        if patients is not None:
            key = path.name if path.name in patients else path.stem
            if key not in patients:
                raise DataError(
                    f"{root / 'index.csv'}: no row for {path.name}; expected one row per image "
                    f"with its {patient_column!r} (or drop the column to read without patient ids)"
                )
            patient = patients[key]
        records.append(SliceRecord(image, path.stem, patient, mask, lung, str(path)))
    return records


def _read_patient_index(path: Path, file_column: str, patient_column: str) -> dict | None:
    """file name (and stem) -> patient id, or None when there is no index or no patient column."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV ({e}); expected a header row") from e
    columns = list(rows[0]) if rows else []
    if patient_column not in columns:
        return None
    if file_column not in columns:
        raise DataError(
            f"{path}: has a {patient_column!r} column but no {file_column!r} column "
            f"(columns found: {columns}); expected the image file name in {file_column!r}"
        )
    out: dict[str, str | None] = {}
    for row in rows:
        name = Path(row[file_column]).name
        pid = (row[patient_column] or "").strip() or None
        out[name] = pid
        out.setdefault(Path(name).stem, pid)
    return out


# ---------------------------------------------------------------------------------------------
# (b) NIfTI volumes


def hu_window(hu: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Map Hounsfield units linearly onto [0, 1]: `lo` -> 0, `hi` -> 1, clipped outside."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have low < high, got {window}")
    return np.clip((np.asarray(hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


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
# (c) DICOM series


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
# (d) CC-CCII


def read_ccccii(
    root: str | Path,
    classes: tuple[str, ...] = ("NCP", "Normal"),
    subset: str = "all",
    label_map: str | LabelMap = CCCCII,
    max_slices_per_scan: int | None = None,
) -> list[SliceRecord]:
    """Read the China Consortium of Chest CT Image Investigation (CC-CCII) layout.

    Assumed layout (from public descriptions of the release; NOT verified against the real files):

        root/NCP/<patient_id>/<scan_id>/<slice>.png|jpg     novel-coronavirus pneumonia
        root/CP/<patient_id>/<scan_id>/<slice>.png|jpg      common pneumonia
        root/Normal/<patient_id>/<scan_id>/<slice>.png|jpg  controls
        root/ct_lesion_seg/image/<patient_id>/<slice>.jpg|png
        root/ct_lesion_seg/mask/<patient_id>/<slice>.png    same stem as the image

    The class folders are unlabelled slices. The segmentation subset (750 slices of 150 NCP
    patients) has masks that are assumed to hold 0 background, 1 lung field, 2 ground-glass opacity,
    3 consolidation as small integers in 8-bit PNGs (the `cc-ccii` label map); pass another
    `label_map` if the real files differ. The patient id is the patient folder's name, shared by the
    class folders and the segmentation subset, so a patient found in both stays in one split part.

    Args:
        classes: class folders to read; CP is left out by default, as in the paper.
        subset: "all", "seg" (segmentation subset only) or "unlabelled" (class folders only).
        max_slices_per_scan: keep at most this many evenly spaced slices per scan (the full
            release has over 400,000 slices, too many to hold in memory).
    """
    root = Path(root)
    label_map = get_label_map(label_map)
    if subset not in ("all", "seg", "unlabelled"):
        raise ValueError(f"subset must be 'all', 'seg' or 'unlabelled', got {subset!r}")
    unknown = sorted(set(classes) - set(CCCCII_CLASSES))
    if unknown:
        raise ValueError(f"unknown CC-CCII classes {unknown}; expected some of {CCCCII_CLASSES}")
    _require_dir(root, f"the CC-CCII release (class folders {CCCCII_CLASSES} or ct_lesion_seg/)")
    seg_root = root / "ct_lesion_seg"
    if not seg_root.is_dir() and not any((root / c).is_dir() for c in CCCCII_CLASSES):
        raise DataError(
            f"{root}: no CC-CCII folders; expected ct_lesion_seg/ or class folders {CCCCII_CLASSES}"
        )

    records: list[SliceRecord] = []
    if subset in ("all", "seg") and seg_root.is_dir():
        records += _read_ccccii_seg(seg_root, label_map)
    if subset in ("all", "unlabelled"):
        for cls in classes:
            cls_dir = root / cls
            if not cls_dir.is_dir():
                continue
            for patient_dir in sorted(p for p in cls_dir.iterdir() if p.is_dir()):
                for scan_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
                    files = _files(scan_dir, IMAGE_SUFFIXES)
                    if max_slices_per_scan is not None and len(files) > max_slices_per_scan:
                        keep = (
                            np.linspace(0, len(files) - 1, max_slices_per_scan).round().astype(int)
                        )
                        files = [files[i] for i in keep]
                    for path in files:
                        sid = f"{cls}/{patient_dir.name}/{scan_dir.name}/{path.stem}"
                        records.append(
                            SliceRecord(
                                read_image_file(path), sid, patient_dir.name, path=str(path)
                            )
                        )
    if not records:
        raise DataError(
            f"{root}: no slices found for subset={subset!r}, classes={list(classes)}; expected "
            f"<class>/<patient>/<scan>/*.png|jpg or ct_lesion_seg/image/<patient>/*"
        )
    return records


def _read_ccccii_seg(seg_root: Path, label_map: LabelMap) -> list[SliceRecord]:
    image_root, mask_root = seg_root / "image", seg_root / "mask"
    _require_dir(image_root, "ct_lesion_seg/image/<patient>/<slice>.jpg|png")
    _require_dir(mask_root, "ct_lesion_seg/mask/<patient>/<slice>.png")
    records = []
    for patient_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        for path in _files(patient_dir, IMAGE_SUFFIXES):
            mask_path = _find_stem(mask_root / patient_dir.name, path.stem, MASK_SUFFIXES)
            if mask_path is None:
                raise DataError(
                    f"{path}: no mask; expected {mask_root / patient_dir.name / path.stem}.png"
                )
            image = read_image_file(path)
            raw = read_label_file(mask_path)
            _check_same_size("mask", mask_path, raw, path, image)
            mask = label_map.apply(raw, path=str(mask_path))
            sid = f"seg/{patient_dir.name}/{path.stem}"
            records.append(SliceRecord(image, sid, patient_dir.name, mask, None, str(path)))
    return records


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

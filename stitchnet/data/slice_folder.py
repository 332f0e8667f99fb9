"""The slice-folder layout: `root/images/*` with optional `masks/`, `lung/` and `index.csv`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from stitchnet.data.errors import DataError
from stitchnet.data.images import (
    DEFAULT_WINDOW,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    check_same_size,
    files_with_suffixes,
    find_stem,
    read_image_file,
    read_label_file,
    require_dir,
)
from stitchnet.data.label_maps import IDENTITY, LabelMap, get_label_map
from stitchnet.data.slice_scale import slice_windows, to_window
from stitchnet.data.types import SliceRecord


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
    require_dir(root, "a dataset folder with images/ (and optional masks/, lung/, index.csv)")
    images_dir = root / "images"
    require_dir(images_dir, "the slices as images/*.png|jpg|npy")
    files = files_with_suffixes(images_dir, IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{images_dir}: no slices; expected files ending in {list(IMAGE_SUFFIXES)}")
    masks_dir, lung_dir = root / "masks", root / "lung"
    patients = _read_patient_index(root / "index.csv", file_column, patient_column)
    windows = slice_windows(root, files, source_window)

    records = []
    for path in files:
        image = to_window(read_image_file(path), windows[path.name], window)
        lung = None
        if lung_dir.is_dir():
            lung_path = find_stem(lung_dir, path.stem, MASK_SUFFIXES)
            if lung_path is not None:
                lung = (read_label_file(lung_path) > 0).astype(np.uint8)
                check_same_size("lung mask", lung_path, lung, path, image)
        mask = None
        if masks_dir.is_dir():
            mask_path = find_stem(masks_dir, path.stem, MASK_SUFFIXES)
            if mask_path is None:
                raise DataError(
                    f"{path}: no mask for this image; expected {masks_dir / path.stem}.png or .npy "
                    f"(a labelled folder needs a mask for every image)"
                )
            raw = read_label_file(mask_path)
            check_same_size("mask", mask_path, raw, path, image)
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

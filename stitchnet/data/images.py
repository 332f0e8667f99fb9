"""Single slice files, the HU window, and the folder helpers every slice reader shares.

An image file is a 2-D grayscale slice, read as (H, W) float32 in [0, 1]; a label file holds raw
integer class values, mapped to our ids by a `LabelMap` (data.label_maps). Nothing here imports
another reader, so every reader can import these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stitchnet.data.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
MASK_SUFFIXES = (".png", ".npy")  # never JPEG: lossy compression blurs class ids into new values
DEFAULT_WINDOW = (-1250.0, 250.0)  # HU; the lung window the COVID-19-CT-Seg authors used


def hu_window(hu: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Map Hounsfield units linearly onto [0, 1]: `lo` -> 0, `hi` -> 1, clipped outside."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have low < high, got {window}")
    return np.clip((np.asarray(hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


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


def check_same_size(what: str, path: Path, arr: np.ndarray, image_path: Path, image: np.ndarray):
    if arr.shape != image.shape:
        raise DataError(
            f"{path}: {what} is {arr.shape[0]}x{arr.shape[1]} (HxW) but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]}; expected the same size"
        )


def require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: folder not found; expected {what}")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a folder holding {what}")


def files_with_suffixes(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def find_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        for candidate in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None

"""Which HU window each 8-bit slice of a folder was saved with, and the move to the model's window.

A windowed slice holds gray = (HU - lo) / (hi - lo). `read_folder` (the slice reader of every
command) and the slice-folder branch of `read_volume` (segment) ask `slice_windows` for each
file's window, recorded in the folder's index.csv by `python -m stitchnet.data.hu_scale annotate`
or given by the user (--window), and `to_window` brings the gray to the model's window, so that
8-bit slices reach the model on the scale DICOM and NIfTI reach it on.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from stitchnet.data.errors import DataError
from stitchnet.data.hu_scale import INDEX_COLUMNS, gray_to_hu, recorded_windows
from stitchnet.data.images import hu_window


def slice_windows(
    root: Path, files: list[Path], source_window: tuple[float, float] | None = None
) -> dict[str, tuple[float, float] | None]:
    """{file name: the HU window its gray values were saved with}, None where unknown.

    Recorded windows (index.csv's hu_lo, hu_hi) win; `source_window` serves the rest. A folder
    whose index records windows but not for some of its files is refused, since those files'
    intensities would mean something else than their neighbours'.
    """
    index = root / "index.csv"
    recorded: dict[str, tuple[float, float]] = {}
    if index.is_file() and _has_columns(index, INDEX_COLUMNS[:2]):
        recorded = recorded_windows(root)
        missing = [p.name for p in files if p.name not in recorded]
        if missing and source_window is None:
            raise DataError(
                f"{index}: no HU window recorded for {len(missing)} slice(s), e.g. {missing[0]}; "
                f"expected hu_lo/hu_hi on every row: rerun `python -m stitchnet.data.hu_scale "
                f"annotate {root}`, or give the window (--window LO HI)"
            )
    if not recorded and source_window is None:
        warnings.warn(
            f"{root}: no HU window recorded for its slices (index.csv hu_lo/hu_hi); taken as "
            f"already in the model's window. Record it with `python -m stitchnet.data.hu_scale "
            f"annotate {root}` or pass --window LO HI",
            stacklevel=3,
        )
    return {p.name: recorded.get(p.name, source_window) for p in files}


def to_window(
    gray: np.ndarray, source: tuple[float, float] | None, window: tuple[float, float]
) -> np.ndarray:
    """Gray in [0, 1] saved with the HU window `source` -> gray in `window` (clipped to [0, 1]).
    `source` None: the gray is taken as already in `window`."""
    if source is None or tuple(map(float, source)) == tuple(map(float, window)):
        return gray
    return hu_window(gray_to_hu(gray, source), window)


def _has_columns(path: Path, columns: Iterable[str]) -> bool:
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(c in header for c in columns)

"""Which HU window made an 8-bit CT slice, read off tissues whose HU COVID-19 does not change.

A windowed slice holds gray = (HU - lo) / (hi - lo), clipped to [0, 1] and quantised to 8 bits.
Where the window is unknown, tissues outside the lung fix it: air (outside the body, trachea, main
bronchi) at AIR_HU, fat at FAT_HU, and muscle or unenhanced blood at SOFT_HU. Lung parenchyma is
never used: COVID-19 changes it, and measuring it is the point.

    est = estimate_window(gray)          # WindowEstimate: window (lo, hi), landmarks, residual
    hu = gray_to_hu(gray, est.window)    # (H, W) HU
    annotate("data/medseg_covid19_train50")           # writes hu_* columns into index.csv
    recorded_windows("data/medseg_covid19_train50")   # {file: (lo, hi)} read back

or `python -m stitchnet.data.hu_scale annotate FOLDER`.

The landmarks are found by `stitchnet.data.hu_landmarks.measure_landmarks` (its docstring says
how). The window is the least-squares line through the found (gray, HU) pairs, with its RMS
residual. Without air the window is refused (DataError): fat and soft tissue alone are 140 HU
apart, and extrapolated 800 HU down to lung a 1-gray error in either becomes ~100 HU there.

Accuracy, measured by benchmarks/hu_scale_check.py (seed 0, every trial printed): each slice of
the real HU scans in data/realct_nonlesion_dev windowed with 12 random windows (lo in [-1400,
-1000], hi in [0, 400]), 8-bit, every other one through JPEG at quality 90, whole and cropped to
its lungs give or take 4 px. On the three full-resolution scans (0.6-0.7 mm pixels, 120 trials,
none refused) the recovered HU has a median absolute error of 22 HU at -850 HU (lung), 90 % within
30 HU, and of 3 HU at -100 HU (fat), 90 % within 46 HU. The -850 error is mostly the scanners' own
air: about -973 HU in the COPDGene scans, against the nominal -1000. The worst trials were 251 HU
off at -850: the LIDC slice cropped so that only a foam cushion under the patient is left outside
the body, taken for air (with contrast-filled blood and muscle as a false fat/soft pair, so even
the residual looked good). One tissue peak taken for the other (fat, soft) puts -100 HU ~150 HU
off and -850 HU ~20. The 64x64 thorax (5.3 mm pixels) is refused in 150 of 240 trials.
On the bundled JPEG slices single-slice estimates are noisier: within a volume that has one
window, a slice's own estimate strays from the volume's pooled one by a median 3-31 HU at -850 HU
(90th percentile up to ~140 HU in the noisiest series), so pool a volume's slices where you can.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stitchnet.data.errors import DataError
from stitchnet.data.hu_landmarks import AIR_HU, FAT_HU, SOFT_HU, SliceLandmarks, measure_landmarks
from stitchnet.data.images import read_image_file

GOOD_RESIDUAL_HU = 30.0  # three landmarks agreeing this well make a "good" estimate
ONE_WINDOW_IQR = 3.0 / 255.0  # soft tissue's gray varies less across the slices of one window

INDEX_COLUMNS = ("hu_lo", "hu_hi", "hu_fit", "hu_landmarks", "hu_residual")
FITS = ("slice", "volume", "set", "none")  # what hu_fit says the window came from


@dataclass(frozen=True)
class WindowEstimate:
    """A window (lo, hi) with the evidence for it."""

    window: tuple[float, float]  # HU at gray 0 and at gray 1
    landmarks: tuple[tuple[str, float, float], ...]  # (name, nominal HU, gray in [0, 1]) fitted
    residual_hu: float  # RMS of fitted minus nominal HU; 0 when two landmarks fix the line
    flags: tuple[str, ...] = ()
    slices: int = 1  # how many slices were pooled

    @property
    def names(self) -> str:
        return "+".join(name for name, _, _ in self.landmarks)

    @property
    def quality(self) -> str:
        """ "good": air, fat and soft tissue agree within GOOD_RESIDUAL_HU; "fair": air and one
        tissue (nothing to check them against); "poor": three that disagree."""
        if len(self.landmarks) < 3:
            return "fair"
        return "good" if self.residual_hu <= GOOD_RESIDUAL_HU else "poor"


# ---------------------------------------------------------------------------------------------
# Public functions


def gray_to_hu(gray: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Gray in [0, 1] (or uint8 0..255) -> HU with the window (lo, hi): HU = lo + (hi - lo) gray."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have low < high, got {window}")
    g = np.asarray(gray)
    g = g.astype(np.float32) / 255.0 if g.dtype == np.uint8 else g.astype(np.float32)
    return lo + (hi - lo) * g


def estimate_window(gray: np.ndarray, source: str = "slice") -> WindowEstimate:
    """The window that made one slice (uint8, or floats in [0, 1]); DataError without air and a
    second landmark. `source` names the slice in error messages."""
    return fit_window([measure_landmarks(gray, source)], source)


def fit_window(found: Sequence[SliceLandmarks], source: str = "slices") -> WindowEstimate:
    """Fit one window to the landmarks of one or more slices that share it (one volume).

    Each landmark's gray is its median over the slices where it was found, so a slice whose
    trachea is out of view still adds its fat and soft tissue.
    """
    if not found:
        raise DataError(f"{source}: no slices to fit a window to; expected at least one")
    landmarks = []
    for name, hu in (("air", AIR_HU), ("fat", FAT_HU), ("soft", SOFT_HU)):
        values = [getattr(s, name) for s in found if getattr(s, name) is not None]
        if values:
            landmarks.append((name, hu, float(np.median(values))))
    flags = tuple(sorted({f for s in found for f in s.flags}))
    names = [name for name, _, _ in landmarks]
    if "air" not in names or len(landmarks) < 2:
        raise DataError(
            f"{source}: found landmarks {names or ['none']} ({', '.join(flags) or 'no flags'}); "
            f"expected air and fat or soft tissue to fix the window"
        )
    hu = np.array([h for _, h, _ in landmarks])
    g = np.array([v for _, _, v in landmarks])
    width, lo = np.polyfit(g, hu, 1)  # HU = lo + width * gray, least squares
    if not width > 0:
        raise DataError(
            f"{source}: landmarks at gray {[(n, round(v * 255, 1)) for n, _, v in landmarks]} "
            f"(of 255) put denser tissue darker; expected air < fat < soft tissue"
        )
    resid = float(np.sqrt(np.mean((lo + width * g - hu) ** 2))) if len(landmarks) > 2 else 0.0
    return WindowEstimate(
        (float(lo), float(lo + width)), tuple(landmarks), resid, flags, len(found)
    )


# ---------------------------------------------------------------------------------------------
# Bundled folders: index.csv columns


def annotate(folder: str | Path, group_column: str = "volume") -> list[dict[str, str]]:
    """Estimate every slice's window and write it into `folder/index.csv` (atomically).

    Slices are grouped by `group_column` where index.csv has it (a volume has one window), else
    the folder is one group. A volume whose slices agree on soft tissue's gray (interquartile
    range <= ONE_WINDOW_IQR) shares one window, fitted to all its slices: hu_fit "volume". Else
    each slice keeps its own estimate (hu_fit "slice"), and a slice without air and a second
    landmark takes its group's pooled one: hu_fit "volume", or "set" for a folder without
    volumes; "none" where even that fails. Existing columns and rows are kept as they are.
    """
    folder = Path(folder)
    index = folder / "index.csv"
    rows, columns = _read_index(index)
    if "file" not in columns:
        raise DataError(f"{index}: columns {columns}; expected a 'file' column naming each image")
    by_volume = group_column in columns
    found = []
    for row in rows:
        path = folder / "images" / row["file"]
        found.append(measure_landmarks(read_image_file(path), str(path)))
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[group_column] if by_volume else "", []).append(i)
    for name, members in groups.items():
        part = [found[i] for i in members]
        try:
            pooled = fit_window(part, f"{index} {group_column} {name!r}")
        except DataError:
            pooled = None
        shared = by_volume and pooled is not None and _one_window(part)
        for i in members:
            rows[i].update(_columns(found[i], pooled, shared, "volume" if by_volume else "set"))
    kept = [c for c in columns if c not in INDEX_COLUMNS]
    _write_index(index, rows, kept + list(INDEX_COLUMNS), _line_end(index))
    return rows


def recorded_windows(folder: str | Path) -> dict[str, tuple[float, float]]:
    """{image file name: (lo, hi)} from `folder/index.csv` as `annotate` wrote it; slices whose
    hu_fit is "none" are left out."""
    index = Path(folder) / "index.csv"
    rows, columns = _read_index(index)
    missing = [c for c in ("file", "hu_lo", "hu_hi", "hu_fit") if c not in columns]
    if missing:
        raise DataError(
            f"{index}: no column(s) {missing}; expected the hu_* columns that "
            f"`python -m stitchnet.data.hu_scale annotate {folder}` writes"
        )
    out = {}
    for row in rows:
        if row["hu_fit"] == "none":
            continue
        try:
            lo, hi = float(row["hu_lo"]), float(row["hu_hi"])
        except ValueError as e:
            raise DataError(
                f"{index}: {row['file']} has hu_lo={row['hu_lo']!r}, hu_hi={row['hu_hi']!r}; "
                f"expected numbers"
            ) from e
        if not hi > lo:
            raise DataError(f"{index}: {row['file']} has window ({lo}, {hi}); expected lo < hi")
        out[row["file"]] = (lo, hi)
    return out


def _one_window(found: Sequence[SliceLandmarks]) -> bool:
    """Whether a volume's slices look windowed alike: soft tissue (the steadiest peak) found in
    three slices or more, its gray spread (IQR) by no more than JPEG and anatomy spread it."""
    values = [s.soft for s in found if s.soft is not None]
    return len(values) >= 3 and np.subtract(*np.percentile(values, [75, 25])) <= ONE_WINDOW_IQR


def _columns(
    own: SliceLandmarks, pooled: WindowEstimate | None, shared: bool, group: str
) -> dict[str, str]:
    est, fit = (pooled, "volume") if shared else (None, "slice")
    if est is None:
        try:
            est = fit_window([own])
        except DataError:
            est, fit = pooled, group
    if est is None:
        return {
            "hu_lo": "",
            "hu_hi": "",
            "hu_fit": "none",
            "hu_landmarks": own.names,
            "hu_residual": "",
        }
    lo, hi = est.window
    return {
        "hu_lo": f"{lo:.0f}",
        "hu_hi": f"{hi:.0f}",
        "hu_fit": fit,
        "hu_landmarks": own.names,
        "hu_residual": f"{est.residual_hu:.0f}",
    }


def _read_index(index: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with index.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"{index}: cannot read as CSV ({e}); expected index.csv with a header"
        ) from e


def _line_end(index: Path) -> str:
    """The file's own line ending, kept so a rewrite changes only the columns it adds."""
    with index.open("rb") as f:
        return "\r\n" if f.readline().endswith(b"\r\n") else "\n"


def _write_index(index: Path, rows: list[dict[str, str]], columns: list[str], end: str) -> None:
    """Write to a temporary file beside index.csv, then rename over it: a reader never sees half."""
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".csv", dir=index.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator=end)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, index)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stitchnet.data.hu_scale",
        description="Estimate the HU window of every slice of a folder (images/ + index.csv) "
        "and record it in index.csv as hu_lo, hu_hi, hu_fit, hu_landmarks, hu_residual.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    one = sub.add_parser("annotate", help="rewrite FOLDER/index.csv with the hu_* columns")
    one.add_argument("folder", type=Path)
    one.add_argument("--group-column", default="volume", help="index.csv column naming volumes")
    args = ap.parse_args(argv)
    try:
        rows = annotate(args.folder, args.group_column)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for fit in FITS:
        n = sum(r["hu_fit"] == fit for r in rows)
        if n:
            print(f"{fit}: {n} slices")
    windows = np.array([(float(r["hu_lo"]), float(r["hu_hi"])) for r in rows if r["hu_lo"]])
    if len(windows):
        q = np.percentile(windows, [0, 25, 50, 75, 100], axis=0).round().astype(int)
        print("lo min/q1/median/q3/max:", " ".join(map(str, q[:, 0])))
        print("hi min/q1/median/q3/max:", " ".join(map(str, q[:, 1])))
    print(f"wrote {args.folder / 'index.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

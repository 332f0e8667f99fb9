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

How the landmarks are found (`measure_landmarks`):
- Fat and soft tissue: the bright side of an Otsu split is the body. Its flat pixels (5x5 local std
  in the lower half, no clipped pixel near, two pixels in from any edge) are histogrammed by their
  5x5 local mean, and the peaks are tissue classes. Fat -> soft tissue is 140 HU and air -> fat
  900 HU, so next to air a peak predicts where its partner sits; the pair found together wins.
- Air: the median-smoothed dark side falls into connected regions. Big ones holding vessels (bright
  dots the median filter smoothed over) are lung; air must sit clearly below the darkest lung. Air
  candidates are the other dark regions (air outside the body, a separate trachea) and, inside
  lung regions, walled pockets below the lung's level (trachea and bronchi joined to the lungs: a
  rim of tissue, unlike a darker patch of lung). Candidates within a margin of each other are one
  level; the darkest level holding a quarter of the candidates' pixels is air, so one burnt-in
  black arrow does not decide it. Gray <= ZERO_GRAY is padding or air below the window, set aside;
  air at gray 5 or below counts as clipped ("air_saturated"), which only says lo >= ~AIR_HU.
- The window is the least-squares line through the found (gray, HU) pairs, with its RMS residual.
  Without air the window is refused (DataError): fat and soft tissue alone are 140 HU apart, and
  extrapolated 800 HU down to lung a 1-gray error in either becomes ~100 HU there.

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
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from stitchnet.data.sources import DataError, read_image_file

AIR_HU = -1000.0  # air outside the body and in the airways
FAT_HU = -100.0  # subcutaneous and mediastinal fat
SOFT_HU = 40.0  # skeletal muscle, unenhanced blood, myocardium
_FAT_TO_SOFT = (SOFT_HU - FAT_HU) / (FAT_HU - AIR_HU)  # 140/900: (soft - fat) / (fat - air)
_SOFT_TO_FAT = (SOFT_HU - FAT_HU) / (SOFT_HU - AIR_HU)  # 140/1040: (soft - fat) / (soft - air)

LOCAL = 5  # px, side of the window for local means, stds and medians
MIN_AIR_PX = 20  # core pixels a dark region needs to count as air
AIR_SHARE = 0.25  # the darkest air level holding this share of the candidates' pixels is air
WALLED = 0.75  # share of tissue in a pocket's rim that makes it an airway, not darker lung
VESSEL_SPOTS = 0.001  # share of bright pixels in a dark region's core that makes it lung
MIN_PEAK = 0.05  # a tissue peak's height, as a share of the highest one
ZERO_GRAY = 2.5  # gray (of 255) at or below which a smoothed pixel counts as clipped to 0
SOFT_SATURATED = 0.25  # share of tissue at 255 that says soft tissue lies above the window
GOOD_RESIDUAL_HU = 30.0  # three landmarks agreeing this well make a "good" estimate
ONE_WINDOW_IQR = 3.0 / 255.0  # soft tissue's gray varies less across the slices of one window

INDEX_COLUMNS = ("hu_lo", "hu_hi", "hu_fit", "hu_landmarks", "hu_residual")
FITS = ("slice", "volume", "set", "none")  # what hu_fit says the window came from


@dataclass(frozen=True)
class SliceLandmarks:
    """Where air, fat and soft tissue sit in one slice (gray in [0, 1]; None: not found)."""

    air: float | None
    fat: float | None
    soft: float | None
    flags: tuple[str, ...] = ()  # how they were found, or why not, e.g. "air_saturated"

    @property
    def names(self) -> str:
        found = [n for n in ("air", "fat", "soft") if getattr(self, n) is not None]
        return "+".join(found) or "none"


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


def measure_landmarks(gray: np.ndarray, source: str = "slice") -> SliceLandmarks:
    """Find air, fat and soft tissue in one slice of unknown window (see the module docstring).
    What is not found is None, with a flag saying why; only a malformed array raises."""
    g = _gray255(gray, source)
    inside = g[(g > 0.5) & (g < 254.5)]
    if inside.size < 100 or np.ptp(inside) < 10:
        return SliceLandmarks(None, None, None, ("flat_image",))
    split = _otsu(inside)
    smooth = ndi.median_filter(g, LOCAL)
    peaks, heights, saturated = _tissue_peaks(g, smooth > split)
    if not peaks:
        return SliceLandmarks(None, None, None, ("no_flat_tissue",))
    top = peaks[int(np.argmax(heights))]
    air, air_flag = _air_level(g, smooth, split, top)
    fat, soft, how = _assign(peaks, heights, air, saturated)
    flags = tuple(f for f in (air_flag, *how) if f)
    scale = lambda v: None if v is None else v / 255.0  # noqa: E731
    return SliceLandmarks(scale(air), scale(fat), scale(soft), flags)


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


# ---------------------------------------------------------------------------------------------
# Landmarks


def _gray255(gray: np.ndarray, source: str) -> np.ndarray:
    g = np.asarray(gray)
    if g.ndim != 2:
        raise DataError(f"{source}: array of shape {g.shape}; expected one 2-D slice")
    if g.dtype == np.uint8:
        return g.astype(np.float64)
    g = g.astype(np.float64)
    if not np.isfinite(g).all() or g.min() < 0.0 or g.max() > 1.0:
        raise DataError(
            f"{source}: values span [{np.nanmin(g):g}, {np.nanmax(g):g}]; expected uint8 or "
            f"floats in [0, 1]"
        )
    g = g * 255.0
    # An 8-bit slice divided by 255 (read_image_file) is brought back to whole grays exactly, so
    # it is measured as its uint8 original is (float32 leaves 5 as 5.0000002).
    whole = np.round(g)
    return whole if np.allclose(g, whole, rtol=0.0, atol=1e-3) else g


def _otsu(values: np.ndarray) -> float:
    """The gray that best splits `values` into two classes (Otsu), on 1-gray bins."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    between = (m0[-1] * w0 - m0) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(edges[int(np.argmax(between)) + 1])


def _tissue_peaks(g: np.ndarray, dense: np.ndarray) -> tuple[list[float], list[float], float]:
    """Peaks (gray 0..255) of the flat dense pixels' local means, their heights, and the share
    of dense pixels at 255."""
    mean = ndi.uniform_filter(g, LOCAL)
    std = np.sqrt(np.maximum(ndi.uniform_filter(g * g, LOCAL) - mean * mean, 0.0))
    core = ndi.binary_erosion(dense, iterations=2)
    saturated = float(np.mean(g[core] >= 254.5)) if core.any() else 0.0
    unclipped = (ndi.maximum_filter(g, LOCAL) < 254.5) & (ndi.minimum_filter(g, LOCAL) > 0.5)
    cand = core & unclipped
    if cand.sum() < 50:
        return [], [], saturated
    flat = cand & (std <= np.percentile(std[cand], 50))
    # 0.5-gray bins centred on whole and half grays, so a flat patch's peak is not shifted.
    hist, edges = np.histogram(mean[flat], bins=511, range=(-0.25, 255.25))
    smooth = ndi.gaussian_filter1d(hist.astype(np.float64), 2.0)
    idx, _ = find_peaks(smooth, height=MIN_PEAK * smooth.max(), prominence=0.03 * smooth.max())
    peaks, heights = [], []
    for i in idx:
        # A parabola through the peak bin and its neighbours places it between bins.
        a, b, c = smooth[max(i - 1, 0)], smooth[i], smooth[min(i + 1, len(smooth) - 1)]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        peaks.append(float((edges[i] + edges[i + 1]) / 2 + shift * (edges[1] - edges[0])))
        heights.append(float(smooth[i]))
    return peaks, heights, saturated


def _air_level(
    g: np.ndarray, smooth: np.ndarray, split: float, tissue: float
) -> tuple[float | None, str]:
    """Air's gray (0..255), or None and a flag saying why ("no_air", "air_saturated").

    `smooth` is the median-smoothed slice, `split` the gray between dark and tissue, `tissue` the
    gray of the highest tissue peak, which sets the scale of the margins.
    """
    # Gray ~0 is padding outside the scanner's field of view, or air below the window; JPEG
    # leaves it a few levels above 0. It is set aside, and only flags air as saturated.
    zero = smooth <= ZERO_GRAY
    dark = (smooth < split) & ~zero
    usable = ndi.binary_erosion(dark, iterations=2)
    total = int(usable.sum())
    labels, _ = ndi.label(dark)
    regions = []  # (label, gray level, core pixels, is lung)
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        core = usable[box] & (labels[box] == k)
        if core.sum() < MIN_AIR_PX:
            continue
        values = g[box][core]
        # Vessels are bright dots the median filter smoothed over: lung holds them, air does not.
        # Lung's histogram is skewed (vessels, partial volume), so its median is its level.
        if np.mean(values > split) >= VESSEL_SPOTS and core.sum() >= 0.05 * total:
            regions.append((k, float(np.median(values)), int(core.sum()), True))
        else:
            regions.append((k, _level(values), int(core.sum()), False))
    lungs = [r for r in regions if r[3]]
    lung = min((level for _, level, _, _ in lungs), default=math.inf)
    # Lung sits 100-300 HU above air; tissue - lung spans about 900 HU, so 5 % is ~45 HU.
    margin = max(2.0, 0.05 * (tissue - (lung if lungs else 0.0)))
    airy = [(lv, px) for _, lv, px, is_lung in regions if not is_lung and lv <= lung - margin]
    # The trachea and main bronchi often join the lungs in `dark`; below the lung's level they
    # stand apart, and unlike a darker patch of lung they are walled by tissue.
    seeds = np.isin(labels, [k for k, *_ in lungs]) & (smooth <= lung - margin)
    inner = ndi.binary_erosion(seeds)
    seed_labels, _ = ndi.label(seeds)
    for k, box in enumerate(ndi.find_objects(seed_labels), start=1):
        region = seed_labels[box] == k
        core = inner[box] & region
        if core.sum() >= MIN_AIR_PX and _walled(region, box, smooth, split):
            airy.append((_level(g[box][core]), int(core.sum())))
    if not airy:
        return None, "air_saturated" if zero.sum() >= MIN_AIR_PX else "no_air"
    # Air is air wherever it is (outside the body, trachea, bronchi): candidates within `margin`
    # of each other are one level. The darkest level with a quarter of the pixels is air; a
    # burnt-in arrow is darker but smaller, foam cushions and blankets are brighter.
    airy.sort()
    groups: list[list[tuple[float, int]]] = [[airy[0]]]
    for lv, px in airy[1:]:
        if lv - groups[-1][-1][0] <= margin:
            groups[-1].append((lv, px))
        else:
            groups.append([(lv, px)])
    sizes = [sum(px for _, px in grp) for grp in groups]
    best = next(
        (grp for grp, n in zip(groups, sizes, strict=True) if n >= AIR_SHARE * sum(sizes)),
        groups[int(np.argmax(sizes))],
    )
    level = _weighted_median([lv for lv, _ in best], [px for _, px in best])
    if level <= 2 * ZERO_GRAY:
        return None, "air_saturated"  # at 0 or barely above: clipped, not measured
    return level, ""


def _assign(
    peaks: list[float], heights: list[float], air: float | None, saturated: float
) -> tuple[float | None, float | None, tuple[str, ...]]:
    """Which tissue peaks are fat and soft tissue (gray 0..255), and flags on how it was told."""
    if air is None:
        return None, None, ()  # nothing to tell them apart by; the fit refuses without air
    best, best_score = None, 0.0
    for p, h in zip(peaks, heights, strict=True):
        if p <= air:
            continue
        # As fat, p has soft tissue 140/900 of (p - air) above it; as soft tissue, fat 140/1040
        # of it below. Real fat (-80..-130) and muscle (+30..+60) put the partner within 40 %.
        for partner, as_fat in (
            (p + _FAT_TO_SOFT * (p - air), True),
            (p - _SOFT_TO_FAT * (p - air), False),
        ):
            for q, hq in zip(peaks, heights, strict=True):
                if (
                    q != p
                    and abs(q - partner) <= 0.4 * abs(partner - p)
                    and min(h, hq) > best_score
                ):
                    best, best_score = ((p, q) if as_fat else (q, p)), min(h, hq)
    if best is not None:
        return best[0], best[1], ()
    top = peaks[int(np.argmax(heights))]
    # One tissue level only. It is fat when soft tissue would sit above the window's top and a
    # quarter of the tissue is at 255; else the chest's largest flat tissue (heart, great vessels,
    # muscle) is soft tissue. Either way lung HU hardly moves: next to air, taking fat for soft
    # tissue shifts -850 HU by ~20 HU (and -100 HU by 140).
    if top + _FAT_TO_SOFT * (top - air) >= 250.0 and saturated >= SOFT_SATURATED:
        return top, None, ("fat_by_saturation",)
    return None, top, ("soft_unpaired",)


def _level(values: np.ndarray) -> float:
    """A region's gray level: the mode of its histogram where it has pixels enough, so a blanket
    or the table inside an outside-air region does not pull it; else the median."""
    if values.size < 200:
        return float(np.median(values))
    hist, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    i = int(np.argmax(ndi.gaussian_filter1d(hist.astype(np.float64), 1.5)))
    near = (values >= edges[max(i - 3, 0)]) & (values < edges[min(i + 4, 256)])
    return float(np.median(values[near]))


def _walled(region: np.ndarray, box: tuple[slice, ...], smooth: np.ndarray, split: float) -> bool:
    """Whether a dark pocket's rim (2-6 px out) is mostly tissue, as around the trachea and
    bronchi, rather than lung; rim pixels at ~0 (padding) and off the image do not count."""
    pad = 8
    outer = tuple(slice(max(b.start - pad, 0), b.stop + pad) for b in box)
    local = np.zeros(smooth[outer].shape, dtype=bool)
    inset = tuple(
        slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True)
    )
    local[inset] = region
    rim = ndi.binary_dilation(local, iterations=6) & ~ndi.binary_dilation(local, iterations=2)
    near = smooth[outer][rim]
    near = near[near > ZERO_GRAY]
    return near.size == 0 or float(np.mean(near >= split)) >= WALLED


def _weighted_median(values: list[float], weights: list[int]) -> float:
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights, dtype=np.float64)[order]
    return float(v[np.searchsorted(np.cumsum(w), 0.5 * w.sum())])


# ---------------------------------------------------------------------------------------------
# Command line


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

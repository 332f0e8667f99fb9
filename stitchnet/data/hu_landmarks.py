"""Where air, fat and soft tissue sit in an 8-bit CT slice of unknown window: the landmarks that
`stitchnet.data.hu_scale` fits a window to.

How they are found (`measure_landmarks`):
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from stitchnet.data.errors import DataError

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

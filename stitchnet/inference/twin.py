"""The healthy twin: the scan as it would look if its lesions were healthy lung (issue 11, part 2).

StitchNet explains every pixel by four Beta "styles" (background, healthy lung, GGO,
consolidation) and stitches the image from the style of each pixel's class (paper Fig. 6). The
first twin took the healthy style's Beta mean at each lesion pixel. On the trained model it did
not look healthy: the style is decoded from latents that saw the lesion, so it kept the lesion's
density (GGO stayed grey, consolidation stayed pale) and only lost its texture. It also cost a
second decoder pass per slice.

The twin here keeps StitchNet's idea, one healthy appearance drawn into the lesion, but estimates
that appearance from the patient's own lung that the model calls healthy, never from the lesion:

    reference  voxels labelled healthy lung (1) whose HU is aerated (AERATED_HU, -1000..-500):
               vessels, airway walls and any chest wall that the lung mask takes in lie above
               -500 and drop out, so the reference is the parenchyma between the vessels
    level      L(p): the local mean HU of the reference around p, a Gaussian-weighted mean
               (normalised convolution, LEVEL_SIGMA_MM), pulled towards the scan's mean reference
               HU where the neighbourhood holds little reference (PRIOR_WEIGHT); inside a large
               lesion the level therefore comes from the nearest healthy lung, and from the
               scan's healthy lung as a whole where none is near
    haze       H(p): the lesion's own local mean HU, the same kind of mean over lesion voxels only
               (HAZE_SIGMA_MM): the smooth density that GGO or consolidation adds
    twin       at a lesion voxel, hu + (L - H), floored at air (AIR_HU); every other voxel is the
               scan's HU bit for bit

So the lesion's excess density is taken away and its fine detail (vessels running through GGO,
noise, air bronchograms) stays where it was. Because L is built from the healthy lung right
beside the lesion, the twin's level meets the untouched voxels at the lesion border without a
step, and no feathering (which would change voxels outside the lesion or leave a grey rim) is
needed. Consolidation has no vessel contrast left, so it becomes flat aerated lung with the
scan's noise. The means run on a grid of about CELL_MM cells and come back bilinearly, so the
twin costs a few milliseconds per slice with lesions; it needs only the scan and the labels (no
model pass). `segment` still offers it only for StitchNet-family models (scan.py's choice).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

HEALTHY = 1  # class id of healthy lung: its aerated voxels are the reference
LESION_MIN = 2  # class ids >= this are lesions (2 GGO, 3 consolidation)
# Gattinoni's CT bands: hyperinflated < -900, normally aerated -900..-500, poorly aerated
# -500..-100, non-aerated > -100 HU. The reference keeps healthy-labelled voxels up to -500.
AERATED_HU = (-1000.0, -500.0)
AIR_HU = -1000.0  # nothing in the body is less dense than air: the twin's floor
# Used only when a scan has no aerated healthy-labelled voxel at all: a textbook density of
# normally aerated lung at full inspiration.
NOMINAL_AERATED_HU = -850.0
LEVEL_SIGMA_MM = 15.0  # healthy level: lung density changes over centimetres (gravity gradient)
HAZE_SIGMA_MM = 5.0  # lesion haze: wider than the vessels seen through GGO (1-5 mm)
CELL_MM = 2.0  # the means run on cells about this wide, then come back bilinearly
PRIOR_WEIGHT = 0.02  # fraction of reference below which the scan-wide level takes over
TRUNCATE = 3.0  # the Gaussians stop at 3 sigma (weight < 1 %); the box a slice works on too


def has_styles(model: torch.nn.Module) -> bool:
    """Whether `model` is StitchNet-family (StitchNet, the ladder ablation, stitchnet-skip)."""
    return hasattr(model, "outputs") and getattr(model, "segments", True)


def reference_mask(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Aerated voxels labelled healthy lung: the healthy reference, same shape as `hu`."""
    lo, hi = AERATED_HU
    return (labels == HEALTHY) & (hu >= lo) & (hu <= hi)


def healthy_twin_slice(
    hu: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    prior_hu: float | None = None,
) -> np.ndarray:
    """One slice of the healthy twin in HU.

    Args:
        hu: (H, W) the slice in HU.
        labels: (H, W) class ids; voxels >= LESION_MIN are replaced, the rest kept bit for bit.
        spacing: (row, column) pixel size in mm; it sets the widths of the two means.
        prior_hu: the level where no healthy lung is near (default: this slice's mean
            reference HU, else NOMINAL_AERATED_HU); `twin_volume` passes the scan's.
    Returns:
        (H, W) float32: `hu` outside the lesions; inside, the haze made the healthy level
        (`_remove_haze`), never below air.
    """
    hu = np.asarray(hu, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.shape != hu.shape or hu.ndim != 2:
        raise ValueError(
            f"healthy_twin_slice: hu {hu.shape} and labels {labels.shape} must be the same (H, W)"
        )
    if min(spacing) <= 0:
        raise ValueError(f"healthy_twin_slice: spacing must be positive mm, got {spacing}")
    out = hu.copy()
    lesion = labels >= LESION_MIN
    if not lesion.any():
        return out
    ref = reference_mask(hu, labels)
    if prior_hu is None:
        prior_hu = float(hu[ref].mean()) if ref.any() else NOMINAL_AERATED_HU
    # Work on the lesions' box grown by the level's reach: reference farther away has no weight.
    rows, cols = np.nonzero(lesion.any(axis=1))[0], np.nonzero(lesion.any(axis=0))[0]
    reach = [int(np.ceil(TRUNCATE * LEVEL_SIGMA_MM / sp)) for sp in spacing]  # px (rows, cols)
    y0, y1 = max(0, rows[0] - reach[0]), min(hu.shape[0], rows[-1] + 1 + reach[0])
    x0, x1 = max(0, cols[0] - reach[1]), min(hu.shape[1], cols[-1] + 1 + reach[1])
    h, les, rf = hu[y0:y1, x0:x1], lesion[y0:y1, x0:x1], ref[y0:y1, x0:x1]
    cells = tuple(max(1, round(CELL_MM / sp)) for sp in spacing)  # px per cell (rows, cols)
    cell_mm = [c * sp for c, sp in zip(cells, spacing, strict=True)]
    stack = np.stack([np.where(rf, h, 0.0), rf, np.where(les, h, 0.0), les]).astype(np.float32)
    coarse = _block_means(stack, cells)  # (4, h, w): sums and counts per cell, / cell area
    # Normalised convolution: the Gaussian mean of HU over a mask is smooth(sum) / smooth(count).
    ref_sum, ref_n = _smooth(coarse[:2], [LEVEL_SIGMA_MM / m for m in cell_mm])
    les_sum, les_n = _smooth(coarse[2:], [HAZE_SIGMA_MM / m for m in cell_mm])
    level = (ref_sum + PRIOR_WEIGHT * prior_hu) / (ref_n + PRIOR_WEIGHT)  # (h, w) HU
    haze = les_sum / np.maximum(les_n, 1e-6)  # only read near lesions, where les_n > 0
    level_px, haze_px = _upsample(np.stack([level, haze]), cells, h.shape)  # 2 x (H', W')
    out[y0:y1, x0:x1][les] = _remove_haze(h[les], haze_px[les], level_px[les])
    return out


def _remove_haze(hu: np.ndarray, haze: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Lesion voxels with their local haze turned into the local healthy level (all (n,) HU).

    Denser than the haze (vessels, walls): the excess rides on the level unchanged. Less dense
    (air bronchi, the aerated gaps between patches, the lesion's border): the voxel's tissue,
    hu - AIR_HU, is scaled by the ratio of healthy to lesion tissue, so it stays between air and
    the level instead of falling below air. The two meet at hu == haze, where both give level.
    """
    excess = hu - haze
    ratio = (level - AIR_HU) / np.maximum(haze - AIR_HU, 1.0)
    lighter = AIR_HU + (hu - AIR_HU) * ratio
    return np.maximum(np.where(excess >= 0, level + excess, lighter), AIR_HU).astype(np.float32)


def twin_volume(
    hu: np.ndarray, labels: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """The healthy twin of a whole scan in HU: (Z, Y, X) float32, lesions made healthy.

    Args:
        hu: (Z, Y, X) the scan in HU (`Volume.hu`).
        labels: (Z, Y, X) the lung-bounded class ids; voxels >= LESION_MIN are replaced.
        spacing: (Y, X) pixel size in mm (`Volume.spacing[1:]`).
    Every slice is done alone (`healthy_twin_slice`); where a slice has no healthy lung near a
    lesion, the scan's mean aerated healthy HU is the level. Voxels without lesion keep `hu`
    bit for bit.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if labels.shape != hu.shape or hu.ndim != 3:
        raise ValueError(
            f"twin_volume: labels {labels.shape} for a scan of shape {hu.shape}; expected the "
            f"same (Z, Y, X)"
        )
    lesion_slices = np.flatnonzero((labels >= LESION_MIN).any(axis=(1, 2)))
    if len(lesion_slices) == 0:
        return hu.copy()
    ref = reference_mask(hu, labels)
    prior = float(hu[ref].mean()) if ref.any() else NOMINAL_AERATED_HU
    out = hu.copy()
    for k in lesion_slices:
        out[k] = healthy_twin_slice(hu[k], labels[k], spacing, prior)
    return out


def _block_means(stack: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Means over cells of cy x cx pixels, zero-padded at the far edges: (C, H, W) ->
    (C, ceil(H / cy), ceil(W / cx)). A padded pixel counts as empty (no reference, no lesion)."""
    cy, cx = cells
    h, w = stack.shape[1:]
    hp, wp = -(-h // cy) * cy, -(-w // cx) * cx
    if (hp, wp) != (h, w):
        stack = np.pad(stack, ((0, 0), (0, hp - h), (0, wp - w)))
    # Strided adds rather than a reshape-sum over a short last axis: several times faster.
    cols = sum(stack[:, :, i::cx] for i in range(cx))  # (C, Hp, w)
    return sum(cols[:, i::cy] for i in range(cy)) / (cy * cx)  # (C, h, w)


def _smooth(pair: np.ndarray, sigma_cells: list[float]) -> np.ndarray:
    """Gaussian blur of each map of (2, h, w) over its two grid axes. Outside the grid counts as
    empty (zeros), not as a mirror of its edge, so the ratio of the two stays a mean."""
    return ndimage.gaussian_filter(pair, [0.0, *sigma_cells], mode="constant", truncate=TRUNCATE)


def _upsample(coarse: np.ndarray, cells: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Cell values back to pixels, bilinearly between cell centres: (C, h, w) -> (C, *shape)."""
    t = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None]  # (1, C, h, w)
    size = (coarse.shape[1] * cells[0], coarse.shape[2] * cells[1])
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0]
    return up[:, : shape[0], : shape[1]].numpy()

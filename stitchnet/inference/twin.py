# Kept whole (~420 lines): the Beta-style twin and the local-mean twin share the working box,
# the block means and the smoothing at the end of the file, and are compared side by side.
"""The healthy twin: the scan as it would look if its lesions were healthy lung.

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

The style twin (`segment --twin style`, `style_twin_volume`) puts the model back in charge of
the level, without letting it see the lesion. Each slice with lesions goes through the model a
second time with every input pixel a lesion reaches set to the slice's mean aerated healthy
intensity (`style_inputs`, `healthy_style`: one pass, posterior means). Its healthy style (the
Beta mean of class 1) comes back onto the slice through the crop box and the window's inverse
(`style_to_hu`). The hidden input still reads a little denser than the lung around it, so the
style is shifted by the local mean of (hu - style) over the reference (the same normalised
convolution, LEVEL_SIGMA_MM, PRIOR_WEIGHT towards the slice's mean offset); the level is that
shifted style and the voxel is `_remove_haze(hu, H, level)` as above, so the fine detail is the
scan's and only the smooth level comes from the model. Voxels without lesion keep their HU.

Measured with `python benchmarks/twin_hidden.py` (shipped stitchnet-skip, 128 px, the 50
bundled labelled slices; benchmarks/README.md): on healthy lung hidden under another slice's
lesion shape, the error of the smoothed twin against the truth is 91.4 / 70.0 HU (mean / median
over 48 slices, bias -2.6) for the level twin and 103.2 / 75.2 (bias +0.1) for the style twin.
On the real lesions (healthy reference -849 HU) GGO / consolidation go from -667 / -323 HU to
-814 / -748 (level) and -842 / -780 (style). Without the hiding, the style stayed near the
lesion (GGO -619, consolidation -320 in the experiment that led here), and without the shift it
came out 67 HU too dense on hidden healthy lung. The level twin stays the default: it is closer
to the truth on hidden healthy lung and needs no model pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from stitchnet.data.images import hu_window
from stitchnet.data.preprocess import resize_image
from stitchnet.inference.uncertainty import paste_map

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
TWIN_MODES = ("level", "style")  # twin_volume (the default) and style_twin_volume


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
    hu, labels = np.asarray(hu, dtype=np.float32), np.asarray(labels)
    _check_slice("healthy_twin_slice", spacing, hu=hu, labels=labels)
    out = hu.copy()
    lesion = labels >= LESION_MIN
    if not lesion.any():
        return out
    ref = reference_mask(hu, labels)
    if prior_hu is None:
        prior_hu = float(hu[ref].mean()) if ref.any() else NOMINAL_AERATED_HU
    y0, y1, x0, x1 = _work_box(lesion, spacing)
    h, les, rf = hu[y0:y1, x0:x1], lesion[y0:y1, x0:x1], ref[y0:y1, x0:x1]
    level_px, haze_px = _local_means(h, rf, h, les, spacing, prior_hu)  # 2 x (H', W') HU
    out[y0:y1, x0:x1][les] = _remove_haze(h[les], haze_px[les], level_px[les])
    return out


def _local_means(
    value: np.ndarray,
    ref: np.ndarray,
    hu: np.ndarray,
    lesion: np.ndarray,
    spacing: tuple[float, float],
    prior: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The two local means both twins need, on one work box, each (H', W') at the pixels:
    `value` averaged over the reference `ref` (LEVEL_SIGMA_MM), pulled towards `prior` where
    the neighbourhood holds little reference (PRIOR_WEIGHT); and the haze, `hu` averaged over
    `lesion` (HAZE_SIGMA_MM), read only near lesions, where it has weight."""
    cells = tuple(max(1, round(CELL_MM / sp)) for sp in spacing)  # px per cell (rows, cols)
    cell_mm = [c * sp for c, sp in zip(cells, spacing, strict=True)]
    stack = np.stack([np.where(ref, value, 0.0), ref, np.where(lesion, hu, 0.0), lesion])
    coarse = _block_means(stack.astype(np.float32), cells)  # (4, h, w): per-cell sums / area
    # Normalised convolution: the Gaussian mean over a mask is smooth(sum) / smooth(count).
    ref_sum, ref_n = _smooth(coarse[:2], [LEVEL_SIGMA_MM / m for m in cell_mm])
    les_sum, les_n = _smooth(coarse[2:], [HAZE_SIGMA_MM / m for m in cell_mm])
    mean = (ref_sum + PRIOR_WEIGHT * prior) / (ref_n + PRIOR_WEIGHT)  # (h, w)
    haze = les_sum / np.maximum(les_n, 1e-6)
    mean_px, haze_px = _upsample(np.stack([mean, haze]), cells, hu.shape)
    return mean_px, haze_px


def _check_slice(caller: str, spacing: tuple[float, float], **maps: np.ndarray) -> None:
    """ValueError unless every map is the same (H, W) and the spacing is positive mm."""
    shapes = {name: m.shape for name, m in maps.items()}
    if len(set(shapes.values())) != 1 or next(iter(maps.values())).ndim != 2:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{caller}: {described} must be the same (H, W)")
    if min(spacing) <= 0:
        raise ValueError(f"{caller}: spacing must be positive mm, got {spacing}")


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


def twin_mode(value: bool | str | None) -> str | None:
    """The twin asked for as one of TWIN_MODES, or None for no twin; True means "level"."""
    if value is None or value is False:
        return None
    if value is True:
        return "level"
    if isinstance(value, str) and value in TWIN_MODES:
        return value
    raise ValueError(
        f"healthy twin mode {value!r}; expected one of {', '.join(TWIN_MODES)} (or True / False)"
    )


def style_inputs(
    hu: np.ndarray,
    labels: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    window: tuple[float, float],
) -> tuple[np.ndarray, float]:
    """What to hide in one slice's model input, and the value that hides it.

    Args:
        hu: (H, W) the slice in HU.
        labels: (H, W) class ids: voxels >= LESION_MIN are hidden, the aerated healthy ones
            (`reference_mask`) give the fill.
        box: the crop (y0, y1, x0, x1) the model input was cut from.
        size: the model input's side S.
        window: the HU window that made the input ([lo, hi] -> [0, 1]).
    Returns:
        hide: (S, S) bool, every input pixel a lesion voxel reaches once the crop is resized the
            way the image was (a mixed pixel would carry the lesion's density in);
        fill: the slice's mean aerated healthy HU in window units (NOMINAL_AERATED_HU if none).
    """
    y0, y1, x0, x1 = (int(v) for v in box)
    lesion = (np.asarray(labels)[y0:y1, x0:x1] >= LESION_MIN).astype(np.float32)
    hide = resize_image(lesion, size)[0].numpy() > 0  # (S, S)
    ref = reference_mask(hu, labels)
    level = float(np.asarray(hu)[ref].mean()) if ref.any() else NOMINAL_AERATED_HU
    return hide, float(hu_window(np.float32(level), window))


@torch.inference_mode()
def healthy_style(
    model: torch.nn.Module, x: torch.Tensor, hide: np.ndarray, fill: np.ndarray
) -> torch.Tensor:
    """StitchNet's healthy style of slices whose lesions are hidden: one pass, posterior means.

    Args:
        model: a StitchNet-family model (`has_styles`) in eval mode.
        x: (b, 1, S, S) pre-processed model inputs in [0, 1].
        hide: (b, S, S) bool, the pixels to hide (`style_inputs`).
        fill: (b,) the value each slice's hidden pixels get, in [0, 1].
    Returns:
        (b, S, S) float32 on the CPU: the Beta mean of the healthy style (class 1), in [0, 1].
    """
    if not has_styles(model):
        raise TypeError(f"{type(model).__name__} has no styles; the style twin needs StitchNet")
    b, _, size, _ = x.shape
    hide_t = torch.as_tensor(np.asarray(hide), dtype=torch.bool, device=x.device)
    if hide_t.shape != (b, size, size):
        raise ValueError(f"healthy_style: hide {tuple(hide_t.shape)} for inputs {tuple(x.shape)}")
    fill_t = torch.as_tensor(np.asarray(fill, dtype=np.float32), device=x.device)
    filled = torch.where(hide_t[:, None], fill_t.view(b, 1, 1, 1).to(x.dtype), x)  # (b,1,S,S)
    out = model.outputs(filled, sample=False)
    return out["styles"][:, 1].float().cpu()  # (b, 4, S, S) -> (b, S, S)


def style_to_hu(
    style: np.ndarray | torch.Tensor,
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    window: tuple[float, float],
) -> np.ndarray:
    """One slice's (S, S) style in [0, 1] back on the slice in HU: (H, W) float32, bilinear into
    the crop `box`, through the window's inverse (hu = lo + (hi - lo) * v); NaN outside the box,
    where the model was not asked."""
    lo, hi = float(window[0]), float(window[1])
    y0, y1, x0, x1 = (int(v) for v in box)
    pasted = paste_map(style, box, shape)  # (H, W) in [0, 1], 0 outside the box
    out = np.full(shape, np.nan, dtype=np.float32)
    out[y0:y1, x0:x1] = lo + (hi - lo) * pasted[y0:y1, x0:x1]
    return out


def style_twin_slice(
    hu: np.ndarray,
    labels: np.ndarray,
    style_hu: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    prior_offset: float | None = None,
) -> np.ndarray:
    """One slice of the style twin in HU: the lesion's haze made the model's healthy style,
    calibrated on the slice's own healthy lung.

    Args:
        hu: (H, W) the slice in HU.
        labels: (H, W) class ids; voxels >= LESION_MIN are replaced, the rest kept bit for bit.
        style_hu: (H, W) the healthy style in HU (`style_to_hu`), NaN where there is none; every
            lesion voxel needs one.
        spacing: (row, column) pixel size in mm.
        prior_offset: the style's offset (HU to add) where no reference is near (default: this
            slice's mean of hu - style over the reference, else 0); `style_twin_volume` passes
            the scan's when the slice has no reference.
    Returns:
        (H, W) float32: `hu` outside the lesions; inside, `_remove_haze` towards the level
        style + offset, where the offset is the local mean of (hu - style) over the reference.
    """
    hu, labels = np.asarray(hu, dtype=np.float32), np.asarray(labels)
    style_hu = np.asarray(style_hu, dtype=np.float32)
    _check_slice("style_twin_slice", spacing, hu=hu, labels=labels, style=style_hu)
    out = hu.copy()
    lesion = labels >= LESION_MIN
    if not lesion.any():
        return out
    known = np.isfinite(style_hu)
    if not known[lesion].all():
        raise ValueError(
            f"style_twin_slice: {int((lesion & ~known).sum())} lesion voxels have no style "
            f"(NaN); the style must cover every lesion voxel (its crop box holds the lesions)"
        )
    ref = reference_mask(hu, labels) & known
    if prior_offset is None:
        prior_offset = float((hu - style_hu)[ref].mean()) if ref.any() else 0.0
    y0, y1, x0, x1 = _work_box(lesion, spacing)
    h, s = hu[y0:y1, x0:x1], style_hu[y0:y1, x0:x1]
    les, rf = lesion[y0:y1, x0:x1], ref[y0:y1, x0:x1]
    offset_px, haze_px = _local_means(h - s, rf, h, les, spacing, prior_offset)  # (H', W') HU
    level = s[les] + offset_px[les]  # (n,) HU: the style, shifted onto this patient's lung
    out[y0:y1, x0:x1][les] = _remove_haze(h[les], haze_px[les], level)
    return out


def style_twin_volume(
    hu: np.ndarray,
    labels: np.ndarray,
    styles: Mapping[int, np.ndarray | torch.Tensor],
    boxes: Sequence[tuple[int, int, int, int]],
    window: tuple[float, float],
    spacing: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """The style twin of a whole scan in HU: (Z, Y, X) float32, lesions made healthy.

    Args:
        hu: (Z, Y, X) the scan in HU.
        labels: (Z, Y, X) the final class ids; voxels >= LESION_MIN are replaced.
        styles: display slice z -> its (S, S) healthy style in [0, 1] (`healthy_style`); every
            slice with a lesion needs one.
        boxes: per slice, the crop (y0, y1, x0, x1) the style was made on.
        window: the HU window of the model input.
        spacing: (Y, X) pixel size in mm.
    A slice without reference in its box takes the scan's mean offset (0 if no slice has any).
    """
    hu = np.asarray(hu, dtype=np.float32)
    if labels.shape != hu.shape or hu.ndim != 3 or len(boxes) != hu.shape[0]:
        raise ValueError(
            f"style_twin_volume: labels {labels.shape} and {len(boxes)} boxes for a scan of "
            f"shape {hu.shape}; expected the same (Z, Y, X) and one box per slice"
        )
    lesion_slices = np.flatnonzero((labels >= LESION_MIN).any(axis=(1, 2)))
    missing = [int(z) for z in lesion_slices if int(z) not in styles]
    if missing:
        raise ValueError(f"style_twin_volume: no style for lesion slices {missing[:10]}")
    out = hu.copy()
    pasted, has_ref, sums, counts = {}, {}, 0.0, 0
    for z in lesion_slices:
        pasted[z] = style_to_hu(styles[int(z)], boxes[z], hu.shape[1:], window)
        ref = reference_mask(hu[z], labels[z]) & np.isfinite(pasted[z])
        sums += float((hu[z] - pasted[z])[ref].sum())
        counts += int(ref.sum())
        has_ref[z] = bool(ref.any())
    scan_offset = sums / counts if counts else 0.0
    for z in lesion_slices:
        prior = None if has_ref[z] else scan_offset
        out[z] = style_twin_slice(hu[z], labels[z], pasted.pop(z), spacing, prior)
    return out


def _work_box(lesion: np.ndarray, spacing: tuple[float, float]) -> tuple[int, int, int, int]:
    """The lesions' box (y0, y1, x0, x1) grown by the level's reach: reference farther away has
    no weight in the level, so a slice's twin works on this box alone."""
    rows, cols = np.nonzero(lesion.any(axis=1))[0], np.nonzero(lesion.any(axis=0))[0]
    reach = [int(np.ceil(TRUNCATE * LEVEL_SIGMA_MM / sp)) for sp in spacing]  # px (rows, cols)
    y0, y1 = max(0, rows[0] - reach[0]), min(lesion.shape[0], rows[-1] + 1 + reach[0])
    x0, x1 = max(0, cols[0] - reach[1]), min(lesion.shape[1], cols[-1] + 1 + reach[1])
    return int(y0), int(y1), int(x0), int(x1)


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

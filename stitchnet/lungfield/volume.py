"""The lung field of a whole scan: per-slice lung fields cleaned in 3-D, split into two lungs.

The shipped 2-D lung segmenter (net.py) sees one slice at a time, so it also marks
air-filled things that look like lung on that slice alone: the air around the patient, the air a
CT table's cradle encloses under the patient's back, bowel gas, the trachea. Two rules take them
out (`lung_field`):

1. Lungs lie inside the patient's body (body.py `body_mask`: per slice the patient's soft
   tissue, the table cut off, holes filled), never in the air around or under it.
2. In 3-D the lungs are the connected components of the field holding the most air
   (HU < AIR_BELOW_HU) inside the body (`keep_lungs`): the one with the most air, and a second
   beside it (at least SECOND_LUNG_RATIO of its size, its centre within the first's levels);
   each at least MIN_AIR_FRACTION air. Bowel gas in the abdomen or pelvis lies below the lungs'
   levels, specks are small; both are dropped, and `LungField` says how much each rule dropped.

Conventions: arrays are (Z, Y, X) in the display orientation of data/volumes.py, whose
`DISPLAY_AXCODES` names each axis by the patient direction its index grows towards. The axis coded
"L" runs from the patient's right to the patient's left (today the rows, axis 1: the training
slices are transposed relative to radiological display), and the left-right split below reads
that axis from `DISPLAY_AXCODES` rather than assuming one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from stitchnet.data.errors import DataError
from stitchnet.data.volumes import DISPLAY_AXCODES
from stitchnet.lungfield.body import fill_holes

# A second 3-D component is kept as the other lung when it holds at least this share of the
# first one's voxels: the left lung is ~45 % of both lungs, so ~0.8 of the right one, while
# bowel gas or a trachea stub that survives the 2-D cleaning is far smaller.
SECOND_LUNG_RATIO = 0.15
# ... and at least this share of its voxels is air-like: an aerated lung is mostly air even with
# lesions in it (GGO lies at -700..-300 HU), a field piece on the heart or the liver is not.
MIN_AIR_FRACTION = 0.1
# Fewer lung voxels than this share of the body's means the segmenter found no lung at all: a
# chest CT's lungs fill ~10-30 % of the patient's body on its slices.
MIN_LUNG_FRACTION = 0.002
# Air (and fat-free lung) lies below this; soft tissue, fat and the chest wall lie above it.
AIR_BELOW_HU = -400.0
# An end slice of a lung whose field is airless and fatty (median below this) is chest wall or
# shoulder, not lung: lung tissue is never fat, and consolidated lung lies at ~+20..+50 HU.
FAT_CEILING_HU = -30.0
RIGHT, LEFT = 1, 2  # lung.nii.gz values: the patient's right lung, the patient's left lung
LR_AXIS = DISPLAY_AXCODES.index("L")  # display axis whose index grows towards the patient's left


class NoLungError(DataError):
    """The scan has no lung field the segmenter can find (not a chest CT, or a wrong window)."""


def outside_air(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(Y, X) bool: the air around the patient in one slice, which is never lung.

    The lung segmenter sees one windowed slice, and the air around the patient (and the scanner's
    padding, which the window maps to black as well) looks like lung to it. Air around the patient
    is the air connected to the slice's border or to the padding; the lungs are air enclosed by
    the chest wall. A lung that touches the slice's own border (a tightly cropped slice) counts as
    outside on that slice: its other slices still hold it.
    """
    out = (hu < AIR_BELOW_HU) | ~body  # (Y, X)
    labels, _ = ndimage.label(out)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[~body]])
    touching = np.unique(border)
    return np.isin(labels, touching[touching > 0])


@dataclass(frozen=True)
class LungField:
    """A scan's lungs, and how much of the segmenter's field was left out as not lung."""

    mask: np.ndarray  # (Z, Y, X) bool: the lungs
    outside_voxels: int  # field voxels outside the patient's body (air around or under it)
    dropped_voxels: int  # field voxels inside the body in no lung (bowel gas, specks)

    def note(self, voxel_ml: float, min_ml: float = 1.0) -> str | None:
        """One line for a report when at least `min_ml` of field was left out, else None."""
        outside, dropped = self.outside_voxels * voxel_ml, self.dropped_voxels * voxel_ml
        if outside + dropped < min_ml:
            return None
        return (
            f"lung field: left out {outside:.1f} mL the lung segmenter marked outside the "
            f"patient's body (air around or under the patient, the table) and {dropped:.1f} mL "
            f"inside it that is not one of the two lungs (bowel gas, pieces below the lungs)"
        )


def component_counts(labels: np.ndarray, n: int, where: np.ndarray | None = None) -> np.ndarray:
    """(Z, n + 1) voxel counts of labels 0..n on each axial plane of a label volume, only
    where `where` (a (Z, Y, X) bool) is True if given. Counted a plane at a time: one bincount of
    the whole volume first copies it to 8-byte integers, ~4x slower."""
    counts = np.zeros((labels.shape[0], n + 1), dtype=np.int64)
    for z, plane in enumerate(labels):
        values = plane if where is None else plane[where[z]]
        counts[z] = np.bincount(values.ravel(), minlength=n + 1)
    return counts


def keep_lungs(mask: np.ndarray, hu: np.ndarray | None = None) -> np.ndarray:
    """(Z, Y, X) bool: the lungs among the 3-D components of a lung-candidate mask.

    Only components at least MIN_AIR_FRACTION air-like (HU < AIR_BELOW_HU) can be lung (all of
    them when `hu` is None). The first lung is the one holding the most air-like voxels (the
    most voxels without `hu`). The other lung is the largest other one beside it: at least
    SECOND_LUNG_RATIO of the first's voxels and its centre (mean axial slice) within the axial
    slices the first spans. Lungs that touch are one component; then one is kept. Gas in the
    bowel below the lungs has its centre below them. No component aerated enough: no lung.
    """
    labels, n = ndimage.label(mask)  # 6-connected in 3-D
    if n == 0:
        return mask.copy()
    counts = component_counts(labels, n)[:, 1:]  # (Z, n): voxels of component k + 1 per slice
    sizes = counts.sum(axis=0)  # (n,)
    air = sizes if hu is None else component_counts(labels, n, hu < AIR_BELOW_HU)[:, 1:].sum(0)
    aerated = air >= MIN_AIR_FRACTION * sizes  # (n,)
    if not aerated.any():
        return np.zeros_like(mask)  # field only on tissue (the body's rim on an abdomen slice)
    first = int(np.argmax(np.where(aerated, air, -1)))
    centre = (counts * np.arange(labels.shape[0])[:, None]).sum(axis=0) / sizes  # (n,) slice
    levels = np.flatnonzero(counts[:, first])  # the slices the first lung spans
    beside = (
        (sizes >= SECOND_LUNG_RATIO * sizes[first])
        & aerated
        & (centre >= levels[0])
        & (centre <= levels[-1])
    )
    beside[first] = False
    keep = [first + 1]
    if beside.any():
        keep.append(int(np.argmax(np.where(beside, sizes, -1))) + 1)
    return np.isin(labels, keep)


def trim_fatty_ends(mask: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: each 3-D lung without its airless, fatty end slices.

    From each lung's top and bottom slice inwards, a slice is dropped while its part of the lung
    is less than MIN_AIR_FRACTION air-like and its median HU is below FAT_CEILING_HU: at the
    apex of a coarse or whole-body scan the field runs on into the shoulder's fat and muscle.
    Only ends are trimmed, and only fatty ones, so a consolidated base (airless but at soft-tissue
    density) and every slice between aerated ones stay lung.
    """
    labels, n = ndimage.label(mask)
    out = mask.copy()
    for k in range(1, n + 1):
        lung = labels == k
        levels = list(np.flatnonzero(lung.any(axis=(1, 2))))
        for end in (0, -1):
            while len(levels) > 1:
                z = levels[end]
                values = hu[z][lung[z]]
                airless = np.mean(values < AIR_BELOW_HU) < MIN_AIR_FRACTION
                if not (airless and np.median(values) < FAT_CEILING_HU):
                    break
                out[z] &= ~lung[z]
                levels.pop(end)
    return out


def lung_mask_3d(
    fields: np.ndarray, body: np.ndarray, source: str = "scan", hu: np.ndarray | None = None
) -> np.ndarray:
    """Clean per-slice lung fields into the scan's lung mask.

    Steps: intersect with the body; fill holes in each slice (a dense consolidation or a vessel
    the segmenter left out is still lung); keep the lungs among the 3-D components
    (`keep_lungs`); fill holes in 3-D; with `hu`, trim airless fatty end slices
    (`trim_fatty_ends`).

    Args:
        fields: (Z, Y, X) 0/1 per-slice lung fields.
        body: (Z, Y, X) bool, True inside the patient's body (`body_mask`; the field of view
            alone when the HU are not at hand).
        source: the scan's path, for the error message.
        hu: (Z, Y, X) HU; with them the first lung is the component holding the most air.
    Returns:
        (Z, Y, X) bool lung mask.
    Raises:
        NoLungError: when the cleaned lung holds fewer than MIN_LUNG_FRACTION of the body voxels.
    """
    if (
        fields.shape != body.shape
        or fields.ndim != 3
        or (hu is not None and hu.shape != body.shape)
    ):
        raise ValueError(
            f"lung_mask_3d: fields {fields.shape}, body {body.shape} and hu "
            f"{None if hu is None else hu.shape}; expected one (Z, Y, X)"
        )
    mask = (fields > 0) & body
    for z in range(mask.shape[0]):
        mask[z] = fill_holes(mask[z])  # (Y, X)
    if mask.any():
        mask = fill_holes(keep_lungs(mask, hu)) & body
        if hu is not None:
            mask = trim_fatty_ends(mask, hu)
    found, needed = int(mask.sum()), MIN_LUNG_FRACTION * int(body.sum())
    if found == 0 or found < needed:
        raise NoLungError(
            f"{source}: no lung found ({found} lung voxels; expected at least {int(needed) + 1}, "
            f"{MIN_LUNG_FRACTION:.1%} of the {int(body.sum())} voxels inside the body). "
            f"Is it a chest CT in Hounsfield units?"
        )
    return mask


def lung_field(
    fields: np.ndarray,
    hu: np.ndarray,
    body: np.ndarray,
    source: str = "scan",
    outside_voxels: int = 0,
) -> LungField:
    """The scan's lungs from per-slice lung fields, inside the patient's body.

    Args:
        fields: (Z, Y, X) 0/1 per-slice lung fields, already cut to `body` (the crop boxes need
            them cut); `outside_voxels` says how many field voxels the cut took away.
        hu: (Z, Y, X) HU.
        body: (Z, Y, X) bool, the patient's body (`stitchnet.lungfield.body.body_mask`).
        source: the scan's path, for the error message.
    Raises:
        NoLungError: no lung (`lung_mask_3d`).
    """
    mask = lung_mask_3d(fields, body, source, hu)
    dropped = int(np.count_nonzero((fields > 0) & body & ~mask))
    return LungField(mask, int(outside_voxels), dropped)


def split_lungs(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool lung mask -> (Z, Y, X) uint8: 0 outside, RIGHT (1), LEFT (2).

    Two 3-D components of lung size (the smaller at least SECOND_LUNG_RATIO of the larger): each
    is one lung, named by which side of the midline its centre lies on.
    Otherwise (the lungs touch: one component): split at the midline. The midline is the plane
    halfway between the lung field's extreme positions along the left-right axis (LR_AXIS) over
    the whole scan; positions at or beyond it towards the patient's left are the left lung.
    """
    sides = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return sides
    other = tuple(a for a in range(3) if a != LR_AXIS)
    pos = np.nonzero(mask.any(axis=other))[0]  # indices along LR_AXIS holding lung
    midline = (pos.min() + pos.max() + 1) / 2.0  # in pixel-edge units: index i spans [i, i + 1)
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=3)[1:3]
    if n == 2 and sizes.min() >= SECOND_LUNG_RATIO * sizes.max():  # two lungs, not a fragment
        for k in (1, 2):
            centre = np.nonzero(labels == k)[LR_AXIS].mean() + 0.5  # pixel-edge units
            sides[labels == k] = LEFT if centre >= midline else RIGHT
        if len(np.unique(sides[mask])) == 2:
            return sides
    shape = [1, 1, 1]
    shape[LR_AXIS] = mask.shape[LR_AXIS]
    centres = (np.arange(mask.shape[LR_AXIS]) + 0.5).reshape(shape)  # broadcast along LR_AXIS
    sides = np.where(centres >= midline, LEFT, RIGHT).astype(np.uint8) * mask  # (Z, Y, X)
    return sides.astype(np.uint8)

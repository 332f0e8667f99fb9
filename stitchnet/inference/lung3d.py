"""The lung field of a whole scan: per-slice lung fields cleaned in 3-D, split into two lungs.

The shipped 2-D lung segmenter (data/lungfield.py) sees one slice at a time, so it also marks
air-filled things that look like lung on that slice alone: bowel gas below the diaphragm, air
outside the body, the trachea. In 3-D the lungs are the largest connected air-like structures
of a chest scan, so keeping the largest components removes most of the rest.

Conventions: arrays are (Z, Y, X) in the display orientation of data/volumes.py, whose
`DISPLAY_AXCODES` names each axis by the patient direction its index grows towards. The axis coded
"L" runs from the patient's right to the patient's left (today the rows, axis 1: the training
slices are transposed relative to radiological display), and the left-right split below reads
that axis from `DISPLAY_AXCODES` rather than assuming one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stitchnet.data.sources import DataError
from stitchnet.data.volumes import DISPLAY_AXCODES

# The second largest 3-D component is kept as the other lung when it holds at least this share of
# the largest one's voxels: the left lung is ~45 % of both lungs, so ~0.8 of the right one, while
# bowel gas or a trachea stub that survives the 2-D cleaning is far smaller.
SECOND_LUNG_RATIO = 0.15
# Fewer lung voxels than this share of the body's means the segmenter found no lung at all: a
# chest CT's lungs fill ~10-30 % of the field of view.
MIN_LUNG_FRACTION = 0.002
# Air (and fat-free lung) lies below this; soft tissue, fat and the chest wall lie above it.
AIR_BELOW_HU = -400.0
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


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.binary_fill_holes` in one labelling pass: the background components that
    do not touch the array's faces are holes. scipy's version dilates step by step and costs ~30x
    more on a 512 x 512 slice.

    Only the mask's bounding box is labelled: everything outside it is background joined to the
    array's faces, so a background component inside the box is a hole exactly when it touches
    none of the box's faces (the same answer as labelling the whole array, for less work)."""
    filled = mask.copy()
    if not mask.any():
        return filled
    box = tuple(
        slice(idx[0], idx[-1] + 1)
        for idx in (
            np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))
            for a in range(mask.ndim)
        )
    )
    crop = mask[box]
    labels, n = ndimage.label(~crop)
    if n == 0:
        return filled
    faces = [np.take(labels, i, axis=a) for a in range(crop.ndim) for i in (0, -1)]
    outside = np.zeros(n + 1, dtype=bool)
    outside[np.unique(np.concatenate([f.ravel() for f in faces]))] = True
    outside[0] = False  # label 0 is the mask itself
    filled[box] = crop | ~outside[labels] & (labels > 0)
    return filled


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) voxel counts of components 1..n of a label volume, counted a slice at a time (one
    bincount of the whole volume first copies it to 8-byte integers, ~4x slower)."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    for plane in labels:
        sizes += np.bincount(plane.ravel(), minlength=n + 1)
    return sizes[1:]


def lung_mask_3d(fields: np.ndarray, body: np.ndarray, source: str = "scan") -> np.ndarray:
    """Clean per-slice lung fields into the scan's lung mask.

    Steps: intersect with the body (the field of view, not padding); fill holes in each slice (a
    dense consolidation or a vessel the segmenter left out is still lung); keep the largest 3-D
    component, and the second largest when it is the other lung (SECOND_LUNG_RATIO; one component
    when the lungs touch); fill holes in 3-D.

    Args:
        fields: (Z, Y, X) 0/1 per-slice lung fields.
        body: (Z, Y, X) bool, True inside the scanner's field of view.
        source: the scan's path, for the error message.
    Returns:
        (Z, Y, X) bool lung mask.
    Raises:
        NoLungError: when the cleaned lung holds fewer than MIN_LUNG_FRACTION of the body voxels.
    """
    if fields.shape != body.shape or fields.ndim != 3:
        raise ValueError(
            f"lung_mask_3d: fields {fields.shape} and body {body.shape}; expected one (Z, Y, X)"
        )
    mask = (fields > 0) & body
    for z in range(mask.shape[0]):
        mask[z] = fill_holes(mask[z])  # (Y, X)
    labels, n = ndimage.label(mask)  # 6-connected in 3-D
    if n > 0:
        sizes = component_sizes(labels, n)  # (n,) voxels of component k at index k - 1
        order = np.argsort(sizes)[::-1]
        keep = [order[0] + 1]
        if n > 1 and sizes[order[1]] >= SECOND_LUNG_RATIO * sizes[order[0]]:
            keep.append(order[1] + 1)
        mask = np.isin(labels, keep)
        mask = fill_holes(mask) & body
    found, needed = int(mask.sum()), MIN_LUNG_FRACTION * int(body.sum())
    if found == 0 or found < needed:
        raise NoLungError(
            f"{source}: no lung found ({found} lung voxels; expected at least {int(needed) + 1}, "
            f"{MIN_LUNG_FRACTION:.1%} of the {int(body.sum())} voxels inside the field of view). "
            f"Is it a chest CT in Hounsfield units?"
        )
    return mask


def split_lungs(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool lung mask -> (Z, Y, X) uint8: 0 outside, RIGHT (1), LEFT (2).

    Two 3-D components: each is one lung, named by which side of the midline its centre lies on.
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
    if n == 2:
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

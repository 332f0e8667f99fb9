"""The patient's body in a CT slice: where lungs can be, and where they never are.

A lung segmenter that sees one slice at a time also marks air that is not in the patient: the
air around the body, the scanner's padding, and the air a curved CT table cradle encloses under
the patient's back (the cradle's rim meets the patient, so that air is not connected to the air
around). The lungs are air enclosed by the patient's own body, so:

    body_mask       (Z, Y, X) from HU: per axial slice, the soft tissue (> BODY_ABOVE_HU)
                    joined to the patient once the table and its contacts are cut out (found by
                    an erosion of ERODE_MM), holes filled. The table, the air its cradle encloses
                    and the air around the patient lie outside it.
    drop_outside_air  one windowed 2-D slice without HU (`stitchnet predict`): the lung-field
                    components lying in the dark background connected to the slice's border,
                    when that background surrounds the patient.

The threshold is the one lungmask's body mask uses (-500 HU: fat and skin lie above it, air and
aerated lung below). Pipelines built on it keep segmentations inside the body mask and keep
the largest blobs of each organ; TotalSegmentator likewise removes organ voxels outside its body
segmentation. Both warn that a narrow field of view cutting through a lung opens it to the
padding; here such a lung is lost on the slices where the field of view cuts it, as before.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

# Skin, fat, muscle and bone lie above this; air, aerated lung and FOV padding below it.
BODY_ABOVE_HU = -500.0
# Erosion radius in mm: a table or cushion touching the patient along less than 2 x 3 mm comes
# apart from it, and the core of every part of a thorax (a chest wall is >= 10 mm thick) stays.
# At pixels coarser than 3 mm the radius is 0 and nothing is cut: the table and patient are then
# told apart only when they do not touch.
ERODE_MM = 3.0
# The erosion can split a body at its thin places (a chest wall cut by a tight crop) into big
# pieces: the eroded components at least this share of the largest are the patient too. A table
# is a thin shell, a few % of a torso's cross-section (1 % on the two real full-field slices in
# data/realct_nonlesion_dev).
PIECE_SHARE = 0.1
# Windowed 2-D slices (gray in [0, 1]): air outside the body is darker than this. In the data's
# lung window (-1250, 250) 0.25 is -875 HU: air (-1000) is 0.17 and FOV padding 0, while soft
# tissue is > 0.7; aerated lung (-850..-700) lies at 0.27..0.37, and it is enclosed anyway.
DARK_GRAY = 0.25
# A slice whose dark, border-connected background covers at least this share of the slice's
# edge shows the whole body in air. The bundled training slices are cropped to the lungs and
# reach at most 0.30 (their lungs touch the crop's edge); a real full field of view reaches
# ~0.9 (the LIDC slice of data/realct_nonlesion_dev: 0.88). Below it nothing is dropped.
SURROUNDED_SHARE = 0.5


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


def large_components(mask: np.ndarray, share: float = 1.0) -> np.ndarray:
    """The largest connected component of a bool mask (face-connected), and every other one
    holding at least `share` of its pixels (share=1: the largest alone); empty stays empty."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())  # (n + 1,) pixels of component k at index k
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    keep = sizes >= share * sizes[largest] if share < 1.0 else np.zeros(n + 1, dtype=bool)
    keep[0] = False
    keep[largest] = True
    return keep[labels]


def erosion_radius_px(spacing_yx: tuple[float, float]) -> int:
    """ERODE_MM in pixels of a slice with (row, column) pixel spacing in mm, rounded down."""
    return int(ERODE_MM / max(spacing_yx))


def body_slice(hu: np.ndarray, fov: np.ndarray, radius: int) -> np.ndarray:
    """(Y, X) bool: the patient's body in one axial slice (see `body_mask`)."""
    tissue = (hu > BODY_ABOVE_HU) & fov  # (Y, X)
    if radius == 0:
        return fill_holes(large_components(tissue))
    footprint = disk(radius).astype(bool)
    # Eroded, a table or cradle comes apart from a patient it touches along less than the disk.
    pieces = ndimage.binary_erosion(tissue, footprint)  # (Y, X)
    patient = large_components(pieces, PIECE_SHARE)
    # The other pieces (the table) are cut out grown back to their own extent and one pixel more,
    # which cuts their contacts. The patient is all the tissue still joined to its pieces: its
    # own thin parts (a skin fold, a chest wall thinned where the scan is cropped) come back, so
    # its lungs stay enclosed.
    cut = ndimage.binary_dilation(pieces & ~patient, footprint)
    cut = ndimage.binary_dilation(cut) & ~patient
    labels, _ = ndimage.label(tissue & ~cut)
    joined = np.unique(labels[patient])
    return fill_holes(np.isin(labels, joined[joined > 0]))


def body_mask(hu: np.ndarray, fov: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """(Z, Y, X) bool: the patient's body, slice by slice.

    On each axial slice: soft tissue and bone (HU > BODY_ABOVE_HU) inside the field of view.
    An erosion of radius ERODE_MM separates the patient from a table or cradle they touch along
    less than 2 x ERODE_MM (the rim of a curved cradle); its largest component is the patient (a
    table's cross-section is far smaller), with any piece of at least PIECE_SHARE of its size.
    The other pieces (the table) are cut out of the tissue grown back by ERODE_MM and 1 pixel
    more, which cuts their contacts; the patient is the tissue left joined to its pieces, holes
    filled, so the lungs, airways and bowel gas it encloses are inside. The air a cradle
    encloses under the patient is a hole of the patient-and-table, never of the patient alone:
    it stays out.
    A table thinner than 2 x ERODE_MM, or one the patient lies on along more than that, is not
    cut off, and the air its cradle encloses then counts as inside the body.

    Args:
        hu: (Z, Y, X) HU in display orientation.
        fov: (Z, Y, X) bool, inside the reconstruction field of view (`Volume.body`).
        spacing: mm along (Z, Y, X) (`Volume.spacing`).
    """
    radius = erosion_radius_px((spacing[1], spacing[2]))
    body = np.zeros(hu.shape, dtype=bool)
    for z in range(hu.shape[0]):
        body[z] = body_slice(hu[z], fov[z], radius)  # (Y, X)
    return body


def drop_outside_air(field: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A 2-D lung field without the components that lie in the air around the patient.

    For windowed slices without HU (`stitchnet predict` on one slice). The background is the
    dark (< DARK_GRAY) region connected to the slice's border. When it covers less than
    SURROUNDED_SHARE of the border the slice is cropped to the chest (lungs may touch its edge)
    and the field is returned unchanged; otherwise each field component lying mostly (> half
    of it) in that background is dropped: it is air around the patient, not lung.

    Coarser than the HU rule: at 5 mm pixels a chest wall thinned to one pixel joins a lung to
    the background, and the lung goes with it (the right apex on one slice of the 64 x 64 real
    thorax in data/realct_nonlesion_dev). Whole scans use `body_mask` instead.

    Args:
        field: (H, W) 0/1 lung field.
        image: (H, W) the slice in [0, 1], on the same grid.
    Returns:
        (H, W) uint8 0/1 lung field.
    """
    if field.shape != image.shape:
        raise ValueError(f"field {field.shape} and image {image.shape}; expected one (H, W)")
    dark, _ = ndimage.label(image < DARK_GRAY)
    edge = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])  # (2H + 2W,)
    if (edge > 0).mean() < SURROUNDED_SHARE:
        return field.astype(np.uint8)
    background = np.isin(dark, np.unique(edge[edge > 0]))
    parts, m = ndimage.label(field > 0)
    if m == 0:
        return field.astype(np.uint8)
    size = np.bincount(parts.ravel(), minlength=m + 1)
    outside = np.bincount(parts[background], minlength=m + 1)
    keep = outside * 2 <= size  # (m + 1,), index 0 is the field's own background
    keep[0] = False
    return keep[parts].astype(np.uint8)

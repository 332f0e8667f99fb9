"""Burden in mL and the 3-D lung clean-up, on tiny hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest

from stitchnet.inference.burden import burden_csv, lesion_burden
from stitchnet.lungfield.volume import (
    LEFT,
    LR_AXIS,
    RIGHT,
    NoLungError,
    keep_lungs,
    lung_mask_3d,
    outside_air,
    split_lungs,
    trim_fatty_ends,
)


def test_burden_is_voxel_count_times_voxel_volume():
    # 1 x 2 x 4 labels: right lung = row 0, left lung = row 1.
    labels = np.array([[[1, 2, 2, 3], [1, 1, 3, 0]]], dtype=np.uint8)
    sides = np.array([[[1, 1, 1, 1], [2, 2, 2, 0]]], dtype=np.uint8)
    voxel_ml = 0.7 * 0.7 * 2.5 / 1000  # (2.5, 0.7, 0.7) mm spacing
    b = lesion_burden(labels, sides, voxel_ml)
    assert b["right"]["lung_voxels"] == 4 and b["left"]["lung_voxels"] == 3
    assert b["right"]["ggo_ml"] == pytest.approx(2 * voxel_ml)
    assert b["right"]["consolidation_ml"] == pytest.approx(1 * voxel_ml)
    assert b["left"]["ggo_ml"] == 0 and b["left"]["consolidation_ml"] == pytest.approx(voxel_ml)
    assert b["total"]["lung_ml"] == pytest.approx(7 * voxel_ml)
    assert b["right"]["ggo_pct"] == pytest.approx(50.0)
    assert b["total"]["lesion_pct"] == pytest.approx(100 * 4 / 7)
    csv = burden_csv(b).splitlines()
    assert csv[0].startswith("region,lung_ml") and csv[3].startswith("total,")


def test_burden_of_a_missing_side_has_no_percentages():
    labels = np.array([[[1, 2]]], dtype=np.uint8)
    sides = np.array([[[1, 1]]], dtype=np.uint8)
    b = lesion_burden(labels, sides, 1.0)
    assert b["left"]["lung_ml"] == 0 and b["left"]["ggo_pct"] is None
    assert b["total"]["ggo_pct"] == pytest.approx(50.0)


def _box(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_lung_mask_keeps_two_lungs_drops_specks_and_fills_holes():
    shape = (4, 20, 20)
    right = _box(shape, (0, 1, 2), (4, 9, 18))  # 4*8*16 = 512 voxels
    left = _box(shape, (0, 11, 2), (4, 19, 18))
    speck = _box(shape, (0, 0, 0), (1, 1, 1))
    fields = (right | left | speck).astype(np.uint8)
    fields[2, 5, 10] = 0  # a vessel the segmenter left out: a hole, filled
    mask = lung_mask_3d(fields, np.ones(shape, dtype=bool))
    assert mask.sum() == 2 * 512 and not mask[0, 0, 0] and mask[2, 5, 10]
    # Intersected with the body (the field of view): nothing outside it.
    body = np.ones(shape, dtype=bool)
    body[:, :, :5] = False
    assert not lung_mask_3d(fields, body)[:, :, :5].any()


def test_keep_lungs_takes_the_aerated_pair_not_gas_below_or_a_tissue_piece():
    # Lungs of 6 x 8 x 8 = 384 and 6 x 7 x 8 = 336 voxels at -850 HU on slices 4-9; bowel gas
    # (3 x 7 x 8 = 168 voxels of air) on slices 0-2, below them; and a field piece on soft
    # tissue (40 HU) of 10 x 20 x 8 = 1600 voxels, the largest component, but with no air.
    shape = (10, 20, 20)
    right = _box(shape, (4, 1, 2), (10, 9, 10))
    left = _box(shape, (4, 11, 2), (10, 18, 10))
    gas = _box(shape, (0, 2, 2), (3, 9, 10))
    piece = _box(shape, (0, 0, 12), (10, 20, 20))
    hu = np.full(shape, 40.0)
    hu[right | left] = -850.0
    hu[gas] = -1000.0
    mask = right | left | gas | piece
    assert np.array_equal(keep_lungs(mask, hu), right | left)
    # Without HU the largest component is the first lung: the piece, and beside it the larger
    # of the two lungs.
    assert np.array_equal(keep_lungs(mask), piece | right)
    # A field on tissue alone is no lung.
    with pytest.raises(NoLungError, match="no lung found"):
        lung_mask_3d(piece.astype(np.uint8), np.ones(shape, dtype=bool), hu=hu)


def test_lung_mask_without_lung_raises():
    shape = (3, 10, 10)
    with pytest.raises(NoLungError, match="no lung found"):
        lung_mask_3d(np.zeros(shape, np.uint8), np.ones(shape, dtype=bool), source="scan.nii")


def test_split_two_lungs_and_touching_lungs_by_midline():
    shape = [3, 3, 3]
    shape[LR_AXIS] = 10
    lo, hi = [0, 0, 0], list(shape)
    hi_r = list(hi)
    hi_r[LR_AXIS] = 4  # indices 0-3: towards the patient's right
    lo_l = list(lo)
    lo_l[LR_AXIS] = 6  # indices 6-9: towards the patient's left
    two = _box(shape, lo, hi_r) | _box(shape, lo_l, hi)
    sides = split_lungs(two)
    assert (sides[_box(shape, lo, hi_r)] == RIGHT).all()
    assert (sides[_box(shape, lo_l, hi)] == LEFT).all()
    assert (sides[~two] == 0).all()
    # Touching lungs (one component spanning 0-9): the midline at 5 splits them 5 / 5.
    one = np.ones(shape, dtype=bool)
    sides = split_lungs(one)
    assert (sides == LEFT).sum() == (sides == RIGHT).sum() == one.sum() // 2
    assert (np.take(sides, 0, axis=LR_AXIS) == RIGHT).all()


def test_outside_air_is_air_connected_to_the_border_or_padding():
    hu = np.full((9, 9), -1000.0)  # air
    hu[1:8, 1:8] = 40.0  # a body of soft tissue
    hu[3:6, 3:6] = -850.0  # a lung enclosed by it
    body = np.ones((9, 9), dtype=bool)
    out = outside_air(hu, body)
    assert out[0].all() and out[:, 0].all() and not out[1:8, 1:8].any()


def test_fill_holes_matches_scipy_in_2d_and_3d():
    from scipy import ndimage

    from stitchnet.lungfield.volume import fill_holes

    rng = np.random.default_rng(0)
    for shape in [(40, 40), (6, 30, 30)]:
        mask = rng.random(shape) < 0.55
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_fill_holes_of_a_mask_inside_the_array_matches_scipy():
    # fill_holes labels only the mask's bounding box: masks of every density placed away from
    # the faces, touching one face, and empty.
    from scipy import ndimage

    from stitchnet.lungfield.volume import fill_holes

    rng = np.random.default_rng(1)
    for trial in range(60):
        shape = (5, 20, 20) if trial % 2 else (20, 20)
        mask = np.zeros(shape, dtype=bool)
        inner = tuple(slice(int(rng.integers(0, 3)), s - int(rng.integers(0, 3))) for s in shape)
        mask[inner] = rng.random(mask[inner].shape) < rng.uniform(0.0, 0.9)
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask)), trial


def test_burden_counts_every_slab_of_a_long_volume():
    # More slices than one bincount slab: counts equal a plain count of each (side, class).
    from stitchnet.inference.burden import SLAB

    rng = np.random.default_rng(2)
    sides = rng.integers(0, 3, size=(2 * SLAB + 3, 7, 5)).astype(np.uint8)
    labels = np.where(sides > 0, rng.integers(1, 4, size=sides.shape), 0).astype(np.uint8)
    b = lesion_burden(labels, sides, 1.0)
    for region, side in (("right", RIGHT), ("left", LEFT)):
        assert b[region]["lung_voxels"] == int((sides == side).sum())
        assert b[region]["ggo_voxels"] == int(((sides == side) & (labels == 2)).sum())
        assert b[region]["consolidation_voxels"] == int(((sides == side) & (labels == 3)).sum())


def test_trim_fatty_ends_drops_shoulder_fat_above_the_apex_not_a_consolidated_base():
    # One lung over slices 0-5 of a 6 x 8 x 8 scan, 4 x 4 voxels a slice. Slice 0: consolidated
    # base (+40 HU, airless, soft tissue). Slices 1-3: aerated lung (-850). Slice 4: fat (-90,
    # airless, fatty). Slice 5: a mix, 1 of its 16 voxels air (6 % < 10 %), median -80 HU.
    mask = np.zeros((6, 8, 8), dtype=bool)
    mask[:, 2:6, 2:6] = True
    hu = np.full(mask.shape, 40.0)
    hu[1:4] = -850.0
    hu[4] = -90.0
    hu[5] = -80.0
    hu[5, 2, 2] = -900.0
    kept = trim_fatty_ends(mask, hu)
    assert kept[:4].sum() == 4 * 16  # the base and the aerated slices stay
    assert not kept[4:].any()  # the two fatty end slices go
    # A fatty slice between aerated ones is not an end: it stays.
    hu[2] = -90.0
    assert trim_fatty_ends(mask, hu)[2, 2:6, 2:6].all()

from dataclasses import replace

import pytest
import torch

from stitchnet.augment import (
    AugmentParams,
    AugmentSpec,
    apply_geometry,
    apply_params,
    apply_strong,
    augment_batch,
    box_masks,
    gaussian_blur,
    sample_boxes,
    sample_params,
    sample_strong,
)


def _binary_batch(n=16, size=16, seed=0):
    """Images of 0s and 1s whose mask is the image thresholded (1 -> class 2, 0 -> class 0)."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    masks = (images[:, 0] > 0.5).long() * 2
    return images, masks


def test_mask_stays_aligned_with_the_image():
    images, masks = _binary_batch()
    spec = AugmentSpec(max_shift=0.25)  # large shifts, so zero-filled borders are exercised
    out_images, out_masks = augment_batch(images, masks, torch.Generator().manual_seed(1), spec)
    # Gamma keeps 0 and 1; contrast within [0.9, 1.1] keeps them on their side of 0.5.
    assert torch.equal(out_masks, (out_images[:, 0] > 0.5).long() * 2)
    assert not torch.equal(out_masks, masks)  # something did move


def test_mask_keeps_its_values_and_dtype():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(8, 1, 12, 12, generator=g)
    masks = torch.randint(0, 4, (8, 12, 12), generator=g)
    _, out = augment_batch(images, masks, torch.Generator().manual_seed(4))
    assert out.dtype == torch.long
    assert set(out.unique().tolist()) <= {0, 1, 2, 3}


def test_image_stays_in_unit_range_and_inputs_are_not_modified():
    images = torch.rand(6, 1, 8, 8)
    masks = torch.randint(0, 4, (6, 8, 8))
    before = images.clone(), masks.clone()
    spec = AugmentSpec(gamma=(0.5, 2.0), contrast=(0.5, 2.0))
    out, _ = augment_batch(images, masks, torch.Generator().manual_seed(0), spec)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])


def test_rotation_and_shift_move_pixels_as_expected():
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 1] = 1.0  # top row, second column
    mask = image[:, 0].long()
    identity = AugmentParams(
        shift=torch.zeros(1, 2, dtype=torch.long),
        flip_h=torch.tensor([False]),
        flip_v=torch.tensor([False]),
        rot=torch.tensor([0]),
        gamma=torch.ones(1),
        contrast=torch.ones(1),
    )
    # rot90 turns counter-clockwise: (row 0, col 1) -> (row 4 - 1 - 1, col 0) = (2, 0)
    out_image, out_mask = apply_params(image, mask, replace(identity, rot=torch.tensor([1])))
    assert out_image[0, 0].nonzero().tolist() == [[2, 0]]
    assert out_mask[0].nonzero().tolist() == [[2, 0]]
    # shift (dy, dx) = (1, -1): one row down, one column left
    out_image, out_mask = apply_params(
        image, mask, replace(identity, shift=torch.tensor([[1, -1]]))
    )
    assert out_image[0, 0].nonzero().tolist() == [[1, 0]]
    assert out_mask[0].nonzero().tolist() == [[1, 0]]
    # a horizontal flip mirrors the column: 1 -> 2
    out_image, _ = apply_params(image, mask, replace(identity, flip_h=torch.tensor([True])))
    assert out_image[0, 0].nonzero().tolist() == [[0, 2]]


def test_same_generator_state_gives_the_same_augmentation():
    images, masks = _binary_batch(n=4)
    a = augment_batch(images, masks, torch.Generator().manual_seed(7))
    b = augment_batch(images, masks, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rows_of_a_global_draw_match_the_whole_batch():
    # What DDP relies on: augmenting a shard with its rows of the global draw equals the shard
    # of the globally augmented batch.
    images, masks = _binary_batch(n=6)
    params = sample_params(6, 16, torch.Generator().manual_seed(2))
    whole = apply_params(images, masks, params)
    rows = torch.tensor([1, 3, 5])
    part = apply_params(images[rows], masks[rows], params.rows(rows))
    assert torch.equal(part[0], whole[0][rows]) and torch.equal(part[1], whole[1][rows])


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match=r"masks \(B, H, W\)"):
        augment_batch(
            torch.rand(2, 1, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long), torch.Generator()
        )
    with pytest.raises(ValueError, match="square"):
        augment_batch(
            torch.rand(2, 1, 8, 6), torch.zeros(2, 8, 6, dtype=torch.long), torch.Generator()
        )


def test_strong_view_is_a_deterministic_function_of_its_seed():
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def view(seed):
        params = sample_strong(6, 16, torch.Generator().manual_seed(seed))
        return apply_strong(images, params), params

    (a, pa), (b, _), (c, pc) = view(1), view(1), view(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(pa.box, pc.box)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == images.shape


def test_blur_keeps_a_constant_image_and_spreads_a_point():
    flat = torch.full((1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    out = gaussian_blur(point, 1.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)  # reflection only matters at the border
    assert out[0, 4, 4] < 1.0 and out[0, 4, 5] > 0 and out[0, 4, 4] == out.max()


def test_boxes_have_the_drawn_size_and_lie_inside():
    boxes = sample_boxes(50, 32, torch.Generator().manual_seed(0), area=(0.25, 0.25))
    h, w = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    assert (h == 16).all() and (w == 16).all()  # area 1/4, ratio 1: a 16 x 16 box
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= 32).all() and (boxes[:, 3] <= 32).all()
    masks = box_masks(boxes[:2], 32, use=torch.tensor([True, False]))
    assert masks[0].sum() == 256 and masks[1].sum() == 0


def test_lung_maps_move_exactly_like_the_masks():
    images, masks = _binary_batch(n=8)
    params = sample_params(8, 16, torch.Generator().manual_seed(5), AugmentSpec(max_shift=0.25))
    _, moved_masks = apply_params(images, masks, params)
    lungs = (masks > 0).to(torch.uint8)
    moved = apply_geometry(lungs, params)
    assert moved.dtype == torch.uint8
    assert torch.equal(moved, (moved_masks > 0).to(torch.uint8))

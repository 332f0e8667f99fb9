"""Pre-processing: hand-made crops and restores, then a few real bundled slices prepared."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stitchnet.config import DataConfig
from stitchnet.data.errors import DataError
from stitchnet.data.preprocess import prepare, resize_mask, restore_to_original
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.sources import load_bundled
from stitchnet.data.types import SliceRecord
from stitchnet.lungfield.net import load_lung_segmenter


def test_restore_to_original_by_hand():
    pred = np.arange(16).reshape(4, 4)  # class ids do not matter to the geometry
    # Box rows 1..2, cols 2..5 of a 4x8 slice: a 2x4 crop. Pixel centre i + 0.5 of the crop maps
    # to row (i + 0.5) * 4 / 2 -> rows 1, 3 and col (j + 0.5) * 4 / 4 -> cols 0, 1, 2, 3.
    out = restore_to_original(pred, (1, 3, 2, 6), (4, 8))
    expected = np.zeros((4, 8), dtype=np.uint8)
    expected[1, 2:6] = [4, 5, 6, 7]
    expected[2, 2:6] = [12, 13, 14, 15]
    assert out.dtype == np.uint8
    assert out.tolist() == expected.tolist()


def test_crop_resize_restore_round_trip():
    # An 8x8 crop of a 10x12 slice whose labels are constant on 2x2 blocks survives 8 -> 4 -> 8.
    blocks = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 3, 3], [2, 0, 0, 2]])
    crop = np.kron(blocks, np.ones((2, 2), dtype=np.int64))  # (8, 8)
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[1:9, 3:11] = crop
    small = resize_mask(mask[1:9, 3:11], 4)
    assert small.tolist() == blocks.tolist()
    back = restore_to_original(small, (1, 9, 3, 11), (10, 12))
    assert back.tolist() == mask.tolist()


def test_restore_refuses_a_box_outside_the_slice():
    with pytest.raises(ValueError, match="does not lie inside"):
        restore_to_original(np.zeros((4, 4)), (0, 5, 0, 4), (4, 4))


def test_mixed_labelled_and_unlabelled_is_refused():
    a = SliceRecord(
        np.zeros((4, 4), np.float32), "a", mask=np.zeros((4, 4), np.uint8), path="a.png"
    )
    b = SliceRecord(np.zeros((4, 4), np.float32), "b", path="b.png")
    with pytest.raises(DataError, match=r"b\.png: mixes labelled and unlabelled"):
        prepare([a, b], DataConfig(image_size=32, crop_to_lung=False), progress=False)


def test_without_crop_the_box_is_the_whole_slice():
    image = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))  # (64, 64) ramp
    rec = SliceRecord(image, "ramp", path="")
    out = prepare([rec], DataConfig(image_size=32, crop_to_lung=False), progress=False)
    assert out.boxes == [(0, 64, 0, 64)] and out.orig_shapes == [(64, 64)]
    assert out.masks is None and out.images.shape == (1, 1, 32, 32)
    row = out.images[0, 0, 0].numpy()
    # Antialiased halving weighs 4 neighbours 1/8, 3/8, 3/8, 1/8: on a linear ramp (k / 63) the
    # interior gives the mean of each pixel pair.
    expected = (image[0, 0::2] + image[0, 1::2]) / 2
    np.testing.assert_allclose(row[1:-1], expected[1:-1], atol=1e-6)
    # At the edge the missing neighbour's weight is dropped and the rest renormalised:
    # (3/8 * 0 + 3/8 * 1/63 + 1/8 * 2/63) / (7/8) = 5/441.
    assert row[0] == pytest.approx(5 / 441, abs=1e-6)


@pytest.fixture(scope="module")
def real_records():
    labelled = read_folder(load_bundled("labelled"))[:4]
    return labelled


@pytest.fixture(scope="module")
def segmenter():
    return load_lung_segmenter()


def test_prepare_real_slices_shapes_ranges_and_cache(tmp_path, real_records, segmenter):
    cfg = DataConfig(image_size=64)
    first = prepare(real_records, cfg, segmenter, cache_dir=tmp_path, name="lab", progress=False)
    assert first.images.shape == (4, 1, 64, 64) and first.images.dtype == torch.float32
    assert float(first.images.min()) >= 0.0 and float(first.images.max()) <= 1.0
    assert first.masks.shape == (4, 64, 64) and first.masks.dtype == torch.int64
    assert set(first.masks.unique().tolist()) <= {0, 1, 2, 3}
    assert first.ids == [r.slice_id for r in real_records]
    assert first.orig_shapes == [r.image.shape for r in real_records]
    for (y0, y1, x0, x1), (h, w) in zip(first.boxes, first.orig_shapes, strict=True):
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
    assert first.meta["from_cache"] is False and first.meta["lung_version"] == segmenter.version

    again = prepare(real_records, cfg, segmenter, cache_dir=tmp_path, name="lab", progress=False)
    assert again.meta["from_cache"] is True
    assert torch.equal(again.images, first.images) and torch.equal(again.masks, first.masks)
    assert again.boxes == first.boxes and again.orig_shapes == first.orig_shapes

    other = dataclasses.replace(cfg, crop_margin=0.2)  # another config is another cache entry
    wider = prepare(real_records, other, segmenter, cache_dir=tmp_path, name="lab", progress=False)
    assert wider.meta["from_cache"] is False
    for (a0, a1, b0, b1), (c0, c1, d0, d1) in zip(first.boxes, wider.boxes, strict=True):
        assert c0 <= a0 and c1 >= a1 and d0 <= b0 and d1 >= b1


def test_prepared_mask_restores_onto_the_ground_truth(real_records, segmenter):
    # Cropping and resizing the ground truth, then restoring it, should give most pixels back.
    prepared = prepare(real_records[:2], DataConfig(image_size=128), segmenter, progress=False)
    for k, rec in enumerate(real_records[:2]):
        back = restore_to_original(prepared.masks[k], prepared.boxes[k], prepared.orig_shapes[k])
        agreement = float((back == rec.mask).mean())
        assert agreement > 0.95, (rec.slice_id, agreement)


def test_a_damaged_cache_is_rebuilt(tmp_path, real_records, segmenter):
    cfg = DataConfig(image_size=32)
    prepare(real_records[:1], cfg, segmenter, cache_dir=tmp_path, name="one", progress=False)
    (pt,) = tmp_path.glob("one-*.pt")
    pt.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="rebuilding it"):
        rebuilt = prepare(
            real_records[:1], cfg, segmenter, cache_dir=tmp_path, name="one", progress=False
        )
    assert rebuilt.meta["from_cache"] is False

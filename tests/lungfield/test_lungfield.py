"""Lung field: hand-made boxes and morphology, then the shipped segmenter on real slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stitchnet.data.errors import DataError
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.sources import load_bundled
from stitchnet.data.types import SliceRecord
from stitchnet.lungfield.net import (
    ASSET_PATH,
    clean_lung_mask,
    load_lung_segmenter,
    lung_box,
    lung_field,
    morph_radius_px,
)
from stitchnet.lungfield.train import dice_score, train_lung_segmenter


def test_lung_box_with_margin_by_hand():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:15, 10:20] = 1  # a 10x10 field
    # margin 0.1 of a 10 px side = 1 px each side
    assert lung_box(mask, margin=0.1) == (4, 16, 9, 21)
    assert lung_box(mask, margin=0.0) == (5, 15, 10, 20)
    # a margin past the border is clipped: 0.8 * 10 = 8 px
    assert lung_box(mask, margin=0.8) == (0, 20, 2, 28)


def test_lung_box_falls_back_to_the_whole_slice():
    assert lung_box(np.zeros((20, 30), dtype=np.uint8)) == (0, 20, 0, 30)
    speck = np.zeros((20, 30), dtype=np.uint8)
    speck[3, 3] = 1  # 1 px < 0.5 % of 600 px: not a lung field
    assert lung_box(speck) == (0, 20, 0, 30)


def test_clean_keeps_the_two_largest_and_drops_specks():
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:25, 2:14] = 1  # 240 px, touches no border
    mask[5:25, 24:40] = 1  # 320 px, touches the right border
    mask[30:34, 5:9] = 1  # 16 px third component
    mask[38, 20] = 1  # a one-pixel speck
    out = clean_lung_mask(mask, radius=1)
    # Opening with the radius-1 disk (a 3x3 plus) cuts each free rectangle corner; the right-hand
    # rectangle's corners on the image border stay, since the mask is edge-padded before it.
    left, right = out[5:25, 2:14], out[5:25, 24:40]
    assert [left[0, 0], left[0, -1], left[-1, 0], left[-1, -1]] == [0, 0, 0, 0]
    assert [right[0, 0], right[-1, 0], right[0, -1], right[-1, -1]] == [0, 0, 1, 1]
    assert left.sum() == 240 - 4 and right.sum() == 320 - 2
    # The speck does not survive the opening; the third square keeps 16 - 4 = 12 px, which is
    # 12 / (236 + 318 + 12) = 2.1 % of the area, under the 5 % that a third piece needs.
    assert out[38, 20] == 0 and out[30:34, 5:9].sum() == 0
    assert out.sum() == 236 + 318


def test_clean_keeps_a_third_piece_of_real_size():
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[2:22, 2:14] = 1  # 240 px
    mask[2:22, 24:38] = 1  # 280 px
    mask[28:36, 4:12] = 1  # 64 px: 60 / (236 + 276 + 60) = 10.5 % after the opening's corners
    out = clean_lung_mask(mask, radius=1)
    assert out.sum() == 236 + 276 + 60
    assert clean_lung_mask(mask, radius=1, extra_fraction=0.2).sum() == 236 + 276


def test_morph_radius_scales_with_the_slice():
    assert morph_radius_px(3, (256, 200)) == 3
    assert morph_radius_px(3, (512, 512)) == 6
    assert morph_radius_px(3, (40, 40)) == 1  # never below one pixel


def test_dice_by_hand():
    a = np.array([1, 1, 0, 0])
    b = np.array([1, 0, 1, 0])
    assert dice_score(a, b) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert dice_score(np.zeros(3), np.zeros(3)) == 1.0


def test_train_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for k in range(4):
        image = rng.random((40, 48)).astype(np.float32)
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[10:30, 8 + k : 40] = 1
        records.append(SliceRecord(image, f"s{k}", mask=mask))
    seg = train_lung_segmenter(records, size=32, epochs=1, seed=0, batch_size=2)
    assert seg.size == 32 and seg.version.startswith("lungfield-")
    assert seg.meta["train_ids"] == ["s0", "s1", "s2", "s3"]
    seg.save(tmp_path / "lf.pt")
    loaded = load_lung_segmenter(tmp_path / "lf.pt")
    assert loaded.version == seg.version and loaded.size == 32
    # Weights go to disk in half precision, so the loaded net matches the fp16-rounded original.
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        seg.net.load_state_dict({k: v.half().to(v.dtype) for k, v in seg.net.state_dict().items()})
        torch.testing.assert_close(loaded.net(x), seg.net.eval()(x))


def test_training_needs_a_target():
    with pytest.raises(DataError, match="no slice has a mask or a lung field"):
        train_lung_segmenter([SliceRecord(np.zeros((8, 8), np.float32), "a")], epochs=1)


def test_missing_weights_say_how_to_rebuild(tmp_path):
    with pytest.raises(DataError, match=r"python -m stitchnet\.lungfield\.train"):
        load_lung_segmenter(tmp_path / "absent.pt")


def test_shipped_checkpoint_is_small_and_self_describing():
    assert ASSET_PATH.stat().st_size < 5 * 1024 * 1024
    ckpt = torch.load(ASSET_PATH, map_location="cpu", weights_only=True)
    assert {"state_dict", "config", "size", "version", "model", "val_ids", "val_dice"} <= set(ckpt)
    assert ckpt["model"] == "unet" and ckpt["config"]["num_classes"] == 2


def test_shipped_segmenter_boxes_the_real_lung_on_held_out_slices():
    seg = load_lung_segmenter()
    held_out = set(seg.meta["val_ids"])
    records = [r for r in read_folder(load_bundled("labelled")) if r.slice_id in held_out][:3]
    assert records, "the checkpoint's held-out ids should be bundled slices"
    for rec in records:
        truth = rec.mask > 0
        field = lung_field(seg, rec.image)
        y0, y1, x0, x1 = lung_box(field, margin=0.05)
        inside = truth[y0:y1, x0:x1].sum() / truth.sum()
        assert inside > 0.97, (rec.slice_id, inside)
        assert dice_score(field, truth) > 0.8, rec.slice_id

"""VGG16-BN encoder and the SegNet baseline."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from stitchnet.models import build_model, model_config
from stitchnet.models.segnet import PRESETS, SegNet, SegNetConfig
from stitchnet.models.vgg16 import VGG16Encoder

DEBUG = PRESETS["debug"]


def test_width_one_rgb_encoder_parameter_count():
    # The reference VGG16 features hold 14,714,688 parameters (conv weights and biases).
    # Here every conv is followed by batch norm, so the 4,224 conv biases (64*2 + 128*2 + 256*3
    # + 512*6 output channels) are dropped and BN adds a weight and a bias per channel (8,448):
    # 14,714,688 - 4,224 + 8,448.
    enc = VGG16Encoder(in_channels=3, width_mult=1.0)
    assert sum(p.numel() for p in enc.parameters()) == 14_718_912


def test_encoder_levels_indices_and_sizes():
    enc = VGG16Encoder(in_channels=1, width_mult=0.125)
    assert enc.out_channels == (8, 16, 32, 64, 64)
    out = enc(torch.rand(2, 1, 64, 96))
    assert [tuple(f.shape) for f in out.features] == [
        (2, 8, 32, 48),
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 64, 2, 3),
    ]
    assert [tuple(i.shape) for i in out.indices] == [tuple(f.shape) for f in out.features]
    assert [tuple(s[-2:]) for s in out.sizes] == [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6)]


def test_pool_indices_point_at_the_maxima():
    enc = VGG16Encoder(in_channels=1, width_mult=0.125).eval()
    x = torch.rand(1, 1, 32, 32)
    out = enc(x)
    pre = enc.blocks[0](x).flatten(2)  # (1, 8, 32 * 32): block 1 before its pool
    # Each index is a flat position in its channel's 32x32 map holding the pooled value.
    picked = pre.gather(2, out.indices[0].flatten(2)).view_as(out.features[0])
    assert torch.equal(picked, out.features[0])


def test_unpooling_puts_values_back_where_they_came_from():
    # A 4x4 map with one maximum per 2x2 window; pool then unpool must restore exactly those.
    enc = VGG16Encoder(in_channels=1, width_mult=0.125)
    x = torch.tensor(
        [[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]]
    ).view(1, 1, 4, 4)
    pooled, idx = enc.pool(x)
    assert pooled.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert idx.flatten().tolist() == [0, 3, 9, 14]
    back = SegNet(DEBUG).unpool(pooled, idx, output_size=(4, 4))
    assert torch.equal(back, x)


@pytest.mark.parametrize("size", [64, 96])
def test_forward_and_backward_shapes(size):
    model = SegNet(DEBUG)
    x = torch.rand(2, 1, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 4, size, size)
    logits.mean().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert model.encoder.blocks[0][0].weight.grad is not None


def test_sizes_that_are_not_multiples_of_32_come_back_whole():
    assert SegNet(DEBUG)(torch.rand(1, 1, 50, 70)).shape == (1, 4, 50, 70)


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match=r">= 32.*\(16, 64\)"):
        SegNet(DEBUG)(torch.rand(1, 1, 16, 64))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_uniform_logits_give_cross_entropy_log_k(num_classes):
    model = SegNet(dataclasses.replace(DEBUG, num_classes=num_classes))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(2, 1, 64, 64, generator=g),
        "mask": torch.randint(0, num_classes, (2, 64, 64), generator=g),
        "labelled": torch.tensor([True, False]),
    }
    assert model.loss(batch)["loss"].item() == pytest.approx(math.log(num_classes), abs=1e-6)


def test_no_labelled_rows_gives_a_zero_loss_that_backpropagates():
    model = SegNet(DEBUG)
    batch = {
        "image": torch.rand(2, 1, 64, 64),
        "mask": torch.zeros(2, 64, 64, dtype=torch.long),
        "labelled": torch.tensor([False, False]),
    }
    out = model.loss(batch)
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_cpu_small_preset_is_narrowed():
    # SegNet-VGG16 at width 1.0 is ~10x slower than the U-Net on two CPU cores.
    assert PRESETS["cpu-small"].width_mult == 0.25
    assert PRESETS["paper"].width_mult == 1.0
    with pytest.raises(ValueError, match=r"SegNetConfig\.loss"):
        SegNetConfig(loss="xent")


@pytest.mark.parametrize("preset", ["paper", "cpu-small", "debug"])
def test_registry_builds_each_preset(preset):
    model = build_model("segnet", preset=preset)
    assert isinstance(model, SegNet) and model.name == "segnet"
    assert model.config == model_config("segnet", preset)
    if preset == "debug":
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 4, 64, 64)

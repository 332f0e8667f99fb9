"""What every registered model promises: feature perturbation on forward, and the presets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from stitchnet.config import PRESETS as PRESET_NAMES
from stitchnet.models import MODEL_NAMES, build_model, model_config
from stitchnet.models.base import perturb_features

X = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model(request):
    """A debug model in eval mode whose batch-norm statistics are X's.

    At initialisation the running statistics are (0, 1), and in eval mode the signal then fades
    layer by layer (SegNet's deepest map is ~1e-5), too small for a perturbation to show.
    """
    torch.manual_seed(0)
    model = build_model(request.param, preset="debug")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(X)
    return model.eval()


def test_perturb_features_drops_whole_channels_and_rescales_the_rest():
    torch.manual_seed(0)
    out = perturb_features(torch.ones(3, 64, 2, 2), 0.5)
    per_channel = out.flatten(2)  # (3, 64, 4)
    # Each channel is all 0 (dropped) or all 1 / (1 - 0.5) = 2 (kept).
    assert torch.equal(per_channel.amin(-1), per_channel.amax(-1))
    assert set(per_channel[..., 0].unique().tolist()) == {0.0, 2.0}
    ones = torch.ones(1, 4, 2, 2)
    assert perturb_features(ones, 0.0) is ones


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_perturb_features_refuses_p_outside_0_1(p):
    with pytest.raises(ValueError, match=rf"\[0, 1\), got {p}"):
        perturb_features(torch.ones(1, 1, 2, 2), p)


def test_p_zero_is_the_plain_forward_bitwise(model):
    with torch.no_grad():
        assert torch.equal(model(X, feature_dropout=0.0), model(X))


def test_p_positive_changes_the_output_even_in_eval_mode(model):
    with torch.no_grad():
        plain = model(X)
        torch.manual_seed(0)
        perturbed = model(X, feature_dropout=0.5)
    assert perturbed.shape == plain.shape
    assert (perturbed - plain).abs().max() > 1e-4


def test_perturbation_is_deterministic_under_a_fixed_seed(model):
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            runs.append(model(X, feature_dropout=0.5))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_perturbed_forward_backpropagates(model):
    model.train()
    torch.manual_seed(0)
    model.zero_grad()
    model(X, feature_dropout=0.5).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    model.eval()
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_has_every_preset(name):
    for preset in PRESET_NAMES:
        assert dataclasses.is_dataclass(model_config(name, preset))


# cpu is cpu-small's model except where the 128-px data of the cpu preset says otherwise: the
# generative models draw samples at the data's size.
@pytest.mark.parametrize(
    ("name", "differs"),
    [
        ("unet", {}),
        ("segnet", {}),
        ("stitchnet", {"image_size": 128}),
        ("ladder", {"image_size": 128}),
        ("svae", {"image_size": 128}),
        ("stitchnet-skip", {"image_size": 128}),
    ],
)
def test_cpu_preset_is_cpu_small_at_128_px(name, differs):
    assert set(MODEL_NAMES) == {"unet", "segnet", "stitchnet", "ladder", "svae", "stitchnet-skip"}
    small = model_config(name, "cpu-small")
    assert model_config(name, "cpu") == dataclasses.replace(small, **differs)

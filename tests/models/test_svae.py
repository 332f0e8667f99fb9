"""SVAE building blocks, the ladder trunk and the image-only SVAE, on tiny inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from stitchnet.models import build_model, model_config
from stitchnet.models.blocks import ConvBlock, Smooth, UpBlock, light_smooth, res_block
from stitchnet.models.svae import (
    PRESETS,
    SVAE,
    GaussianMap,
    LadderTrunk,
    SVAEConfig,
    free_bits_excess,
)

DEBUG = PRESETS["debug"]


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_conv_block_is_a_single_3x3_up_to_64_filters():
    block = ConvBlock(16, 64)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in _convs(block)] == [
        (16, 64, (3, 3))
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == 1
    assert sum(isinstance(m, nn.ReLU) for m in block.modules()) == 1


def test_conv_block_is_a_bottleneck_above_64_filters():
    block = ConvBlock(64, 128)
    shapes = [(c.in_channels, c.out_channels, c.kernel_size) for c in _convs(block)]
    assert shapes == [(64, 32, (1, 1)), (32, 32, (3, 3)), (32, 128, (1, 1))]
    # BN and ReLU after every convolution (the paper's rule).
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == 3
    assert sum(isinstance(m, nn.ReLU) for m in block.modules()) == 3
    assert block(torch.randn(2, 64, 5, 5)).shape == (2, 128, 5, 5)


def test_res_block_adds_its_input():
    block = res_block(8)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), x + block.body(x))
    with pytest.raises(ValueError, match="8 -> 16"):
        ConvBlock(8, 16, residual=True)


def test_smooth_and_light_smooth_differ_only_in_resblock_count():
    smooth, light = Smooth(8), light_smooth(8)
    assert len(smooth) == 4 and len(light) == 2  # a conv block, then 3 or 1 ResBlocks
    assert all(b.residual for b in list(smooth)[1:]) and not smooth[0].residual
    assert smooth(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)


def test_up_block_doubles_the_resolution():
    assert UpBlock(16, 8)(torch.randn(2, 16, 3, 5)).shape == (2, 8, 6, 10)


def test_gaussian_map_outputs_one_channel_mean_and_positive_variance():
    mu, var = GaussianMap(16, 64, 1e-4)(torch.randn(2, 16, 4, 4))
    assert mu.shape == var.shape == (2, 1, 4, 4)
    assert (var > 0).all()


def test_width_scales_the_d_channels():
    assert SVAEConfig().d_channels == (32, 64, 128, 256, 512)  # Table 2
    assert SVAEConfig(width=0.5).d_channels == (16, 32, 64, 128, 256)
    assert DEBUG.d_channels == (8, 16, 32, 64, 128)


@pytest.mark.parametrize("size", [64, 96])
def test_trunk_level_shapes(size):
    trunk = LadderTrunk(DEBUG)
    out = trunk(torch.rand(2, 1, size, size))
    for i, f in enumerate(DEBUG.d_channels):
        s = size // 2 ** (i + 1)
        assert out.d_enc[i].shape == (2, f, s, s)
        assert out.d_dec[i].shape == (2, f, s, s)
        assert out.z[i].shape == (2, 1, s, s)
        assert out.kl_maps[i].shape == (2, 1, s, s)
    assert out.features.shape == (2, DEBUG.d_channels[0] // 2, size, size)


def test_latent_channels_widen_every_z_and_its_prior():
    cfg = dataclasses.replace(DEBUG, latent_channels=3)
    trunk = LadderTrunk(cfg)
    out = trunk(torch.rand(2, 1, 64, 64))
    assert [z.shape[1] for z in out.z] == [3] * 5
    assert [k.shape[1] for k in out.kl_maps] == [3] * 5
    assert trunk.generate(2, 64).z[-1].shape == (2, 3, 2, 2)
    with pytest.raises(ValueError, match="latent_channels must be >= 1, got 0"):
        dataclasses.replace(DEBUG, latent_channels=0)


def test_generate_temperature_zero_is_the_prior_mean_path():
    trunk = LadderTrunk(DEBUG).eval()
    with torch.no_grad():
        a = trunk.generate(2, 64, torch.Generator().manual_seed(0), temperature=0.0)
        b = trunk.generate(2, 64, torch.Generator().manual_seed(1), temperature=0.0)
        c = trunk.generate(2, 64, torch.Generator().manual_seed(1), temperature=1.0)
    torch.testing.assert_close(a.features, b.features)  # no noise: seeds do not matter
    assert (a.z[-1] == 0).all()  # z5 at the mean of N(0, I)
    assert not torch.allclose(b.features, c.features)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        trunk.generate(1, 64, temperature=-1.0)


def test_posterior_means_are_deterministic_and_skip_kl():
    trunk = LadderTrunk(DEBUG).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = trunk(x, sample=False, with_kl=False), trunk(x, sample=False, with_kl=False)
    assert a.kl_maps == []
    torch.testing.assert_close(a.features, b.features)


def test_shared_flag_shares_the_d_to_z_maps():
    shared = LadderTrunk(DEBUG)
    unshared = LadderTrunk(dataclasses.replace(DEBUG, shared=False))
    for level in range(1, 5):
        assert shared.prior_map(level) is shared.posterior_map(level)
        assert unshared.prior_map(level) is not unshared.posterior_map(level)
    # The unshared trunk has exactly one extra d->z map for each of levels 1..4.
    extra = sum(_n_params(unshared.prior_map(level)) for level in range(1, 5))
    assert _n_params(unshared) - _n_params(shared) == extra > 0
    with pytest.raises(ValueError, match="level 5"):
        shared.prior_map(5)


def test_svae_forward_loss_and_sample():
    torch.manual_seed(0)
    model = SVAE(DEBUG)
    assert SVAE.segments is False
    x = torch.rand(2, 1, 64, 64)
    terms = model.loss({"image": x, "labelled": torch.tensor([False, False])})
    assert set(terms) == {"loss", "nll", "kl", "kl_1", "kl_2", "kl_3", "kl_4", "kl_5"}
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    kl_sum = sum(terms[f"kl_{i}"] for i in range(1, 6))
    torch.testing.assert_close(terms["kl"], kl_sum)
    torch.testing.assert_close(terms["loss"], terms["nll"] + terms["kl"])
    model.eval()
    recon = model(x)
    assert recon.shape == (2, 1, 64, 64)
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 64, 64)
    assert ((images >= 0) & (images <= 1)).all()


def test_reductions_rescale_the_same_elbo():
    x = torch.rand(2, 1, 64, 64)
    model = SVAE(dataclasses.replace(DEBUG, reduction="sum"))
    terms = {}
    for reduction in ("sum", "pixel_mean", "term_mean"):
        model.config = dataclasses.replace(DEBUG, reduction=reduction)
        torch.manual_seed(1)  # the same Monte Carlo sample of z for every reduction
        terms[reduction] = model.loss({"image": x})
    s, p, t = terms["sum"], terms["pixel_mean"], terms["term_mean"]
    torch.testing.assert_close(p["loss"] * 64 * 64, s["loss"])
    torch.testing.assert_close(t["nll"] * 64 * 64, s["nll"])
    for i in range(1, 6):  # term_mean averages level i's KL over its (64 / 2^i)^2 units
        torch.testing.assert_close(t[f"kl_{i}"] * (64 // 2**i) ** 2, s[f"kl_{i}"])


def test_kl_warmup_ramps_the_kl_weight():
    model = SVAE(dataclasses.replace(DEBUG, kl_warmup_steps=2))
    x = torch.rand(2, 1, 64, 64)
    first, second, third = (model.loss({"image": x}) for _ in range(3))
    torch.testing.assert_close(first["loss"], first["nll"])  # weight 0/2
    torch.testing.assert_close(second["loss"], second["nll"] + 0.5 * second["kl"])  # 1/2
    torch.testing.assert_close(third["loss"], third["nll"] + third["kl"])  # capped at 1
    assert int(model.trunk.steps_seen) == 3


def test_free_bits_floor_each_level_in_nats_per_unit():
    # Two levels of 4 and 1 units, 2 rows, "sum" reduction: KL per row as given.
    maps = [torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 1, 1)]
    kls = [torch.tensor([1.0, 3.0]), torch.tensor([0.2, 0.4])]  # batch means 2.0 and 0.3
    assert free_bits_excess(kls, maps, 16, "sum", 0.0).item() == 0.0  # exactly the plain ELBO
    rounded = [torch.tensor([-1e-9, 0.0]), torch.tensor([0.0, 0.0])]  # KL a hair below 0
    assert free_bits_excess(rounded, maps, 16, "sum", 0.0).item() == 0.0
    # 0.25 nats per unit: floors 1.0 and 0.25; both levels are above them.
    torch.testing.assert_close(free_bits_excess(kls, maps, 16, "sum", 0.25), torch.tensor(0.0))
    # 0.5 nats per unit: floors 2.0 and 0.5; the second level costs its floor, 0.2 more.
    torch.testing.assert_close(free_bits_excess(kls, maps, 16, "sum", 0.5), torch.tensor(0.2))
    # 1 nat per unit: floors 4 and 1, both levels under; KL + excess is a constant, no gradient.
    kls = [k.clone().requires_grad_() for k in kls]
    total = sum(k.mean() for k in kls) + free_bits_excess(kls, maps, 16, "sum", 1.0)
    torch.testing.assert_close(total, torch.tensor(5.0))
    total.backward()
    assert all(k.grad.abs().sum() == 0 for k in kls)
    # pixel_mean divides the floor as it divides the KL (by the 16 input pixels).
    zeros = [torch.zeros(2)] * 2
    torch.testing.assert_close(
        free_bits_excess(zeros, maps, 16, "pixel_mean", 1.0), torch.tensor(5.0 / 16)
    )


def test_free_bits_leave_the_reported_kl_alone():
    x = torch.rand(2, 1, 64, 64)
    plain, freed = (SVAE(dataclasses.replace(DEBUG, free_bits=fb)) for fb in (0.0, 100.0))
    freed.load_state_dict(plain.state_dict())
    torch.manual_seed(0)
    a = plain.loss({"image": x})
    torch.manual_seed(0)
    b = freed.loss({"image": x})
    torch.testing.assert_close(a["kl"], b["kl"])
    # 100 nats per unit is above every level's KL at initialisation: the KL term is the floor.
    units = sum((64 // 2**i) ** 2 for i in range(1, 6))
    torch.testing.assert_close(b["loss"], b["nll"] + 100.0 * units / (64 * 64))


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="-1"):
        SVAEConfig(free_bits=-1.0)
    with pytest.raises(ValueError, match="'mean'"):
        SVAEConfig(reduction="mean")
    with pytest.raises(ValueError, match="100"):
        SVAEConfig(image_size=100)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        SVAEConfig(channels=(1, 2))


@pytest.mark.parametrize("preset", ["paper", "cpu-small", "debug"])
def test_registry_builds_svae(preset):
    model = build_model("svae", preset=preset)
    assert isinstance(model, SVAE)
    assert model.config == model_config("svae", preset)

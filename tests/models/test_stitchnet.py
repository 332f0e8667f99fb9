"""StitchNet on tiny inputs: shapes, loss terms, gradients, variants, sampling, registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from stitchnet.models import build_model, config_from_dict, model_config
from stitchnet.models.losses import segmentation_loss
from stitchnet.models.stitchnet import PRESETS, StitchNet, StitchNetConfig

DEBUG = PRESETS["debug"]
LOSS_KEYS = {"loss", "nll_labelled", "nll_unlabelled", "label_term", "kl"} | {
    f"kl_{i}" for i in range(1, 6)
}


def _batch(labelled: list[bool], size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(labelled)
    lab = torch.tensor(labelled)
    mask = torch.randint(0, 4, (n, size, size), generator=g) * lab.view(-1, 1, 1)
    return {"image": torch.rand(n, 1, size, size, generator=g), "mask": mask, "labelled": lab}


def _losses(config: StitchNetConfig, batch, state=None, seed: int = 0):
    """Loss terms of a model with the given weights and the same Monte Carlo sample of z."""
    model = StitchNet(config)
    if state is not None:
        model.load_state_dict(state)
    torch.manual_seed(seed)
    return model, model.loss(batch)


@pytest.mark.parametrize("size", [64, 96])
def test_forward_gives_logits_at_input_resolution(size):
    model = StitchNet(DEBUG).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, size, size))
    assert logits.shape == (2, 4, size, size)
    assert model.predict(torch.rand(1, 1, size, size)).shape == (1, size, size)


def test_loss_terms_are_finite_scalars_that_add_up():
    torch.manual_seed(0)
    model = StitchNet(DEBUG)
    terms = model.loss(_batch([True, False, True, False]))
    assert set(terms) == LOSS_KEYS
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    torch.testing.assert_close(terms["kl"], sum(terms[f"kl_{i}"] for i in range(1, 6)))
    # Two labelled and two unlabelled rows: the loss is the mean over all four rows.
    recon = (terms["nll_labelled"] + terms["nll_unlabelled"]) / 2
    torch.testing.assert_close(terms["loss"], recon + terms["kl"])
    assert (terms["label_term"] > 0) and all(terms[f"kl_{i}"] >= 0 for i in range(1, 6))


def test_unlabelled_only_batch_trains_the_encoder():
    torch.manual_seed(0)
    model = StitchNet(DEBUG)
    terms = model.loss(_batch([False, False]))
    assert terms["nll_labelled"].item() == 0.0 and terms["label_term"].item() == 0.0
    terms["loss"].backward()
    first_conv = model.trunk.encoder.features[0][0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_label_weight_scales_only_the_label_term():
    batch = _batch([True, True])
    model, _ = _losses(DEBUG, batch)
    _, heavy = _losses(dataclasses.replace(DEBUG, label_weight=3.0), batch, model.state_dict())
    _, base = _losses(DEBUG, batch, model.state_dict())
    torch.testing.assert_close(heavy["label_term"], base["label_term"])
    torch.testing.assert_close(
        heavy["nll_labelled"], base["nll_labelled"] + 2.0 * base["label_term"]
    )


def test_focal_and_expected_variants_differ_from_the_defaults():
    batch = _batch([True, False])
    model, base = _losses(DEBUG, batch)
    state = model.state_dict()
    _, focal = _losses(dataclasses.replace(DEBUG, label_loss="focal"), batch, state)
    _, expected = _losses(dataclasses.replace(DEBUG, likelihood="expected"), batch, state)
    _, base = _losses(DEBUG, batch, state)
    assert all(torch.isfinite(t) for t in [*focal.values(), *expected.values()])
    assert not torch.isclose(focal["label_term"], base["label_term"])
    torch.testing.assert_close(focal["nll_unlabelled"], base["nll_unlabelled"])
    # The expected NLL bounds the mixture's NLL from above (Jensen), and is not equal to it.
    assert expected["nll_unlabelled"] > base["nll_unlabelled"]
    torch.testing.assert_close(expected["nll_labelled"], base["nll_labelled"])


def test_forward_matches_the_logits_of_outputs():
    model = StitchNet(DEBUG).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits, out = model(x), model.outputs(x)
    torch.testing.assert_close(logits, out["logits"])
    assert out["reconstruction"].shape == out["reconstruction_mean"].shape == (2, 1, 64, 64)
    assert out["styles"].shape == (2, 4, 64, 64)
    assert ((out["styles"] > 0) & (out["styles"] < 1)).all()
    assert [tuple(k.shape) for k in out["kl_maps"]] == [
        (2, 1, 64 // 2**i, 64 // 2**i) for i in range(1, 6)
    ]
    assert all((k >= 0).all() for k in out["kl_maps"])


def test_sample_shapes_and_ranges():
    model = StitchNet(DEBUG).eval()
    out = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 1, 64, 64)
    assert out["mask"].shape == (3, 64, 64) and out["mask"].dtype == torch.int64
    assert out["styles"].shape == (3, 4, 64, 64)
    assert ((out["image"] >= 0) & (out["image"] <= 1)).all()
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2, 3}
    cold = [model.sample(2, torch.Generator().manual_seed(g), temperature=0.0) for g in (0, 1)]
    torch.testing.assert_close(cold[0]["image"], cold[1]["image"])


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="'dice'"):
        StitchNetConfig(label_loss="dice")
    with pytest.raises(ValueError, match="'bernoulli'"):
        StitchNetConfig(likelihood="bernoulli")


def test_config_round_trips_through_a_dict():
    config = dataclasses.replace(PRESETS["cpu-small"], label_loss="focal", label_weight=10.0)
    d = dataclasses.asdict(config)
    d["channels"] = list(d["channels"])  # as JSON would hand it back
    assert config_from_dict("stitchnet", d) == config


@pytest.mark.parametrize("preset", ["paper", "cpu-small", "debug"])
def test_registry_builds_stitchnet_and_ladder(preset):
    stitch = build_model("stitchnet", preset=preset)
    ladder = build_model("ladder", preset=preset)
    assert isinstance(stitch, StitchNet) and isinstance(ladder, StitchNet)
    assert stitch.config.shared and not ladder.config.shared
    assert ladder.config == model_config("ladder", preset)
    n_stitch = sum(p.numel() for p in stitch.parameters())
    n_ladder = sum(p.numel() for p in ladder.parameters())
    assert n_ladder > n_stitch


def _constant_pi(model: StitchNet) -> StitchNet:
    """pi_head gives logits (ln 3, 0, 0, 0) at every pixel: pi = (1/2, 1/6, 1/6, 1/6)."""
    with torch.no_grad():
        model.pi_head.weight.zero_()
        model.pi_head.bias.copy_(torch.tensor([math.log(3.0), 0.0, 0.0, 0.0]))
    return model


def test_ce_plus_dice_label_term_by_hand():
    # Two labelled 64x64 rows, N = 8192 pixels: row 0 all class 0; row 1 left half class 2,
    # right half class 3. Counts n = (4096, 0, 2048, 2048); pi = (1/2, 1/6, 1/6, 1/6) everywhere.
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[1, :, :32], mask[1, :, 32:] = 2, 3
    batch = {"image": torch.rand(2, 1, 64, 64), "mask": mask, "labelled": torch.tensor([True] * 2)}
    n, pi, total = (4096, 0, 2048, 2048), (1 / 2, 1 / 6, 1 / 6, 1 / 6), 8192
    ce = (4096 * math.log(2) + 4096 * math.log(6)) / total
    # Soft Dice pooled over the batch, eps = 1: (2 pi_k n_k + 1) / (pi_k N + n_k + 1).
    dice = [(2 * p * c + 1) / (p * total + c + 1) for p, c in zip(pi, n, strict=True)]
    dice_loss = 1 - sum(dice) / 4

    model = _constant_pi(StitchNet(DEBUG))
    state = model.state_dict()
    cfg = dataclasses.replace(DEBUG, label_loss="ce+dice", label_weight=3.0)
    _, plain = _losses(dataclasses.replace(DEBUG, label_weight=3.0), batch, state)
    _, both = _losses(cfg, batch, state)
    assert plain["label_term"].item() == pytest.approx(ce, rel=1e-5)
    assert both["label_term"].item() == pytest.approx(ce + dice_loss, rel=1e-5)
    # Same z sample, same styles: the labelled rows' term grows by label_weight * Dice loss.
    torch.testing.assert_close(
        both["nll_labelled"] - plain["nll_labelled"], torch.tensor(3.0 * dice_loss)
    )


def test_ce_plus_dice_is_the_shared_segmentation_loss_on_the_labelled_rows():
    # Under "pixel_mean" the label term is losses.segmentation_loss(..., "ce+dice") of pi's logits.
    batch = _batch([True, False, True])
    model, terms = _losses(dataclasses.replace(DEBUG, label_loss="ce+dice"), batch)
    torch.manual_seed(0)
    out = model.trunk(batch["image"], sample=True, with_kl=True)
    logits = model.pi_head(out.features)[batch["labelled"]]
    expected = segmentation_loss(logits, batch["mask"][batch["labelled"]], "ce+dice")
    torch.testing.assert_close(terms["label_term"], expected)

"""StitchNet with skips on tiny inputs: shapes, gradients, the skips' point, presets, registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stitchnet.models import build_model, config_from_dict, model_config
from stitchnet.models.stitchnet import PRESETS as STITCHNET_PRESETS
from stitchnet.models.stitchnet import StitchNet
from stitchnet.models.stitchnet_skip import PRESETS, StitchNetSkip, StitchNetSkipConfig

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


@pytest.mark.parametrize("size", [64, 96])
def test_forward_and_backward_shapes(size):
    model = StitchNetSkip(DEBUG)
    x = torch.rand(2, 1, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 4, size, size)
    logits.mean().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    # pi reads the skip decoder, which reads the encoder's deepest map directly.
    assert model.skip_decoder.blocks[0].conv1[0].weight.grad.abs().sum() > 0
    assert model.trunk.encoder.features[0][0].weight.grad.abs().sum() > 0
    assert model.predict(torch.rand(1, 1, size, size)).shape == (1, size, size)


def test_loss_terms_are_finite_scalars_that_add_up():
    torch.manual_seed(0)
    model = StitchNetSkip(DEBUG)
    terms = model.loss(_batch([True, False, True, False]))
    assert set(terms) == LOSS_KEYS
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    torch.testing.assert_close(terms["kl"], sum(terms[f"kl_{i}"] for i in range(1, 6)))
    # debug has no KL warm-up: the loss is the mean of the four rows' terms plus the KL.
    recon = (terms["nll_labelled"] + terms["nll_unlabelled"]) / 2
    torch.testing.assert_close(terms["loss"], recon + terms["kl"])
    terms["loss"].backward()
    assert model.skip_decoder.blocks[-1].conv2[0].weight.grad.abs().sum() > 0
    assert model.style_head.weight.grad.abs().sum() > 0


def test_unlabelled_rows_train_pi_through_the_mixture():
    # As in StitchNet, rows without a mask still reach the segmentation head (and the encoder).
    torch.manual_seed(0)
    model = StitchNetSkip(DEBUG)
    terms = model.loss(_batch([False, False]))
    assert terms["nll_labelled"].item() == 0.0 and terms["label_term"].item() == 0.0
    terms["loss"].backward()
    assert model.pi_head.weight.grad.abs().sum() > 0
    assert model.trunk.encoder.features[0][0].weight.grad.abs().sum() > 0


def _collapse_latents(model: StitchNet) -> StitchNet:
    """Zero every latent mean and put the model in eval mode: z = 0 whatever the image."""
    with torch.no_grad():
        for gaussian in model.trunk.infer_z:
            gaussian.mean.weight.zero_()
            gaussian.mean.bias.zero_()
    return model.eval()


def test_segmentation_does_not_have_to_pass_through_the_latents():
    # With z fixed at 0, d~0 is the same for every image, so the faithful StitchNet gives the same
    # logits for two different images; through its skips the variant still sees the image.
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    stitch = _collapse_latents(StitchNet(STITCHNET_PRESETS["debug"]))
    skip = _collapse_latents(StitchNetSkip(DEBUG))
    with torch.no_grad():
        faithful, variant = stitch(x), skip(x)
    torch.testing.assert_close(faithful[0], faithful[1])
    assert (variant[0] - variant[1]).abs().max() > 1e-3


def test_styles_and_outputs_keep_stitchnets_shapes():
    model = StitchNetSkip(DEBUG).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits, out = model(x), model.outputs(x)
    torch.testing.assert_close(logits, out["logits"])
    assert out["styles"].shape == (2, 4, 64, 64)
    assert ((out["styles"] > 0) & (out["styles"] < 1)).all()
    assert len(out["kl_maps"]) == 5


def test_sample_is_refused_with_the_reason():
    with pytest.raises(NotImplementedError, match="encoder features"):
        StitchNetSkip(DEBUG).sample(2)


def test_defaults_are_the_class_balanced_label_term():
    config = StitchNetSkipConfig()
    assert config.label_loss == "ce+dice" and config.label_weight == 10.0
    # Everything StitchNet's trunk and ELBO take stays at the paper's values.
    assert (config.reduction, config.likelihood, config.free_bits) == ("pixel_mean", "mixture", 0)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match=r"skip_channels.*\(16, 8\)"):
        StitchNetSkipConfig(skip_channels=(16, 8))
    with pytest.raises(ValueError, match="'dice'"):
        StitchNetSkipConfig(label_loss="dice")


def test_config_round_trips_through_a_dict():
    config = dataclasses.replace(PRESETS["cpu"], label_loss="focal", skip_channels=(8, 8, 8, 8, 8))
    d = dataclasses.asdict(config)
    d["channels"], d["skip_channels"] = list(d["channels"]), list(d["skip_channels"])
    assert config_from_dict("stitchnet-skip", d) == config


@pytest.mark.parametrize("preset", ["paper", "cpu", "cpu-small", "debug"])
def test_registry_builds_each_preset(preset):
    model = build_model("stitchnet-skip", preset=preset)
    assert isinstance(model, StitchNetSkip) and model.name == "stitchnet-skip"
    assert model.config == model_config("stitchnet-skip", preset)
    assert model.uses_unlabelled


def test_cpu_preset_narrows_only_the_ladder():
    cpu = PRESETS["cpu"]
    assert (cpu.image_size, cpu.width, cpu.encoder_width) == (128, 0.5, 1.0)
    assert cpu.d_channels == (16, 32, 64, 128, 256)
    assert cpu.skip_channels == PRESETS["paper"].skip_channels

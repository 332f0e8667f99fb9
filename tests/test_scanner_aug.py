"""Scanner variation (stitchnet/scanner_aug.py) on real slices, in the batch and in a short run."""

import dataclasses
import math

import pytest
import torch

import stitchnet.batches as B
import stitchnet.train as T
from stitchnet import cli, pipeline
from stitchnet.augment import apply_params, gaussian_blur, sample_params
from stitchnet.config import DataConfig, RunConfig, TrainConfig
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.sources import load_bundled
from stitchnet.distributed import Dist
from stitchnet.scanner_aug import (
    ScannerAugSpec,
    apply_scanner,
    sample_scanner,
    scanner_config,
    scanner_spec,
)

WINDOW = (-1250.0, 250.0)  # the lung window: 1500 HU across [0, 1]
# Every transform off; each test switches on the one it checks.
NONE = ScannerAugSpec(offset_p=0.0, noise_p=0.0, kernel_p=0.0, thick_p=0.0)


@pytest.fixture(scope="module")
def slices():
    """Three real labelled slices at their own size, each (1, 1, H, W) in [0, 1]."""
    records = read_folder(load_bundled("labelled"))[:3]
    return [torch.from_numpy(r.image)[None, None] for r in records]


def _draw(spec: ScannerAugSpec, n: int, seed: int = 0):
    return sample_scanner(n, spec, torch.Generator().manual_seed(seed))


def _hf_energy(x: torch.Tensor) -> float:
    """Mean squared difference of neighbouring pixels, down and across (high frequencies)."""
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    return float((dy**2).mean() + (dx**2).mean())


def _lag1(x: torch.Tensor) -> float:
    """Correlation of horizontally neighbouring values of a (H, W) map."""
    pairs = torch.stack([x[:, :-1].flatten(), x[:, 1:].flatten()]).double()
    return float(torch.corrcoef(pairs)[0, 1])


# ---- each transform on a real slice ----


@pytest.mark.parametrize("window", [WINDOW, (-1500.0, 1500.0)])
def test_offset_moves_pixels_inside_the_window_by_exactly_the_drawn_offset(slices, window):
    spec = dataclasses.replace(NONE, offset_p=1.0)
    width = window[1] - window[0]  # 1500 or 3000 HU: the same offset is half as far in the second
    for x in slices:
        p = _draw(spec, 4, seed=x.shape[-1])
        out = apply_scanner(x.expand(4, -1, -1, -1), p, window)
        for i in range(4):
            hu = float(p.offset[i])
            assert 0 < abs(hu) <= 30.0
            # Pixels inside the window before and after: moved by the offset, nothing else.
            kept = (x[0] > 0) & (x[0] < 1) & (out[i] > 0) & (out[i] < 1)
            moved = (out[i] - x[0])[kept]
            assert kept.sum() > 0.9 * x.numel()
            assert float(moved.mean()) == pytest.approx(hu / width, abs=1e-6)
            assert float(moved.max() - moved.min()) < 1e-6
            # Pixels beyond the window (0 or 1) have no known HU: left as they were.
            beyond = (x[0] == 0) | (x[0] == 1)
            assert torch.equal(out[i][beyond], x[0][beyond])
            assert out.min() >= 0 and out.max() <= 1


def test_white_noise_has_the_drawn_std_and_no_grain(slices):
    spec = dataclasses.replace(NONE, noise_p=1.0, noise_hu=(5.0, 20.0), noise_grain_p=0.0)
    for x in slices:
        p = _draw(spec, 2, seed=1)
        out = apply_scanner(x.expand(2, -1, -1, -1), p, WINDOW)
        # Pixels 10 % away from both window edges are never clipped by noise of <= 20 HU.
        mid = (x[0, 0] > 0.1) & (x[0, 0] < 0.9)
        n = int(mid.sum())
        for i in range(2):
            noise = (out[i, 0] - x[0, 0]) * 1500  # HU
            sigma = float(p.noise[i])
            assert 5.0 <= sigma <= 20.0 and float(p.grain[i]) == 0.0
            # The sample std of n normals is within a few sigma / sqrt(2n) of sigma.
            assert float(noise[mid].std()) == pytest.approx(sigma, abs=5 * sigma / math.sqrt(2 * n))
            assert abs(float(noise[mid].mean())) < 5 * sigma / math.sqrt(n)
            assert abs(_lag1(noise)) < 0.02  # white: neighbours uncorrelated


def test_grainy_noise_keeps_the_drawn_std_and_correlates_like_blurred_white_noise(slices):
    spec = dataclasses.replace(NONE, noise_p=1.0, noise_hu=(10.0, 20.0), noise_grain_p=1.0)
    x = slices[1]
    p = _draw(spec, 1, seed=2)
    noise = (apply_scanner(x, p, WINDOW)[0, 0] - x[0, 0]) * 1500
    mid = (x[0, 0] > 0.1) & (x[0, 0] < 0.9)
    assert float(p.grain[0]) == pytest.approx(0.7)
    # Neighbours correlate less independently than white noise: a looser bound on the std.
    assert float(noise[mid].std()) == pytest.approx(float(p.noise[0]), rel=0.03)
    # White noise blurred by a Gaussian of sigma s has lag-1 correlation exp(-1 / (4 s^2)):
    # 0.600 for s = 0.7 px (0.58 for the sampled 7-tap kernel).
    assert _lag1(noise) == pytest.approx(math.exp(-1 / (4 * 0.7**2)), abs=0.05)


def test_soft_kernel_keeps_the_mean_and_lowers_high_frequencies(slices):
    spec = dataclasses.replace(NONE, kernel_p=1.0, kernel_sharp_p=0.0, soft_sigma=(0.8, 1.0))
    for x in slices:
        p = _draw(spec, 1)
        out = apply_scanner(x, p, WINDOW)
        assert float(p.sharp[0]) == 0.0 and 0.8 <= float(p.soft[0]) <= 1.0
        # A normalised kernel keeps the sum; only the reflected borders differ (< 1.5 HU).
        assert float(out.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
        # Its frequency response is below 1 everywhere, and well below it at high frequencies.
        assert _hf_energy(out) < 0.7 * _hf_energy(x)


def test_sharp_kernel_raises_high_frequencies_within_its_bound(slices):
    spec = dataclasses.replace(NONE, kernel_p=1.0, kernel_sharp_p=1.0, sharp_amount=(0.3, 0.5))
    for x in slices:
        p = _draw(spec, 1)
        out = apply_scanner(x, p, WINDOW)
        a = float(p.sharp[0])
        assert float(p.soft[0]) == 0.0 and 0.3 <= a <= 0.5
        # x + a (x - blur x) has response 1 + a (1 - G) in [1, 1 + a]; the clip to [0, 1] only
        # shrinks differences. So the energy grows, at most by (1 + a)^2.
        assert _hf_energy(x) * 1.05 < _hf_energy(out) <= (1 + a) ** 2 * _hf_energy(x)


def test_thick_slice_keeps_the_mean_and_lies_between_the_slice_and_its_blur(slices):
    spec = dataclasses.replace(NONE, thick_p=1.0)
    for x in slices:
        p = _draw(spec, 1, seed=3)
        sigma, mix = float(p.thick_sigma[0]), float(p.thick_mix[0])
        assert 0.5 <= sigma <= 1.5 and 0.3 <= mix <= 0.7
        out = apply_scanner(x, p, WINDOW)
        assert float(out.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
        blurred = gaussian_blur(x[0], sigma)
        # Part blurred, part kept: less detail than the slice, more than its full blur.
        assert _hf_energy(blurred) < _hf_energy(out) < _hf_energy(x)


def test_no_transform_drawn_returns_the_slice_unchanged(slices):
    x = slices[0]
    assert torch.equal(apply_scanner(x, _draw(NONE, 1), WINDOW), x)


def test_same_seed_same_output_and_another_seed_another(slices):
    spec = ScannerAugSpec(offset_p=1.0, noise_p=1.0, kernel_p=1.0, thick_p=1.0)
    x = slices[2].expand(3, -1, -1, -1)
    a = apply_scanner(x, _draw(spec, 3, seed=7), WINDOW)
    b = apply_scanner(x, _draw(spec, 3, seed=7), WINDOW)
    c = apply_scanner(x, _draw(spec, 3, seed=8), WINDOW)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Every spec draws the same count of random numbers, so later draws do not shift with it.
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    sample_scanner(5, spec, g1), sample_scanner(5, NONE, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_bad_ranges_and_unknown_fields_are_refused():
    with pytest.raises(ValueError, match=r"noise_p must be a number >= 0.0 and <= 1.0, got 1.5"):
        ScannerAugSpec(noise_p=1.5)
    with pytest.raises(ValueError, match=r"soft_sigma\[0\] must be a number > 0.0"):
        ScannerAugSpec(soft_sigma=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"thick_mix\[1\] must be a number >= 0.6"):
        ScannerAugSpec(thick_mix=(0.6, 0.2))
    with pytest.raises(ValueError, match=r"unknown ScannerAugSpec keys \['noise_std'\]"):
        scanner_spec({"noise_std": 10})
    assert scanner_spec(None) is None
    assert scanner_spec({"noise_hu": [0, 5]}) == ScannerAugSpec(noise_hu=(0, 5))


# ---- in the training loop's batch ----


@pytest.fixture(scope="module")
def real_sets():
    """4 labelled and 4 unlabelled bundled slices at 64 px, with their lung fields."""
    from stitchnet.data.preprocess import prepare

    cfg = DataConfig(image_size=64)
    lab = prepare(read_folder(load_bundled("labelled"))[:4], cfg, name="lab", progress=False)
    unl = prepare(read_folder(load_bundled("unlabelled"))[:4], cfg, name="unl", progress=False)
    return lab, unl


def _plan(real_sets, scanner, augment=True):
    lab, unl = real_sets
    return B.Plan(lab, unl, 2, 2, 1, augment, scanner, WINDOW)


def _step(plan, seed=0, d=None):
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor([2, 0])
    return B.step_batch(plan, idx, idx.flip(0), 0, g, d or Dist(), torch.device("cpu")), g


def test_default_batch_is_the_geometric_augmentation_alone(real_sets):
    """Off (the default): the batch is what augment.py's draws give, and nothing more is drawn."""
    assert TrainConfig().scanner_aug is None
    lab, unl = real_sets
    batch, g = _step(_plan(real_sets, None))
    ref_g = torch.Generator().manual_seed(0)
    draws = sample_params(4, 64, ref_g)
    images = torch.cat([lab.images[[2, 0]], unl.images[[0, 2]]])
    masks = torch.cat([lab.masks[[2, 0]], torch.zeros(2, 64, 64, dtype=torch.long)])
    ref_images, ref_masks = apply_params(images, masks, draws)
    assert torch.equal(batch["image"], ref_images) and torch.equal(batch["mask"], ref_masks)
    assert torch.equal(g.get_state(), ref_g.get_state())


@pytest.mark.parametrize("augment", [True, False])
def test_scanner_variation_changes_every_image_and_no_mask(real_sets, augment):
    on = dataclasses.replace(NONE, offset_p=1.0, noise_p=1.0)
    off, _ = _step(_plan(real_sets, None, augment))
    batch, _ = _step(_plan(real_sets, on, augment))
    assert torch.equal(batch["mask"], off["mask"]) and torch.equal(batch["lung"], off["lung"])
    assert batch["image"].shape == off["image"].shape
    for i in range(4):  # labelled rows 0-1 and the unlabelled weak views 2-3
        assert not torch.equal(batch["image"][i], off["image"][i])
    assert torch.equal(_step(_plan(real_sets, on, augment))[0]["image"], batch["image"])


def test_two_ranks_together_make_the_single_process_batch(real_sets):
    on = ScannerAugSpec(offset_p=1.0, noise_p=1.0, kernel_p=1.0, thick_p=1.0)
    whole, _ = _step(_plan(real_sets, on))
    r0, _ = _step(_plan(real_sets, on), d=Dist(rank=0, world=2))
    r1, _ = _step(_plan(real_sets, on), d=Dist(rank=1, world=2))
    # Rank 0 holds labelled row 0 and unlabelled row 2, rank 1 rows 1 and 3.
    assert torch.equal(r0["image"], whole["image"][[0, 2]])
    assert torch.equal(r1["image"], whole["image"][[1, 3]])


# ---- the run config, the CLI and a short run ----


def test_run_config_stores_every_field_and_reads_back_equal(tmp_path):
    cfg = pipeline.run_config("unet", "debug", scanner_aug={"noise_hu": (0.0, 10.0)})
    stored = cfg.train.scanner_aug
    assert stored == scanner_config(ScannerAugSpec(noise_hu=(0.0, 10.0)))
    assert stored["offset_hu"] == 30.0 and stored["noise_hu"] == [0.0, 10.0]
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json").train == cfg.train
    assert pipeline.run_config("unet", "debug").train.scanner_aug is None


def test_cli_flag_switches_it_on(monkeypatch, tmp_path):
    seen = {}

    def fake_fit(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(pipeline, "fit", fake_fit)
    base = ["train", "--model", "unet", "--labelled", "x", "--out", str(tmp_path), "--quiet"]
    assert cli.main(base + ["--scanner-aug"]) == 2
    assert seen["scanner_aug"] == {}
    assert cli.main(base) == 2
    assert seen["scanner_aug"] is None
    # The recommended model (no --model) trains with it unless told not to.
    recommended = base[:1] + base[3:]
    assert cli.main(recommended) == 2
    assert seen["scanner_aug"] == {}
    assert cli.main(recommended + ["--no-scanner-aug"]) == 2
    assert seen["scanner_aug"] is None


def test_short_debug_run_with_scanner_variation(real_sets, tmp_path):
    lab, unl = real_sets
    cfg = pipeline.run_config(
        "unet", "debug", objective="fixmatch", scanner_aug={}, epochs=1, steps_per_epoch=2
    )
    assert cfg.train.augment is False  # the debug preset: scanner variation runs without it
    res = T.train(cfg, lab, None, tmp_path, unlabelled=unl, progress=False)
    assert res.skipped_steps == 0 and math.isfinite(res.history[0]["loss"])
    assert RunConfig.load(tmp_path / "config.json").train == cfg.train
    # A rerun with the same config finds the run finished (its stored config matches).
    again = T.train(cfg, lab, None, tmp_path, unlabelled=unl, progress=False)
    assert again.start_epoch == 1

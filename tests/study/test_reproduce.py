"""`stitchnet reproduce --preset debug` end to end on a few real slices, and its report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from stitchnet.cli import main
from stitchnet.figures import samples_figure


def test_reproduce_debug_writes_a_complete_report(tmp_path, real_labelled, real_unlabelled):
    out = tmp_path / "repro"
    args = ["reproduce", "--preset", "debug", "--out", str(out), "--quiet"]
    args += ["--labelled", str(real_labelled), "--unlabelled", str(real_unlabelled)]
    assert main(args) == 0

    report = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    # Table 1 for every model, the paper's table beside it, the seeds table, the split warning.
    for label in (
        "StitchNet (labelled + unlabelled)",
        "StitchNet (labelled only)",
        "Ladder VAE, unshared",
        "U-Net (MobileNetV2, from scratch)",
        "U-Net (MobileNetV2, ImageNet encoder)",
        "SegNet (VGG16)",
    ):
        assert f"| GGO | {label}" in report, label
    assert "(paper)" in report and "Lesion Dice over seeds" in report
    assert "by SLICE, not by patient" in report
    assert "Does unlabelled data help StitchNet here?" in report
    # Every mean ± std in Table 1 lies in [0, 1].
    for mean, std in re.findall(r"(\d+\.\d+) ± (\d+\.\d+)", report.split("## The paper")[0]):
        assert 0.0 <= float(mean) <= 1.0 and 0.0 <= float(std) <= 1.0
    # Figures exist, are referenced, and are inlined in the HTML copy.
    figs = [
        "fig2_comparison",
        "fig6_styles_stitchnet_ssl",
        "samples_stitchnet_ssl",
        "label_efficiency",
        "training_curves",
    ]
    for name in figs:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
        assert f"figures/{name}.png" in report
    assert html.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png")))

    # Calibration on the test split for the efficiency panel's models, main and 5-slice runs.
    for run in ("runs/unet/seed0", "efficiency/unet/n5/seed0", "runs/stitchnet_ssl/seed0"):
        cal = json.loads((out / run / "test" / "calibration.json").read_text())
        assert 0.0 <= cal["ece"] <= 1.0 and 0.0 <= cal["brier"] <= 2.0, run
        assert cal["n_pixels"] > 0
    assert "## Calibration on the test split" in report
    assert re.search(r"\| U-Net \(MobileNetV2, from scratch\) \| 5 \| 1 \| 4 flips", report)

    # A second invocation retrains nothing: every run is already finished.
    stamps = {p: p.stat().st_mtime for p in out.glob("runs/*/seed0/best.pt")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime for p in out.glob("runs/*/seed0/best.pt")}
    info = json.loads((out / "runs" / "unet" / "seed0" / "run_info.json").read_text())
    assert info["wall_s"] > 0


def test_samples_figure_takes_one_row_or_labelled_rows(tmp_path):
    rng = np.random.default_rng(0)
    one = samples_figure(rng.random((3, 32, 32)), None, tmp_path / "one.png")
    rows = samples_figure(
        rng.random((2, 3, 32, 32)),
        rng.integers(0, 4, (2, 3, 32, 32)),
        tmp_path / "rows.png",
        row_labels=["temperature 1", "temperature 0"],
    )
    assert one.stat().st_size > 1000 and rows.stat().st_size > one.stat().st_size
    with pytest.raises(ValueError, match="expected 2 labels, got 1"):
        samples_figure(rng.random((2, 3, 32, 32)), None, tmp_path / "x.png", row_labels=["t"])


def _fake_run(out, key, seed, val, ggo_f1, con_f1):
    """A finished run folder as reproduce leaves it: run_info.json and test/metrics.json."""
    run = out / "runs" / key / f"seed{seed}"
    (run / "test").mkdir(parents=True)
    (run / "run_info.json").write_text(
        json.dumps({"variant": key, "label": key, "seed": seed, "val_lesion_dice": val})
    )
    f1 = {"ggo": ggo_f1, "consolidation": con_f1}
    groups = {g: {"f1": {"mean": v, "std": 0.0, "n": 3}} for g, v in f1.items()}
    (run / "test" / "metrics.json").write_text(json.dumps({"groups": groups}))


def test_recommended_is_chosen_on_validation_and_gains_are_paired_by_seed(tmp_path):
    from stitchnet.study.protocol import SSL_VARIANTS
    from stitchnet.study.results import collect, paired_gains
    from stitchnet.study.run import choose_recommended

    # fixmatch: better on validation (0.5 vs 0.4) but worse on test; the choice must follow
    # validation. Its test lesion Dice per seed: 0.35, 0.45; the U-Net's: 0.30, 0.40.
    for seed, (val_fm, val_um) in enumerate([(0.5, 0.4), (0.5, 0.4)]):
        _fake_run(tmp_path, "unet_fixmatch", seed, val_fm, 0.3 + 0.1 * seed, 0.4 + 0.1 * seed)
        _fake_run(tmp_path, "unet_unimatch", seed, val_um, 0.9, 0.9)
        _fake_run(tmp_path, "unet", seed, None, 0.2 + 0.1 * seed, 0.4 + 0.1 * seed)
    chosen = choose_recommended(tmp_path, SSL_VARIANTS)
    assert chosen.key == "unet_fixmatch"
    record = json.loads((tmp_path / "recommended.json").read_text())
    assert record["val_lesion_dice"] == {"unet_fixmatch": 0.5, "unet_unimatch": 0.4}

    runs = collect(tmp_path)
    rows = paired_gains(runs, {k: k for k in runs}, (("unet_fixmatch", "unet"),))
    # Gains +0.05 on both seeds: positive on every seed, but smaller than the seeds' spreads
    # (std 0.05 + 0.05): not shown.
    assert rows[2] == "| unet_fixmatch | unet | +0.050, +0.050 | +0.050 | yes | not shown |"

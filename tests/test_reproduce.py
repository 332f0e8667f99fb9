"""`stitchnet reproduce --preset debug` end to end on a few real slices, and its report."""

from __future__ import annotations

import json
import re

from stitchnet.cli import main


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

    # A second invocation retrains nothing: every run is already finished.
    stamps = {p: p.stat().st_mtime for p in out.glob("runs/*/seed0/best.pt")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime for p in out.glob("runs/*/seed0/best.pt")}
    info = json.loads((out / "runs" / "unet" / "seed0" / "run_info.json").read_text())
    assert info["wall_s"] > 0

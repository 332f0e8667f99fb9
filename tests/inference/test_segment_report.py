"""`stitchnet segment` with its report, uncertainty and healthy twin, on a small NIfTI chest scan
built from bundled slices (test_segment_scan's `_chest`), with debug-preset models saved as real
checkpoints.

An untrained debug StitchNet gives nearly the same logits at every pixel (spread ~1e-4), so the
label map would be one class. `_varied_stitchnet` scales its pi head by 2e4 and centres the biases
on bundled slices (consolidation raised by 0.7): still a genuine StitchNet checkpoint, whose
classes now vary from pixel to pixel (on three bundled slices about 22 % background, 21 % healthy,
42 % GGO, 15 % consolidation), so the twin has lesion voxels to replace and healthy ones to keep.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import volume_factory as vf
from PIL import Image
from test_segment_scan import _chest
from test_viewer import chromium, screenshot, tinted

from stitchnet.checkpoint import save_checkpoint
from stitchnet.cli import main
from stitchnet.data.preprocess import resize_image
from stitchnet.data.volumes import read_volume
from stitchnet.inference.twin import AIR_HU, twin_volume
from stitchnet.inference.uncertainty import lung_label_probs, paste_map, uncertainty_csv
from stitchnet.inference.viewer import VIEW_PX, lesion_ml_per_slice
from stitchnet.models import build_model
from stitchnet.pipeline import run_config

N, SIZE = 4, 96  # slices, px per side
LOG3 = math.log(3)
EPS = 1e-5  # float32 rounding of entropies


def _varied_stitchnet() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    cfg = run_config("stitchnet", "debug")
    model = build_model("stitchnet", cfg.model_config).eval()
    x = torch.stack(
        [
            resize_image(np.asarray(Image.open(vf.LABELLED / "images" / f"z00{i}.png")) / 255, 64)
            for i in range(3)
        ]
    ).float()  # (3, 1, 64, 64)
    with torch.no_grad():
        model.pi_head.weight *= 2e4
        model.pi_head.bias.zero_()
        model.pi_head.bias -= model(x).mean(dim=(0, 2, 3))  # (4,) centred logits
        model.pi_head.bias[3] += 0.7  # enough consolidation to see on a slice
    return model, cfg


def _display(path: Path, vol) -> np.ndarray:
    """A NIfTI written by segment, back in the scan's display orientation (Z, Y, X)."""
    data = np.asarray(nib.load(path).dataobj)
    return np.transpose(nib.orientations.apply_orientation(data, vol.ornt), (2, 0, 1))


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> tuple[Path, Path]:
    """(the scan as LAS NIfTI in HU, a folder holding stitchnet.pt and unet.pt)."""
    root = tmp_path_factory.mktemp("report")
    hu = _chest(N, SIZE).hu
    nii = vf.dicom_to_nifti(root / "scan.nii.gz", hu, vf.dicom_affine(N), axcodes="LAS")
    model, cfg = _varied_stitchnet()
    save_checkpoint(root / "stitchnet.pt", model, cfg, epoch=0, step=0)
    torch.manual_seed(0)
    cfg = run_config("unet", "debug")
    save_checkpoint(root / "unet.pt", build_model("unet", cfg.model_config), cfg, epoch=0, step=0)
    return nii, root


@pytest.fixture(scope="module")
def stitchnet_run(scan) -> Path:
    nii, root = scan
    out = root / "out_stitchnet"
    code = main(
        [
            "segment", str(nii), "--out", str(out), "--model", str(root / "stitchnet.pt"),
            "--uncertainty", "--samples", "3", "--no-overlays", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_stitchnet_writes_every_output_with_the_inputs_geometry(scan, stitchnet_run):
    nii, _ = scan
    # (Hidden names are the output folder's own bookkeeping, not outputs.)
    assert sorted(p.name for p in stitchnet_run.iterdir() if not p.name.startswith(".")) == [
        "burden.csv", "burden.json", "healthy_twin.nii.gz", "healthy_twin_diff.nii.gz",
        "labels.nii.gz", "lung.nii.gz", "report.html", "uncertainty.csv", "uncertainty.nii.gz",
        "uncertainty_mi.nii.gz",
    ]  # fmt: skip
    src = nib.load(nii)
    for name in ("uncertainty", "uncertainty_mi", "healthy_twin", "healthy_twin_diff"):
        img = nib.load(stitchnet_run / f"{name}.nii.gz")
        assert img.shape == src.shape == (SIZE, SIZE, N), name
        assert np.allclose(img.affine, src.affine), name
        assert img.get_data_dtype() == np.float32, name


def test_uncertainty_bounds_and_per_slice_summary(scan, stitchnet_run):
    vol = read_volume(scan[0])
    ent = _display(stitchnet_run / "uncertainty.nii.gz", vol)
    mi = _display(stitchnet_run / "uncertainty_mi.nii.gz", vol)
    lung = _display(stitchnet_run / "lung.nii.gz", vol) > 0
    # Entropy of a 3-outcome label: 0 .. log 3; MI is a part of it; both 0 where no lung.
    assert ent.min() >= 0 and ent.max() <= LOG3 + EPS and mi.min() >= 0
    assert (mi <= ent + EPS).all()
    assert (ent[~lung] == 0).all() and (mi[~lung] == 0).all()
    assert ent[lung].mean() > 0.1  # the varied model's classes compete inside the lung
    rows = list(csv.DictReader(io.StringIO((stitchnet_run / "uncertainty.csv").read_text())))
    assert [int(r["slice"]) for r in rows] == list(range(N))
    for z, r in enumerate(rows):
        assert int(r["lung_voxels"]) == lung[z].sum()
        assert float(r["mean_entropy"]) == pytest.approx(ent[z][lung[z]].mean(), abs=1e-5)
    burden = json.loads((stitchnet_run / "burden.json").read_text())
    u = burden["uncertainty"]
    assert u["method"] == "3 posterior draws of z (seed 0)"
    assert u["mean_entropy_lung"] == pytest.approx(ent[lung].mean(), rel=1e-5)


def test_twin_changes_exactly_the_lesion_voxels(scan, stitchnet_run):
    nii, _ = scan
    vol = read_volume(nii)
    src = np.asarray(nib.load(nii).dataobj).astype(np.float32)  # input order, HU
    twin = np.asarray(nib.load(stitchnet_run / "healthy_twin.nii.gz").dataobj)
    diff = np.asarray(nib.load(stitchnet_run / "healthy_twin_diff.nii.gz").dataobj)
    labels = np.asarray(nib.load(stitchnet_run / "labels.nii.gz").dataobj)
    lesion = labels >= 2
    assert lesion.sum() > 200 and (labels == 1).sum() > 200  # both kinds of lung voxel
    assert np.array_equal(twin[~lesion], src[~lesion])  # bit for bit off the lesions
    tissue = lesion & (src > AIR_HU)  # air stays air in the twin
    assert (twin[tissue] != src[tissue]).mean() > 0.99
    assert np.array_equal(diff, twin - src) and (diff[~lesion] == 0).all()
    # The twin never goes below air, and takes density away from the lesions on the whole.
    assert twin[lesion].min() >= AIR_HU and twin[lesion].mean() < src[lesion].mean()
    burden = json.loads((stitchnet_run / "burden.json").read_text())
    assert burden["healthy_twin"]["lesion_voxels_replaced"] == int(lesion.sum())
    assert vol.hu.shape == (N, SIZE, SIZE)


def test_report_is_self_contained_with_every_layer(stitchnet_run):
    text = (stitchnet_run / "report.html").read_text()
    for ref in ("http://", "https://", 'src="/', "url(", "<link"):
        assert ref not in text, ref
    assert text.count("data:image/png;base64,") == 2 * N  # base + (twin, uncertainty) per slice
    for control in ('id="uncertainty"', 'id="twin"', 'id="lung"'):
        assert control in text
    assert "stitchnet.pt" in text and "version" in text
    data = json.loads(re.search(r'id="data">(.*?)</script>', text).group(1))
    burden = json.loads((stitchnet_run / "burden.json").read_text())
    total = burden["regions"]["total"]
    # The plot's series are the label volume's voxels x the voxel volume, summing to the burden.
    assert sum(data["series"]["ggo"]) == pytest.approx(total["ggo_ml"])
    assert sum(data["series"]["consolidation"]) == pytest.approx(total["consolidation_ml"])


def test_labels_do_not_depend_on_uncertainty_and_no_report_skips_it(scan, stitchnet_run, tmp_path):
    nii, root = scan
    out = tmp_path / "plain"
    args = ["segment", str(nii), "--out", str(out), "--model", str(root / "stitchnet.pt")]
    assert main([*args, "--no-report", "--no-twin", "--no-overlays", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "burden.csv", "burden.json", "labels.nii.gz", "lung.nii.gz",
    ]  # fmt: skip
    a = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    b = np.asarray(nib.load(stitchnet_run / "labels.nii.gz").dataobj)
    assert np.array_equal(a, b)


def test_unet_gets_flips_and_no_twin_and_says_so(scan, tmp_path, capsys):
    nii, root = scan
    out = tmp_path / "unet"
    args = ["segment", str(nii), "--out", str(out), "--model", str(root / "unet.pt")]
    assert main([*args, "--uncertainty", "--no-overlays", "--quiet"]) == 0
    assert not (out / "healthy_twin.nii.gz").exists()
    burden = json.loads((out / "burden.json").read_text())
    assert burden["healthy_twin"] is None
    assert any(n.startswith("no healthy twin: unet") for n in burden["notes"])
    assert "note: no healthy twin: unet" in capsys.readouterr().out
    assert burden["uncertainty"]["method"] == "test-time augmentation: the four flips"
    text = (out / "report.html").read_text()
    assert 'id="uncertainty"' in text and 'id="twin"' not in text


def test_bad_samples_exit_2_and_nothing_written(scan, tmp_path, capsys):
    nii, root = scan
    out = tmp_path / "o"
    code = main(["segment", str(nii), "--out", str(out), "--uncertainty", "--samples", "0"])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err  # refused by argparse, before anything is read
    assert "argument --samples: must be a whole number of at least 1, got 0" in err


def test_small_pure_pieces_by_hand():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1)
    assert torch.allclose(lung_label_probs(p).flatten(), torch.tensor([0.3, 0.3, 0.4]))
    # A 2x2 map into the box rows 1..3, cols 2..4 of a 4x6 slice: same size, pasted as is.
    m = np.array([[0.5, 1.0], [0.0, 0.25]], dtype=np.float32)
    out = paste_map(m, (1, 3, 2, 4), (4, 6))
    assert np.array_equal(out[1:3, 2:4], m) and out.sum() == m.sum()
    ent = np.zeros((2, 2, 2), np.float32)
    ent[0] = [[1.0, 0.5], [0.2, 9.0]]
    lung = np.array([[[1, 1], [1, 0]], [[0, 0], [0, 0]]])
    text = uncertainty_csv(ent, ent / 2, lung)
    assert text.splitlines() == [
        "slice,lung_voxels,mean_entropy,mean_mi",
        "0,3,0.566667,0.283333",
        "1,0,,",
    ]
    labels = np.zeros((2, 3, 3), np.uint8)
    labels[0, 0, :2] = 2
    labels[1, 1, 1] = 3
    assert lesion_ml_per_slice(labels, 0.5) == {"ggo": [1.0, 0.0], "consolidation": [0.0, 0.5]}
    # The twin: uniform lesions take the level of the scan's aerated healthy lung (-700 HU),
    # the rest stays as it was.
    lung = np.maximum(labels, 1)  # the rest healthy lung
    hu = np.where(lung >= 2, -300.0, -700.0).astype(np.float32)
    twin = twin_volume(hu, lung)
    assert np.allclose(twin[lung >= 2], -700.0, atol=0.5)
    assert np.array_equal(twin[lung < 2], hu[lung < 2])


@pytest.mark.slow  # two Chromium screenshots, ~3 s each
def test_browser_shows_the_segment_overlay_and_hides_it(stitchnet_run, tmp_path):
    if chromium() is None:
        pytest.skip("no Chromium: neither /usr/bin/chromium nor `chromium` on PATH")
    html = stitchnet_run / "report.html"
    data = json.loads(re.search(r'id="data">(.*?)</script>', html.read_text()).group(1))
    k = data["start"]  # the slice with the most lesion voxels
    labels = (
        np.asarray(Image.open(io.BytesIO(_b64(data["slices"][k]["b"]))))[..., 2] & 3
    )  # (Y, X) class ids, from the report's own base PNG
    on = screenshot(html, f"slice={k}&overlay=1", tmp_path / "on.png")
    off = screenshot(html, f"slice={k}&overlay=0", tmp_path / "off.png")
    # The canvas scales the 96 px slice up to the 512 px box: screen pixel (y, x) shows voxel
    # (y / scale, x / scale). Chromium may round voxel edges differently, so compare only the
    # screen pixels well inside a voxel (the middle 60 % of it along both axes).
    pos = np.arange(VIEW_PX) / (VIEW_PX / SIZE)
    idx, inner = pos.astype(int), np.abs(pos % 1 - 0.5) < 0.3
    voxel = labels[idx][:, idx]  # (512, 512) the label under each screen pixel
    inner2d = inner[:, None] & inner[None, :]
    assert (voxel == 2).sum() > 1000 and (voxel == 3).sum() > 1000  # lesions on this slice
    for cls, channel in ((2, 1), (3, 2)):  # GGO green, consolidation blue
        # At 50 % opacity each tint clears the 60-level margin on any grey.
        tint, truth = tinted(on, channel)[inner2d], (voxel == cls)[inner2d]
        assert np.array_equal(tint, truth), (cls, (tint != truth).sum(), truth.sum())
    assert tinted(off, 1, 10).sum() == 0 and tinted(off, 2, 10).sum() == 0


def _b64(uri: str) -> bytes:
    return base64.b64decode(uri.removeprefix("data:image/png;base64,"))


if __name__ == "__main__":
    # Rebuild docs/viewer/segment_report*.png: a 10-slice chest scan of bundled slices through
    # `stitchnet segment --uncertainty` with MODEL (default: the shipped one), shot in Chromium:
    #   python tests/inference/test_segment_report.py docs/viewer [MODEL]
    import sys
    import tempfile

    docs = Path(sys.argv[1]).resolve()
    model = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as tmp:
        hu = _chest(10, 256).hu
        nii = vf.dicom_to_nifti(Path(tmp) / "scan.nii.gz", hu, vf.dicom_affine(10), "LAS")
        args = ["segment", str(nii), "--out", f"{tmp}/out", "--uncertainty", "--no-overlays"]
        assert main(args + (["--model", model] if model else [])) == 0
        html = Path(tmp) / "out" / "report.html"
        k = json.loads(re.search(r'id="data">(.*?)</script>', html.read_text()).group(1))["start"]
        shots = {
            "": "lung=1",
            "_twin": "overlay=0&twin=1",
            "_uncertainty": "overlay=0&uncertainty=1",
        }
        for suffix, query in shots.items():
            out = docs / f"segment_report{suffix}.png"
            out.unlink(missing_ok=True)
            screenshot(html, f"slice={k}&{query}", out, size="1140,600")
            print(out)

"""Pictures for people are radiological: anterior up, the patient's right on the image's left.

A marker blob is placed in the patient's LEFT ANTERIOR lung of a NIfTI chest scan through the
scan's affine alone (RAS world coordinates: left is smaller x, anterior is larger y), so nothing
here leans on the display orientation the code uses. Read back, segmented (the blob is the only
consolidation) and drawn, the blob must sit in the TOP RIGHT quadrant of every picture: the
viewer in headless Chromium, segment's overlay PNG and predict's overlay PNG. Real scans from
data/realct_nonlesion_dev check the anatomy: the spine at the bottom, the liver on the left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import volume_factory as vf
from conftest import LABELLED, copy_slices
from PIL import Image
from test_viewer import BOX, chromium, page_screenshot, tinted

from stitchnet.checkpoint import save_checkpoint
from stitchnet.cli import main
from stitchnet.data.hu_scale import recorded_windows
from stitchnet.data.volumes import read_volume
from stitchnet.inference.orient import mark_orientation, radiological
from stitchnet.inference.scan import _write_overlay
from stitchnet.inference.viewer import VIEW_ORIGIN, VIEW_PX, write_viewer
from stitchnet.models import build_model
from stitchnet.pipeline import run_config

N, SIZE = 3, 128  # slices, px per side
BLOB_HU, BLOB_MM = 1000.0, 4.0  # brighter than anything in the bundled slices (<= 250 HU)
REAL = Path(__file__).resolve().parents[2] / "data" / "realct_nonlesion_dev"
# The four letters as 5 x 7 dots, drawn by hand.
LETTERS = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
}


@pytest.fixture(scope="module")
def blob_scan(tmp_path_factory):
    """(volume read back, its labels: 3 on the blob only, the blob's display slice)."""
    root = tmp_path_factory.mktemp("orient")
    scan = vf.display_scan(N, SIZE)
    affine = vf.dicom_affine(N)
    src = nib.load(vf.dicom_to_nifti(root / "scan.nii.gz", scan.hu, affine, "LAS"))
    lung = np.asarray(nib.load(vf.dicom_to_nifti(root / "lung.nii.gz", scan.lung, affine)).dataobj)
    hu = np.asarray(src.dataobj).astype(np.float32)  # the input's own (i, j, k) order
    ijk = np.indices(hu.shape).reshape(3, -1)
    xyz = nib.affines.apply_affine(src.affine, ijk.T).reshape(*hu.shape, 3)  # RAS mm per voxel
    centre = nib.affines.apply_affine(src.affine, (np.array(hu.shape) - 1) / 2)
    k = N // 2  # the middle slice (LAS: k is the slice axis)
    x, y = xyz[:, :, k, 0], xyz[:, :, k, 1]
    quadrant = (lung[:, :, k] > 0) & (x < centre[0]) & (y > centre[1])  # patient left, anterior
    assert quadrant.sum() > 200  # the bundled slice has lung there
    i, j = np.argwhere(quadrant).mean(axis=0).round().astype(int)
    spot = quadrant[i - 3 : i + 4, j - 3 : j + 4]
    assert spot.all(), "the blob's centre lies inside the left anterior lung"
    disc = np.hypot(x - x[i, j], y - y[i, j]) <= BLOB_MM
    hu[:, :, k][disc] = BLOB_HU
    nib.save(nib.Nifti1Image(hu.astype(np.int16), src.affine), root / "blob.nii.gz")
    vol = read_volume(root / "blob.nii.gz")
    labels = np.where(vol.hu >= BLOB_HU, 3, 0).astype(np.uint8)  # (Z, Y, X)
    z = int(np.argmax((labels == 3).sum(axis=(1, 2))))
    assert (labels == 3).sum() == disc.sum() > 40  # the blob, and nothing else
    return vol, labels, z, root


def in_top_right(mask: np.ndarray) -> None:
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    assert rows.size > 0
    assert rows.max() < h / 2 and cols.min() > w / 2, (rows.mean(), cols.mean(), mask.shape)


def test_radiological_is_the_transpose_of_a_display_slice():
    display = np.arange(6).reshape(2, 3)  # rows patient R->L, cols A->P
    assert radiological(display).tolist() == [[0, 3], [1, 4], [2, 5]]
    rgb = np.arange(24).reshape(2, 3, 4)  # channels ride along
    assert radiological(rgb).shape == (3, 2, 4) and radiological(rgb)[2, 1].tolist() == [
        20, 21, 22, 23,
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        radiological(np.zeros(5))


def test_segment_overlay_png_shows_the_blob_top_right_with_letters(blob_scan, tmp_path):
    vol, labels, z, _ = blob_scan
    _write_overlay(tmp_path, z, vol.hu, labels, (-1350.0, 150.0))
    png = np.asarray(Image.open(tmp_path / f"slice_{z:04d}.png"))
    assert png.shape == (SIZE, SIZE, 3)
    blue = tinted(png, 2)
    in_top_right(blue)
    assert np.array_equal(blue, (labels[z] == 3).T)
    # 128 px: one pixel per dot, 7 x 5 glyphs centred on each edge, 2 px in from it.
    ink = png[..., 0] == 255
    where = {"A": (2, 61), "P": (119, 61), "R": (60, 2), "L": (60, 121)}
    for letter, (r, c) in where.items():
        drawn = ink[r : r + 7, c : c + 5]
        assert np.array_equal(drawn, [[ch == "#" for ch in row] for row in LETTERS[letter]]), letter


def test_letters_are_not_drawn_on_tiny_pictures():
    tiny = np.full((20, 30, 3), 100, np.uint8)
    assert np.array_equal(mark_orientation(tiny), tiny)


@pytest.mark.slow  # two Chromium starts, ~3 s each
def test_viewer_shows_the_blob_top_right_and_the_letters(blob_scan):
    if chromium() is None:
        pytest.skip("no Chromium: neither /usr/bin/chromium nor `chromium` on PATH")
    vol, labels, z, root = blob_scan
    html = write_viewer(root / "report.html", vol.hu, labels)
    text = html.read_text()
    edges = dict(re.findall(r'id="mark-(\w+)"[^>]*>(\w)</div>', text))
    assert edges == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert json.loads(re.search(r'id="data">(.*?)</script>', text).group(1))["start"] == z
    on = page_screenshot(html, "overlay=1", root / "on.png")
    off = page_screenshot(html, "overlay=0", root / "off.png")
    blue = tinted(on[BOX, BOX], 2)
    in_top_right(blue)
    # The 128 px slice fills the 512 px box: each voxel is 4 x 4 screen px.
    assert blue.sum() == 16 * (labels[z] == 3).sum()
    assert off[BOX, BOX][blue].min() >= 250  # overlay off: the blob is the brightest thing
    # The letters sit in the margin, centred on each edge of the box; the corners stay empty.
    mid, far = VIEW_ORIGIN + VIEW_PX // 2, VIEW_ORIGIN + VIEW_PX
    margin = slice(0, VIEW_ORIGIN)
    cells = {
        "top": off[margin, mid - 10 : mid + 10], "bottom": off[far:, mid - 10 : mid + 10][:20],
        "left": off[mid - 10 : mid + 10, margin], "right": off[mid - 10 : mid + 10, far:][:, :20],
    }  # fmt: skip
    for edge, cell in cells.items():
        assert (cell.min(axis=-1) > 180).sum() > 10, edge  # light letter strokes
    assert off[margin, margin].max() < 40  # the page's dark background


def _anatomy(picture: np.ndarray) -> tuple[float, int, int]:
    """(centroid row of bone in the middle columns / height, soft tissue px in the left third,
    in the right third) of a radiological (H, W) HU picture."""
    h, w = picture.shape
    rows, _ = np.nonzero(picture[:, w * 3 // 10 : w * 7 // 10] > 300)  # the spine, the sternum
    soft = (picture > 40) & (picture < 90)  # liver, spleen, muscle
    return rows.mean() / h, int(soft[:, : w // 3].sum()), int(soft[:, 2 * w // 3 :].sum())


def test_real_scans_have_the_spine_down_and_the_liver_on_the_left():
    # GE upper abdomen (DICOM): the vertebra and the table's phantom rods are posterior; the
    # liver, on the patient's right, is far larger than the spleen on the left.
    vol = read_volume(REAL / "cip_copdgene_abdomen2")
    bone_row, left, right = _anatomy(radiological(vol.hu[0]))
    assert bone_row > 0.55 and left > 1.4 * right
    # Two chest NIfTIs (LPS voxels): the spine at the bottom outweighs the sternum at the top.
    for name in ("cip_copdgene_crop2/crop_ct_2slices.nii.gz", "cip_testinput64/TestInput.nii.gz"):
        vol = read_volume(REAL / name)
        assert _anatomy(radiological(vol.hu[vol.hu.shape[0] // 2]))[0] > 0.7, name


@pytest.mark.slow  # a debug U-Net through `stitchnet predict` on two bundled slices
def test_predict_draws_radiological_overlays_and_keeps_masks_in_input_order(tmp_path):
    torch.manual_seed(0)
    cfg = run_config("unet", "debug")
    save_checkpoint(
        tmp_path / "unet.pt", build_model("unet", cfg.model_config), cfg, epoch=0, step=0
    )
    src = copy_slices(LABELLED, tmp_path / "in", 2)
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "unet.pt"), str(src), "--out", str(out)]) == 0
    windows = recorded_windows(src)
    for path in sorted((src / "images").iterdir()):
        image = np.asarray(Image.open(path))  # (H, W) 8-bit, display orientation
        mask = np.asarray(Image.open(out / "masks" / path.name))
        picture = np.asarray(Image.open(out / "overlays" / path.name))
        assert image.shape[0] != image.shape[1]  # a crop: the transpose shows in the shape
        assert mask.shape == image.shape and picture.shape == (*image.shape[::-1], 3)
        # Off the lesions the overlay is the input's grey in the model's window, transposed:
        # gray g saved with the recorded window (lo, hi) is HU lo + (hi - lo) g, shown through
        # (-1250, 250).
        lo, hi = windows[path.name]
        shown = np.clip((lo + (hi - lo) * image / 255.0 + 1250.0) / 1500.0, 0, 1) * 255
        plain = mask.T < 2
        assert plain.sum() > 1000
        assert np.abs(picture[..., 0][plain].astype(float) - shown.T[plain]).max() <= 0.51

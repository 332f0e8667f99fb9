"""The HTML viewer, checked in a real browser: headless Chromium screenshots, read pixel by pixel.

The volume is made of bundled labelled slices, each pasted at its crop offset into MedSeg's
512 x 512 grid, so the lesions are real. The canvas fills the viewer's 512 px box at scale 1, and
the box shows the radiological picture, the transpose of a display slice (rows Y = patient right
-> left, columns X = anterior -> posterior): screenshot pixel (row r, col c) of the box shows voxel
(y, x) = (c, r) of the slice.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchnet.inference.viewer import (
    LUNG_WINDOW,
    SOFT_WINDOW,
    VIEW_ORIGIN,
    VIEW_PX,
    write_viewer,
)

LABELLED = Path(__file__).resolve().parents[2] / "data" / "medseg_covid19_train50"
SLICES = ("z000", "z002", "z032")  # GGO + consolidation; little GGO; much consolidation
PNG_WINDOW = (-1250.0, 250.0)  # assumed HU window of the 8-bit PNGs (theirs is unknown)
BOX = slice(VIEW_ORIGIN, VIEW_ORIGIN + VIEW_PX)  # page pixels of the image box, either axis
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
)  # fmt: skip


def chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def bundled_volume(ids=SLICES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z, 512, 512) HU (air, -1000, outside each crop), class ids and lung field."""
    with open(LABELLED / "index.csv", newline="") as f:
        rows = {r["file"].removesuffix(".png"): r for r in csv.DictReader(f)}
    z = len(ids)
    hu = np.full((z, 512, 512), -1000.0, dtype=np.float32)
    labels = np.zeros((z, 512, 512), dtype=np.uint8)
    for k, sid in enumerate(ids):
        y0, x0 = int(rows[sid]["crop_y0"]), int(rows[sid]["crop_x0"])
        img = np.asarray(Image.open(LABELLED / "images" / f"{sid}.png"), dtype=np.float32) / 255
        h, w = img.shape
        hu[k, y0 : y0 + h, x0 : x0 + w] = PNG_WINDOW[0] + img * (PNG_WINDOW[1] - PNG_WINDOW[0])
        labels[k, y0 : y0 + h, x0 : x0 + w] = np.asarray(
            Image.open(LABELLED / "masks" / f"{sid}.png")
        )
    return hu, labels, (labels > 0).astype(np.uint8)


def screenshot(html: Path, query: str, out: Path, size: str = "1100,800") -> np.ndarray:
    """The viewer's image box, (VIEW_PX, VIEW_PX, 3) uint8, as Chromium draws it."""
    return page_screenshot(html, query, out, size)[BOX, BOX]


def page_screenshot(html: Path, query: str, out: Path, size: str = "1100,800") -> np.ndarray:
    """The whole page, (H, W, 3) uint8, as Chromium draws it."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={size}", f"--screenshot={out}", f"{html.as_uri()}?{query}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    if not out.exists():
        raise AssertionError(f"chromium wrote no screenshot {out}; stderr:\n{proc.stderr[-2000:]}")
    return np.asarray(Image.open(out).convert("RGB"))


def tinted(rgb: np.ndarray, channel: int, margin: int = 60) -> np.ndarray:
    """Pixels where `channel` exceeds both others by `margin` (grey has all three equal)."""
    c = rgb.astype(np.int32)
    others = np.delete(c, channel, axis=-1).max(axis=-1)
    return c[..., channel] - others > margin


def gray(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.round(np.clip((hu - lo) / (hi - lo), 0, 1) * 255)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """The viewer of the bundled volume, with a twin (lesions at -850 HU) and an uncertainty
    layer (full tint on consolidation only), so every layer has a known picture."""
    hu, labels, lung = bundled_volume()
    twin = np.where(labels >= 2, -850.0, hu).astype(np.float32)
    unc = np.where(labels == 3, np.log(4), 0.0)
    per_slice = {
        "ggo": [float((labels[k] == 2).sum()) * 0.001 for k in range(len(SLICES))],
        "consolidation": [float((labels[k] == 3).sum()) * 0.001 for k in range(len(SLICES))],
    }
    path = write_viewer(
        tmp_path_factory.mktemp("viewer") / "report.html", hu, labels, lung=lung,
        uncertainty=unc, twin_hu=twin, burden={"total": {"lung_ml": 1.0, "ggo_ml": 0.5}},
        per_slice_ml=per_slice, meta={"model": "truth", "version": "0", "date": "today"},
    )  # fmt: skip
    return path, hu, labels, twin


@pytest.fixture
def browser(viewer):
    if chromium() is None:
        pytest.skip(
            "no Chromium: neither /usr/bin/chromium nor `chromium` on PATH "
            "(Debian: apt-get install -y chromium; `make test` tries this when run as root)"
        )
    return viewer


def test_file_is_self_contained(viewer):
    text = viewer[0].read_text()
    for ref in ("http://", "https://", 'src="/', "src='/", "url(", "<link", "import "):
        assert ref not in text, f"the viewer refers to something outside itself: {ref!r}"
    assert text.count("data:image/png;base64,") == 2 * len(SLICES)  # base + extra per slice
    assert "truth" in text and "today" in text and "lung_ml" in text


def test_base_png_packs_both_windows_labels_and_lung(viewer):
    path, hu, labels, _ = viewer
    data = json.loads(re.search(r'id="data">(.*?)</script>', path.read_text()).group(1))
    assert (data["z"], data["h"], data["w"]) == (len(SLICES), 512, 512)
    assert data["start"] == int(np.argmax((labels >= 2).sum(axis=(1, 2))))
    uri = data["slices"][1]["b"].removeprefix("data:image/png;base64,")
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))))  # (512, 512, 3)
    # The PNG holds the radiological picture: the transpose of the display slice.
    assert np.array_equal(rgb[..., 0], gray(hu[1], LUNG_WINDOW).T)
    assert np.array_equal(rgb[..., 1], gray(hu[1], SOFT_WINDOW).T)
    assert np.array_equal(rgb[..., 2], (labels[1] | ((labels[1] > 0) << 2)).T)


def test_picture_of_a_non_square_scan_is_x_rows_by_y_columns(tmp_path):
    hu = np.full((2, 6, 10), -1000.0, dtype=np.float32)  # (Z, Y, X): 6 rows R->L, 10 cols A->P
    hu[0, 5, 0] = 150.0  # the patient's far left, most anterior voxel
    path = write_viewer(tmp_path / "v.html", hu, np.zeros(hu.shape, np.uint8))
    data = json.loads(re.search(r'id="data">(.*?)</script>', path.read_text()).group(1))
    assert (data["h"], data["w"]) == (10, 6)  # rows A->P, columns R->L
    uri = data["slices"][0]["b"].removeprefix("data:image/png;base64,")
    lung = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))))[..., 0]  # (10, 6)
    assert lung.shape == (10, 6)
    assert lung[0, 5] == 255 and (lung == 255).sum() == 1  # top (anterior), right (patient left)


def test_bad_shapes_name_the_layer(tmp_path):
    hu = np.zeros((2, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"uncertainty has shape \(2, 8, 7\)"):
        write_viewer(tmp_path / "v.html", hu, np.zeros((2, 8, 8)), uncertainty=np.zeros((2, 8, 7)))
    with pytest.raises(ValueError, match="one per slice"):
        write_viewer(tmp_path / "v.html", hu, np.zeros((2, 8, 8)), per_slice_ml={"ggo": [1.0]})
    assert not (tmp_path / "v.html").exists()


@pytest.mark.slow  # one Chromium start per screenshot, ~3 s each
def test_overlay_colours_match_the_labels_and_vanish_when_off(browser, tmp_path):
    path, hu, labels, _ = browser
    on = screenshot(path, "slice=0&overlay=1", tmp_path / "on.png")
    ggo, con = (labels[0] == 2).T, (labels[0] == 3).T  # in the picture's orientation
    green, blue = tinted(on, 1), tinted(on, 2)
    # Every green pixel is a GGO voxel and almost every GGO voxel is green (the darkest GGO
    # blended at 50 % can miss the margin); the same for consolidation in blue.
    assert green.sum() > 5000 and blue.sum() > 20000
    assert (green & ~ggo).sum() == 0 and (blue & ~con).sum() == 0
    assert green.sum() >= 0.95 * ggo.sum() and blue.sum() >= 0.95 * con.sum()
    off = screenshot(path, "slice=0&overlay=0", tmp_path / "off.png")
    assert tinted(off, 1, 10).sum() == 0 and tinted(off, 2, 10).sum() == 0
    # With the overlay off the canvas is the lung window of the scan, voxel for voxel.
    assert np.abs(off[..., 0].astype(int) - gray(hu[0], LUNG_WINDOW).T).max() <= 1
    assert np.array_equal(off[..., 0], off[..., 1])


@pytest.mark.slow  # one Chromium start per screenshot, ~3 s each
def test_scrolling_and_windows_change_the_picture(browser, tmp_path):
    path, hu, labels, _ = browser
    first = screenshot(path, "slice=0&overlay=0", tmp_path / "a.png")
    other = screenshot(path, "slice=2&overlay=0", tmp_path / "b.png")
    assert np.abs(other[..., 0].astype(int) - gray(hu[2], LUNG_WINDOW).T).max() <= 1
    assert np.mean(first != other) > 0.2
    soft = screenshot(path, "#slice=2&overlay=0&window=soft", tmp_path / "c.png")
    assert np.abs(soft[..., 0].astype(int) - gray(hu[2], SOFT_WINDOW).T).max() <= 1
    # Out-of-range slice numbers are clamped, not an empty canvas.
    last = screenshot(path, "slice=99&overlay=0", tmp_path / "d.png")
    assert np.array_equal(last, other)


@pytest.mark.slow  # one Chromium start per screenshot, ~3 s each
def test_twin_and_uncertainty_layers(browser, tmp_path):
    path, hu, labels, twin = browser
    t = screenshot(path, "slice=0&overlay=0&twin=1", tmp_path / "twin.png")
    lesion = (labels[0] >= 2).T  # in the picture's orientation
    assert np.all(t[..., 0][lesion] == gray(np.float32(-850.0), LUNG_WINDOW))
    expected = gray(hu[0], LUNG_WINDOW).T
    assert np.abs(t[..., 0][~lesion].astype(int) - expected[~lesion]).max() <= 1
    u = screenshot(path, "slice=0&overlay=0&uncertainty=1", tmp_path / "unc.png")
    orange = tinted(u, 0)
    con = (labels[0] == 3).T
    assert orange[con].mean() > 0.95 and orange[~con].sum() == 0


if __name__ == "__main__":
    # Rebuild the screenshots in docs/viewer/: python tests/inference/test_viewer.py docs/viewer
    docs = Path(sys.argv[1]).resolve()
    docs.mkdir(parents=True, exist_ok=True)
    ids = ("z000", "z001", "z003", "z010", "z015", "z019", "z023", "z030", "z032", "z051")
    hu, labels, lung = bundled_volume(ids)
    ml = 0.7 * 0.7 * 5.0 / 1000  # mL per voxel for an assumed 0.7 x 0.7 x 5 mm spacing
    html = write_viewer(
        docs / "demo.html", hu, labels, lung=lung,
        per_slice_ml={"ggo": [(labels[k] == 2).sum() * ml for k in range(len(ids))],
                      "consolidation": [(labels[k] == 3).sum() * ml for k in range(len(ids))]},
        burden={"total": {"GGO mL": (labels == 2).sum() * ml,
                          "consolidation mL": (labels == 3).sum() * ml,
                          "lung mL": (labels > 0).sum() * ml}},
        meta={"model": "ground truth (bundled masks)", "version": "-", "date": "-",
              "source": "10 bundled slices of data/medseg_covid19_train50"},
    )  # fmt: skip
    for name, query in (("overlay", "slice=4&lung=1"), ("soft", "slice=8&window=soft&opacity=35")):
        out = docs / f"viewer_{name}.png"
        out.unlink(missing_ok=True)
        screenshot(html, query, out, size="1080,580")
        print(out)
    html.unlink()

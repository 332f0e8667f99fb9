"""The window estimator on a phantom worked out by hand, on real HU CT, and on the bundled sets."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchnet.data.errors import DataError
from stitchnet.data.hu_scale import (
    INDEX_COLUMNS,
    SliceLandmarks,
    annotate,
    estimate_window,
    fit_window,
    gray_to_hu,
    main,
    measure_landmarks,
    recorded_windows,
)
from stitchnet.data.images import hu_window

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "data" / "medseg_covid19_train50"
DEV = REPO / "data" / "realct_nonlesion_dev"


def phantom(size: int = 160) -> np.ndarray:
    """(size, size) HU: air outside, a fat ring, muscle inside it, two lungs at -850 with
    one-pixel vessels every 7 px, and a trachea (air) in the mediastinum."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2
    hu = np.full((size, size), -1000.0)
    hu[((yy - c) / 70) ** 2 + ((xx - c) / 76) ** 2 <= 1] = -100.0
    hu[((yy - c) / 58) ** 2 + ((xx - c) / 64) ** 2 <= 1] = 40.0
    for dx in (-32, 32):
        lung = ((yy - c) / 44) ** 2 + ((xx - c - dx) / 24) ** 2 <= 1
        hu[lung] = -850.0
        hu[lung & (yy % 7 == 0) & (xx % 7 == 0)] = 40.0
    hu[(yy - c + 30) ** 2 + (xx - c) ** 2 <= 25] = -1000.0
    return hu


def to_8bit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return np.round(hu_window(hu, window) * 255).astype(np.uint8)


# Window (-1150, 125): 1275 HU over 255 grays, 5 HU a gray. Air (-1000) sits at 150 / 5 = 30,
# fat (-100) at 1050 / 5 = 210, muscle (+40) at 1190 / 5 = 238: whole grays, so 8 bits hold them
# exactly and the three points lie on one line.
HAND = (-1150.0, 125.0)


def test_phantom_gives_back_its_window_exactly():
    gray = to_8bit(phantom(), HAND)
    found = measure_landmarks(gray)
    assert (found.air * 255, found.fat * 255, found.soft * 255) == pytest.approx((30, 210, 238))
    est = estimate_window(gray)
    assert est.window == pytest.approx(HAND, abs=0.01)
    assert est.names == "air+fat+soft"
    assert est.residual_hu == pytest.approx(0.0, abs=1e-6)
    assert est.quality == "good"


def test_float_slice_in_0_1_reads_like_its_8_bits():
    gray = to_8bit(phantom(), HAND)
    assert estimate_window(gray.astype(np.float32) / 255).window == pytest.approx(HAND, abs=0.01)


def test_soft_tissue_above_the_window_leaves_air_and_fat():
    # (-1250, 25): muscle (+40) is above the top and saturates at 255; air at 250 / 5 = 50, fat
    # at 1150 / 5 = 230, and soft tissue would sit above 255, so the one peak is fat.
    gray = to_8bit(phantom(), (-1250.0, 25.0))
    est = estimate_window(gray)
    assert est.window == pytest.approx((-1250.0, 25.0), abs=0.01)
    assert est.names == "air+fat"
    assert "fat_by_saturation" in est.flags
    assert est.quality == "fair"


def test_air_below_the_window_is_refused_not_guessed():
    # lo = -990 clips air (-1000) to 0: fat and muscle alone would extrapolate badly to lung.
    gray = to_8bit(phantom(), (-990.0, 285.0))
    assert "air_saturated" in measure_landmarks(gray).flags
    with pytest.raises(DataError, match="air_saturated.*expected air"):
        estimate_window(gray, "clipped.png")


def test_no_air_in_view_is_refused():
    body_only = phantom()[40:120, 60:100]  # mediastinum and lung, no trachea, no outside air
    body_only = np.where(body_only == -1000.0, 40.0, body_only)
    with pytest.raises(DataError, match="inner.png: found landmarks"):
        estimate_window(to_8bit(body_only, HAND), "inner.png")


def test_bad_arrays_are_refused():
    with pytest.raises(DataError, match=r"shape \(2, 3, 4\)"):
        measure_landmarks(np.zeros((2, 3, 4), np.uint8), "cube")
    with pytest.raises(DataError, match=r"values span \[0, 2\]"):
        measure_landmarks(np.array([[0.0, 2.0]]), "hu.npy")


def test_gray_to_hu_by_hand():
    # (-1000, 500): 1500 HU over gray 0..1; 51 / 255 = 0.2 -> -1000 + 300 = -700.
    got = gray_to_hu(np.array([[0, 255, 51]], np.uint8), (-1000, 500))
    np.testing.assert_allclose(got, [[-1000.0, 500.0, -700.0]])
    np.testing.assert_allclose(gray_to_hu(np.array([0.5]), (-1000, 500)), [-250.0])
    with pytest.raises(ValueError, match="low < high"):
        gray_to_hu(np.zeros(2), (100, 100))


def test_pooled_fit_takes_each_landmarks_median_over_slices():
    # Air at 28, 30, 32 (median 30), fat 210 in one slice, soft 238 in two: the HAND window.
    slices = [
        SliceLandmarks(28 / 255, None, 238 / 255),
        SliceLandmarks(30 / 255, 210 / 255, None),
        SliceLandmarks(32 / 255, None, 238 / 255),
        SliceLandmarks(None, None, None, ("no_air",)),
    ]
    est = fit_window(slices, "volume 1")
    assert est.window == pytest.approx(HAND, abs=0.01)
    assert est.slices == 4
    assert est.flags == ("no_air",)


def test_fit_without_air_is_refused():
    with pytest.raises(DataError, match=r"vol: found landmarks \['fat', 'soft'\]"):
        fit_window([SliceLandmarks(None, 210 / 255, 238 / 255, ("no_air",))], "vol")


@pytest.mark.parametrize(
    ("scan", "bound_lung", "bound_fat"),
    # The bounds are what benchmarks/hu_scale_check.py measures on these slices (the COPDGene
    # scanner's air is about -973 HU, so its lung comes out ~25 HU low), plus a margin.
    [("cip_copdgene_crop2/crop_ct_2slices.nii.gz", 35, 15), ("lidc_lungmask_slice", 25, 15)],
)
@pytest.mark.parametrize("window", [(-1250.0, 250.0), (-1350.0, 100.0), (-1050.0, 350.0)])
def test_real_ct_windowed_at_random_comes_back_close(scan, bound_lung, bound_fat, window):
    hu = _real_slice(scan)
    est = estimate_window(to_8bit(hu, window), scan)
    lo, hi = window
    for x, bound in ((-850.0, bound_lung), (-100.0, bound_fat)):
        back = est.window[0] + (est.window[1] - est.window[0]) * (x - lo) / (hi - lo)
        assert abs(back - x) <= bound, (x, est)


def _real_slice(scan: str) -> np.ndarray:
    if scan == "lidc_lungmask_slice":  # no Modality tag, which read_volume refuses
        import pydicom
        from pydicom.pixels import apply_modality_lut

        ds = pydicom.dcmread(DEV / scan / "0.dcm")
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    from stitchnet.data.volumes import read_volume

    return read_volume(DEV / scan).hu[0]


def test_bundled_labelled_windows_put_healthy_lung_where_lung_is():
    # The masks never reach the estimator: healthy lung (class 1) read through each slice's
    # recorded window should sit near -850 HU, and GGO (class 2) well above it.
    windows = recorded_windows(LABELLED)
    assert len(windows) == 50
    lung, ggo = [], []
    for name, window in windows.items():
        gray = np.asarray(Image.open(LABELLED / "images" / name))
        mask = np.asarray(Image.open(LABELLED / "masks" / name))
        hu = gray_to_hu(gray, window)
        lung.append(np.median(hu[mask == 1]))
        if (mask == 2).sum() > 200:
            ggo.append(np.median(hu[mask == 2]))
    assert -900 <= np.median(lung) <= -780
    assert -750 <= np.median(ggo) <= -450


def _folder(tmp: Path, grays: dict[str, np.ndarray], volumes: dict[str, str] | None) -> Path:
    (tmp / "images").mkdir(parents=True)
    for name, gray in grays.items():
        Image.fromarray(gray).save(tmp / "images" / name)
    with (tmp / "index.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "note"] + (["volume"] if volumes else []))
        for name in grays:
            w.writerow([name, f"n-{name}"] + ([volumes[name]] if volumes else []))
    return tmp


def test_annotate_volume_shares_its_window_with_a_slice_that_has_no_air(tmp_path):
    ph = phantom()
    inner = np.where(ph[40:120, 60:100] == -1000.0, 40.0, ph[40:120, 60:100])
    grays = {"a.png": to_8bit(ph, HAND), "b.png": to_8bit(ph, HAND), "c.png": to_8bit(ph, HAND)}
    grays["d.png"] = to_8bit(inner, HAND)  # no air of its own
    vols = {"a.png": "v1", "b.png": "v1", "c.png": "v1", "d.png": "v1"}
    folder = _folder(tmp_path / "set", grays, vols)
    annotate(folder)
    with (folder / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "note", "volume", *INDEX_COLUMNS]
    assert [r["note"] for r in rows] == ["n-a.png", "n-b.png", "n-c.png", "n-d.png"]
    assert [r["hu_fit"] for r in rows] == ["volume"] * 4
    # Without air its peaks cannot be told apart as fat or soft tissue: it names none.
    assert [r["hu_landmarks"] for r in rows] == ["air+fat+soft"] * 3 + ["none"]
    assert recorded_windows(folder) == {n: HAND for n in grays}


def test_annotate_without_volumes_keeps_slices_own_and_falls_back_to_the_set(tmp_path):
    ph = phantom()
    inner = np.where(ph[40:120, 60:100] == -1000.0, 40.0, ph[40:120, 60:100])
    other = (-1250.0, 25.0)
    grays = {"a.png": to_8bit(ph, HAND), "b.png": to_8bit(ph, other)}
    grays["c.png"] = to_8bit(inner, HAND)
    folder = _folder(tmp_path / "set", grays, None)
    annotate(folder)
    annotate(folder)  # a rerun rewrites the same columns, adds none
    with (folder / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "note", *INDEX_COLUMNS]
    assert [r["hu_fit"] for r in rows] == ["slice", "slice", "set"]
    got = recorded_windows(folder)
    assert got["a.png"] == HAND and got["b.png"] == other
    # c has no air, so it takes the set's pooled window: air median(30, 50) = 40, fat
    # median(210, 230) = 220, soft tissue 238 (b's is saturated). Least squares through
    # (40, -1000), (220, -100), (238, 40): mean gray 166, mean HU -353.33, Sxx = 126^2 + 54^2 +
    # 72^2 = 23976, Sxy = 123480, slope 5.1502 HU a gray; lo = -353.33 - 5.1502 * 166 = -1208.3,
    # hi = lo + 255 * 5.1502 = 105.0, written rounded.
    assert got["c.png"] == (-1208.0, 105.0)


def test_recorded_windows_without_the_columns_is_refused(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "index.csv").write_text("file,volume\na.png,v1\n")
    with pytest.raises(
        DataError, match=r"index.csv: no column\(s\) \['hu_lo', 'hu_hi', 'hu_fit'\]"
    ):
        recorded_windows(folder)


def test_cli_annotates_and_answers_a_bad_folder_with_status_2(tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(LABELLED / "images", folder / "images", ignore=_only("z002.png", "z004.png"))
    (folder / "index.csv").write_text("file\nz002.png\nz004.png\n")
    assert main(["annotate", str(folder)]) == 0
    assert set(recorded_windows(folder)) == {"z002.png", "z004.png"}
    assert main(["annotate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing/index.csv" in err and "\n" not in err


def _only(*keep: str):
    return lambda folder, names: [n for n in names if n not in keep]

"""Every input reaches the model on one intensity scale: HU through the lung window (-1250, 250).

8-bit slice folders get there through the HU window each slice was saved with (index.csv's
hu_lo/hu_hi, or --window for folders that record none); DICOM and NIfTI through their own HU, read
the same way by `predict` (read_source) and by `segment` (read_volume). Expected values are worked
out by hand from gray = (HU - lo) / (hi - lo) and model value = (HU + 1250) / 1500.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import volume_factory as vf
from conftest import LABELLED, UNLABELLED, copy_slices
from PIL import Image

from stitchnet.checkpoint import save_checkpoint
from stitchnet.cli import main
from stitchnet.data.errors import DataError
from stitchnet.data.hu_scale import INDEX_COLUMNS
from stitchnet.data.images import hu_window
from stitchnet.data.slice_folder import read_folder
from stitchnet.data.sources import read_source
from stitchnet.data.volumes import read_volume
from stitchnet.models import build_model
from stitchnet.pipeline import run_config

MODEL_WINDOW = (-1250.0, 250.0)  # the data config's lung_window
GRAYS = np.array([[0, 128, 255]], dtype=np.uint8)  # one (1, 3) slice, 8-bit


def _folder(root: Path, windows: dict[str, tuple[str, str] | None], hu_columns: bool = True):
    """images/<name> holding GRAYS for each name; index.csv with hu_* columns when `hu_columns`
    (a None window is a row whose hu_fit is "none", as annotate writes for a failed estimate)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for name, window in windows.items():
        Image.fromarray(GRAYS).save(root / "images" / name)
        row = {"file": name}
        if hu_columns:
            lo, hi = window or ("", "")
            fit = "none" if window is None else "slice"
            row.update(dict(zip(INDEX_COLUMNS, (lo, hi, fit, "air+fat+soft", "0"), strict=True)))
        rows.append(row)
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


# ---------------------------------------------------------------------------------------------
# read_folder on hand-worked values


def test_recorded_window_maps_gray_through_hu_to_the_model_window(tmp_path):
    # Window (-1000, 0): gray 128/255 is HU -1000 + 1000 * 0.501961 = -498.04, and the model sees
    # (-498.04 + 1250) / 1500 = 0.501307. Gray 0 is -1000 HU -> 250/1500; gray 255 is 0 HU ->
    # 1250/1500.
    root = _folder(tmp_path / "f", {"a.png": ("-1000", "0")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded window needs no warning
        (rec,) = read_folder(root, window=MODEL_WINDOW)
    np.testing.assert_allclose(rec.image, [[250 / 1500, 0.501307, 1250 / 1500]], atol=1e-6)


def test_source_window_serves_a_folder_without_hu_columns(tmp_path):
    # Window (-1150, 350) is the model's (-1250, 250) moved up 100 HU, same 1500 HU width: the
    # model value is gray + 100/1500. Gray 255 (350 HU) lies above 250 HU and clips to 1.
    root = _folder(tmp_path / "f", {"a.png": None}, hu_columns=False)
    (rec,) = read_folder(root, window=MODEL_WINDOW, source_window=(-1150.0, 350.0))
    np.testing.assert_allclose(rec.image, [[1 / 15, 128 / 255 + 1 / 15, 1.0]], atol=1e-6)


def test_recorded_window_wins_and_source_window_fills_the_unrecorded(tmp_path):
    root = _folder(tmp_path / "f", {"a.png": ("-1000", "0"), "b.png": None})
    a, b = read_folder(root, window=MODEL_WINDOW, source_window=(-1150.0, 350.0))
    np.testing.assert_allclose(a.image[0, 1], 0.501307, atol=1e-6)  # (-1000, 0) as above
    np.testing.assert_allclose(b.image[0, 1], 128 / 255 + 1 / 15, atol=1e-6)  # --window's


def test_no_window_anywhere_warns_and_keeps_the_gray(tmp_path):
    root = _folder(tmp_path / "f", {"a.png": None}, hu_columns=False)
    with pytest.warns(UserWarning, match="no HU window recorded"):
        (rec,) = read_folder(root, window=MODEL_WINDOW)
    np.testing.assert_array_equal(rec.image, GRAYS / np.float32(255.0))


def test_a_partial_record_is_refused_naming_a_file(tmp_path):
    root = _folder(tmp_path / "f", {"a.png": ("-1000", "0"), "b.png": None})
    with pytest.raises(DataError, match=r"index\.csv: no HU window recorded .* b\.png"):
        read_folder(root, window=MODEL_WINDOW)


def test_a_recorded_window_with_lo_not_below_hi_is_refused(tmp_path):
    root = _folder(tmp_path / "f", {"a.png": ("0", "-1000")})
    with pytest.raises(DataError, match=r"a\.png has window \(0\.0, -1000\.0\); expected lo < hi"):
        read_folder(root, window=MODEL_WINDOW)


# ---------------------------------------------------------------------------------------------
# predict (read_source) and segment (read_volume) see a scan alike


def _segment_view(path: Path) -> tuple[np.ndarray, list[str]]:
    vol = read_volume(path)
    return np.stack([hu_window(vol.hu[z], MODEL_WINDOW) for z in range(vol.hu.shape[0])]), vol.notes


def _predict_view(path: Path) -> np.ndarray:
    return np.stack([r.image for r in read_source(path, window=MODEL_WINDOW)])


@pytest.mark.parametrize("kind", ["dicom", "nifti-RAS", "nifti-LPI"])
def test_predict_and_segment_read_a_scan_alike(tmp_path, kind):
    if kind == "dicom":
        path, hu, _ = vf.make_dicom_series(tmp_path, n_slices=4, size=64)
    else:
        axcodes = kind.split("-")[1]
        path, hu, _ = vf.make_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64, axcodes=axcodes)
    segment, _ = _segment_view(path)
    predict = _predict_view(path)
    # The factory's display HU through the lung window: the same slices, inferior to superior,
    # in the same orientation (a flip or transpose of a real slice would not match).
    expected = hu_window(hu, MODEL_WINDOW)  # (Z, Y, X)
    assert predict.shape == segment.shape == expected.shape == (4, 64, 64)
    np.testing.assert_array_equal(predict, segment)
    np.testing.assert_allclose(predict, expected, atol=1e-6)


def test_a_series_without_modality_is_read_by_both_with_the_note(tmp_path):
    path, hu, _ = vf.make_dicom_series(tmp_path, n_slices=3, size=64, modality=None)
    segment, notes = _segment_view(path)
    predict = _predict_view(path)
    assert any("no Modality tag; read as CT" in n for n in notes)
    np.testing.assert_array_equal(predict, segment)
    np.testing.assert_allclose(predict, hu_window(hu, MODEL_WINDOW), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The bundled labelled folder lands on real HU


def test_bundled_lung_and_ggo_land_on_their_hu_ranges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every bundled slice records its window
        records = read_folder(LABELLED, window=MODEL_WINDOW)
    healthy = np.concatenate([r.image[r.mask == 1] for r in records])
    ggo = np.concatenate([r.image[r.mask == 2] for r in records])
    # Measured with the recorded windows: healthy lung's median is -844 HU and GGO's -619 HU
    # (aerated lung sits near -850, ground glass between -700 and -500). Taking the grays as
    # already in (-1250, 250), as before the windows were recorded, put healthy lung at -938 HU.
    assert -900 <= np.median(healthy) * 1500 - 1250 <= -750
    assert -700 <= np.median(ggo) * 1500 - 1250 <= -500


# ---------------------------------------------------------------------------------------------
# --window on the command line


def _unannotated_copy(
    dst: Path, n: int, src: Path = LABELLED, per_patient: int | None = None
) -> Path:
    """The first n slices of a bundled folder with index.csv's hu_* columns dropped."""
    copy_slices(src, dst, n, per_patient)
    with open(dst / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [c for c in rows[0] if c not in INDEX_COLUMNS]
    with open(dst / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=kept, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return dst


def _debug_unet(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = run_config("unet", "debug")
    save_checkpoint(path, build_model("unet", cfg.model_config), cfg, epoch=0, step=0)
    return path


def test_predict_window_maps_unannotated_slices(tmp_path):
    ckpt = _debug_unet(tmp_path / "unet.pt")
    src = _unannotated_copy(tmp_path / "in", 2)
    out = tmp_path / "pred"
    argv = ["predict", str(ckpt), str(src), "--out", str(out), "--cache", str(tmp_path / "c")]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*no HU window recorded")  # --window gives one
        assert main([*argv, "--window", "-1000", "0", "--quiet"]) == 0
    for path in sorted((src / "images").iterdir()):
        gray = np.asarray(Image.open(path), dtype=np.float64)  # (H, W) 0..255
        mask = np.asarray(Image.open(out / "masks" / path.name))
        picture = np.asarray(Image.open(out / "overlays" / path.name))  # transposed, RGB
        # Gray g saved with (-1000, 0) is HU -1000 + 1000 g/255, shown through (-1250, 250):
        # (250 + 1000 g/255) / 1500 of 255, i.e. 42.5 + 2 g / 3, off the tinted lesions.
        shown = 42.5 + 2.0 * gray / 3.0
        plain = mask.T < 2
        assert plain.sum() > 1000
        assert np.abs(picture[..., 0][plain] - shown.T[plain]).max() <= 0.51
        # ...which the grey taken as it is would miss by far.
        assert np.abs(picture[..., 0][plain] - gray.T[plain]).max() > 20


def test_predict_window_refuses_lo_not_below_hi(tmp_path, capsys):
    src = _unannotated_copy(tmp_path / "in", 1)
    out = tmp_path / "pred"
    argv = ["predict", str(tmp_path / "unet.pt"), str(src), "--out", str(out)]
    assert main([*argv, "--window", "10", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "stitchnet predict: error:" in err and "LO=10 HI=5" in err and "LO < HI" in err
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate"])
def test_window_reaches_every_folder_a_command_reads(tmp_path, monkeypatch, capsys, command):
    """prepare, train (labelled and unlabelled folders) and evaluate hand --window to the reader;
    training itself is stopped before its first step."""
    from stitchnet import pipeline

    seen = []
    real = pipeline.read_and_prepare

    def recording(path, *args, **kwargs):
        result = real(path, *args, **kwargs)
        seen.append((Path(path).name, kwargs.get("source_window", args[4] if args[4:] else None)))
        return result

    def no_training(*args, **kwargs):
        raise ValueError("stopped before training")

    monkeypatch.setattr(pipeline, "read_and_prepare", recording)
    monkeypatch.setattr(pipeline, "train", no_training)
    labelled = _unannotated_copy(tmp_path / "labelled", 5)
    window, cache = ["--window", "-1000", "0"], ["--cache", str(tmp_path / "c"), "--quiet"]
    if command == "prepare":
        argv = ["prepare", str(labelled), "--preset", "debug"]
    elif command == "evaluate":
        ckpt = _debug_unet(tmp_path / "unet.pt")
        argv = ["evaluate", str(ckpt), str(labelled), "--out", str(tmp_path / "eval")]
    else:
        unlabelled = _unannotated_copy(tmp_path / "unlabelled", 4, UNLABELLED, per_patient=1)
        argv = ["train", "--labelled", str(labelled), "--unlabelled", str(unlabelled)]
        argv += ["--preset", "debug", "--out", str(tmp_path / "run")]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*no HU window recorded")  # every folder has one
        status = main([*argv, *window, *cache])
    assert status == (2 if command == "train" else 0)
    if command == "train":
        assert "stopped before training" in capsys.readouterr().err
    expected = [("labelled", (-1000.0, 0.0))]
    if command == "train":
        expected.append(("unlabelled", (-1000.0, 0.0)))
    assert seen == expected

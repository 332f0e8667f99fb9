"""End to end through the CLI on a few real slices: prepare -> train -> evaluate -> predict."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from stitchnet.cli import main


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("prepare", "train", "evaluate", "predict", "reproduce", "report"):
        assert cmd in out


def test_prepare_train_evaluate_predict(tmp_path, real_labelled, capsys):
    cache = str(tmp_path / "cache")
    assert (
        main(["prepare", str(real_labelled), "--preset", "debug", "--cache", cache, "--quiet"]) == 0
    )
    assert "prepared 12 labelled slices at 64 px" in capsys.readouterr().out

    run = tmp_path / "run"
    args = ["train", "--model", "unet", "--labelled", str(real_labelled), "--preset", "debug"]
    assert main([*args, "--out", str(run), "--epochs", "1", "--cache", cache, "--quiet"]) == 0
    assert "| GGO | unet |" in capsys.readouterr().out
    for name in ("best.pt", "last.pt", "log.csv", "splits.json", "test/metrics.json"):
        assert (run / name).exists(), name
    splits = json.loads((run / "splits.json").read_text())
    assert splits["by"] == "slice" and "patient" in splits["warning"]
    assert len(splits["test"]) + len(splits["val"]) + len(splits["train"]) == 12

    out = tmp_path / "eval"
    assert (
        main(["evaluate", str(run), str(real_labelled), "--out", str(out), "--cache", cache]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 12
    for group in ("ggo", "consolidation", "background", "overall"):
        for k in ("iou", "f1", "recall", "precision"):
            mean = metrics["groups"][group][k]["mean"]
            assert mean is None or 0.0 <= mean <= 1.0
    with open(out / "per_image.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12

    pred = tmp_path / "pred"
    assert main(["predict", str(run / "best.pt"), str(real_labelled), "--out", str(pred)]) == 0
    for img_path in sorted((real_labelled / "images").iterdir()):
        mask = np.asarray(Image.open(pred / "masks" / f"{img_path.stem}.png"))
        assert mask.shape == np.asarray(Image.open(img_path)).shape  # the input's own size
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        assert (pred / "overlays" / f"{img_path.stem}.png").exists()
    burden = json.loads((pred / "lesion_burden.json").read_text())
    assert all(0.0 <= v["lesion_fraction"] <= 1.0 for v in burden.values())


def test_missing_folder_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code = main(
        ["train", "--model", "unet", "--labelled", str(missing), "--out", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and str(missing) in err
    assert not (tmp_path / "r" / "best.pt").exists()


def test_checkpoint_that_is_not_one(tmp_path, real_labelled, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    code = main(["predict", str(bogus), str(real_labelled), "--out", str(tmp_path / "p")])
    assert code == 2
    assert str(bogus) in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_predict_failure_leaves_no_output(tmp_path, real_labelled, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "unet", "--labelled", str(real_labelled), "--preset", "debug"]
    assert main([*args, "--out", str(run), "--epochs", "1", "--quiet"]) == 0
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(broken / "images" / "a.png")
    (broken / "images" / "b.png").write_bytes(b"\x89PNG corrupt")
    code = main(["predict", str(run), str(broken), "--out", str(tmp_path / "p")])
    assert code == 2
    assert "b.png" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_ssl_set_reads_json_values_and_refuses_a_malformed_pair():
    from stitchnet.cli import _key_values

    assert _key_values(["threshold=0.9", "elbo_unlabelled=false", "cutmix=true"]) == {
        "threshold": 0.9,
        "elbo_unlabelled": False,
        "cutmix": True,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _key_values(["threshold"])

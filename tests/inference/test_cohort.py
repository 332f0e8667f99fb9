"""`stitchnet cohort` on a small cohort built from the bundled slices: two DICOM trees, a NIfTI
volume, a corrupt file and a scan without lung. One row each, errors recorded, the rest
complete; a run killed mid-scan and rerun, two shards merged and a run with two worker
processes all give the table of one uninterrupted run (but for the seconds)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import volume_factory as vf

from stitchnet.cli import main
from stitchnet.inference.cohort import segment_cohort
from stitchnet.inference.defaults import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
IDS = ["a_dicom", "b_nifti", "c_corrupt", "d_nolung", "e_dicom"]
OK = ["a_dicom", "b_nifti", "e_dicom"]
SCAN_FILES = ["burden.csv", "burden.json", "labels.nii.gz", "lung.nii.gz"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """The cohort folder: each DICOM tree a sub-folder, each NIfTI a file."""
    root = tmp_path_factory.mktemp("cohort") / "scans"
    vf.make_dicom_series(root / "a_dicom", 4, 96, subfolder="series", series_uid="1.2.3.1")
    vf.make_nifti(root / "b_nifti.nii.gz", 4, 96, axcodes="LAS")
    (root / "c_corrupt.nii.gz").write_bytes(b"not a NIfTI file")
    tissue = np.full((32, 32, 4), 40, dtype=np.int16)  # soft tissue only: no lung anywhere
    nib.save(nib.Nifti1Image(tissue, np.diag([1.0, 1.0, 3.0, 1.0])), str(root / "d_nolung.nii.gz"))
    vf.make_dicom_series(root / "e_dicom", 5, 96, subfolder="s", series_uid="1.2.3.5", seed=3)
    (root / "README.txt").write_text("not a scan")  # passed over
    return root


@pytest.fixture(scope="module")
def reference(scans, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("reference") / "out"
    return out, segment_cohort(scans, out, progress=False)


def _table(path: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_one_row_per_scan_errors_recorded_rest_complete(scans, reference):
    out, rows = reference
    assert [r["scan_id"] for r in rows] == IDS
    table = {r["scan_id"]: r for r in _table(out / "cohort.csv", drop=())}
    assert list(table) == IDS
    assert [i for i in IDS if table[i]["status"] == "ok"] == OK
    errors = {r["scan_id"]: r["error"] for r in _table(out / "errors.csv")}
    assert list(errors) == ["c_corrupt", "d_nolung"]
    assert "cannot read as NIfTI" in errors["c_corrupt"]
    assert "no lung found" in errors["d_nolung"]
    assert all("\n" not in e for e in errors.values())
    assert table["d_nolung"]["total_lung_ml"] == ""  # an error row has no measurements

    assert _visible(out / "scans") == OK  # nothing for the failed scans
    for scan_id in OK:
        folder = out / "scans" / scan_id
        assert _visible(folder) == SCAN_FILES  # no overlays, report or twin without --viewer
        burden = json.loads((folder / "burden.json").read_text())
        row = table[scan_id]
        assert row["total_lung_ml"] == f"{burden['regions']['total']['lung_ml']:.3f}"
        assert row["left_consolidation_pct"] == (
            f"{burden['regions']['left']['consolidation_pct']:.2f}"
        )
        assert row["right_upper_ggo_ml"] == f"{burden['zones']['right']['upper']['ggo_ml']:.3f}"
    # Geometry as the factory wrote it: slices, and mm along S-I, R-L and A-P.
    assert [table["a_dicom"][k] for k in ("slices", "series_uid")] == ["4", "1.2.3.1"]
    assert table["e_dicom"]["slices"] == "5"
    spacing = ("spacing_si_mm", "spacing_rl_mm", "spacing_ap_mm")
    assert [table["a_dicom"][k] for k in spacing] == ["2.5", "0.7", "0.8"]  # column, row
    assert [table["b_nifti"][k] for k in spacing] == ["3", "0.75", "0.75"]
    sha = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    shipped = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    for row in table.values():
        assert row["model_sha256"] == sha[:12] and row["model_file"] == "default_model.pt"
        assert row["model"] == shipped["model_name"]
    # The zones of each lung add up to it (unrounded, from the rows the API returns).
    ok_row = rows[IDS.index("a_dicom")]
    for side in ("right", "left"):
        for zones in (("upper", "middle", "lower"), ("ventral", "dorsal")):
            total = sum(ok_row[f"{side}_{z}_lung_ml"] for z in zones)
            assert total == pytest.approx(ok_row[f"{side}_lung_ml"])


def test_rerun_skips_finished_scans(scans, reference, capsys):
    out, _ = reference
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert main(["cohort", str(scans), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "5 of 5 scans already done; skipped" in captured.err
    assert "5 scans: 3 segmented, 2 failed" in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == before


KILL_MID_SCAN = """
import os, signal, sys
import torch
from stitchnet.inference import scan as scan_module

torch.set_num_threads(1)
real = scan_module.write_label_volume

def write(vol, array, path, dtype):
    # The staging folder of b_nifti: labels.nii.gz is written, lung.nii.gz is not.
    if path.name == "lung.nii.gz" and path.parent.name.startswith(".b_nifti."):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(vol, array, path, dtype)

scan_module.write_label_volume = write
from stitchnet.cli import main
sys.exit(main(["cohort", sys.argv[1], "--out", sys.argv[2], "--quiet"]))
"""


def test_killed_mid_scan_then_rerun_gives_the_same_table(scans, reference, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_MID_SCAN, str(scans), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    # Killed inside the second scan: the first is complete, nothing of the second looks so.
    assert _visible(out / "results") == ["a_dicom.json"]
    assert _visible(out / "scans") == ["a_dicom"]
    assert [p.name for p in (out / "scans").iterdir() if p.name.startswith(".b_nifti.")]
    assert not (out / "cohort.csv").exists()

    segment_cohort(scans, out, progress=False)
    assert _table(out / "cohort.csv") == _table(reference[0] / "cohort.csv")
    assert _table(out / "errors.csv") == _table(reference[0] / "errors.csv")
    assert sorted(p.name for p in (out / "scans").iterdir()) == OK  # the staging left is gone


def test_two_shards_merged_equal_one_run(scans, reference, tmp_path, capsys):
    out = tmp_path / "out"
    first = segment_cohort(scans, out, shard="1/2", progress=False)
    assert [r["scan_id"] for r in first] == ["a_dicom", "c_corrupt", "e_dicom"]  # 1st, 3rd, 5th
    assert not (out / "cohort.csv").exists()  # shard 2 has not run

    assert main(["cohort", "--merge", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stitchnet cohort: error:")
    assert "shard 2/2 not finished" in err and "b_nifti, d_nolung" in err

    second = segment_cohort(scans, out, shard=(2, 2), progress=False)
    assert [r["scan_id"] for r in second] == ["b_nifti", "d_nolung"]
    # The last shard to finish wrote the one table; --merge writes the same one.
    assert _table(out / "cohort.csv") == _table(reference[0] / "cohort.csv")
    written = (out / "cohort.csv").read_text()
    assert main(["cohort", "--merge", str(out)]) == 0
    assert (out / "cohort.csv").read_text() == written


def test_two_jobs_from_a_csv_give_the_same_rows(scans, reference, tmp_path):
    """A CSV listing three of the scans (relative paths), two worker processes."""
    listing = scans / "subset.csv"
    listing.write_text(
        "scan_id,path\nb_nifti,b_nifti.nii.gz\nd_nolung,d_nolung.nii.gz\na_dicom,a_dicom\n"
    )
    try:
        rows = segment_cohort(listing, tmp_path / "out", jobs=2, progress=False)
    finally:
        listing.unlink()
    expected = {r["scan_id"]: r for r in _table(reference[0] / "cohort.csv")}
    got = _table(tmp_path / "out" / "cohort.csv")
    ids = ["a_dicom", "b_nifti", "d_nolung"]  # sorted by id, whatever the CSV's order
    assert [r["scan_id"] for r in rows] == [r["scan_id"] for r in got] == ids
    assert got == [expected[r["scan_id"]] for r in got]


@pytest.fixture
def other_model(tmp_path) -> Path:
    """The shipped checkpoint with one more epoch recorded: other bytes, so another model."""
    ckpt = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    ckpt["epoch"] = (ckpt.get("epoch") or 0) + 1
    path = tmp_path / "other.pt"
    torch.save(ckpt, path)
    return path


def test_another_model_is_refused_naming_both(scans, reference, other_model, capsys):
    out = reference[0]
    state = (out / "cohort.json").read_text()
    code = main(["cohort", str(scans), "--out", str(out), "--model", str(other_model)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(DEFAULT_MODEL) in err and str(other_model) in err
    assert (out / "cohort.json").read_text() == state


@pytest.mark.parametrize("case", ["inside_scans", "foreign", "shard", "other_n", "duplicate"])
def test_bad_cohort_input_exit_2_before_any_scan(scans, reference, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = [str(scans), "--out", str(out)]
    if case == "inside_scans":
        args = [str(scans), "--out", str(scans / "results")]
        expected = "inside the folder of scans"
    elif case == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected = "holds files that stitchnet cohort did not write (notes.txt)"
    elif case == "shard":
        args += ["--shard", "3/2"]
        expected = "expected I/N with 1 <= I <= N"
    elif case == "other_n":
        args = [str(scans), "--out", str(reference[0]), "--shard", "1/3"]
        expected = "was started in 1 shard(s); this run asks for 3"
    else:
        listing = tmp_path / "list.csv"
        listing.write_text(f"scan_id,path\nx,{scans / 'a_dicom'}\nx,{scans / 'b_nifti.nii.gz'}\n")
        args = [str(listing), "--out", str(out)]
        expected = "scan id 'x' names both"
    assert main(["cohort", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (scans / "results").exists()
    if case != "foreign":
        assert not out.exists()
    else:
        assert os.listdir(out) == ["notes.txt"]

"""`--out` never costs a user a file: every misuse is refused before any work, with one line and
exit status 2, and replacing an earlier output leaves the old or the new one, never a mix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import volume_factory as vf
from conftest import LABELLED, copy_slices

from stitchnet.cli import main
from stitchnet.outdir import (
    MARKER,
    OutputError,
    check_output,
    open_output,
    read_marker,
    staged_dir,
)


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`, by relative path."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def no_work(monkeypatch):
    """Any model load, scan read or data preparation fails the test: the refusal must come
    before all of them."""

    def started(*args, **kwargs):
        pytest.fail("work started before --out was checked")

    for target in (
        "stitchnet.inference.scan.load_segmentation_model",
        "stitchnet.inference.scan.read_volume",
        "stitchnet.pipeline.model_from_checkpoint",
        "stitchnet.pipeline.prepare_folder",
        "stitchnet.pipeline.read_and_prepare",
        "stitchnet.inference.predict.model_from_checkpoint",
        "stitchnet.inference.predict.read_and_prepare",
        "stitchnet.study.report.collect",
    ):
        monkeypatch.setattr(target, started)


@pytest.fixture
def scan(tmp_path) -> Path:
    """A 3-slice DICOM series of real bundled slices: tmp/patient/series_ct/ (files)."""
    folder, _, _ = vf.make_dicom_series(tmp_path / "patient", 3, 64)
    return folder


def _place_out(case: str, tmp_path: Path, inputs: Path, monkeypatch) -> tuple[str, str]:
    """OUT as a user would type it for one misuse, and the words the refusal must use."""
    if case == "user_file":
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "notes.txt").write_text("my notes")
        return str(tmp_path / "results"), "did not write (notes.txt)"
    if case == "is_input":
        return str(inputs), f"is the input {inputs} itself"
    if case == "holds_input":
        return str(inputs.parent), f"holds the input {inputs}"
    if case == "working_folder":
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "thesis.docx").write_text("chapter 1")
        monkeypatch.chdir(tmp_path / "work")
        return ".", "output folder . is the working folder itself"
    if case == "above_working_folder":
        (tmp_path / "work" / "deep").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "work" / "deep")
        deep = (tmp_path / "work" / "deep").resolve()
        return "..", f"output folder .. holds the working folder ({deep})"
    if case == "file":
        (tmp_path / "labels.nii.gz").write_bytes(b"a file the user keeps")
        return str(tmp_path / "labels.nii.gz"), "is an existing file, not a folder"
    raise AssertionError(case)


def _refused(argv: list[str], capsys, command: str, words: str, advice: str = "choose") -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"stitchnet {command}: error: ")
    assert words in err, err
    assert advice in err  # says what to do
    assert "PosixPath" not in err and "staging" not in err
    return err


CASES = ("user_file", "is_input", "holds_input", "working_folder", "above_working_folder", "file")


@pytest.mark.parametrize("case", CASES)
def test_segment_refuses_every_misuse_before_any_work(case, scan, tmp_path, monkeypatch, capsys):
    (tmp_path / "patient" / "report.pdf").write_text("the patient's earlier report")
    out, words = _place_out(case, tmp_path, scan, monkeypatch)
    before = _tree(tmp_path)
    monkeypatch.setattr(
        "stitchnet.inference.scan.load_segmentation_model",
        lambda *a: pytest.fail("model loaded before --out was checked"),
    )
    monkeypatch.setattr(
        "stitchnet.inference.scan.read_volume",
        lambda *a, **k: pytest.fail("scan read before --out was checked"),
    )
    _refused(["segment", str(scan), "--out", out, "--quiet"], capsys, "segment", words)
    # Not one file or folder under tmp_path was deleted, changed or added: the scan, the
    # user's files and OUT are as they were, and nothing that looks like an output appeared.
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "reproduce"])
@pytest.mark.parametrize("case", ["user_file", "is_input", "holds_input", "working_folder", "file"])
def test_other_commands_refuse_the_same_misuses(command, case, tmp_path, monkeypatch, capsys):
    slices = copy_slices(LABELLED, tmp_path / "data" / "slices", 3)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"never read")
    out, words = _place_out(case, tmp_path, slices, monkeypatch)
    argv = {
        "predict": ["predict", str(tmp_path / "run"), str(slices)],
        "evaluate": ["evaluate", str(tmp_path / "run"), str(slices)],
        "train": ["train", "--model", "unet", "--labelled", str(slices)],
        "reproduce": ["reproduce", "--labelled", str(slices), "--unlabelled", str(slices)],
    }[command]
    before = _tree(tmp_path)
    with monkeypatch.context() as m:
        m.setattr("stitchnet.pipeline.prepare_folder", lambda *a, **k: pytest.fail("work"))
        m.setattr("stitchnet.pipeline.read_and_prepare", lambda *a, **k: pytest.fail("work"))
        m.setattr("stitchnet.pipeline.model_from_checkpoint", lambda *a: pytest.fail("work"))
        m.setattr(
            "stitchnet.inference.predict.read_and_prepare", lambda *a, **k: pytest.fail("work")
        )
        m.setattr(
            "stitchnet.inference.predict.model_from_checkpoint", lambda *a: pytest.fail("work")
        )
        _refused([*argv, "--out", out, "--quiet"], capsys, command, words)
    assert _tree(tmp_path) == before


def test_report_writes_only_into_a_reproduce_folder(tmp_path, no_work, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    err = _refused(["report", str(notes)], capsys, "report", "not a folder written by", "pass")
    assert "stitchnet reproduce" in err
    segmented = tmp_path / "seg"
    segmented.mkdir()
    (segmented / MARKER).write_text(json.dumps({"command": "segment"}))
    with pytest.raises(OutputError, match="holds the output of stitchnet segment"):
        from stitchnet.study.report import build_report

        build_report(segmented)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is missing" in capsys.readouterr().err
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_report_accepts_a_reproduce_folder_of_an_earlier_version(tmp_path, capsys):
    (tmp_path / "repro" / "runs").mkdir(parents=True)  # what reproduce wrote before the marker
    assert main(["report", str(tmp_path / "repro")]) == 2
    # Past the folder check, the report itself finds nothing finished to report on.
    assert "no finished runs" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--batch-size", "--samples"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_counts_must_be_positive_whole_numbers(option, value, scan, tmp_path, no_work, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(scan), "--out", str(out), "--uncertainty", option, value])
    err = capsys.readouterr().err
    assert code == 2
    assert f"argument {option}: must be a whole number of at least 1, got {value}" in err
    assert "range()" not in err and "HU" not in err
    assert not out.exists()


def test_grown_commands_resume_their_own_folders_and_refuse_others(tmp_path):
    run = tmp_path / "run"
    open_output(run, "train")
    assert read_marker(run)["command"] == "train"
    (run / "log.csv").write_text("epoch\n1\n")
    assert check_output(run, "train") == run  # its own folder: resumed
    with pytest.raises(OutputError, match="holds the output of stitchnet train, not of"):
        check_output(run, "reproduce")
    with pytest.raises(OutputError, match="holds the output of stitchnet train, not of"):
        check_output(run, "segment")
    # Folders written before the marker existed, recognised by what those versions wrote.
    for name, text in [("last.pt", "x"), ("best.pt", "x"), ("splits.json", "{}")]:
        old = tmp_path / f"old_{name}"
        old.mkdir()
        (old / name).write_text(text)
        (old / "log.csv").write_text("epoch\n")
        assert check_output(old, "train") == old
    first_epoch = tmp_path / "first_epoch"
    first_epoch.mkdir()
    (first_epoch / "config.json").write_text(json.dumps({"model": "unet", "data": {}, "train": {}}))
    assert check_output(first_epoch, "train") == first_epoch
    other_config = tmp_path / "other_config"
    other_config.mkdir()
    (other_config / "config.json").write_text(json.dumps({"theme": "dark"}))
    with pytest.raises(OutputError, match=r"did not write \(config.json\)"):
        check_output(other_config, "train")
    old_repro = tmp_path / "old_repro"
    (old_repro / "runs" / "unet" / "seed0").mkdir(parents=True)
    assert check_output(old_repro, "reproduce") == old_repro
    with pytest.raises(OutputError, match=r"did not write \(runs\)"):
        check_output(old_repro, "train")  # reproduce's runs/ make no train run folder
    open_output(old_repro, "reproduce")  # a rerun marks it from then on
    assert read_marker(old_repro)["command"] == "reproduce"


def test_segment_rerun_replaces_its_earlier_output_and_nothing_else(scan, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--out", str(out), "--quiet"]) == 0
    first = sorted(p.name for p in out.iterdir())
    assert {"overlays", "report.html", "burden.json", MARKER} <= set(first)
    rerun = ["segment", str(scan), "--out", str(out), "--quiet", "--no-overlays", "--no-report"]
    assert main(rerun) == 0
    second = sorted(p.name for p in out.iterdir())
    assert "overlays" not in second and "report.html" not in second
    assert "burden.json" in second and "labels.nii.gz" in second
    marker = read_marker(out)
    assert marker["command"] == "segment"
    assert sorted(marker["files"]) == sorted(n for n in second if n != MARKER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "patient"]  # no hidden folders
    # A file the user puts into an earlier output is not deleted with it.
    (out / "my_notes.txt").write_text("keep me")
    capsys.readouterr()
    code = main(["segment", str(scan), "--out", str(out), "--quiet"])
    assert code == 2
    assert "also holds files it did not write (my_notes.txt)" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == sorted([*second, "my_notes.txt"])


# --- faults while an earlier output is replaced --------------------------------------------

OLD = {"result.txt": "old", "sub/part.txt": "old part"}
NEW = {"result.txt": "new", "extra.txt": "new extra"}


class Crash(BaseException):
    """An interruption (KeyboardInterrupt, or the process killed) at one filesystem step."""


def _write(out: Path, files: dict[str, str], command: str = "predict") -> None:
    with staged_dir(out, command) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


class Faults:
    """Replaces the filesystem calls that rename and delete (os.rename, os.replace, os.unlink,
    os.rmdir; shutil.rmtree uses the last two) and makes call number `at` fail. mode
    "interrupt": that call raises Crash, later ones work (clean-up runs); "killed": it and every
    later call raise Crash (nothing runs after it); "oserror": that call raises PermissionError."""

    NAMES = ("rename", "replace", "unlink", "rmdir")

    def __init__(self, monkeypatch, at: int | None = None, mode: str = "interrupt"):
        self.at, self.mode, self.calls = at, mode, 0
        for name in self.NAMES:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real):
        def call(*args, **kwargs):
            k, self.calls = self.calls, self.calls + 1
            if self.at is not None and (k == self.at or (self.mode == "killed" and k > self.at)):
                if self.mode == "oserror":
                    raise PermissionError(13, "Permission denied", str(args[0]))
                raise Crash(f"step {k}")
            return real(*args, **kwargs)

        return call


def _state(out: Path) -> str:
    """'old', 'new' or 'missing'; anything else (a mix, a partial copy) fails the test."""
    if not out.exists():
        return "missing"
    files = {k: v for k, v in _tree(out).items() if v is not None and k != MARKER}
    assert read_marker(out)["command"] == "predict", "OUT without its marker"
    for name, expected in (("old", OLD), ("new", NEW)):
        if files == {k: v.encode() for k, v in expected.items()}:
            assert sorted(read_marker(out)["files"]) == sorted(expected)
            return name
    raise AssertionError(f"OUT is a mix of the old and new output: {sorted(files)}")


def _steps(tmp_path: Path, monkeypatch) -> int:
    """How many rename/delete calls one clean replacement makes."""
    _write(tmp_path / "count" / "out", OLD)
    with monkeypatch.context() as m:
        faults = Faults(m)
        _write(tmp_path / "count" / "out", NEW)
    assert _state(tmp_path / "count" / "out") == "new"
    return faults.calls


@pytest.mark.parametrize("mode", ["interrupt", "killed", "oserror"])
def test_a_fault_at_any_step_leaves_the_old_or_the_new_output(mode, tmp_path, monkeypatch):
    steps = _steps(tmp_path, monkeypatch)
    # Marker write, OUT aside, staging to OUT, the old copy's marker, its 2 files and 2 folders.
    assert steps == 8
    seen = set()
    for at in range(steps):
        out = tmp_path / f"at{at}" / "out"
        _write(out, OLD)
        with monkeypatch.context() as m:
            Faults(m, at, mode)
            try:
                _write(out, NEW)
            except Crash:
                pass
            except OutputError as err:  # an OSError, reported in plain words
                assert mode == "oserror"
                message = str(err)
                assert f"could not write output folder {out}" in message
                assert "Permission denied" in message and "staging" not in message
        now = _state(out)
        aside = out.parent / ".out.predict-replaced"
        if read_marker(aside) is not None:  # a copy that still says "complete" must be whole
            assert _state(aside) == "old", at
        if mode != "killed":  # clean-up ran: OUT is complete at once
            assert now in ("old", "new"), (at, now)
        # The next run's start-up puts back an old output left aside, deletes the rest.
        check_output(out, "predict")
        after = _state(out)
        assert after in ("old", "new"), (at, after)
        assert now in ("missing", after), (at, now, after)
        assert sorted(p.name for p in out.parent.iterdir()) == ["out"], at
        seen.add(after)
    assert seen == {"old", "new"}  # faults before the swap keep the old, after it the new


def test_an_interruption_while_writing_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    _write(out, OLD)
    with pytest.raises(Crash):
        with staged_dir(out, "predict") as tmp:
            (tmp / "result.txt").write_text("new")
            raise Crash("Ctrl-C")
    assert _state(out) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_start_up_cleans_only_its_own_leftovers(tmp_path):
    out = tmp_path / "out"
    ours = [".out.segment-staging-ab12cd34", ".out-segment-x1y2z3w4"]  # now / earlier versions
    kept = [
        ".out.predict-staging-ab12cd34",  # another command's
        ".other.segment-staging-ab12cd34",  # another OUT's
        ".out.segment-staging-notes",  # not a name this code makes
    ]
    for name in ours + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "labels.nii.gz").write_text("partial")
    (tmp_path / ".out-segment-12345678.txt").write_text("a user's file")
    check_output(out, "segment")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, ".out-segment-12345678.txt"]
    )


def test_start_up_restores_an_output_left_aside_by_a_crash(tmp_path):
    out = tmp_path / "out"
    _write(out, OLD)
    os.rename(out, tmp_path / ".out.predict-replaced")  # killed between the two renames
    check_output(out, "predict")
    assert _state(out) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # A half-deleted copy (its marker goes first) is never put back as OUT.
    _write(tmp_path / "half", OLD)
    os.rename(tmp_path / "half", tmp_path / ".gone.predict-replaced")
    (tmp_path / ".gone.predict-replaced" / MARKER).unlink()
    check_output(tmp_path / "gone", "predict")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

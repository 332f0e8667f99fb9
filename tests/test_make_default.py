"""`python -m stitchnet.make_default`: a run folder it cannot pack is refused in one line."""

from __future__ import annotations

from stitchnet.make_default import main


def test_a_run_folder_without_best_pt_is_refused_and_nothing_is_written(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "model.pt"
    run.mkdir()
    (run / "notes.txt").write_text("no checkpoint here")
    assert main([str(run), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("make_default: error: ") and str(run) in err and "best.pt" in err
    assert not out.exists() and not out.with_suffix(".json").exists()

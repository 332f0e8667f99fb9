"""experiments/results_table.py: the headline table is read from result files, never typed.

A small results folder is written here by hand (two reports, run folders, device logs, a shipped
model's record); the expected table below is worked out from those files by hand: the report rows
copy the report's "mean ± std" cell, the run rows are the mean and population std of their seeds
(0.40 and 0.50: 0.450 ± 0.050), dates come from each report's first "written:" line and hardware
from the device logs (else the report's CPU record).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "results_table", REPO / "experiments/results_table.py"
)
rt = importlib.util.module_from_spec(_spec)
sys.modules["results_table"] = rt  # dataclasses look their module up while the class is built
_spec.loader.exec_module(rt)

GPU_REPORT = """# StitchNet reproduction report — preset `cpu`

## Lesion Dice over seeds (mean of GGO and consolidation F1; mean ± std over seeds)

Per-slice means, as everywhere else; the last column pools every test pixel instead.

| Method | seeds | lesion Dice per seed | mean ± std | pooled lesion Dice, mean ± std |
|---|---|---|---|---|
| Skip + paste | 3 | 0.5, 0.4, 0.6 | 0.500 ± 0.082 | 0.6 ± 0.0 |
| StitchNet-skip (labelled only) | 2 | 0.4, 0.4 | 0.400 ± 0.000 | 0.5 ± 0.0 |
| U-Net (supervised) | 2 | 0.3, 0.5 | 0.400 ± 0.100 | 0.5 ± 0.0 |
| StitchNet (labelled + unlabelled) | 1 | 0.2 | 0.200 ± 0.000 | 0.3 ± 0.0 |

## What ran

Trained on (the last `reproduce` invocation):

- written: 2026-01-02 10:00 UTC
- torch: 2.11.0+cu130
- cpu_threads: 1

This report written on:

- written: 2026-01-03 11:00 UTC
"""

CPU_REPORT = """# StitchNet reproduction report — preset `cpu-small`

## Lesion Dice over seeds (mean of GGO and consolidation F1; mean ± std over seeds)

| Method | seeds | lesion Dice per seed | mean ± std |
|---|---|---|---|
| StitchNet (labelled + unlabelled) | 2 | 0.1, 0.3 | 0.200 ± 0.100 |
| U-Net (MobileNetV2, from scratch) | 2 | 0.25, 0.25 | 0.250 ± 0.000 |

## Every class

## What ran

- report written: 2026-01-04 06:24 UTC
- torch: 2.13.0+cpu
- cpu_threads: 2
"""

GPUS = "NVIDIA H100 80GB HBM3 and NVIDIA H200"
H100 = "NVIDIA H100 80GB HBM3"
CPU = "2 CPU threads, torch 2.13.0+cpu"
CPU_PRESET, PAPER, SMALL = (
    "`cpu` (128 px, 60 epochs)",
    "`paper` (352 px, 80 epochs)",
    "`cpu-small` (64 px, 36 epochs)",
)
PAPERS = "StitchNet (labelled + unlabelled), the paper's model"
SHIPPED = "the default model of `stitchnet segment` (the recommended configuration, seed 0)"
EXPECTED_ROWS = [
    (f"{CPU_PRESET}, slices in HU", SHIPPED, "0.460", "1", "2026-01-05, 2 CPU cores"),
    (CPU_PRESET, "Skip + paste (recommended)", "0.500 ± 0.082", "3", f"2026-01-02, {GPUS}"),
    (CPU_PRESET, "StitchNet-skip (labelled only)", "0.400 ± 0.000", "2", f"2026-01-02, {GPUS}"),
    (CPU_PRESET, "U-Net (supervised)", "0.400 ± 0.100", "2", f"2026-01-02, {GPUS}"),
    (CPU_PRESET, PAPERS, "0.200 ± 0.000", "1", f"2026-01-02, {GPUS}"),
    (PAPER, "Skip + paste (recommended)", "0.450 ± 0.050", "2", f"2026-01-02, {H100}"),
    (PAPER, "U-Net (supervised)", "0.300 ± 0.000", "1", f"2026-01-02, {H100}"),
    (SMALL, PAPERS, "0.200 ± 0.100", "2", f"2026-01-04, {CPU}"),
    (SMALL, "U-Net (MobileNetV2, from scratch)", "0.250 ± 0.000", "2", f"2026-01-04, {CPU}"),
]
EXPECTED = (
    "| Preset | Model | Test lesion Dice, mean ± std | Seeds | Trained |\n|---|---|---|---|---|\n"
    + "".join(f"| {' | '.join(row)} |\n" for row in EXPECTED_ROWS)
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    gpu = tmp_path / "docs/results/cpu-gpu"
    _write(gpu / "report.md", GPU_REPORT)
    _write(gpu / "recommended.json", json.dumps({"label": "Skip + paste"}))
    # Two GPUs trained the report's runs; the paper-preset runs have their own log (one GPU).
    _write(gpu / "extra/device-run2.txt", "NVIDIA H100 80GB HBM3, 81559 MiB\ntorch 2.11\n")
    _write(gpu / "extra/device-run3-4.txt", "NVIDIA H200, 143771 MiB\ndriver exit 0\n")
    paper = gpu / "extra/paper"
    _write(paper / "device-run6.txt", "NVIDIA H100 80GB HBM3, 81559 MiB\n")
    for model, seed, dice in (("recommended", 0, 0.4), ("recommended", 1, 0.5), ("unet", 0, 0.3)):
        _write(paper / f"{model}/seed{seed}/test/metrics.json", json.dumps({"lesion_dice": dice}))
    _write(tmp_path / "docs/results/cpu-small/report.md", CPU_REPORT)
    record = {
        "test_scores": {"lesion_dice": 0.4603},
        "trained": "2026-01-05",
        "hardware": "2 CPU cores; about 7.5 min",
    }
    _write(tmp_path / "stitchnet/assets/default_model.json", json.dumps(record))
    return tmp_path


def test_headline_is_read_from_the_result_files(results: Path) -> None:
    assert rt.headline(results) == EXPECTED


def test_write_fills_the_marked_block_and_leaves_the_rest(results: Path) -> None:
    before = "# Title\n\nintro\n\n<!-- results-table:headline -->\nold numbers\n"
    after = "<!-- /results-table:headline -->\n\n## Next\n"
    _write(results / "README.md", before + after)
    _write(results / "docs/other.md", "no markers here\n")
    assert rt.main(["--root", str(results), "--check"]) == 1  # stale before the write
    assert rt.write_all(results) == [results / "README.md"]
    text = (results / "README.md").read_text()
    assert text == before.replace("old numbers\n", "") + EXPECTED + after
    # A second run changes nothing; a changed result file shows up in the table.
    assert rt.write_all(results) == []
    metrics = results / "docs/results/cpu-gpu/extra/paper/unet/seed0/test/metrics.json"
    metrics.write_text(json.dumps({"lesion_dice": 0.35}))
    assert rt.write_all(results) == [results / "README.md"]
    assert "| U-Net (supervised) | 0.350 ± 0.000 | 1 |" in (results / "README.md").read_text()


def test_rerunning_on_the_repository_changes_nothing() -> None:
    assert rt.write_all(REPO, check=True) == []
    assert "<!-- results-table:headline -->" in (REPO / "README.md").read_text()


def test_a_missing_method_names_the_file_and_the_choices(results: Path, capsys) -> None:
    report = results / "docs/results/cpu-small/report.md"
    report.write_text(CPU_REPORT.replace("U-Net (MobileNetV2, from scratch)", "U-Net"))
    _write(
        results / "README.md", "<!-- results-table:headline -->\n<!-- /results-table:headline -->\n"
    )
    assert rt.main(["--root", str(results), "--write"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert str(report) in err and "'U-Net (MobileNetV2, from scratch)'" in err
    assert "'U-Net'" in err  # what was found


def test_an_unknown_table_name_is_refused(results: Path) -> None:
    _write(results / "README.md", "<!-- results-table:nope -->\nx\n<!-- /results-table:nope -->\n")
    with pytest.raises(
        rt.ResultsError, match="'nope' is unknown; expected one of \\['headline'\\]"
    ):
        rt.write_all(results)

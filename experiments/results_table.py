"""The headline results table, generated from the result files in the repository.

    python experiments/results_table.py            # print every table
    python experiments/results_table.py --write    # rewrite the marked blocks in README.md, docs/
    python experiments/results_table.py --check    # exit 1 if a marked block is out of date

A markdown file asks for a table with a pair of marker comments; everything between them is
replaced by the table of that name:

    <!-- results-table:headline -->
    ...
    <!-- /results-table:headline -->

The numbers are read, never typed: the `stitchnet report` pages under docs/results/ (their "Lesion
Dice over seeds" table and their "What ran" record) and the test metrics.json of the `paper`-preset
runs. The date and hardware of each row come from the same folder: the report's date, its CPU
record, and the GPU names that the device logs beside it (`device*.txt`) printed. So a rerun of
`stitchnet report` or of a training, then `--write`, updates every copy at once.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Files that may hold marked blocks, relative to the root.
PAGES = ("README.md", "docs/**/*.md")

MARK = re.compile(
    r"(<!-- results-table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results-table:(?P=name) -->)",
    re.S,
)


class ResultsError(ValueError):
    """A result file is missing, or lacks what the table needs."""


@dataclass(frozen=True)
class Row:
    """One line of the headline table: a method of a report, runs of a run folder, or the model
    `stitchnet segment` ships."""

    preset: str  # the preset and what it means, as printed in the first column
    folder: str  # results folder (relative to the root) whose date and hardware the row gets
    method: str  # the report's method label, the run folder under `runs`, or SHIPPED
    runs: str | None = None  # a folder of seedN/test/metrics.json runs; None: the folder's report
    note: str = ""  # said after the method's name, e.g. which model of the paper it is


# What the README shows: the recommended model beside the supervised U-Net at each preset, the
# faithful StitchNet and the skip model without unlabelled slices, so each step can be read off.
SHIPPED = "shipped"
HEADLINE = (
    Row("`cpu` (128 px, 60 epochs), slices in HU", "stitchnet/assets", SHIPPED),
    Row("`cpu` (128 px, 60 epochs)", "docs/results/cpu-gpu", "recommended"),
    Row("`cpu` (128 px, 60 epochs)", "docs/results/cpu-gpu", "StitchNet-skip (labelled only)"),
    Row("`cpu` (128 px, 60 epochs)", "docs/results/cpu-gpu", "U-Net (supervised)"),
    Row(
        "`cpu` (128 px, 60 epochs)",
        "docs/results/cpu-gpu",
        "StitchNet (labelled + unlabelled)",
        note="the paper's model",
    ),
    Row("`paper` (352 px, 80 epochs)", "docs/results/cpu-gpu", "recommended", "extra/paper"),
    Row("`paper` (352 px, 80 epochs)", "docs/results/cpu-gpu", "unet", "extra/paper"),
    Row(
        "`cpu-small` (64 px, 36 epochs)",
        "docs/results/cpu-small",
        "StitchNet (labelled + unlabelled)",
        note="the paper's model",
    ),
    Row(
        "`cpu-small` (64 px, 36 epochs)",
        "docs/results/cpu-small",
        "U-Net (MobileNetV2, from scratch)",
    ),
)
RUN_LABELS = {"unet": "U-Net (supervised)"}


def shipped(folder: Path) -> str:
    """The row of the default model: its record default_model.json holds score, date, hardware."""
    path = folder / "default_model.json"
    record = json.loads(read(path))
    dice = (record.get("test_scores") or {}).get("lesion_dice")
    if (
        not isinstance(dice, (int, float))
        or not record.get("trained")
        or not record.get("hardware")
    ):
        raise ResultsError(
            f"{path}: test_scores.lesion_dice, trained or hardware missing; expected the record "
            "that `python -m stitchnet.make_default` writes"
        )
    hardware = record["hardware"].split(";")[0]
    name = "the default model of `stitchnet segment` (the recommended configuration, seed 0)"
    return f"{name} | {dice:.3f} | 1 | {record['trained']}, {hardware}"


def read(path: Path) -> str:
    if not path.is_file():
        raise ResultsError(f"{path}: no such file; expected a result file of the repository")
    return path.read_text()


def section_table(report: Path, heading: str) -> list[list[str]]:
    """The cells of the first markdown table under the `## heading...` line (header row first)."""
    lines = read(report).splitlines()
    start = next((i for i, s in enumerate(lines) if s.startswith(f"## {heading}")), None)
    if start is None:
        raise ResultsError(f"{report}: no section '## {heading}'; expected a stitchnet report")
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 3:
        raise ResultsError(f"{report}: section '## {heading}' has no table rows; expected a table")
    return [rows[0]] + rows[2:]  # drop the |---| line


def report_dice(folder: Path) -> dict[str, tuple[int, str]]:
    """method -> (seeds, 'mean ± std') from the report's lesion-Dice-over-seeds table."""
    table = section_table(folder / "report.md", "Lesion Dice over seeds")
    head = table[0]
    i_method, i_seeds, i_mean = head.index("Method"), head.index("seeds"), head.index("mean ± std")
    return {r[i_method]: (int(r[i_seeds]), r[i_mean]) for r in table[1:]}


def run_dice(folder: Path) -> tuple[int, str]:
    """(seeds, 'mean ± std') of test lesion Dice over FOLDER/seedN/test/metrics.json."""
    files = sorted(folder.glob("seed*/test/metrics.json"))
    if not files:
        raise ResultsError(f"{folder}: no seedN/test/metrics.json; expected trained run folders")
    values = []
    for f in files:
        dice = json.loads(read(f)).get("lesion_dice")
        if not isinstance(dice, (int, float)):
            raise ResultsError(f"{f}: lesion_dice is {dice!r}; expected a number")
        values.append(float(dice))
    return len(values), f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def recommended_label(folder: Path) -> str:
    """The report label of the model `stitchnet reproduce` chose (recommended.json)."""
    label = json.loads(read(folder / "recommended.json")).get("label")
    if not isinstance(label, str):
        raise ResultsError(f"{folder / 'recommended.json'}: label is {label!r}; expected a name")
    return label


def what_ran(folder: Path, runs: Path | None = None) -> str:
    """'DATE, HARDWARE' of a results folder: the report's date, then the GPUs of the device logs
    in RUNS (when it has any) or in the folder, else the report's CPU record."""
    text = read(folder / "report.md")
    dates = re.findall(r"written: (\d{4}-\d{2}-\d{2})", text)
    if not dates:
        raise ResultsError(
            f"{folder / 'report.md'}: no 'written: DATE'; expected a 'What ran' record"
        )
    # The device logs name the GPUs the runs trained on; a report alone only knows the last one.
    logs = sorted(runs.rglob("device*.txt")) if runs is not None else []
    gpus = sorted(
        {
            line.split(",")[0].strip()
            for f in logs or folder.rglob("device*.txt")
            for line in f.read_text().splitlines()
            if line.startswith("NVIDIA ")
        }
    )
    if gpus:
        return f"{dates[0]}, {' and '.join(gpus)}"
    threads = re.search(r"cpu_threads: (\d+)", text)
    torch = re.search(r"torch: (\S+)", text)
    if not threads or not torch:
        raise ResultsError(
            f"{folder / 'report.md'}: no cpu_threads or torch record and no device*.txt beside it; "
            "expected one of them"
        )
    return f"{dates[0]}, {threads.group(1)} CPU threads, torch {torch.group(1)}"


def headline(root: Path) -> str:
    """Test lesion Dice of the headline methods, each row with its date and hardware."""
    lines = [
        "| Preset | Model | Test lesion Dice, mean ± std | Seeds | Trained |",
        "|---|---|---|---|---|",
    ]
    for row in HEADLINE:
        folder = root / row.folder
        if row.method == SHIPPED:
            lines.append(f"| {row.preset} | {shipped(folder)} |")
            continue
        if row.runs is not None:
            label = (
                f"{recommended_label(folder)} (recommended)"
                if row.method == "recommended"
                else RUN_LABELS.get(row.method, row.method)
            )
            seeds, dice = run_dice(folder / row.runs / row.method)
        else:
            method = recommended_label(folder) if row.method == "recommended" else row.method
            by_method = report_dice(folder)
            if method not in by_method:
                raise ResultsError(
                    f"{folder / 'report.md'}: no method '{method}' in its lesion Dice table; "
                    f"expected one of {sorted(by_method)}"
                )
            seeds, dice = by_method[method]
            label = f"{method} (recommended)" if row.method == "recommended" else method
        runs = folder / row.runs if row.runs is not None else None
        label += f", {row.note}" if row.note else ""
        lines.append(f"| {row.preset} | {label} | {dice} | {seeds} | {what_ran(folder, runs)} |")
    return "\n".join(lines) + "\n"


TABLES = {"headline": headline}


def rewrite(text: str, root: Path, source: str = "a page") -> str:
    """TEXT with every marked block replaced by its table; an unknown name is an error."""

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise ResultsError(
                f"{source}: table '{name}' is unknown; expected one of {sorted(TABLES)}"
            )
        return m.group(1) + TABLES[name](root) + m.group(4)

    return MARK.sub(fill, text)


def pages(root: Path) -> list[Path]:
    return sorted({p for pattern in PAGES for p in root.glob(pattern) if p.is_file()})


def write_all(root: Path, check: bool = False) -> list[Path]:
    """Rewrite (or, with check, only compare) every marked page; returns the pages that differ."""
    changed = []
    for page in pages(root):
        text = page.read_text()
        if "<!-- results-table:" not in text:
            continue
        new = rewrite(text, root, str(page))
        if new != text:
            changed.append(page)
            if not check:
                page.write_text(new)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the marked blocks")
    mode.add_argument("--check", action="store_true", help="exit 1 if a marked block is stale")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    try:
        if not (args.write or args.check):
            for name, make in TABLES.items():
                print(f"## {name}\n\n{make(args.root)}")
            return 0
        changed = write_all(args.root, check=args.check)
    except ResultsError as e:
        print(f"results_table: error: {e}", file=sys.stderr)
        return 2
    for page in changed:
        print(f"{'out of date' if args.check else 'rewrote'}: {page.relative_to(args.root)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())

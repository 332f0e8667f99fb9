"""`segment_cohort`: many scans in one run, one table, resumable, shardable.

Each scan goes through `segment_scan`, the code `stitchnet segment` runs, into its own folder:

    OUT/scans/ID/        labels.nii.gz, lung.nii.gz, burden.json (with the zones), burden.csv;
                         overlays/ and report.html only with viewer=True; no healthy twin
    OUT/results/ID.json  the scan's row (cohort_table.py), written atomically after its folder:
                         the scan's done marker
    OUT/cohort.json      what the cohort is: its scans, the model (path and sha256), the shards
    OUT/cohort.csv       one row per scan, rebuilt from results/ once every scan has one
    OUT/errors.csv       the scans whose status is "error", with their one-line reason
    OUT/cohort.html      a sortable table and a histogram of lesion % (cohort_html.py)

Faults never cost the cohort: a scan that fails (bad input, no lung found, or anything else it
raises) gets an error row and the run goes on. segment_scan writes each scan folder into a
staging folder and renames it into place, and the result file is written only after that, so a
run killed at any moment loses at most the scans in progress (one, or `jobs`): a rerun of the
same command skips every scan with a result, and the next segment_scan on an unfinished scan
first deletes the staging folder the killed run left. A scan whose result is an error is not
tried again unless retry_errors=True.

Shard I of N takes every N-th scan of the list sorted by id (cohort_scans.shard_of). Shards may
run at the same time into one OUT (on one machine or on a shared file system); whichever run
finds every scan of the cohort with a result writes the tables, and `merge_cohort` writes them
on demand, refusing while shards are missing. One OUT holds one cohort, one model and one N:
a run that names another model, another N or other scans is refused before any work.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from stitchnet.inference.cohort_scans import (
    CohortError,
    Scan,
    list_scans,
    parse_shard,
    shard_name,
    shard_of,
)
from stitchnet.inference.cohort_table import cohort_csv, error_row, errors_csv, ok_row
from stitchnet.outdir import atomic_write, check_output, open_output
from stitchnet.version import __version__

COMMAND = "cohort"  # the output folder's mark (outdir.MARKER)
STATE = "cohort.json"
SCANS, RESULTS = "scans", "results"
TABLES = ("cohort.csv", "errors.csv", "cohort.html")


def segment_cohort(
    scans: str | Path | Mapping[str, str | Path],
    out: str | Path,
    model: str | Path | None = None,
    shard: str | tuple[int, int] | None = None,
    jobs: int = 1,
    viewer: bool = False,
    progress: bool = True,
    retry_errors: bool = False,
) -> list[dict[str, Any]]:
    """Segment every scan of a cohort (or of one shard of it) into OUT; return their rows.

    Args:
        scans: a folder of scans, a scan_id,path CSV (cohort_scans.py), or {scan_id: path}.
        out: the cohort's output folder: new, empty, or an earlier run of this same cohort.
        model: a run folder or checkpoint; None: the shipped default model.
        shard: "I/N" or (I, N): this run does every N-th scan from the I-th (sorted by id).
        jobs: scans side by side, each in a worker process with cores // jobs torch threads.
        viewer: also write each scan's overlays/ and report.html.
        progress: one line on stderr per finished scan.
        retry_errors: try the scans whose earlier result was an error again.
    Returns the rows (cohort_table.py) of this run's scans, in id order; OUT/cohort.csv holds
    every scan's once the whole cohort is done.
    """
    if jobs < 1:
        raise CohortError(f"--jobs {jobs}: expected a whole number of at least 1")
    part = parse_shard(shard) if isinstance(shard, str) else (shard or (1, 1))
    parse_shard(shard_name(*part))  # a tuple is checked as "I/N" is
    cohort = list_scans(scans)
    out = Path(out)
    _check_out(out, scans, cohort, model)
    identity = _model_identity(model)
    state = _open_state(out, cohort, identity, part[1])
    mine = shard_of(cohort, part)
    todo = [s for s in mine if not _done(out, s, retry_errors)]
    say = _reporter(progress, len(mine), len(mine) - len(todo))
    task = (out, model, identity, viewer)
    if jobs == 1:
        for scan in todo:
            say(segment_one(scan, *task))
    else:
        _run_pool(todo, task, jobs, say)
    if not _missing(out, state):
        _write_tables(out, _rows(out, _state_scans(state)))
    return _rows(out, mine)


def merge_cohort(out: str | Path) -> list[dict[str, Any]]:
    """Write OUT's cohort.csv, errors.csv and cohort.html from its per-scan results; refuse,
    naming the shards and the scans, while any scan has none. Returns every scan's row."""
    out = Path(out)
    state = _read_state(out)
    if state is None:
        raise CohortError(f"{out}: no {STATE}; expected the --out folder of stitchnet cohort")
    missing = _missing(out, state)
    if missing:
        n, cohort = state["shards"], _state_scans(state)
        shards = [i for i in range(1, n + 1) if set(shard_of(cohort, (i, n))) & set(missing)]
        again = f"--shard I/{n} for each" if n > 1 else "again"
        raise CohortError(
            f"{out}: shard{'s' if len(shards) > 1 else ''} "
            f"{', '.join(shard_name(i, n) for i in shards)} not finished: {len(missing)} "
            f"scan(s) without a result ({_some([s.scan_id for s in missing])}); expected every "
            f"shard done: run `stitchnet cohort SCANS --out {out}` {again}"
        )
    rows = _rows(out, _state_scans(state))
    _write_tables(out, rows)
    return rows


def segment_one(
    scan: Scan, out: Path, model: str | Path | None, identity: dict[str, Any], viewer: bool
) -> dict[str, Any]:
    """One scan into OUT/scans/ID and its row into OUT/results/ID.json; never raises for the
    scan's own faults (they become its error row). Runs in a worker process when jobs > 1.
    `identity`: the model's record in cohort.json, which names it in every row."""
    from stitchnet.inference.scan import segment_scan

    start = time.perf_counter()
    try:
        folder = out / SCANS / scan.scan_id
        burden = segment_scan(
            scan.path,
            folder,
            model=model,
            overlays=viewer,
            report=viewer,
            twin=False,  # healthy twins are two float volumes a scan: `segment` writes them
            progress=False,
        )
        row = ok_row(scan.scan_id, scan.path, burden, _axial_slices(folder / "labels.nii.gz"))
    except Exception as err:  # any fault of this scan; Ctrl-C and SystemExit stop the run
        row = error_row(scan.scan_id, scan.path, err)
    row.update(
        model=identity["name"],
        model_file=Path(identity["path"]).name,
        model_epoch=identity["epoch"],
        model_sha256=identity["sha256"][:12],
        model_version=identity["version"],
        stitchnet_version=__version__,
        seconds=time.perf_counter() - start,
    )
    text = json.dumps(row, indent=1) + "\n"
    atomic_write(_result_path(out, scan), lambda f: f.write(text), binary=False)
    return row


def _axial_slices(labels: Path) -> int:
    """Slices along the cranio-caudal axis of a label file, from its header and affine."""
    import nibabel as nib

    img = nib.load(labels)  # the header only; the voxels stay on disk
    axis = [code in ("S", "I") for code in nib.aff2axcodes(img.affine)].index(True)
    return int(img.shape[axis])


def _check_out(out: Path, source: Any, cohort: list[Scan], model: Any) -> None:
    """Refuse an OUT that would cost the user a file or mix up two cohorts, before any work:
    the rules of every command's output folder (outdir.check_output: the working folder, an
    input, a file, a non-empty folder stitchnet cohort did not write), and a folder inside the
    folder of scans, which a rerun would list as a scan."""
    inputs = [s.path for s in cohort] + [model]
    if not isinstance(source, Mapping):
        inputs.append(source)
        if Path(source).is_dir() and Path(source).resolve() in out.resolve().parents:
            raise CohortError(
                f"output folder {out} is inside the folder of scans {source}, where a rerun "
                f"would take it for a scan; choose a new or empty folder outside it"
            )
    check_output(out, COMMAND, inputs=inputs)


def _model_identity(model: str | Path | None) -> dict[str, Any]:
    """The checkpoint the run uses: its path, the sha256 of its bytes (the same path retrained
    is another model), its model name, epoch and the version of the code that trained it."""
    from stitchnet.checkpoint import load_checkpoint, resolve_checkpoint
    from stitchnet.inference.defaults import DEFAULT_MODEL

    path = DEFAULT_MODEL if model is None else resolve_checkpoint(model)
    if not path.is_file():
        raise CohortError(f"model {model}: {path} not found; expected a checkpoint or run folder")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    ckpt = load_checkpoint(path)  # refuses a file that is not a checkpoint, before any scan
    return {
        "path": str(path.resolve()),
        "sha256": digest.hexdigest(),
        "name": ckpt["model_name"],
        "epoch": ckpt.get("epoch"),
        "version": ckpt.get("stitchnet_version"),
    }


def _open_state(out: Path, cohort: list[Scan], model: dict, n: int) -> dict[str, Any]:
    """OUT/cohort.json as this run finds or starts it; a run for another model, N or list of
    scans is refused naming both."""
    state = _read_state(out)
    scans = [{"scan_id": s.scan_id, "path": s.path} for s in cohort]
    if state is None:
        open_output(out, COMMAND)
        state = {"command": COMMAND, "model": model, "shards": n, "scans": scans}
        text = json.dumps(state, indent=1) + "\n"
        atomic_write(out / STATE, lambda f: f.write(text), binary=False)
        return state
    if state["model"]["sha256"] != model["sha256"]:
        old, new = state["model"], model
        raise CohortError(
            f"{out} was started with the model {old['path']} (sha256 {old['sha256'][:12]}); "
            f"this run names {new['path']} (sha256 {new['sha256'][:12]}); expected the same "
            f"model for the whole cohort: rerun with --model {old['path']} or a new --out"
        )
    if state["shards"] != n:
        was = state["shards"]
        raise CohortError(
            f"{out} was started in {was} shard(s); this run asks for {n}; expected "
            + ("no --shard" if was == 1 else f"--shard I/{was}")
        )
    if state["scans"] != scans:
        before = {s["scan_id"]: s["path"] for s in state["scans"]}
        now = {s["scan_id"]: s["path"] for s in scans}
        diff = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        raise CohortError(
            f"{out} holds a cohort of {len(before)} scans; this run lists {len(now)}, differing "
            f"in {_some(diff)}; expected the same scans as when it started, or a new --out"
        )
    return state


def _read_state(out: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("command") == COMMAND else None


def _state_scans(state: dict[str, Any]) -> list[Scan]:
    return [Scan(s["scan_id"], s["path"]) for s in state["scans"]]


def _result_path(out: Path, scan: Scan) -> Path:
    return out / RESULTS / f"{scan.scan_id}.json"


def _result(out: Path, scan: Scan) -> dict[str, Any] | None:
    try:
        row = json.loads(_result_path(out, scan).read_text())
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("scan_id") == scan.scan_id else None


def _done(out: Path, scan: Scan, retry_errors: bool) -> bool:
    row = _result(out, scan)
    return row is not None and not (retry_errors and row["status"] == "error")


def _missing(out: Path, state: dict[str, Any]) -> list[Scan]:
    return [s for s in _state_scans(state) if _result(out, s) is None]


def _rows(out: Path, scans: list[Scan]) -> list[dict[str, Any]]:
    return [row for row in (_result(out, s) for s in scans) if row is not None]


def _write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    from stitchnet.inference.cohort_html import cohort_html

    links = {r["scan_id"]: (out / SCANS / r["scan_id"] / "report.html").is_file() for r in rows}
    texts = (cohort_csv(rows), errors_csv(rows), cohort_html(rows, links))
    for name, text in zip(TABLES, texts, strict=True):
        atomic_write(out / name, lambda f, t=text: f.write(t), binary=False)


def _run_pool(todo: list[Scan], task: tuple, jobs: int, say: Any) -> None:
    """`jobs` scans at a time in spawned worker processes (a fork would copy the parent's torch
    thread pool state), each with cores // jobs torch threads. At most `jobs` scans are handed
    out at once, so a killed run leaves no queue of half-started scans behind."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // jobs)
    pending = list(reversed(todo))
    running = set()
    with ProcessPoolExecutor(jobs, get_context("spawn"), _worker_init, (threads,)) as pool:
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    running.add(pool.submit(segment_one, pending.pop(), *task))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    say(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _reporter(progress: bool, total: int, skipped: int) -> Any:
    """The per-scan line on stderr: "[k/total] ID ok 12.3 s" or "... error: reason"."""
    count = [skipped]
    if progress and skipped:
        print(f"{skipped} of {total} scans already done; skipped", file=sys.stderr)

    def say(row: dict[str, Any]) -> None:
        count[0] += 1
        if progress:
            what = "ok" if row["status"] == "ok" else f"error: {row['error']}"
            print(
                f"[{count[0]}/{total}] {row['scan_id']} {what} ({row['seconds']:.1f} s)",
                file=sys.stderr,
            )

    return say


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")

"""Optional outputs of an output folder: when one fails, the others are still written and its
failure is recorded instead of raised.

An `OptionalOutput` names a group of paths under the folder and the jobs that write them: futures
of a thread pool, or `run_here` for a write done on the calling thread. `settle` waits for every
job, removes whatever a failed output left behind (so a path that is present is complete) and
returns one record per failed output:

    {"output": "report", "files": ["report.html"], "error": "OSError: [Errno 28] ..."}

`failure_note` is the one line that burden.json's notes and the CLI's warning print for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OptionalOutput:
    name: str  # how burden.json and the CLI name it: "report", "dicom_seg", "overlays", ...
    paths: tuple[str, ...]  # the files or folders under the output folder that it writes
    jobs: list[Future] = field(default_factory=list)  # the writes; one failure fails the group


def run_here(fn: Callable[..., Any], *args: Any) -> Future:
    """`fn(*args)` run now on this thread, as a finished Future, so that writes done here and
    writes in a thread pool are awaited, and their errors caught, in the same way."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as err:  # any error: settle() records it; Ctrl-C still stops the run
        future.set_exception(err)
    return future


def settle(
    outputs: Sequence[OptionalOutput], folder: Path, shown_as: Path | None = None
) -> list[dict[str, Any]]:
    """Wait for every output's jobs; remove each failed output's paths from `folder`; return
    a record per failed output, its error with `folder` written as `shown_as` (the folder's
    final name when it is a staging folder that is renamed later)."""
    failures = []
    for output in outputs:
        errors = [job.exception() for job in output.jobs]  # waits for each job
        error = next((e for e in errors if e is not None), None)
        if error is None:
            continue
        for name in output.paths:
            _remove(folder / name)
        message = f"{type(error).__name__}: {error}"
        if shown_as is not None:
            message = message.replace(str(folder), str(shown_as))
        failures.append({"output": output.name, "files": list(output.paths), "error": message})
    return failures


def failure_note(failure: dict[str, Any]) -> str:
    """The line that says which output failed, what it would have written, and why."""
    files = ", ".join(failure["files"])
    return f"{failure['output']} ({files}) not written: {failure['error']}"


def _remove(path: Path) -> None:
    with suppress(OSError):  # best effort: a leftover the failed writer could not make is fine
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

"""Output folders that never cost a user a file.

Every command that writes a folder calls `check_output` before it loads a model or reads a scan.
It refuses (OutputError, a ValueError: exit status 2 from the CLI) an OUT that

    is an input, or holds one          replacing OUT would delete the input
    is the working folder or above it  `--out .` would empty the folder the user works in
    is an existing file                not a folder at all
    holds anything this command did not write there

Two kinds of output folder:

    replaced whole (segment, predict, evaluate): `staged_dir` writes the new output beside OUT and
        swaps it in; an earlier complete output of the same command is replaced.
    grown in place (train, reproduce, cohort): a rerun resumes in OUT; `open_output` marks the
        folder as the command's when it is first created, and folders of earlier versions
        (without the mark) are recognised by what those versions wrote.

The mark is MARKER, `.stitchnet-output.json` = {"command", "stitchnet_version", "files"}; in a
replaced folder it is written last, so its presence means the output is complete, and "files"
lists every file written, so a file a user added later is never deleted with the output.

Replacing OUT uses two hidden names beside it, made only here:

    .NAME.COMMAND-staging-XXXXXXXX   the new output while it is written (MARKER last)
    .NAME.COMMAND-replaced           the old output between the two renames

    1. write everything into the staging folder, MARKER last
    2. rename OUT -> replaced        (OUT missing; the old output is whole under `replaced`)
    3. rename staging -> OUT         (OUT is the new, complete output)
    4. delete replaced's MARKER, then the rest of it (a half-deleted copy never looks complete)

An interruption between any two steps leaves OUT old and complete, new and complete, or missing
with the old output whole under `replaced`. `recover`, run by every later `check_output`, puts that
one back, deletes leftover replaced copies, and deletes staging folders of the same OUT and command
(also those named `.NAME-segment-XXXXXXXX` by earlier versions). Two runs must not write the same
OUT at the same time: the second one's start-up clean-up would delete the first one's staging.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from stitchnet.version import __version__

MARKER = ".stitchnet-output.json"
REPLACED = ("segment", "predict", "evaluate")  # written whole, then swapped in
GROWN = ("train", "reproduce", "cohort")  # written into and resumed
# What the grown commands wrote before the mark existed (checkpoint.LAST_NAME, BEST_NAME; the
# split; reproduce's runs/ and its summary).
LEGACY_NAMES = {
    "train": ("last.pt", "best.pt", "splits.json"),
    "reproduce": ("runs", "reproduce.json", "splits.json"),
}
CHOOSE = "choose a new or empty folder"
_MKDTEMP_SUFFIX = r"[a-z0-9_]{8}"  # the random part tempfile.mkdtemp adds


class OutputError(ValueError):
    """An output folder that cannot be written without losing something, or cannot be written."""


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Write `path` through `write(file)` on a temporary sibling, then rename it into place.

    The rename is atomic on one filesystem, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output(
    out_dir: str | Path, command: str, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Refuse an output folder that would cost the user a file; call it before any work.

    Args:
        out_dir: OUT as the user typed it (messages quote it so).
        command: the command that writes it: one of REPLACED or GROWN.
        inputs: the files and folders the command reads (None entries are skipped).
    Returns OUT as a Path. Also runs `recover` for the replaced-whole commands.
    """
    if command not in REPLACED + GROWN:
        raise ValueError(f"unknown output command {command!r}; expected one of {REPLACED + GROWN}")
    typed = Path(out_dir)
    where = typed.resolve()
    cwd = Path.cwd().resolve()
    if where == cwd:
        raise OutputError(
            f"output folder {typed} is the working folder itself; {CHOOSE}, e.g. a new name "
            f"inside it"
        )
    if where in cwd.parents:
        raise OutputError(f"output folder {typed} holds the working folder ({cwd}); {CHOOSE}")
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == where:
            raise OutputError(f"output folder {typed} is the input {item} itself; {CHOOSE}")
        if where in source.parents:
            raise OutputError(
                f"output folder {typed} holds the input {item}; {CHOOSE} outside the input"
            )
    if command in REPLACED:
        try:
            recover(typed, command)
        except OSError as err:
            raise OutputError(
                f"output folder {typed}: could not clean up the unfinished output "
                f"{err.filename} beside it ({err.strerror}); delete it, then run again"
            ) from err
    _refuse_contents(typed, command)
    _refuse_unwritable(typed, below=command in GROWN)
    return typed


def open_output(out_dir: str | Path, command: str) -> Path:
    """Create a grown output folder (train, reproduce, cohort) and mark it as the command's, once;
    a folder of an earlier version gets its mark here too."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if read_marker(out) is None:
        write_marker(out, command)
    return out


def check_report_folder(run_dir: str | Path) -> Path:
    """Refuse a folder `stitchnet report` must not write report.md, report.html and figures/
    into: anything but a folder written by `stitchnet reproduce`."""
    typed = Path(run_dir)
    if not typed.is_dir():
        what = "a file" if typed.exists() else "missing"
        raise OutputError(f"{typed} is {what}; expected the --out folder of stitchnet reproduce")
    marker = read_marker(typed)
    if marker is not None and marker.get("command") != "reproduce":
        raise OutputError(
            f"{typed} holds the output of stitchnet {marker.get('command')}, not of stitchnet "
            f"reproduce; pass the --out folder of a reproduce run"
        )
    if marker is None and not _legacy("reproduce", typed):
        raise OutputError(
            f"{typed} is not a folder written by stitchnet reproduce (no {MARKER}, no runs/); "
            f"pass the --out folder of a reproduce run"
        )
    return typed


@contextmanager
def staged_dir(out_dir: str | Path, command: str) -> Iterator[Path]:
    """A staging folder beside `out_dir` that replaces it when the block ends without an error
    and is deleted when it raises (module docstring: the four steps).

    OUT is checked again here (the caller checks it first, before its work) and once more just
    before the swap, in case a file arrived in it meanwhile.
    """
    typed = Path(out_dir)
    check_output(typed, command)
    out = Path(os.path.abspath(typed))
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, command), dir=out.parent))
        yield tmp
        write_marker(tmp, command, files=_files(tmp))
        _refuse_contents(typed, command)
        _swap(out, tmp, command)
    except OSError as err:
        raise _plain_error(err, typed, out, tmp) from err
    finally:
        if tmp is not None:  # after the swap tmp no longer exists and this does nothing
            shutil.rmtree(tmp, ignore_errors=True)


def recover(out_dir: str | Path, command: str) -> None:
    """Start-up clean-up beside OUT: put back an old output left whole under `replaced` when OUT
    is missing (a crash between the two renames), else delete `replaced`; delete the staging
    folders of this OUT and command. Touches only names this module makes."""
    out = Path(os.path.abspath(out_dir))
    if not out.parent.is_dir():
        return
    replaced = _replaced_path(out, command)
    if os.path.lexists(replaced):
        if not os.path.lexists(out) and _marker_command(replaced) == command:
            os.rename(replaced, out)
        else:
            _discard(replaced)
    staging = re.compile(re.escape(_staging_prefix(out, command)) + _MKDTEMP_SUFFIX)
    legacy = re.compile(re.escape(f".{out.name}-{command}-") + _MKDTEMP_SUFFIX)
    for entry in os.scandir(out.parent):
        if entry.is_dir(follow_symlinks=False) and (
            staging.fullmatch(entry.name) or (command == "segment" and legacy.fullmatch(entry.name))
        ):
            shutil.rmtree(entry.path, ignore_errors=True)


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The folder's MARKER as a dict, or None when it has none (or an unreadable one)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(folder: Path, command: str, files: list[str] | None = None) -> None:
    """Write MARKER into `folder` (atomically); `files`: what a replaced output holds."""
    record: dict[str, Any] = {"command": command, "stitchnet_version": __version__}
    if files is not None:
        record["files"] = files
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(folder / MARKER, lambda f: f.write(text), binary=False)


def _swap(out: Path, tmp: Path, command: str) -> None:
    """Steps 2-4: old OUT aside, staging to OUT, the old one deleted."""
    replaced = _replaced_path(out, command)
    try:
        if os.path.lexists(out):
            os.rename(out, replaced)
        os.rename(tmp, out)
    except BaseException:
        # OUT is missing only when the old output is whole under `replaced`: put it back now;
        # if even that fails, the next run's `recover` does.
        if not os.path.lexists(out) and os.path.lexists(replaced):
            with suppress(OSError):
                os.rename(replaced, out)
        raise
    if os.path.lexists(replaced):
        # The new output is in place; a copy left behind is deleted by the next start-up.
        with suppress(OSError):
            _discard(replaced)


def _discard(folder: Path) -> None:
    """Delete an old output: its MARKER first, so a half-deleted copy is never restored."""
    (folder / MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder)


def _refuse_contents(typed: Path, command: str) -> None:
    """Refuse an existing file, or a non-empty folder that is not this command's output."""
    if not os.path.lexists(typed):
        return
    if not typed.is_dir():
        raise OutputError(f"output folder {typed} is an existing file, not a folder; {CHOOSE}")
    # MARKER's own temporary file: another rank of the same run may be writing it right now.
    names = [n for n in os.listdir(typed) if not n.startswith(f".{MARKER}.")]
    if not names:
        return
    marker = read_marker(typed)
    if marker is None:
        if _legacy(command, typed):
            return
        raise OutputError(
            f"output folder {typed} holds files that stitchnet {command} did not write "
            f"({_some(names)}); {CHOOSE}"
        )
    if marker.get("command") != command:
        raise OutputError(
            f"output folder {typed} holds the output of stitchnet {marker.get('command')}, not "
            f"of stitchnet {command}; {CHOOSE}"
        )
    if command in REPLACED:
        foreign = sorted(set(_files(typed)) - set(marker.get("files", ())) - {MARKER})
        if foreign:
            raise OutputError(
                f"output folder {typed} is an earlier output of stitchnet {command} but also "
                f"holds files it did not write ({_some(foreign)}), which replacing it would "
                f"delete; move them out or {CHOOSE}"
            )


def _refuse_unwritable(typed: Path, below: bool) -> None:
    """Refuse an OUT that cannot be created: the nearest existing folder on its path (OUT
    itself for the grown commands, which write inside it; its parent for the replaced ones,
    which write beside it) must be a folder this user can write in."""
    path = typed if below else typed.parent
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
    if not candidate.is_dir():
        raise OutputError(f"output folder {typed} cannot be made: {candidate} is a file; {CHOOSE}")
    if not os.access(candidate, os.W_OK | os.X_OK):
        raise OutputError(
            f"output folder {typed} cannot be made: no permission to write in {candidate}; "
            f"choose a folder you can write to"
        )


def _legacy(command: str, folder: Path) -> bool:
    """Whether a folder without MARKER was written by an earlier version of a grown command."""
    if any((folder / name).exists() for name in LEGACY_NAMES.get(command, ())):
        return True
    if command == "train":  # a run stopped in its first epoch: only its config.json so far
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and {"model", "train", "data"} <= config.keys()
    return False


def _marker_command(folder: Path) -> str | None:
    marker = read_marker(folder)
    return None if marker is None else marker.get("command")


def _files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def _some(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _staging_prefix(out: Path, command: str) -> str:
    return f".{out.name}.{command}-staging-"


def _replaced_path(out: Path, command: str) -> Path:
    return out.parent / f".{out.name}.{command}-replaced"


def _plain_error(err: OSError, typed: Path, out: Path, tmp: Path | None) -> Exception:
    """An OSError about the output in plain words: OUT as typed, never the staging path."""
    where = ""
    for name in (err.filename, err.filename2):
        if name is None:
            continue
        path = Path(os.path.abspath(name))
        for root in (tmp, out):
            if root is not None and (path == root or root in path.parents):
                rel = path.relative_to(root).as_posix()
                # OUT itself, or a temporary file's hidden name: nothing to add
                where = "" if rel == "." or Path(rel).name.startswith(".") else f" ({rel})"
                break
        else:
            return err  # not about the output: the caller's own message stands
    return OutputError(
        f"could not write output folder {typed}{where}: {err.strerror or err}; nothing was "
        f"changed there"
    )

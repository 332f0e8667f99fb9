"""The scans of a cohort: listed from a folder or a CSV, named by id, and split into shards.

A folder of scans: each sub-folder is one scan (a DICOM tree, read as `stitchnet segment` reads
it) and each .nii / .nii.gz file is one volume; the id is the folder's name, or the file's name
without .nii / .nii.gz. Hidden names (starting with ".") and other files are not scans and are
passed over, so a README or a checksum list may sit beside the scans.

A CSV with the columns scan_id,path (more columns are allowed and ignored): a relative path is
relative to the CSV's own folder, so a cohort folder with its list inside it can be moved whole.

An id names the scan's output folder OUT/scans/ID, so it must be a plain file name: no "/" or
"\\", not empty, not starting with ".". Two scans with one id are refused, naming both paths.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stitchnet.data.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CSV_COLUMNS = ("scan_id", "path")


class CohortError(DataError):
    """A scan list, a cohort output folder or a shard that cannot be used as given."""


@dataclass(frozen=True)
class Scan:
    scan_id: str  # OUT/scans/<scan_id>
    path: str  # the DICOM folder or NIfTI file, as listed (absolute for a folder of scans)


def list_scans(source: str | Path | Mapping[str, str | Path]) -> list[Scan]:
    """The cohort's scans sorted by id, from a folder of scans, a scan_id,path CSV or a
    {scan_id: path} mapping."""
    if isinstance(source, Mapping):
        src = Path("scans")  # how messages name a mapping
        scans = [Scan(str(k), str(Path(v).resolve())) for k, v in source.items()]
    elif (src := Path(source)).is_dir():
        scans = _from_folder(src)
    elif src.is_file() and src.suffix.lower() == ".csv":
        scans = _from_csv(src)
    elif src.exists():
        raise CohortError(f"{src}: not a folder or a .csv; expected a folder of scans or a CSV")
    else:
        raise CohortError(f"{src}: not found; expected a folder of scans or a scan_id,path CSV")
    if not scans:
        raise CohortError(
            f"{src}: no scans found; expected sub-folders (DICOM), .nii/.nii.gz files or rows "
            f"of scan_id,path"
        )
    seen: dict[str, Scan] = {}
    for scan in scans:
        _check_id(scan.scan_id, src)
        if scan.scan_id in seen:
            raise CohortError(
                f"{src}: scan id {scan.scan_id!r} names both {seen[scan.scan_id].path} and "
                f"{scan.path}; expected one scan per id"
            )
        seen[scan.scan_id] = scan
    return sorted(scans, key=lambda s: s.scan_id)


def parse_shard(text: str) -> tuple[int, int]:
    """ "I/N" -> (I, N) with 1 <= I <= N."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = 0, 0
    if not 1 <= i <= n:
        raise CohortError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return i, n


def shard_of(scans: list[Scan], shard: tuple[int, int]) -> list[Scan]:
    """Shard I of N: the scans at positions I-1, I-1+N, I-1+2N, ... of the list sorted by id,
    so every shard gets every N-th scan and shard sizes differ by at most one."""
    i, n = shard
    ordered = sorted(scans, key=lambda s: s.scan_id)
    return ordered[i - 1 :: n]


def shard_name(i: int, n: int) -> str:
    return f"{i}/{n}"


def _from_folder(folder: Path) -> list[Scan]:
    scans = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            scans.append(Scan(entry.name, str(entry.resolve())))
        elif entry.name.lower().endswith(NIFTI_SUFFIXES):
            suffix = next(s for s in NIFTI_SUFFIXES if entry.name.lower().endswith(s))
            scans.append(Scan(entry.name[: -len(suffix)], str(entry.resolve())))
    return scans


def _from_csv(path: Path) -> list[Scan]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CohortError(
                    f"{path}: columns {reader.fieldnames}; expected a header with "
                    f"{','.join(CSV_COLUMNS)}"
                )
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise CohortError(f"{path}: not a text CSV ({err.reason}); expected scan_id,path") from err
    scans = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        scan_id, where = (row["scan_id"] or "").strip(), (row["path"] or "").strip()
        if not where:
            raise CohortError(f"{path}: line {line} has no path; expected scan_id,path")
        scans.append(Scan(scan_id, str((path.parent / where).resolve())))
    return scans


def _check_id(scan_id: str, src: Path) -> None:
    if not scan_id or scan_id.startswith(".") or any(c in scan_id for c in "/\\\0"):
        raise CohortError(
            f"{src}: scan id {scan_id!r} cannot name a folder; expected a plain name without "
            f"'/', '\\\\' or a leading '.'"
        )

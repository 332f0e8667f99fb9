"""A cohort's rows: one flat dict per scan, made from segment's burden.json, and the two tables.

    OUT/cohort.csv   one row per scan, the columns of `columns()`, in scan id order
    OUT/errors.csv   scan_id, path, error: one row per scan whose status is "error"

A row holds the scan's identity (id, path, status), its geometry (series UID, slices, voxel
spacing along the cranio-caudal, right-left and anterior-posterior axes), lung, GGO and
consolidation in mL and GGO / consolidation / lesion as % of lung for the whole lung and each
lung, the same for each zone of each lung (zones.py), the model, and the seconds the scan took.
An error row has its id, path, status, model and seconds; the measurements are empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from stitchnet.inference.zones import ZONES

MEASURES = ("lung_ml", "ggo_ml", "consolidation_ml", "ggo_pct", "consolidation_pct", "lesion_pct")
REGIONS = ("total", "right", "left")
SIDES = ("right", "left")
SPACING = ("spacing_si_mm", "spacing_rl_mm", "spacing_ap_mm")  # display axes Z, Y, X
MODEL = ("model", "model_file", "model_epoch", "model_sha256", "model_version")
ERROR_COLUMNS = ("scan_id", "path", "error")


def columns() -> list[str]:
    """cohort.csv's header."""
    head = ["scan_id", "status", "path", "series_uid", "slices", *SPACING]
    regions = [f"{r}_{m}" for r in REGIONS for m in MEASURES]
    zones = [f"{s}_{z}_{m}" for s in SIDES for z in ZONES for m in MEASURES]
    return head + regions + zones + [*MODEL, "stitchnet_version", "seconds"]


def ok_row(scan_id: str, path: str, burden: dict[str, Any], slices: int) -> dict[str, Any]:
    """A complete scan's row from its burden.json and its number of axial slices (seconds and
    the model are added by the caller, who knows them for error rows too)."""
    row: dict[str, Any] = {"scan_id": scan_id, "status": "ok", "path": path}
    row["series_uid"] = burden.get("series_uid")
    row["slices"] = slices
    row.update(zip(SPACING, burden["spacing_mm"], strict=True))
    for region in REGIONS:
        row.update({f"{region}_{m}": burden["regions"][region][m] for m in MEASURES})
    for side in SIDES:
        for zone in ZONES:
            values = burden["zones"][side][zone]
            row.update({f"{side}_{zone}_{m}": values[m] for m in MEASURES})
    return row


def error_row(scan_id: str, path: str, error: BaseException) -> dict[str, Any]:
    """A failed scan's row: its reason on one line. Bad input and no lung found are ValueErrors
    whose message says what was wrong; anything else is named by its type too."""
    text = " ".join(str(error).split()) or "no message"
    if not isinstance(error, (ValueError, OSError)):
        text = f"{type(error).__name__}: {text}"
    return {"scan_id": scan_id, "status": "error", "path": path, "error": text}


def cohort_csv(rows: Iterable[dict[str, Any]]) -> str:
    """cohort.csv: mL to 0.001, % to 0.01, seconds to 0.1; empty where a value is missing."""
    names = columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(name, row.get(name)) for name in names])
    return buf.getvalue()


def errors_csv(rows: Iterable[dict[str, Any]]) -> str:
    """errors.csv: the rows whose status is "error", with their one-line reason."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ERROR_COLUMNS)
    for row in rows:
        if row["status"] == "error":
            writer.writerow([row[c] for c in ERROR_COLUMNS])
    return buf.getvalue()


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if name.endswith("_ml"):
            return f"{value:.3f}"
        if name.endswith("_pct"):
            return f"{value:.2f}"
        if name == "seconds":
            return f"{value:.1f}"
        return f"{value:g}"
    return str(value)

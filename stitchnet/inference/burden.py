"""Lesion burden from one label volume: lung, GGO and consolidation in mL and as % of the lung.

Volumes are voxel counts times one voxel's volume (the product of the three spacings, mm^3,
/ 1000 for mL), so they are exact for the label map written beside them. Percentages are of the
lung they lie in (GGO voxels / lung voxels of that side); a side with no lung voxels has 0 mL
and null percentages (nothing to divide by), which only a one-lung scan produces.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from stitchnet.lungfield.volume import LEFT, RIGHT

GGO, CONSOLIDATION = 2, 3  # class ids (stitchnet.config.CLASS_NAMES)
REGIONS = {"right": (RIGHT,), "left": (LEFT,), "total": (RIGHT, LEFT)}
SLAB = 16  # slices per bincount in lesion_burden
COLUMNS = (
    "region",
    "lung_ml",
    "ggo_ml",
    "consolidation_ml",
    "lesion_ml",
    "ggo_pct",
    "consolidation_pct",
    "lesion_pct",
)


def lesion_burden(labels: np.ndarray, sides: np.ndarray, voxel_ml: float) -> dict[str, dict]:
    """Per region ("right", "left", "total"): lung, GGO, consolidation and lesion volume (mL) and
    the three as % of that region's lung.

    Args:
        labels: (Z, Y, X) class ids 0-3; 0 outside the lung.
        sides: (Z, Y, X) 0 outside the lung, RIGHT (1) or LEFT (2): the patient's lungs.
        voxel_ml: one voxel's volume in mL.
    """
    if labels.shape != sides.shape:
        raise ValueError(f"labels {labels.shape} and sides {sides.shape}; expected one shape")
    if not voxel_ml > 0:
        raise ValueError(f"voxel volume must be positive, got {voxel_ml} mL")
    # counts[s, c]: voxels of class c in side s; one pass over the volume, a slab of slices at a
    # time so that the int64 codes stay small (all at once they cost 8 bytes a voxel, ~5x slower).
    flat_sides, flat_labels = sides.reshape(len(sides), -1), labels.reshape(len(labels), -1)
    counts = np.zeros(12, dtype=np.int64)
    for z in range(0, len(flat_sides), SLAB):
        side, label = flat_sides[z : z + SLAB], flat_labels[z : z + SLAB]
        codes = side.astype(np.int64) * 4 + label.astype(np.int64)  # (slab, Y * X) in 0..11
        counts += np.bincount(codes.ravel(), minlength=12)[:12]
    counts = counts.reshape(3, 4)
    # (4,) voxels per class in each region
    return {
        region: burden_row(counts[list(which)].sum(axis=0), voxel_ml)
        for region, which in REGIONS.items()
    }


def burden_row(class_counts: np.ndarray, voxel_ml: float) -> dict[str, Any]:
    """One region's row from its (4,) voxel counts per class id 0-3 (class 0 is not lung):
    voxels, mL, and % of the region's lung (None when it has no lung)."""
    lung = int(class_counts[1:].sum())
    ggo, cons = int(class_counts[GGO]), int(class_counts[CONSOLIDATION])
    return {
        "lung_voxels": lung,
        "ggo_voxels": ggo,
        "consolidation_voxels": cons,
        "lung_ml": lung * voxel_ml,
        "ggo_ml": ggo * voxel_ml,
        "consolidation_ml": cons * voxel_ml,
        "lesion_ml": (ggo + cons) * voxel_ml,
        "ggo_pct": _pct(ggo, lung),
        "consolidation_pct": _pct(cons, lung),
        "lesion_pct": _pct(ggo + cons, lung),
    }


def _pct(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def burden_csv(burden: dict[str, dict[str, Any]]) -> str:
    """burden.csv: one row per region, the columns of COLUMNS, mL to 0.01 and % to 0.01."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for region in REGIONS:
        row = burden[region]
        writer.writerow([region] + ["" if row[k] is None else f"{row[k]:.2f}" for k in COLUMNS[1:]])
    return buf.getvalue()

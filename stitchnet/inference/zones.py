"""Lesion burden by zone of each lung: upper / middle / lower third and ventral / dorsal half.

Zones of the lung MASK, not anatomical lobes: each lung's extent along the cranio-caudal axis is
cut into three equal thirds, and its extent along the anterior-posterior axis into two equal
halves, each by that lung's own extent (first to last slice holding any of its voxels). Which
array axis is superior and which is posterior comes from the arrays' nibabel axis codes (of the
affine they are stored with), so `zone_burden` serves a display volume and a NIfTI file alike.

A voxel row along an axis belongs to the zone its centre falls in: with the lung on n rows,
numbered t = 0 .. n-1 from the inferior (or anterior) end, row t lies in part
floor(k (2t + 1) / (2n)) of k. So 3 rows give one per third, 5 give 2 / 1 / 2, and a row centred
exactly on the half-way line of an odd extent goes to the dorsal half. Each partition covers the
lung once: the thirds add up to the lung, and so do the two halves, in voxels and mL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stitchnet.inference.burden import burden_row
from stitchnet.lungfield.volume import LEFT, RIGHT

SIDES = {"right": RIGHT, "left": LEFT}
THIRDS = ("lower", "middle", "upper")  # inferior -> superior
HALVES = ("ventral", "dorsal")  # anterior -> posterior
ZONES = ("upper", "middle", "lower", "ventral", "dorsal")  # the order tables show them in
SLAB = 16  # rows per bincount, as burden.SLAB: the int64 codes of a slab stay small


def zone_burden(
    labels: np.ndarray, sides: np.ndarray, axcodes: Sequence[str], voxel_ml: float
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"right": {zone: row}, "left": {zone: row}}, zone in ZONES, row as burden.burden_row
    (voxels, mL, and GGO / consolidation / lesion as % of the zone's lung).

    Args:
        labels: 3-D class ids 0-3; 0 outside the lung.
        sides: the same shape: 0 outside the lung, RIGHT (1) or LEFT (2).
        axcodes: nibabel's code of each array axis, e.g. ("S", "L", "P") for the display volume
            or nibabel.aff2axcodes(affine) for a NIfTI file's voxels.
        voxel_ml: one voxel's volume in mL.
    """
    if labels.shape != sides.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and sides {sides.shape}; expected one 3-D shape")
    si, si_up = _axis(axcodes, "S", "I")
    ap, ap_back = _axis(axcodes, "P", "A")
    counts = _class_counts(labels, sides, si, ap)  # (n_si, n_ap, 3, 4)
    by_si = counts.sum(axis=1)[:: 1 if si_up else -1]  # rows from the inferior end
    by_ap = counts.sum(axis=0)[:: 1 if ap_back else -1]  # rows from the anterior end
    out = {}
    for name, side in SIDES.items():
        thirds = _split(by_si[:, side], len(THIRDS))  # (3, 4): lower, middle, upper
        halves = _split(by_ap[:, side], len(HALVES))  # (2, 4): ventral, dorsal
        counts = dict(zip(THIRDS, thirds, strict=True)) | dict(zip(HALVES, halves, strict=True))
        out[name] = {zone: burden_row(counts[zone], voxel_ml) for zone in ZONES}
    return out


def _axis(axcodes: Sequence[str], towards: str, away: str) -> tuple[int, bool]:
    """The array axis running along towards/away and whether it grows towards `towards`."""
    codes = [c.upper() for c in axcodes]
    for i, code in enumerate(codes):
        if code in (towards, away):
            return i, code == towards
    raise ValueError(f"axis codes {tuple(axcodes)} have no {towards}/{away} axis; expected one")


def _class_counts(labels: np.ndarray, sides: np.ndarray, si: int, ap: int) -> np.ndarray:
    """(n_si, n_ap, 3, 4): voxels of each side 0-2 and class 0-3 at each pair of rows along
    the cranio-caudal axis `si` and the anterior-posterior axis `ap`; one pass over the volume."""
    other = 3 - si - ap
    labels = np.transpose(labels, (si, other, ap))  # views, (n_si, n_other, n_ap)
    sides = np.transpose(sides, (si, other, ap))
    n_si, _, n_ap = labels.shape
    counts = np.zeros((n_si, n_ap * 12), dtype=np.int64)
    cell = np.arange(n_ap) * 12  # each ap row's codes in a block of 12
    for t in range(0, n_si, SLAB):
        side, label = sides[t : t + SLAB], labels[t : t + SLAB]
        codes = side.astype(np.int64) * 4 + label + cell  # (slab, n_other, n_ap)
        codes += (np.arange(len(codes)) * n_ap * 12)[:, None, None]  # and each si row's block
        block = np.bincount(codes.ravel(), minlength=len(codes) * n_ap * 12)
        counts[t : t + len(codes)] = block.reshape(len(codes), -1)
    return counts.reshape(n_si, n_ap, 3, 4)


def _split(rows: np.ndarray, k: int) -> np.ndarray:
    """(k, 4): the (n, 4) per-row class counts of one lung summed over k equal parts of the
    rows that hold its lung (module docstring: a row goes where its centre falls)."""
    parts = np.zeros((k, rows.shape[1]), dtype=np.int64)
    inside = np.nonzero(rows[:, 1:].sum(axis=1))[0]  # rows holding lung (class >= 1)
    if len(inside) == 0:
        return parts  # no such lung: every zone empty
    first, n = inside[0], inside[-1] - inside[0] + 1
    t = np.arange(n)
    part = (k * (2 * t + 1)) // (2 * n)  # (n,) which part each row's centre falls in
    np.add.at(parts, part, rows[first : first + n])
    return parts

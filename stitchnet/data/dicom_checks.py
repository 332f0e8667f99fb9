"""DICOM header checks of one CT series, each refusing with the file and the value it found.

data.volumes calls these on the chosen series:

    check_same_geometry(items)      every tag of GEOMETRY_TAGS present and equal across the series
    rescale_defaults(items, uid)    RescaleSlope/RescaleIntercept both present, or both absent
    pixel_error(path, ds, error)    a decoding failure told apart: no decoder vs. corrupt data
    skipped_text(skipped)           the files left out of a series, for an error or a note
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.scan_checks import VolumeError

# Tags every slice needs and shares with its series, with the tolerance of the comparison.
# Taken from the first slice alone, one wrong header there would scale every mL; a majority
# vote names the file that differs, wherever it is.
GEOMETRY_TAGS = {
    "ImageOrientationPatient": 1e-4,
    "PixelSpacing": 1e-4,  # mm: row spacing, column spacing
    "Rows": 0.0,
    "Columns": 0.0,
}

# Which packages decode a compressed transfer syntax pydicom cannot decode on its own.
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pillow, pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.51": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.80": "pyjpegls, pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.81": "pyjpegls, pylibjpeg + pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg, or python-gdcm",
}
MAX_NAMED = 5  # skipped files named in a message; the rest are counted


def _values(ds: Any, tag: str) -> list[float] | None:
    value = ds.get(tag)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]


def _show(v: np.ndarray | list[float]) -> str:
    """[0.7, 0.7] for a multi-valued tag, 512 for a single value, as the header writes them."""
    text = [f"{float(x):g}" for x in v]
    return text[0] if len(text) == 1 else f"[{', '.join(text)}]"


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return len(a) == len(b) and bool(np.allclose(a, b, atol=tol, rtol=0))


def check_same_geometry(items: Sequence[tuple[Path, Any]]) -> None:
    """Every GEOMETRY_TAGS tag on every slice, one value per series, and a positive spacing."""
    for tag, tol in GEOMETRY_TAGS.items():
        values = []
        for p, ds in items:
            v = _values(ds, tag)
            if v is None:
                raise VolumeError(
                    f"{p}: no {tag}; expected it on every slice to place the slice in the volume"
                )
            values.append(np.asarray(v))
        # Slices grouped by value (a series has one group, or a few when a header is wrong).
        groups: list[list[int]] = []
        for k, v in enumerate(values):
            match = [g for g in groups if _close(values[g[0]], v, tol)]
            if match:
                match[0].append(k)
            else:
                groups.append([k])
        # The value most slices share (on a tie, the first file's) is the series' value.
        ref = max(groups, key=len)
        members = set(ref)
        for k, (p, _) in enumerate(items):
            if k not in members:
                raise VolumeError(
                    f"{p}: {tag} {_show(values[k])} differs from {_show(values[ref[0]])} "
                    f"in {len(ref)} of {len(items)} files (e.g. {items[ref[0]][0].name}); "
                    f"expected one {tag} across a series"
                )
    p, ds = items[0]
    spacing = _values(ds, "PixelSpacing")
    if len(spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise VolumeError(
            f"{p}: PixelSpacing {_show(spacing)} (every slice); expected two positive spacings "
            f"in mm"
        )


def rescale_defaults(items: Sequence[tuple[Path, Any]], uid: str) -> str | None:
    """Refuse a half-given rescale; return a note when the series has none at all.

    pydicom applies RescaleSlope and RescaleIntercept only when both are present: with one
    missing it applies neither, and stored values (often HU + 1024) pass for HU. So one without
    the other is refused. Both absent on every slice (some writers store HU directly) reads as
    slope 1, intercept 0, with a note; the HU check that follows refuses it when that was wrong.
    A Modality LUT Sequence replaces the rescale and is left to pydicom.
    """
    absent, given = [], []
    for p, ds in items:
        if "ModalityLUTSequence" in ds:
            continue
        slope, inter = _values(ds, "RescaleSlope"), _values(ds, "RescaleIntercept")
        if (slope is None) != (inter is None):
            have, lack, value = (
                ("RescaleSlope", "RescaleIntercept", slope)
                if inter is None
                else ("RescaleIntercept", "RescaleSlope", inter)
            )
            raise VolumeError(
                f"{p}: {have} {value[0]:g} without {lack}; expected both on a CT slice (pydicom "
                f"applies neither without the other, so stored values would pass for HU)"
            )
        if slope is None:
            absent.append(p)
            continue
        if not (np.isfinite(slope[0]) and slope[0] != 0 and np.isfinite(inter[0])):
            raise VolumeError(
                f"{p}: RescaleSlope {slope[0]:g}, RescaleIntercept {inter[0]:g}; expected a "
                f"finite non-zero slope and a finite intercept"
            )
        given.append((p, slope[0], inter[0]))
    if absent and given:
        p, slope, inter = given[0]
        raise VolumeError(
            f"{absent[0]}: no RescaleSlope/RescaleIntercept while {p.name} has slope {slope:g}, "
            f"intercept {inter:g}; expected the same tags on every slice of a series"
        )
    if not absent:
        return None
    return (
        f"series {uid}: no RescaleSlope or RescaleIntercept on its {len(absent)} slices; stored "
        f"values read as HU (slope 1, intercept 0)"
    )


def pixel_error(path: Path, ds: Any, error: Exception) -> VolumeError:
    """The error for pixel data pydicom could not decode: which package is missing, or that the
    data itself is corrupt, told apart by pydicom's decoder registry."""
    from pydicom.pixels import get_decoder

    reason = " ".join(str(error).split())[:300]  # pydicom's message spans lines
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_compressed:
        return VolumeError(f"{path}: cannot decode the pixel data ({reason}); expected a CT slice")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:  # a transfer syntax pydicom has no decoder for at all
        decoder = None
    if decoder is None or not decoder.is_available:
        pkgs = DECODER_PACKAGES.get(str(ts), "pylibjpeg with its plugins, or python-gdcm")
        return VolumeError(
            f"{path}: pixel data is compressed as {ts.name} ({ts}) and no installed decoder "
            f"reads it; expected a decoder: pip install {pkgs}"
        )
    plugins = ", ".join(decoder.available_plugins)
    return VolumeError(
        f"{path}: pixel data compressed as {ts.name} ({ts}) is corrupt or undecodable: the "
        f"installed decoder ({plugins}) failed ({reason}); expected a valid {ts.name} stream "
        f"(check the file against its source; another decoder may read it: "
        f"{DECODER_PACKAGES.get(str(ts), 'pylibjpeg or python-gdcm')})"
    )


def skipped_text(skipped: Sequence[tuple[Path, str]]) -> str:
    """'2 files skipped: a (no pixel data), b (...)' naming at most MAX_NAMED of them."""
    named = "; ".join(f"{p} ({why})" for p, why in skipped[:MAX_NAMED])
    more = f"; and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else ""
    return f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: {named}{more}"

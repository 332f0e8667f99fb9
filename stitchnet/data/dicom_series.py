"""The DICOM series of a folder: found by content, grouped by SeriesInstanceUID, one chosen.

    scan_series(files)                          -> (series, files skipped with why)
    choose_series(root, series, uid, skipped)   -> the CT series, or a VolumeError

Which series is read: the one named, else CT (axial, most slices). A series without a Modality
tag (some anonymisers drop it, as in the LIDC slice of data/realct_nonlesion_dev) is read as CT
only where the folder holds no series tagged CT; data.volumes then requires its values to pass
the HU check and says so in a note. Any other modality (MR, PT, ...) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.dicom_checks import skipped_text
from stitchnet.data.scan_checks import VolumeError

NO_MODALITY = "?"  # how a series without a Modality tag is listed


@dataclass
class Series:
    """The files of one SeriesInstanceUID, headers read, pixel data deferred until chosen."""

    uid: str
    items: list[tuple[Path, Any]]  # (file, pydicom Dataset) of every image file

    @property
    def first(self) -> Any:
        return self.items[0][1]

    @property
    def modality(self) -> str:
        return str(getattr(self.first, "Modality", "") or NO_MODALITY)

    @property
    def axial(self) -> bool:
        """Whether the slice normal is closest to the patient's head-foot axis."""
        iop = getattr(self.first, "ImageOrientationPatient", None)
        if iop is None or len(iop) != 6:
            return False
        row, col = np.asarray([float(v) for v in iop]).reshape(2, 3)
        return int(np.argmax(np.abs(np.cross(row, col)))) == 2

    def summary(self) -> dict:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "n_slices": len(self.items),
            "description": str(getattr(self.first, "SeriesDescription", "") or ""),
            "axial": self.axial,
            "folder": str(self.items[0][0].parent),
        }


Skipped = tuple[Path, str]  # (file, why it was left out of every series)


def is_image_object(ds: Any) -> bool:
    """Whether a DICOM object is (or, truncated, may have been) an image. DICOMDIR, structured
    reports and presentation states hold no pixels by design and are left out without a note."""
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
    return sop is None or "Image" in getattr(sop, "name", str(sop)) or "Rows" in ds


def scan_series(files: list[Path]) -> tuple[list[Series], list[Skipped]]:
    """Group DICOM files with pixel data by SeriesInstanceUID (CT first, then no Modality, then
    the rest; axial and most slices first), and the image files left out, with why. A file
    cut short keeps no reliable SeriesInstanceUID (its last UID may be cut too), so every file
    left out is reported, whatever series it claims."""
    import pydicom

    groups: dict[str, list[tuple[Path, Any]]] = {}
    skipped: list[Skipped] = []
    for p in files:
        try:
            ds = pydicom.dcmread(str(p), defer_size="1 KB")  # pixel data read only when used
            # Elements are parsed on first access, so a damaged header fails here, not above.
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "") or None
            image = is_image_object(ds)
        except Exception as e:  # pydicom raises many types for a damaged file
            skipped.append((p, f"cannot be read as DICOM: {' '.join(str(e).split())}"))
            continue
        if "PixelData" not in ds:
            if image:  # e.g. a file cut short before its pixel data
                skipped.append((p, "no pixel data (truncated?)"))
        elif uid is None:
            skipped.append((p, "no SeriesInstanceUID"))
        else:
            groups.setdefault(uid, []).append((p, ds))
    series = [Series(uid, items) for uid, items in groups.items()]
    rank = {"CT": 0, NO_MODALITY: 1}
    series.sort(key=lambda s: (rank.get(s.modality, 2), not s.axial, -len(s.items), s.uid))
    return series, skipped


def choose_series(
    root: Path, series: list[Series], series_uid: str | None, skipped: list[Skipped]
) -> Series:
    found = "; ".join(
        f"{s.uid} ({s.modality}, {len(s.items)} slices, {s.summary()['description']!r})"
        for s in series
    )
    if not series:
        also = f"; {skipped_text(skipped)}" if skipped else ""
        raise VolumeError(f"{root}: DICOM files hold no images{also}; expected a CT image series")
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            raise VolumeError(f"{root}: no series {series_uid!r}; found {found}")
        chosen = match[0]
    else:
        # scan_series puts axial CT with the most slices first, then series without Modality.
        chosen = series[0]
    ct = [s for s in series if s.modality == "CT"]
    if chosen.modality == NO_MODALITY and ct:
        # Next to a CT series, an untagged one is more likely a derived or secondary series.
        raise VolumeError(
            f"{root}: series {chosen.uid} has no Modality tag and the folder holds CT series "
            f"{ct[0].uid}; expected a CT series (read that one, or tag this one Modality CT)"
        )
    if chosen.modality not in ("CT", NO_MODALITY):
        raise VolumeError(
            f"{root}: series {chosen.uid} has Modality {chosen.modality!r}; expected a CT "
            f"series (the model reads Hounsfield units). Series found: {found}"
        )
    return chosen

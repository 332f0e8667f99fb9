"""Checks that keep a scan from reaching the model with numbers it would misread.

A wrong header does not crash the model: it gives a wrong burden with exit status 0. So the
volume reader (data.volumes) runs these checks on every DICOM series and NIfTI file, and refuses
with one line that names the file, the value found and the value expected.

    check_finite(data, source)            NaN / inf voxels: refused, counted and located
    check_nifti_voxel_sizes(img, path)    a pixdim of 0, < 0, NaN or inf: refused
    check_hounsfield(hu, body, source)    air and soft tissue where HU puts them, else refused

The HU check, written out (`hounsfield_stats`): among the voxels inside the field of view,
"air" is the 1st percentile, and "soft tissue" the median of the voxels above the Otsu threshold
that splits the histogram into its dark (air, lung) and bright (fat, muscle, organs, bone) parts.
Otsu's split does not depend on the unit, so a shifted or rescaled scan is measured the same way.
HU puts air at -1000 and lung at about -900 to -700, so a chest scan's darkest 1 % is at most
`AIR_MAX` (-500); soft tissue sits at 0 to +60 (fat -100), so its median lies in `TISSUE_RANGE`.
Measured on the real scans of data/realct_nonlesion_dev: air -1017 to -931, soft tissue -23 to
-11; on the scans of tests/volume_factory.py: air -1103 to -1000, soft tissue -44 to 3. The
same scans with a forgotten -1024 intercept give air 7 to 93 and soft tissue about 1000; as
8-bit (0-255) images, air 0 to 54 and soft tissue 122 to 210. Both are refused by their air.
A volume of one value (or none inside the field of view) has neither air nor tissue to place
and is let through: the lung finder then reports that it finds no lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.errors import DataError

AIR_MAX = -500.0  # HU: a chest scan's darkest 1 % (air -1000, lung -900..-700) lies below this
TISSUE_RANGE = (-300.0, 300.0)  # HU: the median of the bright part (fat -100 .. muscle +60)
AIR_PERCENTILE = 1.0  # the darkest 1 %: robust to a few stray voxels
MAX_SAMPLES = 2_000_000  # voxels measured; a strided sample of a large scan gives the same values


class VolumeError(DataError):
    """A scan that cannot be read as one CT volume; names the file, the value found and expected."""


@dataclass(frozen=True)
class HounsfieldStats:
    """Where a volume's air and soft tissue lie, in the volume's own units."""

    air: float  # the 1st percentile of the voxels inside the field of view
    tissue: float  # the median of the voxels above `threshold`
    threshold: float  # the Otsu threshold between the dark and the bright part

    def describe(self) -> str:
        return f"air (darkest 1 %) at {self.air:.0f}, soft tissue (median) at {self.tissue:.0f}"


def check_finite(data: np.ndarray, source: str) -> None:
    """Refuse NaN and inf voxels: a NaN is no tissue class and an inf drags every mean.

    They are refused rather than filled: no fill value is right everywhere (air would cut the
    lung where a NaN slice crosses it, soft tissue would add lesion), and the file's writer
    knows what they stand for.
    """
    finite = np.isfinite(data)
    if finite.all():
        return
    nan = int(np.isnan(data).sum())
    pos = int(np.isposinf(data).sum())
    neg = int(np.isneginf(data).sum())
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise VolumeError(
        f"{source}: {nan + pos + neg:,} of {data.size:,} voxels are not finite (NaN {nan:,}, "
        f"+inf {pos:,}, -inf {neg:,}; the first at voxel {first}); expected a finite HU value "
        f"in every voxel (fill them, e.g. with -1024, before segmenting)"
    )


def check_nifti_voxel_sizes(img: Any, path: Path) -> None:
    """Refuse a NIfTI whose voxel size is 0, negative, NaN or inf where its affine uses it.

    nibabel reads pixdim 0 as 1 mm (and a negative one as its absolute value) with only a log
    line, so every mL would be off by the true size. Where the sform is set (sform_code > 0),
    the affine comes from it and pixdim is unused; where not, the qform or the base affine
    takes its voxel sizes from pixdim, read here from the header as written in the file.
    Refused, not read with an unknown spacing: the header can be fixed, and a slice spacing
    that is guessed turns the burden in mL into a guess.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    if int(img.header["sform_code"]) == 0:
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)  # pixdim before nibabel's fix
        pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
        for axis, size in enumerate(pixdim, start=1):
            if not (np.isfinite(size) and size > 0):
                raise VolumeError(
                    f"{path}: pixdim[{axis}] (voxel size along axis {axis - 1}) is {size} and "
                    f"no sform is set (sform_code 0), so the voxel size is unknown; expected a "
                    f"positive voxel size in mm (fix the header, e.g. header.set_zooms)"
                )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise VolumeError(
            f"{path}: affine {affine.tolist()} holds NaN or inf; expected finite voxel "
            f"directions and sizes in mm"
        )
    sizes = nib.affines.voxel_sizes(affine)
    if not (sizes > 0).all():
        raise VolumeError(
            f"{path}: voxel sizes {sizes.tolist()} mm from the affine; expected positive sizes"
        )


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of `values` (Otsu 1979)."""
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)  # (bins,) voxels at or below each centre
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 / w0[-1] - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(centres[int(np.argmax(between))])


def hounsfield_stats(hu: np.ndarray, body: np.ndarray) -> HounsfieldStats | None:
    """Air and soft tissue of the voxels inside `body`; None when there is nothing to place."""
    step = max(1, hu.size // MAX_SAMPLES)
    values = hu.reshape(-1)[::step][body.reshape(-1)[::step]].astype(np.float64)  # (n,)
    if values.size == 0 or values.min() == values.max():
        return None
    threshold = _otsu(values)
    bright = values[values > threshold]
    air = float(np.percentile(values, AIR_PERCENTILE))
    tissue = float(np.median(bright)) if bright.size else threshold
    return HounsfieldStats(air=air, tissue=tissue, threshold=threshold)


def check_hounsfield(
    hu: np.ndarray, body: np.ndarray, source: str, what: str = "values"
) -> HounsfieldStats | None:
    """Refuse a volume whose air and soft tissue are not where Hounsfield units put them.

    Args:
        hu: the volume as read, in what should be HU (any shape).
        body: bool of the same shape: the voxels inside the field of view.
        source: the file or folder named in the error.
        what: what the values are, for the error ("values", "series 1.2.3 (no Modality)").
    Returns the measured stats (None for a volume of one value, which is not judged).
    """
    stats = hounsfield_stats(hu, body)
    if stats is None:
        return None
    lo, hi = TISSUE_RANGE
    if stats.air <= AIR_MAX and lo <= stats.tissue <= hi:
        return stats
    hint = ""
    if stats.air > AIR_MAX and 700 <= stats.tissue - stats.air <= 1400:
        hint = f" (shifted by about {stats.air + 1000:+.0f}: a missing or wrong RescaleIntercept?)"
    elif stats.air >= 0:
        top = float(np.percentile(hu[body], 99))
        if top <= 1:
            hint = " (a label volume, or values scaled to 0-1?)"
        elif top <= 255:
            hint = " (an 8-bit 0-255 image?)"
    raise VolumeError(
        f"{source}: {what} are not Hounsfield units: {stats.describe()}{hint}; HU expects "
        f"air at about -1000 (darkest 1 % at most {AIR_MAX:.0f}) and soft tissue near 0 "
        f"(median between {lo:.0f} and {hi:.0f})"
    )

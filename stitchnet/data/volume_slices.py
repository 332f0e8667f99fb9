"""A scan read once, by the one volume reader, then cut into 2-D slices for the slice pipeline.

`stitchnet segment` reads DICOM and NIfTI with `data.volumes.read_volume`; `predict`, `evaluate`,
`prepare` and `train` go through the slice readers of `data.sources`. Both paths now read a scan
here, so they accept the same folders (DICOM found by content, the CT series chosen the same way,
the same header checks) and see every slice in the same display orientation, the one the
training slices have (volumes.DISPLAY_AXCODES). A label or lung volume given beside a NIfTI image
is turned with the image's own orientation transform, so masks stay on their pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stitchnet.data.errors import DataError
from stitchnet.data.images import DEFAULT_WINDOW, hu_window
from stitchnet.data.label_maps import IDENTITY, LabelMap, get_label_map
from stitchnet.data.types import SliceRecord
from stitchnet.data.volumes import Volume, read_volume


def _companion(path: str | Path, vol: Volume, what: str) -> np.ndarray:
    """A label or lung NIfTI of the image's voxel shape, in display orientation."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the {what} volume (.nii/.nii.gz)")
    try:
        data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as e:  # nibabel raises several unrelated types for a bad header
        raise DataError(f"{path}: cannot read as NIfTI ({e}); expected a {what} volume") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(vol.shape):
        raise DataError(
            f"{path}: volume shape {tuple(data.shape)} differs from its image {vol.source} "
            f"{tuple(vol.shape)}; expected the same shape"
        )
    return vol.from_input_order(data)


def _dicom_patient(vol: Volume) -> str | None:
    import pydicom

    if not vol.dicom_files:
        return None
    ds = pydicom.dcmread(str(vol.dicom_files[0]), stop_before_pixels=True)
    return str(getattr(ds, "PatientID", "") or "") or None


def volume_records(
    path: str | Path,
    window: tuple[float, float] = DEFAULT_WINDOW,
    label_path: str | Path | None = None,
    label_map: str | LabelMap = IDENTITY,
    lung_path: str | Path | None = None,
    patient_id: str | None = None,
    series_uid: str | None = None,
) -> list[SliceRecord]:
    """Every display slice of a DICOM series or NIfTI volume, windowed to [0, 1].

    Args:
        path: a DICOM folder (files of any name, searched recursively) or a .nii/.nii.gz file.
        window: the HU window mapped onto [0, 1] (the model's intensity scale).
        label_path: optional label NIfTI of the image's shape, mapped through `label_map`.
        label_map: how the label file's values become our class ids.
        lung_path: optional lung-field NIfTI (> 0 is lung), needed by maps with `lung_fill`.
        patient_id: given to every slice; None takes a DICOM series' PatientID (NIfTI: None,
            since one file is not always one patient).
        series_uid: the DICOM series to read when the folder holds several.
    """
    label_map = get_label_map(label_map)
    vol = read_volume(path, series_uid=series_uid)
    labels = None if label_path is None else _companion(label_path, vol, "label")
    lung = None if lung_path is None else _companion(lung_path, vol, "lung") > 0
    if patient_id is None and vol.kind == "dicom":
        patient_id = _dicom_patient(vol)
    path = Path(path)
    if vol.kind == "nifti":
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        ids = [f"{stem}_z{z:03d}" for z in range(vol.hu.shape[0])]
    else:
        ids = [f"{path.name}_{z:03d}" for z in range(vol.hu.shape[0])]
    # The source file of each display slice (DICOM: one file a slice), for error messages.
    files = [str(path)] * vol.hu.shape[0]
    if vol.dicom_files:
        # Where the files' axis k lands: a (1, 1, n) index array through the same transform.
        order = vol.from_input_order(np.arange(len(vol.dicom_files)).reshape(1, 1, -1))
        if order.shape[0] == vol.hu.shape[0]:  # axial series: one file per display slice
            files = [str(vol.dicom_files[int(order[z, 0, 0])]) for z in range(order.shape[0])]
    records = []
    for z in range(vol.hu.shape[0]):
        lung_z = None if lung is None else lung[z].astype(np.uint8)
        mask = None
        if labels is not None:
            mask = label_map.apply(labels[z], lung=lung_z, path=f"{label_path} slice {z}")
        image = hu_window(vol.hu[z], window)  # (Y, X) in [0, 1]
        records.append(SliceRecord(image, ids[z], patient_id, mask, lung_z, files[z]))
    return records

"""A DICOM Segmentation (SEG) of the labels over the DICOM series they came from.

One BINARY SEG instance with a segment per class (1 healthy lung, 2 GGO, 3 consolidation), each
frame placed on the source slice it covers, so a PACS or a DICOM viewer shows the labels over the
original series. highdicom builds and checks the object; this module only maps the classes to
segment descriptions and the display labels back to the source slices' own pixel grid.

Codes, each looked up in DICOM PS3.16 as pydicom ships it (`pydicom.sr.codedict.codes`, generated
from PS3.16's context groups; CID names from `pydicom.sr._cid_dict`):
- healthy lung: SCT 39607008 "Lung" (`codes.SCT.Lung`; CID 6100 Chest Component Category),
  category SCT 91723000 "Anatomical Structure" (CID 7150 Segmentation Property Category).
- ground-glass opacity: DCM 112120 "Ground glass opacity" (`codes.DCM.GroundGlassOpacity`;
  CID 6102 Chest Finding or Feature Modifier and CID 6104 Abnormal Opacity Finding or Feature).
  PS3.16 lists no SNOMED CT concept for it, only this code of DICOM's own scheme, which every
  DICOM reader knows. Category SCT 49755003 "Morphologically Abnormal Structure" (CID 7150).
- consolidation: no context group of PS3.16 has a code for it, under any scheme (no concept of
  pydicom's dictionaries names it), so it keeps a private scheme, "99STITCHNET" (DICOM reserves
  the "99" prefix for them), declared in the SEG's Coding Scheme Identification Sequence as
  PS3.3 asks of a scheme not in PS3.16's table of schemes. Same category as GGO.
Both lesion segments name the lung as their anatomic region.

The source headers go to highdicom as copies fixed for two things real series carry: absent
Type 2 patient and study attributes, and an empty SpecificCharacterSet (`_for_highdicom`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.volumes import Volume, VolumeError

LOCAL_SCHEME = "99STITCHNET"  # private coding scheme for consolidation, which PS3.16 lacks
# The first value of a multi-valued SpecificCharacterSet when it is empty: the default repertoire
# with code extensions (PS3.3 C.12.1.1.2), the term highdicom accepts for it.
DEFAULT_REPERTOIRE_EXTENSIONS = "ISO 2022 IR 6"
SERIES_NUMBER_OFFSET = 1000  # the SEG's SeriesNumber: the source's + this, a common convention
# Type 2 patient and study attributes of a CT image (present, possibly empty). highdicom copies
# them into the SEG and needs them present; some anonymisers drop them, so absent ones are added
# empty to a copy of the headers.
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _segment_descriptions(model_name: str, version: str) -> list[Any]:
    """The three SegmentDescriptions, numbered as the class ids of labels.nii.gz."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"stitchnet {model_name}",
        family=codes.DCM.ArtificialIntelligence,
        version=version,
        source="stitchnet",
    )
    lesion = codes.SCT.MorphologicallyAbnormalStructure
    segments = [
        (1, "healthy lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung),
        (2, "ground-glass opacity", lesion, codes.DCM.GroundGlassOpacity),
        (3, "consolidation", lesion, _local("CONS", "Consolidation")),
    ]
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=None if number == 1 else [codes.SCT.Lung],
        )
        for number, label, category, kind in segments
    ]


def _local(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def _local_scheme() -> Any:
    """The Coding Scheme Identification item that declares LOCAL_SCHEME inside the SEG."""
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME,
        name="stitchnet lesion classes",
        responsible_organization="stitchnet",
    )


def write_dicom_seg(
    path: str | Path,
    source_datasets: Sequence[Any],
    labels: np.ndarray,
    model_name: str,
    version: str,
    device_serial_number: str = "n/a",
) -> Path:
    """Write `labels` as one BINARY DICOM SEG over `source_datasets`.

    Args:
        path: the .dcm file to write.
        source_datasets: the source series' pydicom Datasets (headers suffice), one per slice.
        labels: (N, rows, cols) uint8 class ids 0-3; frame k lies on source_datasets[k] in that
            slice's own pixel_array order.
        model_name: the model that made the labels, named in the algorithm identification.
        version: the stitchnet version, the algorithm's and the SEG's software version.
        device_serial_number: what identifies the model instance (e.g. its checkpoint file).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    labels = np.asarray(labels, dtype=np.uint8)
    first = source_datasets[0]
    expected = (len(source_datasets), int(first.Rows), int(first.Columns))
    if labels.shape != expected:
        raise VolumeError(
            f"{path}: labels of shape {labels.shape}; expected (slices, rows, columns) = "
            f"{expected} of the source series"
        )
    series_number = int(getattr(first, "SeriesNumber", 0) or 0) + SERIES_NUMBER_OFFSET
    seg = hd.seg.Segmentation(
        source_images=[_for_highdicom(ds) for ds in source_datasets],
        pixel_array=labels,  # a label map: value v marks segment v, 0 none
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(model_name, version),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="stitchnet",
        manufacturer_model_name=model_name,
        software_versions=version,
        device_serial_number=device_serial_number,
        series_description="stitchnet lesion segmentation",
        coding_schemes=[_local_scheme()],
        # highdicom refuses an instance with no frames, so an all-background result keeps them.
        omit_empty_frames=bool(labels.any()),
    )
    path = Path(path)
    seg.save_as(str(path))
    return path


def _for_highdicom(ds: Any) -> Any:
    """A source header as highdicom takes it: `ds` itself, or a copy with every absent
    TYPE2_PATIENT_STUDY attribute added empty and an empty SpecificCharacterSet mended.

    An empty SpecificCharacterSet means the default repertoire (ISO_IR 6), as an absent one
    does, but highdicom copies the value into the SEG and refuses '' as no known character set;
    the copy drops it. In a multi-valued one an empty first value is the default repertoire with
    code extensions, spelled out here as highdicom knows it.
    """
    missing = [k for k in TYPE2_PATIENT_STUDY if k not in ds]
    charset = _character_set(ds)
    if not missing and charset == ds.get("SpecificCharacterSet"):
        return ds
    ds = copy.deepcopy(ds)
    for keyword in missing:
        setattr(ds, keyword, None)  # pydicom writes None as an empty value
    if charset is None:
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    return ds


def _character_set(ds: Any) -> str | list[str] | None:
    """`ds`'s SpecificCharacterSet with empty values resolved; None for the default repertoire."""
    value = ds.get("SpecificCharacterSet")
    values = [value] if isinstance(value, str) else list(value or [])
    values = [str(v).strip() for v in values]
    if not any(values):
        return None  # absent, '' or all empty: the default repertoire
    if len(values) == 1:
        return values[0]
    return [values[0] or DEFAULT_REPERTOIRE_EXTENSIONS, *values[1:]]


def write_volume_seg(
    path: str | Path, vol: Volume, labels_display: np.ndarray, model_info: dict[str, Any]
) -> Path:
    """`write_dicom_seg` for a Volume read from DICOM: (Z, Y, X) display labels -> DIR/*.dcm.

    The input's voxel order for DICOM is (columns, rows, slices) with the slices sorted along
    the normal as `vol.dicom_files` lists them, so frame k is the transpose of [:, :, k].
    """
    import pydicom

    from stitchnet.version import __version__

    if vol.kind != "dicom" or not vol.dicom_files:
        raise VolumeError(f"{vol.source}: a DICOM SEG needs a DICOM source; this is {vol.kind}")
    frames = np.transpose(vol.to_input_order(labels_display), (2, 1, 0))  # (C, R, N) -> (N, R, C)
    sources = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in vol.dicom_files]
    return write_dicom_seg(
        path,
        sources,
        frames,
        model_name=model_info["model_name"],
        version=__version__,
        device_serial_number=Path(model_info["path"]).name,
    )

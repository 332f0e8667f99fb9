"""Data in: readers for several on-disk layouts, the paper's pre-processing, and patient splits.

    records = read_source(load_bundled("labelled"))       # list[SliceRecord]
    prepared = prepare(records, DataConfig(image_size=128), cache_dir=".cache")  # PreparedSet
    splits = load_or_make_splits("runs/splits.json", prepared.ids, prepared.patient_ids, seed=0)

Names are imported on first use, so `python -m stitchnet.lungfield.train` does not find its
own module already imported by this package (which Python warns about). The lung-field names
come from `stitchnet.lungfield`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "stitchnet.data.types": ("PreparedSet", "SliceRecord"),
    "stitchnet.data.errors": ("DataError",),
    "stitchnet.data.images": ("hu_window",),
    "stitchnet.data.label_maps": (
        "CCCCII",
        "IDENTITY",
        "LABEL_MAPS",
        "MEDSEG_RAW",
        "LabelMap",
        "get_label_map",
    ),
    "stitchnet.data.slice_folder": ("read_folder",),
    "stitchnet.data.ccccii": ("read_ccccii",),
    "stitchnet.data.sources": (
        "detect_layout",
        "load_bundled",
        "read_dicom_series",
        "read_nifti",
        "read_source",
    ),
    "stitchnet.lungfield.net": (
        "LungSegmenter",
        "clean_lung_mask",
        "load_lung_segmenter",
        "lung_box",
        "lung_field",
        "lung_fields",
    ),
    "stitchnet.lungfield.train": ("train_lung_segmenter",),
    "stitchnet.data.preprocess": ("prepare", "restore_to_original"),
    "stitchnet.data.splits": (
        "check_no_patient_leak",
        "load_or_make_splits",
        "load_splits",
        "make_splits",
        "save_splits",
        "split_indices",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'stitchnet.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

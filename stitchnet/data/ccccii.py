"""The China Consortium of Chest CT Image Investigation (CC-CCII) layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stitchnet.data.errors import DataError
from stitchnet.data.images import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    check_same_size,
    files_with_suffixes,
    find_stem,
    read_image_file,
    read_label_file,
    require_dir,
)
from stitchnet.data.label_maps import CCCCII, LabelMap, get_label_map
from stitchnet.data.types import SliceRecord

CCCCII_CLASSES = ("NCP", "CP", "Normal")


def read_ccccii(
    root: str | Path,
    classes: tuple[str, ...] = ("NCP", "Normal"),
    subset: str = "all",
    label_map: str | LabelMap = CCCCII,
    max_slices_per_scan: int | None = None,
) -> list[SliceRecord]:
    """Read the China Consortium of Chest CT Image Investigation (CC-CCII) layout.

    Assumed layout (from public descriptions of the release; NOT verified against the real files):

        root/NCP/<patient_id>/<scan_id>/<slice>.png|jpg     novel-coronavirus pneumonia
        root/CP/<patient_id>/<scan_id>/<slice>.png|jpg      common pneumonia
        root/Normal/<patient_id>/<scan_id>/<slice>.png|jpg  controls
        root/ct_lesion_seg/image/<patient_id>/<slice>.jpg|png
        root/ct_lesion_seg/mask/<patient_id>/<slice>.png    same stem as the image

    The class folders are unlabelled slices. The segmentation subset (750 slices of 150 NCP
    patients) has masks that are assumed to hold 0 background, 1 lung field, 2 ground-glass opacity,
    3 consolidation as small integers in 8-bit PNGs (the `cc-ccii` label map); pass another
    `label_map` if the real files differ. The patient id is the patient folder's name, shared by the
    class folders and the segmentation subset, so a patient found in both stays in one split part.

    Args:
        classes: class folders to read; CP is left out by default, as in the paper.
        subset: "all", "seg" (segmentation subset only) or "unlabelled" (class folders only).
        max_slices_per_scan: keep at most this many evenly spaced slices per scan (the full
            release has over 400,000 slices, too many to hold in memory).
    """
    root = Path(root)
    label_map = get_label_map(label_map)
    if subset not in ("all", "seg", "unlabelled"):
        raise ValueError(f"subset must be 'all', 'seg' or 'unlabelled', got {subset!r}")
    unknown = sorted(set(classes) - set(CCCCII_CLASSES))
    if unknown:
        raise ValueError(f"unknown CC-CCII classes {unknown}; expected some of {CCCCII_CLASSES}")
    require_dir(root, f"the CC-CCII release (class folders {CCCCII_CLASSES} or ct_lesion_seg/)")
    seg_root = root / "ct_lesion_seg"
    if not seg_root.is_dir() and not any((root / c).is_dir() for c in CCCCII_CLASSES):
        raise DataError(
            f"{root}: no CC-CCII folders; expected ct_lesion_seg/ or class folders {CCCCII_CLASSES}"
        )

    records: list[SliceRecord] = []
    if subset in ("all", "seg") and seg_root.is_dir():
        records += _read_ccccii_seg(seg_root, label_map)
    if subset in ("all", "unlabelled"):
        for cls in classes:
            cls_dir = root / cls
            if not cls_dir.is_dir():
                continue
            for patient_dir in sorted(p for p in cls_dir.iterdir() if p.is_dir()):
                for scan_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
                    files = files_with_suffixes(scan_dir, IMAGE_SUFFIXES)
                    if max_slices_per_scan is not None and len(files) > max_slices_per_scan:
                        keep = (
                            np.linspace(0, len(files) - 1, max_slices_per_scan).round().astype(int)
                        )
                        files = [files[i] for i in keep]
                    for path in files:
                        sid = f"{cls}/{patient_dir.name}/{scan_dir.name}/{path.stem}"
                        records.append(
                            SliceRecord(
                                read_image_file(path), sid, patient_dir.name, path=str(path)
                            )
                        )
    if not records:
        raise DataError(
            f"{root}: no slices found for subset={subset!r}, classes={list(classes)}; expected "
            f"<class>/<patient>/<scan>/*.png|jpg or ct_lesion_seg/image/<patient>/*"
        )
    return records


def _read_ccccii_seg(seg_root: Path, label_map: LabelMap) -> list[SliceRecord]:
    image_root, mask_root = seg_root / "image", seg_root / "mask"
    require_dir(image_root, "ct_lesion_seg/image/<patient>/<slice>.jpg|png")
    require_dir(mask_root, "ct_lesion_seg/mask/<patient>/<slice>.png")
    records = []
    for patient_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        for path in files_with_suffixes(patient_dir, IMAGE_SUFFIXES):
            mask_path = find_stem(mask_root / patient_dir.name, path.stem, MASK_SUFFIXES)
            if mask_path is None:
                raise DataError(
                    f"{path}: no mask; expected {mask_root / patient_dir.name / path.stem}.png"
                )
            image = read_image_file(path)
            raw = read_label_file(mask_path)
            check_same_size("mask", mask_path, raw, path, image)
            mask = label_map.apply(raw, path=str(mask_path))
            sid = f"seg/{patient_dir.name}/{path.stem}"
            records.append(SliceRecord(image, sid, patient_dir.name, mask, None, str(path)))
    return records

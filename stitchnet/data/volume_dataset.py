"""Datasets of whole scans for `train`, `evaluate` and `prepare`: their layout and their cases.

Labelled layouts (each case is one patient for the split):

    nnunet  DS/imagesTr/CASE_0000.nii.gz + DS/labelsTr/CASE.nii.gz, optional DS/dataset.json (its
            `labels` pick the label map) and DS/lungsTr/CASE.nii.gz (a lung mask). The Medical
            Segmentation Decathlon's imagesTr/CASE.nii.gz (no channel suffix) is read the same way.
    pairs   DS/CASE.nii.gz + DS/CASE_mask.nii.gz (+ DS/CASE_lung.nii.gz), or DS/images/CASE.nii.gz
            + DS/masks/CASE.nii.gz (+ DS/lung/CASE.nii.gz).

Unlabelled layout:

    scans   a folder of scans found recursively: every .nii/.nii.gz file is one scan, and every
            folder directly under it that holds DICOM files (any names, any depth) is one scan
            tree whose series is chosen as `segment` chooses it (data.volumes.read_volume). DICOM
            files lying directly in the folder make it one scan tree itself.

Today's slice folders (images/ of 2-D slices) and CC-CCII trees are not volume layouts
(`detect_volume_layout` answers None) and go through data.sources as before. Labels must be NIfTI:
a NIfTI label beside a DICOM series has no agreed voxel order, so DICOM serves unlabelled scans.
"""

from __future__ import annotations

import os
from pathlib import Path

from stitchnet.config import DataConfig
from stitchnet.data.ccccii import CCCCII_CLASSES
from stitchnet.data.errors import DataError
from stitchnet.data.label_maps import LabelMap
from stitchnet.data.types import Case, PreparedSet

NIFTI = (".nii.gz", ".nii")
CHANNEL = "_0000"  # nnU-Net v2's suffix of a case's first (for CT: only) input channel
COMPANIONS = ("_mask", "_lung")  # pairs layout: label and lung files beside CASE.nii.gz


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI)


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def detect_volume_layout(path: str | Path) -> str | None:
    """'nnunet', 'pairs' or 'scans' for a folder of volumes; None for anything data.sources reads
    (a slice folder, CC-CCII, a single file)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "imagesTr").is_dir():
        return "nnunet"
    if (path / "images").is_dir():
        return "pairs" if any(is_nifti(p) for p in (path / "images").iterdir()) else None
    if (path / "ct_lesion_seg").is_dir() or any((path / c).is_dir() for c in CCCCII_CLASSES):
        return None
    if any(is_nifti(p) and nifti_stem(p).endswith("_mask") for p in path.iterdir()):
        return "pairs"
    return "scans"


def labelled_cases(path: str | Path, layout: str | None = None) -> list[Case]:
    """The cases of an nnunet or pairs dataset, each with its label file (refused when absent)."""
    path = Path(path)
    layout = layout or detect_volume_layout(path)
    if layout == "nnunet":
        cases = _nnunet_cases(path)
    elif layout == "pairs":
        cases = _pairs_cases(path)
    else:
        raise DataError(
            f"{path}: no labelled volumes; expected imagesTr/ + labelsTr/ (nnU-Net), CASE.nii.gz "
            f"+ CASE_mask.nii.gz pairs, or images/ + masks/ holding .nii.gz volumes"
        )
    if not cases:
        raise DataError(f"{path}: no .nii/.nii.gz images found in its {layout} layout")
    return cases


def _nnunet_cases(root: Path) -> list[Case]:
    images = sorted(p for p in (root / "imagesTr").iterdir() if is_nifti(p))
    cases = []
    for p in images:
        stem = nifti_stem(p)
        case, _, channel = stem.rpartition("_")
        if not (case and len(channel) == 4 and channel.isdigit()):
            case = stem  # the Decathlon names a case's image as its label
        elif f"_{channel}" != CHANNEL:
            raise DataError(
                f"{p}: input channel {channel}; expected CT with one channel, {case}{CHANNEL} "
                f"only (a second channel is not CT)"
            )
        label = _find_nifti(root / "labelsTr", case)
        if label is None:
            raise DataError(f"{p}: no label; expected {root / 'labelsTr' / case}.nii.gz")
        cases.append(Case(case, p, label, _find_nifti(root / "lungsTr", case)))
    return cases


def _pairs_cases(root: Path) -> list[Case]:
    if (root / "images").is_dir():
        images = sorted(p for p in (root / "images").iterdir() if is_nifti(p))
        masks, lungs = root / "masks", root / "lung"
        cases = []
        for p in images:
            case = nifti_stem(p)
            label = _find_nifti(masks, case)
            if label is None:
                raise DataError(f"{p}: no mask; expected {masks / case}.nii.gz")
            cases.append(Case(case, p, label, _find_nifti(lungs, case)))
        return cases
    files = sorted(p for p in root.iterdir() if is_nifti(p))
    images = [p for p in files if not nifti_stem(p).endswith(COMPANIONS)]
    cases = []
    for p in images:
        case = nifti_stem(p)
        label = _find_nifti(root, f"{case}_mask")
        if label is None:
            raise DataError(f"{p}: no mask; expected {root / case}_mask.nii.gz beside it")
        cases.append(Case(case, p, label, _find_nifti(root, f"{case}_lung")))
    return cases


def _find_nifti(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def scan_cases(path: str | Path) -> list[Case]:
    """The unlabelled scans under a folder: every NIfTI file, and every DICOM tree (a folder
    directly under `path` holding DICOM files, or `path` itself for DICOM files lying in it)."""
    from stitchnet.data.volumes import _is_dicom_or_false

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder of DICOM trees and NIfTI files")
    niftis, groups = [], {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            if is_nifti(p):
                niftis.append(p)
            else:
                rel = p.relative_to(root)
                top = root / rel.parts[0] if len(rel.parts) > 1 else root
                groups.setdefault(top, []).append(p)
    trees = [top for top, files in groups.items() if any(map(_is_dicom_or_false, files))]
    if root in trees:
        trees = [root]  # a series lying in the folder itself: the whole folder is one tree
    cases = [Case(str(p.relative_to(root).with_name(nifti_stem(p))), p) for p in niftis]
    cases += [Case(root.name if t == root else str(t.relative_to(root)), t) for t in trees]
    if not cases:
        raise DataError(
            f"{root}: no scans; expected .nii/.nii.gz files or folders of DICOM files under it"
        )
    return sorted(cases, key=lambda c: c.case_id)


LABELLED_LAYOUTS = ("nnunet", "pairs")


def dataset_json(path: str | Path, layout: str | None) -> Path | None:
    """An nnU-Net / Decathlon dataset's dataset.json, where its layout has one."""
    return Path(path) / "dataset.json" if layout == "nnunet" else None


def prepare_volumes(
    path: str | Path,
    cfg: DataConfig,
    cache_dir: str | Path | None,
    progress: bool = True,
    labelled: bool | None = None,
    label_map: str | LabelMap | None = None,
) -> PreparedSet:
    """A volume dataset's lung slices, ready for the model, through the slice cache.

    Args:
        path: a folder in one of the layouts above.
        cfg: the data config (window, size, crop) the slices are prepared with.
        cache_dir: where the slice cache lives (None: no cache).
        labelled: True: labels required (train --labelled, evaluate); False: the scans alone
            (train --unlabelled, even of a labelled layout); None: as the layout says.
        label_map: --label-map (a built-in name, a JSON file or a LabelMap); None: what
            dataset.json's labels say, else `ours`.
    """
    from stitchnet.data.label_maps import resolve_label_map
    from stitchnet.data.slice_cache import cached_scans, to_prepared

    layout = detect_volume_layout(path)
    if labelled is None:
        labelled = layout in LABELLED_LAYOUTS
    if labelled:
        cases = labelled_cases(path, layout)
        lmap = resolve_label_map(label_map, dataset_json(path, layout))
    elif layout == "scans":
        cases, lmap = scan_cases(path), None
    else:
        cases, lmap = [Case(c.case_id, c.image) for c in labelled_cases(path, layout)], None
    seen: dict[str, Path] = {}
    for c in cases:
        if c.case_id in seen:
            raise DataError(
                f"{c.image}: case id {c.case_id!r} also names {seen[c.case_id]}; expected one "
                f"scan per case id (rename one)"
            )
        seen[c.case_id] = c.image
    data = to_prepared(cached_scans(cases, cfg, lmap, cache_dir, progress), Path(path).name)
    if len(data) == 0:
        raise DataError(
            f"{path}: none of its {len(cases)} scans has a slice inside the lung field; "
            f"expected chest CT in Hounsfield units"
        )
    return data

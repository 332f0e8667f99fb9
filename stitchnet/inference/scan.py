"""`segment_scan`: one scan in, one output folder out, written atomically.

    DIR/labels.nii.gz   class ids 0-3 in the input's voxel order, shape and affine
    DIR/lung.nii.gz     0 outside the lungs, 1 the patient's right lung, 2 the left
    DIR/burden.json     lung, GGO, consolidation in mL and % of lung per side and in total, with
                        the scan, the model and the voxel size they came from
    DIR/burden.csv      the same numbers, one row per region
    DIR/overlays/       slice_ZZZZ.png per display slice (Z from inferior to superior): the
                        windowed scan with GGO tinted green and consolidation blue

Everything is written into a temporary folder beside DIR and renamed to DIR at the end, so an
error or an interruption never leaves a DIR that looks complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stitchnet.data.sources import hu_window
from stitchnet.data.volumes import read_volume, write_label_volume
from stitchnet.figures import overlay
from stitchnet.inference.burden import burden_csv, lesion_burden
from stitchnet.inference.defaults import load_segmentation_model
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.segment import segment_volume


def segment_scan(
    scan: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    series_uid: str | None = None,
    batch_size: int = 32,
    overlays: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment a DICOM folder, NIfTI file or folder of slices; write DIR; return burden.json.

    Args:
        scan: the scan (see data.volumes.read_volume).
        out_dir: the output folder; replaced if it exists, only once everything is written.
        model: a run folder (its best.pt) or a checkpoint; None: the shipped default model.
        series_uid: the DICOM series to read when the tree holds several (default: the CT one).
        batch_size: slices per batch.
        overlays: write the per-slice overlay PNGs.
        progress: a progress bar over slices.
    """
    net, run_cfg, model_info = load_segmentation_model(model)
    vol = read_volume(scan, series_uid=series_uid)
    result = segment_volume(inference_copy(net), run_cfg.data, vol, None, batch_size, progress)
    burden = {
        "source": vol.source,
        "kind": vol.kind,
        "series_uid": vol.series_uid,
        "shape": list(vol.shape),
        "spacing_mm": [float(s) for s in vol.spacing],
        "spacing_known": bool(getattr(vol, "spacing_known", True)),
        "voxel_volume_ml": vol.voxel_volume_ml(),
        "model": model_info,
        "regions": lesion_burden(result.labels, result.lung, vol.voxel_volume_ml()),
        "notes": list(getattr(vol, "notes", [])),
    }
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-segment-", dir=out.parent))
    try:
        write_label_volume(vol, result.labels, tmp / "labels.nii.gz")
        write_label_volume(vol, result.lung, tmp / "lung.nii.gz")
        if overlays:
            _write_overlays(tmp / "overlays", vol.hu, result.labels, run_cfg.data.lung_window)
        (tmp / "burden.csv").write_text(burden_csv(burden["regions"]))
        # burden.json last: inside the folder too, its presence marks a complete output.
        (tmp / "burden.json").write_text(json.dumps(burden, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return burden


def _write_overlays(
    folder: Path, hu: np.ndarray, labels: np.ndarray, window: tuple[float, float]
) -> None:
    """One RGB PNG per display slice; fast zlib level, since a scan has hundreds of them."""
    folder.mkdir()
    for z in range(hu.shape[0]):
        rgb = overlay(hu_window(hu[z], window), labels[z])  # (Y, X, 3) uint8
        Image.fromarray(rgb).save(folder / f"slice_{z:04d}.png", compress_level=1)

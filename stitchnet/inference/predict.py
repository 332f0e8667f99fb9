"""`predict`: a mask and an overlay per slice of a folder, and the lesion fractions per patient.

The slices go through the kernel `segment_volume` uses (inference.kernel), after the same reading
and pre-processing as `evaluate` (data.prepare_source).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from stitchnet.checkpoint import model_from_checkpoint
from stitchnet.config import RunConfig
from stitchnet.data.prepare_source import check_source_window, read_and_prepare
from stitchnet.figures import overlay
from stitchnet.inference.kernel import predict_classes
from stitchnet.inference.orient import radiological
from stitchnet.outdir import check_output, staged_dir


def predict_folder(
    run_or_checkpoint: str | Path,
    folder: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
    source_window: tuple[float, float] | None = None,
) -> list[Path]:
    """One mask PNG (class ids 0-3, the input's own size) and one overlay PNG per input slice.

    Everything is written to a temporary folder first and moved into place at the end, so an
    interrupted or failed run never leaves output that looks complete. `source_window`: the HU
    window of 8-bit slices that carry no recorded one (read_folder).
    """
    source_window = check_source_window(source_window)
    check_output(out_dir, "predict", inputs=(run_or_checkpoint, folder))
    model, ckpt = model_from_checkpoint(run_or_checkpoint)
    cfg = RunConfig.from_dict(ckpt["run_config"])
    records, data = read_and_prepare(
        folder, cfg.data, cache_dir, progress, source_window=source_window
    )
    out = Path(out_dir)
    written, pixels = [], []
    with staged_dir(out, "predict") as tmp:
        (tmp / "masks").mkdir()
        (tmp / "overlays").mkdir()
        full_masks = predict_classes(
            model.eval(), data.images, data.boxes, data.orig_shapes, batch_size
        )
        for i, full in enumerate(full_masks):  # each (H, W) uint8 class ids
            stem = data.ids[i]
            Image.fromarray(full).save(tmp / "masks" / f"{stem}.png")
            img = records[i].image  # (H, W) in display orientation, as the model reads it
            picture = radiological(overlay(img, full))  # anterior up, patient's right on the left
            Image.fromarray(picture).save(tmp / "overlays" / f"{stem}.png")
            written.append(out / "masks" / f"{stem}.png")
            pixels.append(np.bincount(full.ravel(), minlength=4)[:4])  # (4,) per class id
        burden = slice_lesion_fractions(pixels, [r.patient_id for r in records])
        (tmp / "lesion_burden.json").write_text(json.dumps(burden, indent=2))
    return written


def slice_lesion_fractions(pixels: list[np.ndarray], patient_ids: list[str | None]) -> dict:
    """Per patient: GGO and consolidation as fractions of the lung field (classes 1-3) of its
    slices, from each slice's (4,) pixel counts per class id; slices without a patient id are
    pooled as "unknown".

    Slices carry no spacing, so unlike a scan's `inference.burden.lesion_burden` (mL, per lung)
    this counts pixels: a fraction of the lung pixels seen, not of the lung's volume.
    """
    totals: dict[str, np.ndarray] = {}
    for counts, pid in zip(pixels, patient_ids, strict=True):
        key = pid or "unknown"
        totals[key] = totals.get(key, np.zeros(4, dtype=np.int64)) + counts
    out = {}
    for pid, c in sorted(totals.items()):
        lung = int(c[1] + c[2] + c[3])
        out[pid] = {
            "lung_px": lung,
            "ggo_fraction": float(c[2] / lung) if lung else 0.0,
            "consolidation_fraction": float(c[3] / lung) if lung else 0.0,
            "lesion_fraction": float((c[2] + c[3]) / lung) if lung else 0.0,
        }
    return out

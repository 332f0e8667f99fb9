"""`segment_scan`: one scan in, one output folder out, written atomically.

    DIR/labels.nii.gz   class ids 0-3 in the input's voxel order, shape and affine
    DIR/lung.nii.gz     0 outside the lungs, 1 the patient's right lung, 2 the left
    DIR/burden.json     lung, GGO, consolidation in mL and % of lung per side and in total, and
                        per zone of each lung ("zones": thirds and halves, zones.py), with the
                        scan, the model and the voxel size they came from
    DIR/burden.csv      the same numbers, one row per region
    DIR/overlays/       slice_ZZZZ.png per display slice (Z from inferior to superior): the
                        windowed scan with GGO tinted green and consolidation blue
    DIR/report.html     the viewer (viewer.py): one self-contained file over the whole scan
with uncertainty=True (the lung label's doubt, uncertainty.py):
    DIR/uncertainty.nii.gz     float32 predictive entropy in nats (0 .. log 3), input geometry
    DIR/uncertainty_mi.nii.gz  float32 mutual information of the draws (0 .. the entropy)
    DIR/uncertainty.csv        per display slice: lung voxels, mean entropy and MI in the lung
for StitchNet-family models (twin.py), unless twin=False; twin_mode "level" (default) or "style":
    DIR/healthy_twin.nii.gz       float32 HU: the scan, lesion voxels at the nearby healthy level
                                  (level) or at the model's healthy style (style)
    DIR/healthy_twin_diff.nii.gz  float32 HU: twin - scan, exactly 0 outside lesion voxels
with dicom_seg=True (DICOM input only, dicom_seg.py):
    DIR/labels_seg.dcm  a BINARY DICOM SEG of classes 1-3 over the source series' slices

Everything is written into a temporary folder beside DIR and renamed to DIR at the end, so an
error or an interruption never leaves a DIR that looks complete.

Only the first four files are required: an error there fails the run. An optional output (the
overlays, report.html, the uncertainty maps, the healthy twin, labels_seg.dcm) that fails is left
out whole (outputs.py), the rest of DIR is still written, and burden.json names it under
"failed_outputs" ({"output", "files", "error"}) and in "notes".
"""

from __future__ import annotations

import datetime as dt
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stitchnet.data.images import hu_window
from stitchnet.data.volumes import (
    DISPLAY_AXCODES,
    Volume,
    VolumeError,
    read_volume,
    write_label_volume,
)
from stitchnet.figures import overlay
from stitchnet.inference.burden import burden_csv, lesion_burden
from stitchnet.inference.defaults import load_segmentation_model
from stitchnet.inference.dicom_seg import write_volume_seg
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.orient import mark_orientation, radiological
from stitchnet.inference.outputs import OptionalOutput, failure_note, run_here, settle
from stitchnet.inference.png import WORKERS, write_png
from stitchnet.inference.segment import Segmentation, segment_volume
from stitchnet.inference.twin import has_styles
from stitchnet.inference.twin import twin_mode as parse_twin_mode
from stitchnet.inference.uncertainty import uncertainty_csv
from stitchnet.inference.viewer import lesion_ml_per_slice, write_viewer
from stitchnet.inference.zones import zone_burden
from stitchnet.outdir import check_output, staged_dir

REPORT_COLUMNS = ("lung_ml", "ggo_ml", "consolidation_ml", "lesion_ml", "lesion_pct")


def segment_scan(
    scan: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    series_uid: str | None = None,
    batch_size: int = 32,
    overlays: bool = True,
    progress: bool = True,
    report: bool = True,
    uncertainty: bool = False,
    samples: int = 8,
    twin: bool = True,
    twin_mode: str = "level",
    seed: int = 0,
    dicom_seg: bool = False,
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
        report: write report.html, the viewer.
        uncertainty: write the uncertainty maps and their per-slice summary.
        samples: posterior draws of z for the uncertainty of StitchNet-family models (other
            models use the four flips).
        twin: write the healthy twin when the model has styles (StitchNet family).
        twin_mode: "level" (the scan's own healthy lung sets the level, no model pass) or
            "style" (StitchNet's healthy style of the slice with its lesions hidden); twin.py.
        seed: seed of the posterior draws, so a rerun gives the same maps.
        dicom_seg: also write DIR/labels_seg.dcm, a DICOM SEG over the source series (DICOM
            input only; other inputs are refused before anything is computed).
    """
    check_output(out_dir, "segment", inputs=(scan, model))  # before any model or scan is read
    if uncertainty and samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    parse_twin_mode(twin_mode)  # a wrong mode is refused before anything is read
    net, run_cfg, model_info = load_segmentation_model(model)
    vol = read_volume(scan, series_uid=series_uid)
    if dicom_seg and vol.kind != "dicom":
        raise VolumeError(
            f"{scan}: --dicom-seg needs a DICOM source series; this input is {vol.kind}"
        )
    make_twin = twin and has_styles(net)
    result = segment_volume(
        inference_copy(net, channels_last=True),
        run_cfg.data,
        vol,
        None,
        batch_size,
        progress,
        uncertainty_samples=samples if uncertainty else 0,
        twin=twin_mode if make_twin else False,
        generator=torch.Generator().manual_seed(seed),
    )
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
        # The display arrays' axes, which the reader derived from the affine.
        "zones": zone_burden(result.labels, result.lung, DISPLAY_AXCODES, vol.voxel_volume_ml()),
        "notes": list(getattr(vol, "notes", [])),
    }
    if uncertainty:
        burden["uncertainty"] = _uncertainty_summary(result, net, samples, seed)
    if make_twin:
        burden["healthy_twin"] = {
            "files": ["healthy_twin.nii.gz", "healthy_twin_diff.nii.gz"],
            "mode": twin_mode,
            "lesion_voxels_replaced": int((result.labels >= 2).sum()),
        }
    elif twin:
        burden["healthy_twin"] = None
        burden["notes"].append(
            f"no healthy twin: {model_info['model_name']} has no image model (styles); only "
            f"StitchNet-family models (stitchnet, ladder, stitchnet-skip) can draw one"
        )
    out = Path(out_dir)
    with staged_dir(out, "segment") as tmp, ThreadPoolExecutor(WORKERS) as pool:
        # The NIfTI files (gzip) and overlay PNGs (zlib) compress with the interpreter lock
        # released, so they go to a thread pool and run beside the report on the other cores.
        required = [
            pool.submit(write_label_volume, vol, result.labels, tmp / "labels.nii.gz", np.uint8),
            pool.submit(write_label_volume, vol, result.lung, tmp / "lung.nii.gz", np.uint8),
        ]
        # Optional outputs: one that fails is left out and named in burden.json; the labels,
        # the lung and the burden, computed already, are not lost with it.
        optional = []
        if uncertainty:
            maps = (
                ("uncertainty.nii.gz", result.entropy),
                ("uncertainty_mi.nii.gz", result.mutual_info),
            )
            jobs = [
                pool.submit(write_label_volume, vol, array, tmp / name, np.float32)
                for name, array in maps
            ]
            csv = (tmp / "uncertainty.csv", result.entropy, result.mutual_info, result.lung)
            jobs.append(run_here(_write_uncertainty_csv, *csv))
            files = tuple(burden["uncertainty"]["files"])
            optional.append(OptionalOutput("uncertainty", files, jobs))
        if make_twin:
            twin, diff = tmp / "healthy_twin.nii.gz", tmp / "healthy_twin_diff.nii.gz"
            jobs = [
                pool.submit(write_label_volume, vol, result.twin_hu, twin, np.float32),
                pool.submit(_write_twin_diff, vol, result.twin_hu, diff),
            ]
            files = tuple(burden["healthy_twin"]["files"])
            optional.append(OptionalOutput("healthy_twin", files, jobs))
        if overlays:
            pngs = OptionalOutput("overlays", ("overlays",), [run_here((tmp / "overlays").mkdir)])
            window = run_cfg.data.lung_window
            pngs.jobs += [
                pool.submit(_write_overlay, tmp / "overlays", z, vol.hu, result.labels, window)
                for z in range(vol.hu.shape[0])
            ]
            optional.append(pngs)
        if report:
            job = run_here(_write_report, tmp / "report.html", vol, result, burden)
            optional.append(OptionalOutput("report", ("report.html",), [job]))
        if dicom_seg:
            job = run_here(write_volume_seg, tmp / "labels_seg.dcm", vol, result.labels, model_info)
            optional.append(OptionalOutput("dicom_seg", ("labels_seg.dcm",), [job]))
        for job in required:
            job.result()  # re-raises a failed required write here, inside staged_dir
        burden["failed_outputs"] = settle(optional, tmp, shown_as=out)
        for failure in burden["failed_outputs"]:
            burden["notes"].append(failure_note(failure))
            if burden.get(failure["output"]):  # "uncertainty", "healthy_twin": files now absent
                burden[failure["output"]]["files"] = []
        (tmp / "burden.csv").write_text(burden_csv(burden["regions"]))
        # burden.json last: inside the folder too, its presence marks a complete output.
        (tmp / "burden.json").write_text(json.dumps(burden, indent=2))
    return burden


def _uncertainty_summary(
    result: Segmentation, net: torch.nn.Module, samples: int, seed: int
) -> dict[str, Any]:
    """burden.json's "uncertainty": how the maps were made and their mean inside the lung."""
    inside = result.lung > 0
    return {
        "files": ["uncertainty.nii.gz", "uncertainty_mi.nii.gz", "uncertainty.csv"],
        "method": f"{samples} posterior draws of z (seed {seed})"
        if has_styles(net)
        else "test-time augmentation: the four flips",
        "label": "lung label: background folded into healthy lung; nats, 0 .. log 3",
        "mean_entropy_lung": float(result.entropy[inside].mean()),
        "mean_mi_lung": float(result.mutual_info[inside].mean()),
    }


def _write_uncertainty_csv(
    path: Path, entropy: np.ndarray, mutual_info: np.ndarray, lung: np.ndarray
) -> None:
    path.write_text(uncertainty_csv(entropy, mutual_info, lung))


def _write_twin_diff(vol: Volume, twin_hu: np.ndarray, path: Path) -> None:
    """healthy_twin_diff.nii.gz: twin - scan in HU, computed here, on the writer's thread."""
    diff = twin_hu - vol.hu.astype(np.float32)  # (Z, Y, X), 0 off the lesions
    write_label_volume(vol, diff, path, np.float32)


def _write_report(path: Path, vol: Volume, result: Segmentation, burden: dict[str, Any]) -> None:
    """report.html: the viewer over the display volume with the burden and the model named."""
    info = burden["model"]
    meta = {
        "model": info["model_name"] + (" (shipped default)" if info.get("default") else ""),
        "checkpoint": Path(info["path"]).name,
        "epoch": info.get("epoch"),
        "version": info.get("stitchnet_version") or "?",
        "date": dt.date.today().isoformat(),
        "source": vol.source,
    }
    if not burden["spacing_known"]:
        meta["spacing"] = "unknown (1 mm placeholder): mL are nominal"
    table = {
        region: {k: row[k] for k in REPORT_COLUMNS} for region, row in burden["regions"].items()
    }
    write_viewer(
        path,
        vol.hu,
        result.labels,
        lung=result.lung,
        uncertainty=result.entropy,
        twin_hu=result.twin_hu,
        burden=table,
        per_slice_ml=lesion_ml_per_slice(result.labels, vol.voxel_volume_ml()),
        meta=meta,
        uncertainty_max=math.log(3),  # the lung label has three outcomes
    )


def _write_overlay(
    folder: Path, z: int, hu: np.ndarray, labels: np.ndarray, window: tuple[float, float]
) -> None:
    """The RGB PNG of display slice z as a radiological picture with A / P / R / L at its edges;
    fast zlib level, since a scan has hundreds of them."""
    rgb = overlay(hu_window(hu[z], window), labels[z])  # (Y, X, 3) uint8, display orientation
    picture = mark_orientation(radiological(rgb))  # (X, Y, 3): anterior up, patient's right left
    write_png(folder / f"slice_{z:04d}.png", picture, level=1)

"""Scans cut once into model-ready slices and kept on disk, so a second run reads no volume.

One scan goes the way `segment` takes it (inference.segment.segment_volume): read by
data.volumes.read_volume, each display slice through the model's HU window (the data config's
`lung_window`), the shipped lung segmenter's per-slice field cut to the patient's body
(lungfield.body), cropped to that field's box and resized. The per-slice fields are cleaned in
3-D into the scan's lungs (lungfield.volume); only slices inside them are kept: a slice whose lung
covers at least MIN_LUNG_FRACTION of the body on it, or one whose label marks anything. Abdomen
and neck slices of a scan never reach training.

An entry per scan, `CACHE/scans/<key>.pt` (tensors) + `<key>.json` (written last: its presence
marks a complete entry), holds the kept slices in the model's input scale (float16: 0.0005 of
the window, under 1 HU), their labels and lungs, and per slice its z, crop box and lung fraction;
the JSON holds the case id, the HU window the slices are in, the spacing and the notes. The key is
the files' paths, sizes and mtimes (every file of a DICOM tree) and the reader's settings (data
config, label map, lung segmenter version), so finding an entry needs no volume read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stitchnet.config import DataConfig
from stitchnet.data import volumes
from stitchnet.data.images import hu_window
from stitchnet.data.label_maps import LabelMap
from stitchnet.data.preprocess import resize_image, resize_mask
from stitchnet.data.types import Case, PreparedSet
from stitchnet.data.volume_slices import _companion
from stitchnet.inference.fast import inference_copy
from stitchnet.lungfield.body import body_mask
from stitchnet.lungfield.net import LungSegmenter, load_lung_segmenter, lung_box, lung_fields

CACHE_FORMAT = 1  # bump when what an entry holds or how it is made changes
# A slice is lung when its 3-D lung field covers at least this share of the body on it: the lung
# apex and the costophrenic recesses stay (a few % of the body), specks at the edge do not.
MIN_LUNG_FRACTION = 0.01
_BATCH = 32  # slices per lung-segmenter batch


@dataclass
class ScanSlices:
    """One scan's kept slices, as a cache entry holds them."""

    case_id: str
    images: torch.Tensor  # (k, 1, S, S) float16 in [0, 1]: HU through `hu_window`
    masks: torch.Tensor | None  # (k, S, S) uint8 class ids, None for an unlabelled scan
    lungs: torch.Tensor  # (k, S, S) uint8 0/1 the scan's 3-D lung field on each crop
    z: list[int]  # the kept slices' display indices (inferior -> superior)
    boxes: list[tuple[int, int, int, int]]  # crop (y0, y1, x0, x1) in the slice's pixels
    lung_fraction: list[float]  # lung field / body on each kept slice
    meta: dict  # source, kind, spacing, hu_window, orig_shape, n_slices, notes, key


def scan_key(
    case: Case, cfg: DataConfig, label_map: LabelMap | None, lung_version: str | None
) -> str:
    """Digest of the scan's files (path, size, mtime) and every setting its slices depend on."""
    h = hashlib.blake2b(digest_size=16)
    settings = {
        "format": CACHE_FORMAT,
        "case": case.case_id,
        "config": dataclasses.asdict(cfg),
        "lung": lung_version,
        "min_lung_fraction": MIN_LUNG_FRACTION,
        "label_map": None if case.label is None or label_map is None else repr(label_map),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for path in (case.image, case.label, case.lung):
        h.update(repr(_fingerprint(path)).encode())
    return h.hexdigest()


def _fingerprint(path: Path | None) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of a file, or of every file of a folder (a DICOM tree)."""
    if path is None:
        return []
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return [(str(path.resolve()), st.st_size, st.st_mtime_ns)]
    out = []
    for folder, dirs, names in os.walk(path, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            st = p.stat()
            out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return out


def slice_scan(
    case: Case, cfg: DataConfig, label_map: LabelMap | None, seg: LungSegmenter
) -> ScanSlices:
    """Read one scan and cut it into model-ready lung slices (see the module docstring).

    A scan without lungs (lungfield.volume.NoLungError) gives no slices when unlabelled; a
    labelled one is refused, since its labels could not be trusted to lie on a chest CT."""
    from stitchnet.lungfield.volume import NoLungError, lung_field

    vol = volumes.read_volume(case.image)
    n, h, w = vol.hu.shape
    images = [hu_window(vol.hu[z], cfg.lung_window) for z in range(n)]  # each (Y, X) in [0, 1]
    body = body_mask(vol.hu, vol.body, vol.spacing)  # (Z, Y, X)
    fields = np.stack(lung_fields(seg, images, cfg.morph_radius, _BATCH, drop_air_around=False))
    fields *= body  # the air around or under the patient is never lung
    notes = list(vol.notes)
    try:
        lung = lung_field(fields, vol.hu, body, vol.source).mask  # (Z, Y, X) bool
    except NoLungError:
        if case.label is not None:
            raise
        lung = np.zeros((n, h, w), dtype=bool)
        notes.append(f"{case.image}: no lung field found; no slices taken")
    labels = None
    if case.label is not None and label_map is not None:
        raw = _companion(case.label, vol, "label")  # (Z, Y, X) source values, display order
        given = None if case.lung is None else _companion(case.lung, vol, "lung") > 0
        if label_map.lung_fill and given is None:
            given = lung
            notes.append(f"{case.label}: healthy lung taken from the lung field (no lung mask)")
        labels = label_map.apply(raw, lung=given, path=str(case.label))  # (Z, Y, X) uint8
    area = np.maximum(body.sum(axis=(1, 2)), 1)  # (Z,) body pixels per slice
    fraction = lung.sum(axis=(1, 2)) / area  # (Z,)
    keep = fraction >= MIN_LUNG_FRACTION
    if labels is not None:
        keep |= (labels > 0).any(axis=(1, 2))
    z_kept = [int(z) for z in np.flatnonzero(keep)]
    size = cfg.image_size
    boxes = [
        lung_box(fields[z], cfg.crop_margin) if cfg.crop_to_lung else (0, h, 0, w) for z in z_kept
    ]
    crops = [images[z][y0:y1, x0:x1] for z, (y0, y1, x0, x1) in zip(z_kept, boxes, strict=True)]
    return ScanSlices(
        case_id=case.case_id,
        images=_stack([resize_image(c, size) for c in crops], (1, size, size), torch.float16),
        masks=None if labels is None else _crops(labels, z_kept, boxes, size),
        lungs=_crops(lung, z_kept, boxes, size),
        z=z_kept,
        boxes=boxes,
        lung_fraction=[float(fraction[z]) for z in z_kept],
        meta={
            "source": vol.source,
            "kind": vol.kind,
            "spacing": list(vol.spacing),
            "hu_window": list(cfg.lung_window),
            "orig_shape": [h, w],
            "n_slices": n,
            "notes": notes,
        },
    )


def _crops(volume: np.ndarray, z_kept: list[int], boxes: list, size: int) -> torch.Tensor:
    """(k, S, S) uint8: each kept slice's crop of a label volume, resized by nearest pixel."""
    crops = [
        resize_mask(volume[z][y0:y1, x0:x1].astype(np.uint8), size)
        for z, (y0, y1, x0, x1) in zip(z_kept, boxes, strict=True)
    ]
    return _stack(crops, (size, size), torch.uint8)


def _stack(tensors: list[torch.Tensor], shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    if not tensors:
        return torch.zeros((0, *shape), dtype=dtype)
    return torch.stack(tensors).to(dtype)


def cached_scans(
    cases: list[Case],
    cfg: DataConfig,
    label_map: LabelMap | None,
    cache_dir: str | Path | None,
    progress: bool = True,
    lung_model: LungSegmenter | None = None,
) -> list[ScanSlices]:
    """Every case's slices: from its cache entry where one matches, else read, cut and stored.
    Prints a line per scan read, how many of its slices lie inside the lung field, and its notes
    (what the reader assumed, where healthy lung came from)."""
    seg = lung_model if lung_model is not None else load_lung_segmenter()
    fast = None  # the segmenter folded for inference, made once a scan has to be read
    folder = None if cache_dir is None else Path(cache_dir) / "scans"
    out: list[ScanSlices] = []
    bar = tqdm(cases, desc="caching scans", unit="scan", disable=not progress, file=sys.stderr)
    for case in bar:
        key = scan_key(case, cfg, label_map, seg.version)
        entry = None if folder is None else load_entry(folder, key)
        if entry is None:
            if fast is None:
                # Batch norms folded and channels-last weights, as segment runs it (scan.py):
                # the segmenter is most of a scan's cost on a CPU.
                fast = dataclasses.replace(seg, net=inference_copy(seg.net, channels_last=True))
            entry = slice_scan(case, cfg, label_map, fast)
            entry.meta["key"] = key
            if folder is not None:
                save_entry(folder, key, entry)
            why = "inside the lung field" + (" or labelled" if entry.masks is not None else "")
            lines = [f"{case.case_id}: {len(entry.z)} of {entry.meta['n_slices']} slices {why}"]
            tqdm.write("\n  ".join(lines + entry.meta["notes"]), file=sys.stderr)
        out.append(entry)
    return out


def save_entry(folder: Path, key: str, entry: ScanSlices) -> None:
    """`<key>.pt` then `<key>.json`, each under a temporary name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "images": entry.images,
        "lungs": entry.lungs,
        "z": torch.as_tensor(entry.z, dtype=torch.int64),
        "boxes": torch.as_tensor(entry.boxes, dtype=torch.int64).reshape(-1, 4),
        "lung_fraction": torch.as_tensor(entry.lung_fraction, dtype=torch.float32),
    }
    if entry.masks is not None:
        tensors["masks"] = entry.masks
    pt, js = folder / f"{key}.pt", folder / f"{key}.json"
    pt_tmp, js_tmp = Path(f"{pt}.{os.getpid()}.tmp"), Path(f"{js}.{os.getpid()}.tmp")
    torch.save(tensors, pt_tmp)
    js_tmp.write_text(json.dumps({"case_id": entry.case_id, **entry.meta}, indent=1))
    pt_tmp.replace(pt)
    js_tmp.replace(js)


def load_entry(folder: Path, key: str) -> ScanSlices | None:
    """The entry stored under `key`, or None when there is none or it cannot be read."""
    pt, js = folder / f"{key}.pt", folder / f"{key}.json"
    if not (pt.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        t = torch.load(pt, map_location="cpu", weights_only=True)
        entry = ScanSlices(
            case_id=meta.pop("case_id"),
            images=t["images"],
            masks=t.get("masks"),
            lungs=t["lungs"],
            z=t["z"].tolist(),
            boxes=[tuple(b) for b in t["boxes"].tolist()],
            lung_fraction=t["lung_fraction"].tolist(),
            meta=meta,
        )
    except (OSError, ValueError, KeyError, RuntimeError):
        return None  # a damaged entry is made again, never trusted
    return entry if meta.get("key") == key and len(entry.z) == len(entry.images) else None


def to_prepared(entries: list[ScanSlices], name: str) -> PreparedSet:
    """One PreparedSet of all scans' slices; slice ids CASE_zZZZ, patient id the case id."""
    ids = [f"{e.case_id}_z{z:03d}" for e in entries for z in e.z]
    labelled = [e.masks is not None for e in entries]
    if any(labelled) and not all(labelled):
        raise ValueError(f"{name}: mixes labelled and unlabelled scans; expected one kind")
    images = torch.cat([e.images for e in entries]).float()  # (N, 1, S, S)
    masks = torch.cat([e.masks for e in entries]).long() if all(labelled) else None
    scans = [
        {"case_id": e.case_id, "source": e.meta["source"], "slices": len(e.z)} for e in entries
    ]
    return PreparedSet(
        images=images,
        masks=masks,
        ids=ids,
        patient_ids=[e.case_id for e in entries for _ in e.z],
        boxes=[b for e in entries for b in e.boxes],
        orig_shapes=[tuple(e.meta["orig_shape"]) for e in entries for _ in e.z],
        name=name,
        meta={"scans": scans, "hu_window": entries[0].meta["hu_window"] if entries else None},
        lungs=torch.cat([e.lungs for e in entries]),
    )

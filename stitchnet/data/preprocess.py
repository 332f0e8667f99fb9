"""The paper's pre-processing: lung field -> morphology -> crop to the lung box -> resize -> [0, 1].

Labelled and unlabelled slices go through the same segmenter-based crop, so the two pools look
alike to a semi-supervised model (a lung mask shipped with a source is not used for cropping).
The result is cached on disk, keyed by the slices' sources and contents, the `DataConfig` and the
lung segmenter's version, so a second run with the same inputs starts in seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from stitchnet.config import DataConfig
from stitchnet.data.errors import DataError
from stitchnet.data.types import PreparedSet, SliceRecord
from stitchnet.lungfield.net import LungSegmenter, load_lung_segmenter, lung_box, lung_fields

CACHE_FORMAT = 2  # bump when the pre-processing changes, so old caches are not reused (2: lungs)
_CHUNK = 32  # slices per lung-segmenter batch


def cache_key(records: list[SliceRecord], cfg: DataConfig, lung_version: str | None) -> str:
    """Digest of everything the prepared tensors depend on.

    Each slice's file path, size and mtime say where it came from; its pixels and mask are hashed
    too, because one file can give different slices (a NIfTI volume read with another HU window,
    a mask read with another label map).
    """
    h = hashlib.blake2b(digest_size=16)
    header = {
        "format": CACHE_FORMAT,
        "config": dataclasses.asdict(cfg),
        "lung": lung_version if cfg.crop_to_lung else None,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for r in records:
        stat = os.stat(r.path) if r.path and os.path.isfile(r.path) else None
        where = (r.slice_id, r.patient_id, r.path, stat and (stat.st_size, stat.st_mtime_ns))
        h.update(repr(where).encode())
        h.update(repr(r.image.shape).encode())
        h.update(np.ascontiguousarray(r.image).data)
        if r.mask is not None:
            h.update(np.ascontiguousarray(r.mask).data)
    return h.hexdigest()


def prepare(
    records: list[SliceRecord],
    cfg: DataConfig,
    lung_model: LungSegmenter | None = None,
    cache_dir: str | Path | None = None,
    name: str = "",
    progress: bool = True,
) -> PreparedSet:
    """Turn raw slices into model inputs, as the paper does.

    Args:
        records: slices from `stitchnet.data.sources`; all labelled or all unlabelled.
        cfg: image size, whether to crop to the lung, the crop margin and the morphology radius.
        lung_model: the lung-field segmenter; None loads the shipped one (only if cropping).
        cache_dir: where to keep prepared tensors between runs; None disables the cache.
        name: the set's name, used in the cache file name and in `PreparedSet.name`.
        progress: show a progress bar while preparing.
    """
    _check_records(records, name)
    seg = None
    if cfg.crop_to_lung:
        seg = lung_model if lung_model is not None else load_lung_segmenter()
    key = cache_key(records, cfg, seg.version if seg is not None else None)
    stem = None
    if cache_dir is not None:
        stem = Path(cache_dir) / f"{_safe(name) or 'prepared'}-{key[:20]}"
        cached = _load_cache(stem, key)
        if cached is not None:
            return cached

    s = cfg.image_size
    n = len(records)
    labelled = records[0].mask is not None
    images = torch.empty(n, 1, s, s, dtype=torch.float32)
    masks = torch.empty(n, s, s, dtype=torch.int64) if labelled else None
    # The lung field the crop came from, on the same grid (only when the segmenter ran).
    lungs = torch.empty(n, s, s, dtype=torch.uint8) if seg is not None else None
    boxes: list[tuple[int, int, int, int]] = []
    bar = tqdm(total=n, desc=f"preparing {name or 'slices'}", unit="slice", disable=not progress)
    for start in range(0, n, _CHUNK):
        chunk = records[start : start + _CHUNK]
        if seg is not None:
            fields = lung_fields(seg, [r.image for r in chunk], cfg.morph_radius)
            chunk_boxes = [lung_box(f, cfg.crop_margin) for f in fields]
        else:
            chunk_boxes = [(0, r.image.shape[0], 0, r.image.shape[1]) for r in chunk]
        for i, (r, box) in enumerate(zip(chunk, chunk_boxes, strict=True)):
            y0, y1, x0, x1 = box
            images[start + i] = resize_image(r.image[y0:y1, x0:x1], s)
            if masks is not None:
                masks[start + i] = resize_mask(r.mask[y0:y1, x0:x1], s)
            if lungs is not None:
                lungs[start + i] = resize_mask(fields[i][y0:y1, x0:x1], s).to(torch.uint8)
        boxes += chunk_boxes
        bar.update(len(chunk))
    bar.close()

    out = PreparedSet(
        images=images,
        masks=masks,
        ids=[r.slice_id for r in records],
        patient_ids=[r.patient_id for r in records],
        boxes=boxes,
        orig_shapes=[tuple(int(v) for v in r.image.shape) for r in records],
        name=name,
        lungs=lungs,
        meta={
            "cache_key": key,
            "data_config": dataclasses.asdict(cfg),
            "lung_version": seg.version if seg is not None else None,
            "from_cache": False,
        },
    )
    if stem is not None:
        _save_cache(stem, out)
    return out


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(h, w) float in [0, 1] -> (1, size, size); bilinear with antialias, so shrinking averages."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(
        0.0, 1.0
    )  # (1, size, size); bilinear overshoot is tiny but [0, 1] is promised


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """(h, w) class ids -> (size, size) int64 by nearest pixel centre, so no new ids appear."""
    x = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(size, size), mode="nearest-exact")[0, 0].long()


def restore_to_original(
    pred: np.ndarray | torch.Tensor, box: tuple[int, int, int, int], orig_shape: tuple[int, int]
) -> np.ndarray:
    """Map a (S, S) class-id prediction on the crop back to the slice's own (H, W) pixels.

    The crop box is filled by nearest pixel centre (the inverse of the resize in `prepare`);
    everything outside it is background (0), since the crop holds the whole lung field.
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred)
    if pred.ndim != 2 or pred.shape[0] != pred.shape[1]:
        raise ValueError(f"pred must be a square (S, S) class-id map, got shape {pred.shape}")
    h, w = int(orig_shape[0]), int(orig_shape[1])
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"box {box} does not lie inside the original shape {orig_shape}")
    s = pred.shape[0]
    # Pixel centre i + 0.5 of the crop sits at (i + 0.5) * s / crop_side in the prediction.
    rows = np.minimum(((np.arange(y1 - y0) + 0.5) * s / (y1 - y0)).astype(np.int64), s - 1)
    cols = np.minimum(((np.arange(x1 - x0) + 0.5) * s / (x1 - x0)).astype(np.int64), s - 1)
    out = np.zeros((h, w), dtype=np.uint8)
    out[y0:y1, x0:x1] = pred[np.ix_(rows, cols)]  # (y1 - y0, x1 - x0)
    return out


def _check_records(records: list[SliceRecord], name: str) -> None:
    where = f"prepare({name!r})"
    if not records:
        raise DataError(f"{where}: no slices; expected at least one SliceRecord")
    has_mask = [r.mask is not None for r in records]
    if any(has_mask) and not all(has_mask):
        odd = records[has_mask.index(not has_mask[0])]
        raise DataError(
            f"{odd.path or odd.slice_id}: mixes labelled and unlabelled slices in one set; "
            f"expected all slices with masks or none (prepare the two pools separately)"
        )
    seen: set[str] = set()
    for r in records:
        if r.slice_id in seen:
            raise DataError(
                f"{r.path or where}: slice id {r.slice_id!r} appears twice; expected unique ids"
            )
        seen.add(r.slice_id)
        if r.mask is not None and r.mask.shape != r.image.shape:
            raise DataError(
                f"{r.path or r.slice_id}: mask {r.mask.shape} differs from image {r.image.shape}; "
                f"expected the same size"
            )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _save_cache(stem: Path, prepared: PreparedSet) -> None:
    """Tensors to `<stem>.pt`, the rest to `<stem>.json`; written to temp names, then renamed."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": prepared.images}
    if prepared.masks is not None:
        tensors["masks"] = prepared.masks.to(torch.uint8)  # class ids 0..3: a quarter of the disk
    if prepared.lungs is not None:
        tensors["lungs"] = prepared.lungs.to(torch.uint8)
    meta = {
        "ids": prepared.ids,
        "patient_ids": prepared.patient_ids,
        "boxes": [list(b) for b in prepared.boxes],
        "orig_shapes": [list(s) for s in prepared.orig_shapes],
        "name": prepared.name,
        "meta": prepared.meta,
    }
    pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
    # Per-process temp names: under torchrun every rank may prepare and cache the same set.
    pt_tmp, js_tmp = Path(f"{pt}.{os.getpid()}.tmp"), Path(f"{js}.{os.getpid()}.tmp")
    torch.save(tensors, pt_tmp)
    js_tmp.write_text(json.dumps(meta))
    pt_tmp.replace(pt)
    js_tmp.replace(js)  # the json last: its presence marks a complete cache


def _load_cache(stem: Path, key: str) -> PreparedSet | None:
    pt, js = stem.with_suffix(".pt"), stem.with_suffix(".json")
    if not (pt.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        tensors = torch.load(pt, map_location="cpu", weights_only=True)
        images = tensors["images"]
        masks = tensors["masks"].long() if "masks" in tensors else None
        lungs = tensors.get("lungs")
        if meta["meta"]["cache_key"] != key or images.shape[0] != len(meta["ids"]):
            raise ValueError("cache key or slice count does not match")
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        warnings.warn(
            f"{stem}: ignoring unreadable prepared-data cache ({e}); rebuilding it", stacklevel=3
        )
        return None
    return PreparedSet(
        images=images,
        masks=masks,
        ids=list(meta["ids"]),
        patient_ids=list(meta["patient_ids"]),
        boxes=[tuple(b) for b in meta["boxes"]],
        orig_shapes=[tuple(s) for s in meta["orig_shapes"]],
        name=meta["name"],
        meta={**meta["meta"], "from_cache": True},
        lungs=lungs,
    )

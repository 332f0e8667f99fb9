"""Any slice source read and pre-processed for the model, with the checks on its user input.

`prepare`, `train`, `evaluate` and `predict` all read a slice source through `read_and_prepare`,
so every command sees the same slices on the same intensity scale.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from stitchnet.data.label_maps import resolve_label_map
from stitchnet.data.preprocess import prepare
from stitchnet.data.sources import detect_layout, read_source
from stitchnet.data.types import PreparedSet
from stitchnet.lungfield.net import load_lung_segmenter


def default_cache_dir() -> Path:
    return Path(os.environ.get("STITCHNET_CACHE", ".cache/stitchnet"))


def check_source_window(window: Any) -> tuple[float, float] | None:
    """The HU window of 8-bit slices without a recorded one (`--window LO HI`) as a float pair;
    None stays None. ValueError unless it is two finite numbers with LO < HI, since a reversed
    or empty window would turn every slice's gray into meaningless HU without any other sign."""
    if window is None:
        return None
    values = tuple(window)
    if len(values) != 2:
        raise ValueError(
            f"slice HU window (--window) is {values}; expected two numbers LO HI, e.g. -1250 250"
        )
    lo, hi = float(values[0]), float(values[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"slice HU window (--window) is LO={lo:g} HI={hi:g}; expected finite LO < HI "
            f"(the HU at gray 0 and at gray 255), e.g. -1250 250"
        )
    return lo, hi


def read_and_prepare(
    path: str | Path,
    data_cfg: Any,
    cache_dir: str | Path | None,
    progress: bool,
    require_masks: bool = False,
    source_window: tuple[float, float] | None = None,
    label_map: str | None = None,
) -> tuple[list, PreparedSet]:
    """The raw records (predict needs their original pixels) and their pre-processed set.

    Every layout reaches the model on one intensity scale: HU through `data_cfg.lung_window`
    (DICOM and NIfTI from their HU, 8-bit slices from the HU window recorded for them)."""
    layout = detect_layout(path)
    kwargs: dict[str, Any] = {}
    if layout in ("folder", "nifti", "dicom"):
        kwargs["window"] = tuple(data_cfg.lung_window)
    if layout == "folder":
        kwargs["source_window"] = source_window
        if label_map is not None:
            kwargs["label_map"] = resolve_label_map(label_map)
    records = read_source(path, layout, **kwargs)
    if require_masks and any(r.mask is None for r in records):
        missing = next(r.path for r in records if r.mask is None)
        raise ValueError(f"{path}: expected a mask for every image (masks/), none for {missing}")
    cache = default_cache_dir() if cache_dir is None else Path(cache_dir)
    data = prepare(
        records,
        data_cfg,
        lung_model=load_lung_segmenter(),
        cache_dir=cache,
        name=Path(path).name,
        progress=progress,
    )
    return records, data

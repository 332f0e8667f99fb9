"""What the data layer hands to training, evaluation and prediction, and the scans it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class SliceRecord:
    """One raw 2-D slice as read from disk, before pre-processing."""

    image: np.ndarray  # (H, W) float32 in [0, 1]
    slice_id: str  # unique within its source, e.g. the file stem
    patient_id: str | None = None  # None where the source has no patient ids
    mask: np.ndarray | None = None  # (H, W) uint8 class ids 0..3, or None when unlabelled
    lung: np.ndarray | None = None  # (H, W) uint8 0/1 lung field when the source ships one
    path: str = ""  # where it came from, for error messages


@dataclass
class PreparedSet:
    """Pre-processed slices, preloaded as tensors (with 2 cores, no DataLoader workers)."""

    images: torch.Tensor  # (N, 1, S, S) float32 in [0, 1]
    masks: torch.Tensor | None  # (N, S, S) int64 class ids, or None for an unlabelled set
    ids: list[str]
    patient_ids: list[str | None]
    boxes: list[tuple[int, int, int, int]]  # lung crop (y0, y1, x0, x1) in the original pixels
    orig_shapes: list[tuple[int, int]]  # (H, W) of each original slice
    name: str = ""
    meta: dict = field(default_factory=dict)
    # (N, S, S) uint8 0/1 lung field, cropped and resized like the image (nearest); None where
    # unknown. Semi-supervised objectives keep pseudo-labels inside it (stitchnet.objectives).
    lungs: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.masks is not None

    def subset(self, indices: list[int] | np.ndarray, name: str | None = None) -> PreparedSet:
        idx = [int(i) for i in indices]
        t = torch.as_tensor(idx, dtype=torch.long)
        return PreparedSet(
            images=self.images[t],
            masks=None if self.masks is None else self.masks[t],
            ids=[self.ids[i] for i in idx],
            patient_ids=[self.patient_ids[i] for i in idx],
            boxes=[self.boxes[i] for i in idx],
            orig_shapes=[self.orig_shapes[i] for i in idx],
            name=self.name if name is None else name,
            meta=dict(self.meta),
            lungs=None if self.lungs is None else self.lungs[t],
        )


@dataclass(frozen=True)
class Case:
    """One scan of a dataset: its image (NIfTI file or DICOM tree) and label files."""

    case_id: str  # unique in the dataset; also the patient id the split groups by
    image: Path
    label: Path | None = None  # label NIfTI of the image's voxel shape, None when unlabelled
    lung: Path | None = None  # lung mask NIfTI (> 0 is lung), where one is given

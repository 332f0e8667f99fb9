"""`segment_volume`: a whole CT volume through the lung segmenter and a trained model.

Each display slice (Z index) goes the way the model's training slices went: HU -> the run's
data window (`DataConfig.lung_window`) -> the shipped lung segmenter's field -> crop to the lung
box (when the run config crops) -> resize -> the model -> argmax -> back to the slice's size
(the kernel shared with `predict_folder`). The per-slice lung fields are then cleaned in 3-D
(lungfield/volume.py) and bound the output:

    outside the lung mask           0 (background), whatever the model said
    inside, model says background   1 (healthy lung): the lung mask, not the model, decides
                                    where lung ends, so a "background" pixel inside it is lung
    inside, otherwise               the model's class (1 healthy, 2 GGO, 3 consolidation)

Two optional extras ride on the same pre-processed slices and crop boxes:
    uncertainty  the lung label's predictive entropy and mutual information (uncertainty.py),
                 pasted back into each slice's crop, 0 outside the lung mask (the mask, not the
                 model, decides the label there); the labels themselves stay the plain forward's;
    twin         the healthy twin in HU (twin.py): each lesion voxel of the final labels made
                 aerated lung. twin="level" (or True) takes the level from the scan's own healthy
                 lung, no extra model pass; twin="style" from StitchNet's healthy style of the
                 slice with its lesions hidden: one more model pass per batch holding a slice
                 with lesions (the model's own raw lesions, hidden in its input).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from stitchnet.config import DataConfig
from stitchnet.data.images import hu_window
from stitchnet.data.preprocess import resize_image
from stitchnet.data.volumes import Volume
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.kernel import predict_classes
from stitchnet.inference.twin import (
    LESION_MIN,
    has_styles,
    healthy_style,
    style_inputs,
    style_twin_volume,
    twin_mode,
    twin_volume,
)
from stitchnet.inference.uncertainty import label_uncertainty, paste_map
from stitchnet.lungfield.body import body_mask
from stitchnet.lungfield.net import LungSegmenter, load_lung_segmenter, lung_box, lung_fields
from stitchnet.lungfield.volume import lung_field, split_lungs


@dataclass
class Segmentation:
    """The output of `segment_volume`, in the volume's display orientation (Z, Y, X)."""

    labels: np.ndarray  # (Z, Y, X) uint8 class ids 0-3, 0 everywhere outside the lung mask
    lung: np.ndarray  # (Z, Y, X) uint8: 0 outside, 1 the patient's right lung, 2 the left
    raw: np.ndarray  # (Z, Y, X) uint8 the model's classes before the lung mask bounded them
    boxes: list[tuple[int, int, int, int]]  # per slice, the crop (y0, y1, x0, x1) the model saw
    entropy: np.ndarray | None = None  # (Z, Y, X) float32 nats, 0..log 3; 0 outside the lung
    mutual_info: np.ndarray | None = None  # (Z, Y, X) float32 nats, 0..entropy
    twin_hu: np.ndarray | None = None  # (Z, Y, X) float32 HU: the scan, lesions made healthy


def segment_volume(
    model: torch.nn.Module,
    data_cfg: DataConfig,
    vol: Volume,
    lung_model: LungSegmenter | None = None,
    batch_size: int = 32,
    progress: bool = True,
    uncertainty_samples: int = 0,
    twin: bool | str = False,
    generator: torch.Generator | None = None,
) -> Segmentation:
    """Segment every slice of `vol` and bound the result by the scan's 3-D lung mask.

    Args:
        model: a segmenter in eval mode, (B, 1, S, S) -> logits (B, 4, S, S); pass
            `inference.fast.inference_copy(model)` for speed.
        data_cfg: the pre-processing the model was trained with (its run config's `data`).
        vol: the scan, from `data.volumes.read_volume`. When the lung field left out field
            outside the patient's body or pieces that are not the lungs, a line saying how many
            mL is appended to `vol.notes` (which the report repeats).
        lung_model: the lung-field segmenter; None loads the shipped one.
        batch_size: slices per batch through both networks.
        progress: a tqdm bar over slices.
        uncertainty_samples: 0 for none; else the posterior draws of z for StitchNet-like
            models (other models always use the four flips).
        twin: also render the healthy twin (StitchNet-like models only): "level" (True means
            it) or "style" (twin.py); False for none.
        generator: the posterior draws' random numbers (None: torch's global generator).
    Raises:
        NoLungError: no lung in the scan (a DataError).
    """
    if not getattr(model, "segments", True):
        raise ValueError(
            f"{type(model).__name__} does not segment (its forward returns an image); expected "
            f"a segmentation model such as unet or stitchnet"
        )
    mode = twin_mode(twin)
    if mode and not has_styles(model):
        raise TypeError(f"{type(model).__name__} has no styles; a healthy twin needs StitchNet")
    seg = lung_model if lung_model is not None else load_lung_segmenter()
    # The lung segmenter costs as much as the model: fold its batch norms too. Channels-last
    # weights for both networks (scan.py) took the benchmark scan's slice loop from 21 s to 12 s
    # on 2 cores, its labels and lung mask bit-identical (convolutions round in another order).
    seg = dataclasses.replace(seg, net=inference_copy(seg.net, channels_last=True))
    n, h, w = vol.hu.shape
    size = data_cfg.image_size
    fields = np.zeros((n, h, w), dtype=np.uint8)  # per-slice 2-D lung fields
    body = body_mask(vol.hu, vol.body, vol.spacing)  # (Z, Y, X) the patient, where lungs can be
    outside = 0  # field voxels outside the patient's body
    raw = np.zeros((n, h, w), dtype=np.uint8)
    all_boxes: list[tuple[int, int, int, int]] = []
    styles: dict[int, torch.Tensor] = {}  # display slice -> (S, S) healthy style, style twin
    entropy = mi = None
    if uncertainty_samples:
        entropy = np.zeros((n, h, w), dtype=np.float32)
        mi = np.zeros((n, h, w), dtype=np.float32)
    bar = tqdm(total=n, desc=f"segmenting {n} slices", unit="slice", disable=not progress)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        images = [hu_window(vol.hu[z], data_cfg.lung_window) for z in range(start, stop)]
        # The body mask cuts the air around the patient from HU, so the windowed-slice rule is
        # not needed, and it would be worse: at coarse pixels a chest wall thinned to a pixel
        # joins a lung to the air around (5.3 mm pixels: a lung apex lost on one slice).
        found = lung_fields(seg, images, data_cfg.morph_radius, batch_size, drop_air_around=False)
        for z, field in enumerate(found, start):
            # The air around or under the patient is never lung; without this the crop box
            # below would span the whole field of view on scans with air around the body.
            fields[z] = field * body[z]
            outside += int(np.count_nonzero(field)) - int(np.count_nonzero(fields[z]))
        if data_cfg.crop_to_lung:
            boxes = [lung_box(f, data_cfg.crop_margin) for f in fields[start:stop]]
        else:
            boxes = [(0, h, 0, w)] * len(images)
        x = torch.stack(
            [
                resize_image(im[y0:y1, x0:x1], size)
                for im, (y0, y1, x0, x1) in zip(images, boxes, strict=True)
            ]
        )  # (b, 1, S, S)
        for z, full in enumerate(
            predict_classes(model, x, boxes, [(h, w)] * len(images), batch_size), start
        ):
            raw[z] = full  # (H, W)
        all_boxes.extend(boxes)
        xd = x.to(next(model.parameters()).device)
        if mode == "style":
            styles.update(_batch_styles(model, xd, vol.hu, raw, fields, boxes, start, data_cfg))
        if entropy is not None:
            ent, inf = label_uncertainty(model, xd, uncertainty_samples, generator)  # (b, S, S)
            ent, inf = ent.cpu(), inf.cpu()
            for j, box in enumerate(boxes):
                entropy[start + j] = paste_map(ent[j], box, (h, w))
                mi[start + j] = paste_map(inf[j], box, (h, w))
        bar.update(stop - start)
    bar.close()
    found_lung = lung_field(fields, vol.hu, body, vol.source, outside)
    note = found_lung.note(vol.voxel_volume_ml())
    if note is not None:
        vol.notes.append(note)  # the report repeats the volume's notes
    lung = found_lung.mask  # (Z, Y, X) bool
    labels = np.where(lung, np.maximum(raw, 1), 0).astype(np.uint8)
    if entropy is not None:
        entropy *= lung
        mi *= lung
    return Segmentation(
        labels=labels,
        lung=split_lungs(lung),
        raw=raw,
        boxes=all_boxes,
        entropy=entropy,
        mutual_info=mi,
        twin_hu=_twin(mode, vol, labels, styles, all_boxes, data_cfg.lung_window),
    )


def _batch_styles(
    model: torch.nn.Module,
    x: torch.Tensor,
    hu: np.ndarray,
    raw: np.ndarray,
    fields: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    start: int,
    data_cfg: DataConfig,
) -> dict[int, torch.Tensor]:
    """The healthy styles of a batch's slices that hold a lesion: z -> (S, S) in [0, 1].

    The final labels are known only after the 3-D lung clean-up, so the lesions hidden are the
    model's raw ones (a superset of the final lesions, which lie inside the lung mask); the fill
    comes from the raw healthy lung inside the slice's 2-D lung field."""
    picked, hides, fills = [], [], []
    for j, box in enumerate(boxes):
        z = start + j
        if not (raw[z] >= LESION_MIN).any():
            continue
        # Inside the field: the model's class, background read as healthy (as the final labels
        # do); outside: only the raw lesions, so they are hidden too but give no reference.
        inside = np.where(fields[z] > 0, np.maximum(raw[z], 1), 0)
        labels = np.where(raw[z] >= LESION_MIN, raw[z], inside)
        hide, fill = style_inputs(hu[z], labels, box, x.shape[-1], data_cfg.lung_window)
        picked.append(j)
        hides.append(hide)
        fills.append(fill)
    if not picked:
        return {}
    style = healthy_style(model, x[picked], np.stack(hides), np.array(fills))  # (b', S, S)
    return {start + j: s for j, s in zip(picked, style, strict=True)}


def _twin(
    mode: str | None,
    vol: Volume,
    labels: np.ndarray,
    styles: dict[int, torch.Tensor],
    boxes: list[tuple[int, int, int, int]],
    window: tuple[float, float],
) -> np.ndarray | None:
    """The healthy twin of `mode` (None: no twin) over the final labels."""
    if mode == "level":
        return twin_volume(vol.hu, labels, vol.spacing[1:])
    if mode == "style":
        return style_twin_volume(vol.hu, labels, styles, boxes, window, vol.spacing[1:])
    return None

"""The slice kernel shared by `predict_folder` and `segment_volume`: pre-processed slices ->
logits -> argmax -> class ids pasted back at each slice's own size.

One function, so that a folder of slices and a whole scan can never drift apart in how a model's
output becomes a label map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from stitchnet.data.preprocess import restore_to_original


@torch.inference_mode()
def predict_classes(
    model: torch.nn.Module,
    images: torch.Tensor,
    boxes: Sequence[tuple[int, int, int, int]],
    orig_shapes: Sequence[tuple[int, int]],
    batch_size: int = 16,
) -> Iterator[np.ndarray]:
    """Yield one (H, W) uint8 class-id map per input slice, in order.

    Args:
        model: a segmenter in eval mode; `model(x)` maps (B, 1, S, S) to logits (B, C, S, S).
        images: (N, 1, S, S) float32 slices, pre-processed as the model was trained (crop, resize).
        boxes: each slice's crop (y0, y1, x0, x1) in its original pixels.
        orig_shapes: each slice's original (H, W).
        batch_size: slices per forward pass.
    """
    if not (len(images) == len(boxes) == len(orig_shapes)):
        raise ValueError(
            f"predict_classes: {len(images)} images, {len(boxes)} boxes and "
            f"{len(orig_shapes)} shapes; expected one box and one shape per image"
        )
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)  # (b, 1, S, S)
        pred = model(x).argmax(dim=1).to(torch.uint8).cpu().numpy()  # (b, C, S, S) -> (b, S, S)
        for j, p in enumerate(pred):
            i = start + j
            yield restore_to_original(p, boxes[i], orig_shapes[i])  # (H, W)

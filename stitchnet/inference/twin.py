"""The healthy twin: the slice as StitchNet would draw it without its lesions (issue 11, part 2).

StitchNet explains every pixel by four Beta "styles" (background, healthy lung, GGO,
consolidation) and stitches the image from the style of each pixel's class (paper Fig. 6). Keeping
the input where the model sees no lesion and putting the healthy style's mean where it sees GGO or
consolidation re-renders the slice along the healthy class: what the lung would look like if the
lesions were healthy parenchyma. Only StitchNet-like models (with `outputs(x)["styles"]`) can do
this; a U-Net has no image model.

Everything here is in the model's [0, 1] window units; `window_to_hu` and `paste_twin_hu` take it
back to Hounsfield units on the scan's own pixels. For whole scans (`stitchnet segment`),
`healthy_style` runs in the slice loop and `twin_volume` pastes every slice once the lung-bounded
labels are known.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stitchnet.data.sources import DEFAULT_WINDOW

HEALTHY = 1  # class id of healthy lung: its style is the replacement
LESION_MIN = 2  # class ids >= this are lesions (2 GGO, 3 consolidation)


@torch.no_grad()
def healthy_twin(
    model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The healthy twin of a batch and its difference from the input.

    Args:
        model: a StitchNet-like model (`outputs(x)` returns "logits" and "styles").
        x: (B, 1, H, W) images in [0, 1].
        labels: (B, H, W) class ids that say where the lesions are; default the model's own argmax
            (pass the lung-bounded labels of `segment` so the twin agrees with the label map).
    Returns:
        twin (B, 1, H, W): x outside lesions (bit for bit), the healthy style's Beta mean inside;
        diff (B, 1, H, W): twin - x, exactly 0 outside lesions.

    Styles come from the posterior means of z (no sampling), so the twin is deterministic; the
    model's train/eval mode is restored.
    """
    if not hasattr(model, "outputs"):
        raise TypeError(
            f"healthy_twin needs a StitchNet-like model with styles; got {type(model).__name__} "
            f"(only StitchNet and the ladder ablation have an image model)"
        )
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"healthy_twin: expected x of shape (B, 1, H, W), got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    try:
        out = model.outputs(x, sample=False)
    finally:
        model.train(was_training)
    if labels is None:
        labels = out["logits"].argmax(dim=1)  # (B, H, W)
    if labels.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(
            f"healthy_twin: labels shape {tuple(labels.shape)} does not match x "
            f"{tuple(x.shape)}; expected (B, H, W)"
        )
    lesion = (labels >= LESION_MIN).unsqueeze(1)  # (B, 1, H, W)
    healthy = out["styles"][:, HEALTHY : HEALTHY + 1].to(x.dtype)  # (B, 1, H, W)
    twin = torch.where(lesion, healthy, x)
    return twin, twin - x


def window_to_hu(image01: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Invert `hu_window`: [0, 1] -> HU, 0 -> low, 1 -> high (values the window clipped stay
    clipped; `paste_twin_hu` therefore maps back only the replaced pixels)."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have low < high, got {window}")
    return lo + np.asarray(image01, dtype=np.float32) * (hi - lo)


def paste_twin_hu(
    hu: np.ndarray,
    twin01: np.ndarray | torch.Tensor,
    lesion: np.ndarray,
    box: tuple[int, int, int, int],
    window: tuple[float, float] = DEFAULT_WINDOW,
) -> np.ndarray:
    """One slice of the healthy twin in HU, on the scan's own pixels.

    Args:
        hu: (H, W) the slice in HU, as the scan has it.
        twin01: (S, S) the twin on the model's input (the lung crop `box`, resized to S).
        lesion: (H, W) bool, the lesion voxels of the label map on the scan's pixels.
        box: (y0, y1, x0, x1) the crop the model saw, in the scan's pixels (PreparedSet.boxes).
    Returns:
        (H, W) float32: `hu` unchanged outside `lesion`; inside, the twin resized bilinearly back
        to the crop and mapped to HU through `window`.
    """
    hu = np.asarray(hu, dtype=np.float32)
    lesion = np.asarray(lesion, dtype=bool)
    if lesion.shape != hu.shape:
        raise ValueError(f"paste_twin_hu: lesion shape {lesion.shape} differs from hu {hu.shape}")
    y0, y1, x0, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= hu.shape[0] and 0 <= x0 < x1 <= hu.shape[1]):
        raise ValueError(f"paste_twin_hu: box {box} does not lie inside the slice {hu.shape}")
    outside = lesion.copy()
    outside[y0:y1, x0:x1] = False
    if outside.any():
        raise ValueError(
            f"paste_twin_hu: {int(outside.sum())} lesion voxels lie outside the model's crop {box}"
        )
    t = torch.as_tensor(np.asarray(twin01, dtype=np.float32))[None, None]  # (1, 1, S, S)
    crop = F.interpolate(t, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    out = hu.copy()
    sub = lesion[y0:y1, x0:x1]
    out[y0:y1, x0:x1][sub] = window_to_hu(crop[0, 0].numpy(), window)[sub]
    return out


def has_styles(model: torch.nn.Module) -> bool:
    """Whether `model` can draw a healthy twin: StitchNet, the ladder ablation, stitchnet-skip."""
    return hasattr(model, "outputs") and getattr(model, "segments", True)


@torch.no_grad()
def healthy_style(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The healthy class's Beta mean at every pixel, from the posterior means of z:
    (B, 1, S, S) in [0, 1] -> (B, S, S). Where a lesion is, this is what `healthy_twin` puts."""
    if not has_styles(model):
        raise TypeError(
            f"healthy_style needs a StitchNet-like model with styles; got {type(model).__name__}"
        )
    was_training = model.training
    model.eval()
    try:
        styles = model.outputs(x, sample=False)["styles"]  # (B, 4, S, S)
    finally:
        model.train(was_training)
    return styles[:, HEALTHY].to(x.dtype)


def twin_volume(
    hu: np.ndarray,
    styles: np.ndarray,
    labels: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    window: tuple[float, float] = DEFAULT_WINDOW,
) -> np.ndarray:
    """The healthy twin of a whole scan in HU, display orientation: (Z, Y, X) float32.

    Args:
        hu: (Z, Y, X) the scan in HU, display orientation (`Volume.hu`).
        styles: (Z, S, S) `healthy_style` of each slice's model input.
        labels: (Z, Y, X) the lung-bounded class ids; voxels >= LESION_MIN are replaced.
        boxes: per slice, the crop (y0, y1, x0, x1) the slice kernel gave the model.
        window: the model's HU window (`DataConfig.lung_window`), to map [0, 1] back to HU.
    Voxels without lesion keep `hu` bit for bit, so the twin equals the scan exactly there.
    """
    hu = np.asarray(hu, dtype=np.float32)
    z = hu.shape[0]
    if not (len(styles) == len(boxes) == z and labels.shape == hu.shape):
        raise ValueError(
            f"twin_volume: {len(styles)} styles, {len(boxes)} boxes and labels {labels.shape} "
            f"for a scan of shape {hu.shape}; expected one style and box per slice"
        )
    out = hu.copy()
    for k in range(z):
        lesion = labels[k] >= LESION_MIN  # (Y, X)
        if lesion.any():
            out[k] = paste_twin_hu(hu[k], styles[k], lesion, boxes[k], window)
    return out

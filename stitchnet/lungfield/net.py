"""The paper's lung-field segmenter: a small U-Net that finds the lungs so slices can be cropped.

The paper segments the lung field with a U-Net, cleans the mask with a morphological opening and
closing, and crops every slice to the lung field. Here the U-Net is the registry's `unet` at its
`debug` preset with two classes (outside / inside the lung field), trained on the labelled
slices' masks with classes 1-3 merged (mask > 0). The shipped weights lie in
`stitchnet/assets/lungfield.pt`; `python -m stitchnet.lungfield.train` retrains them from the
bundled slices and rewrites that file (the trainer lives there, out of the way of inference).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import disk
from torch import nn

from stitchnet.data.errors import DataError
from stitchnet.lungfield.body import drop_outside_air

ASSET_PATH = Path(__file__).resolve().parent.parent / "assets" / "lungfield.pt"
CHECKPOINT_FORMAT = 1
MIN_LUNG_FRACTION = 0.005  # a lung field smaller than this share of the slice counts as not found


@dataclass(frozen=True)
class LungSegmenter:
    """A trained lung-field U-Net with the input size it was trained at and a version for caches."""

    net: nn.Module  # (B, 1, size, size) -> logits (B, 2, size, size)
    size: int
    version: str  # digest of the weights: a retrained segmenter invalidates prepared-data caches
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write a self-describing checkpoint; floats in half precision keep the file under 5 MB."""
        state = {
            k: v.half() if v.is_floating_point() else v for k, v in self.net.state_dict().items()
        }
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": "unet",
            "config": dataclasses.asdict(self.net.config),
            "size": self.size,
            "version": self.version,
            "state_dict": state,
            **{k: v for k, v in self.meta.items() if k not in ("config", "state_dict")},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(path)


def build_net(config: dict[str, Any] | None = None) -> nn.Module:
    """The lung-field U-Net: from a checkpoint's config, or new at the shipped design."""
    from stitchnet.models import build_model, model_config

    if config is not None:
        return build_model("unet", config)
    # Lung vs not-lung is roughly balanced, but the Dice term sharpens thin lung borders.
    config = model_config("unet", "debug", num_classes=2, encoder_weights=None, loss="ce+dice")
    return build_model("unet", config)


def weights_digest(net: nn.Module) -> str:
    """A short digest of the weights: the version that prepared-data caches are keyed on."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(
            tensor.detach().cpu().half().numpy().tobytes() if tensor.is_floating_point() else b""
        )
    return h.hexdigest()[:12]


def load_lung_segmenter(path: str | Path | None = None) -> LungSegmenter:
    """Load the shipped segmenter (or the checkpoint at `path`), in eval mode on the CPU."""
    path = ASSET_PATH if path is None else Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: lung segmenter weights not found; expected the shipped file. "
            f"Rebuild it with `python -m stitchnet.lungfield.train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read the lung segmenter checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(
            f"{path}: lung segmenter checkpoint format {found!r}; expected {CHECKPOINT_FORMAT}"
        )
    net = build_net(ckpt["config"])
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    )
    net.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "config", "size", "version")}
    return LungSegmenter(net, int(ckpt["size"]), str(ckpt["version"]), meta)


# ---------------------------------------------------------------------------------------------
# Inference and post-processing


def resize_to(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) float -> (1, 1, size, size), area-aware bilinear (antialias when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def lung_probabilities(
    seg: LungSegmenter, images: list[np.ndarray], batch_size: int = 32, input_size: bool = True
) -> list[np.ndarray]:
    """Probability of lung for each (H, W) image: (H, W) float32 arrays, or (size, size) ones at
    the segmenter's working size when `input_size` is False."""
    device = next(seg.net.parameters()).device
    was_training = seg.net.training
    seg.net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.cat([resize_to(im, seg.size) for im in chunk]).to(device)  # (b, 1, s, s)
        probs = seg.net(x).softmax(dim=1)[:, 1:2].float().cpu()  # (b, 1, s, s)
        for p, im in zip(probs, chunk, strict=True):
            if input_size:
                p = F.interpolate(p[None], size=im.shape, mode="bilinear", align_corners=False)[0]
            out.append(p[0].numpy())  # (H, W) or (s, s)
    seg.net.train(was_training)
    return out


def morph_radius_px(morph_radius: int, shape: tuple[int, int]) -> int:
    """The disk radius in pixels: `morph_radius` is given at 256 px and scales with the slice."""
    return max(1, int(round(morph_radius * max(shape) / 256)))


def clean_lung_mask(mask: np.ndarray, radius: int, extra_fraction: float = 0.05) -> np.ndarray:
    """Opening then closing with a disk of `radius` px, then keep the lungs' components.

    The two largest components are kept (two lungs), and so is any other component holding at
    least `extra_fraction` of the cleaned area: a lung can come in pieces (a thin sliver cut off
    by dense consolidation, as in bundled slice z054), and dropping a piece would crop real lung
    away, while the specks that survive the opening hold well under 5 % of the area.

    The mask is edge-padded first: the bundled slices are cropped tight, so lungs touch the border,
    and a zero border would let the closing's erosion eat them there.
    """
    if radius > 0:
        footprint = disk(radius).astype(bool)
        padded = np.pad(mask > 0, radius + 1, mode="edge")  # (H + 2r + 2, W + 2r + 2)
        padded = ndimage.binary_opening(padded, footprint)
        padded = ndimage.binary_closing(padded, footprint)
        mask = padded[radius + 1 : -(radius + 1), radius + 1 : -(radius + 1)]  # back to (H, W)
    labels, n = ndimage.label(mask > 0)
    if n <= 2:
        return (labels > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]  # (n,) pixels per component, label k at index k - 1
    keep = set((np.argsort(sizes)[::-1][:2] + 1).tolist())
    keep |= set((np.nonzero(sizes >= extra_fraction * sizes.sum())[0] + 1).tolist())
    return np.isin(labels, sorted(keep)).astype(np.uint8)


def lung_fields(
    seg: LungSegmenter,
    images: list[np.ndarray],
    morph_radius: int = 3,
    batch_size: int = 32,
    drop_air_around: bool = True,
) -> list[np.ndarray]:
    """Cleaned (H, W) uint8 0/1 lung fields for a list of (H, W) images in [0, 1].

    The opening, closing, component selection and (`drop_air_around`) the removal of field
    parts in the air around the patient (`stitchnet.lungfield.body.drop_outside_air`, for slices
    without HU) run at the segmenter's working size, where all of the mask's detail lies (at
    full size they cost 5x more for the same result); the cleaned mask is then resized to each
    image bilinearly and thresholded, which keeps its edges smooth.
    """
    probs = lung_probabilities(seg, images, batch_size, input_size=False)  # each (s, s)
    radius = morph_radius_px(morph_radius, (seg.size, seg.size))
    fields = []
    for p, image in zip(probs, images, strict=True):
        small = clean_lung_mask(p > 0.5, radius)  # (s, s)
        if drop_air_around:  # air around the patient looks like lung on a windowed slice
            small = drop_outside_air(small, resize_to(image, seg.size)[0, 0].numpy())
        small = torch.from_numpy(small.astype(np.float32))
        full = F.interpolate(
            small[None, None], size=image.shape, mode="bilinear", align_corners=False
        )
        fields.append((full[0, 0] > 0.5).numpy().astype(np.uint8))  # (s, s) -> (H, W)
    return fields


def lung_field(seg: LungSegmenter, image: np.ndarray, morph_radius: int = 3) -> np.ndarray:
    """The cleaned lung field (H, W) uint8 0/1 of one (H, W) image in [0, 1]."""
    return lung_fields(seg, [image], morph_radius)[0]


def lung_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1), ends exclusive, of the lung field with a margin.

    The margin is a fraction of the box's own side, added on each side and clipped to the image.
    When the field is empty or smaller than MIN_LUNG_FRACTION of the slice, the segmenter has not
    found the lungs and the whole image is returned, so nothing is cut away on a guess.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if ys.size < MIN_LUNG_FRACTION * h * w:
        return (0, h, 0, w)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad_y, pad_x = int(round(margin * (y1 - y0))), int(round(margin * (x1 - x0)))
    return (max(0, y0 - pad_y), min(h, y1 + pad_y), max(0, x0 - pad_x), min(w, x1 + pad_x))

"""Batch augmentation on preloaded tensors, driven by an explicit `torch.Generator`.

Geometry (a shift by pad-and-crop, flips, 90-degree rotations) is applied identically to the image
and its mask. Every geometric step moves whole pixels, so the mask keeps its exact class ids (what
nearest-neighbour resampling would give) and stays aligned with the image pixel for pixel. Pixels
shifted in from outside are air: 0 in the image and class 0 (background) in the mask. Intensity
jitter (gamma, then contrast about the image mean, clamped to [0, 1]) touches the image only.

Drawing the random parameters (`sample_params`) is separate from applying them (`apply_params`):
under DDP every rank draws the parameters of the whole global batch from the same generator
state and applies only its own rows, so all ranks' generators stay in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    """How strong each augmentation is; the defaults are mild, as CT intensities carry meaning."""

    max_shift: float = 0.0625  # largest shift, as a fraction of the side (pad-and-crop)
    flip: bool = True  # horizontal and vertical flips, each with probability 1/2
    rotate: bool = True  # rotation by a uniformly drawn multiple of 90 degrees
    gamma: tuple[float, float] = (0.8, 1.25)  # gamma drawn log-uniformly from this range
    contrast: tuple[float, float] = (0.9, 1.1)  # contrast factor drawn uniformly from this range


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample draws for n samples (all tensors on the CPU, first dimension n)."""

    shift: torch.Tensor  # (n, 2) int64 (dy, dx) in pixels
    flip_h: torch.Tensor  # (n,) bool
    flip_v: torch.Tensor  # (n,) bool
    rot: torch.Tensor  # (n,) int64 quarter turns 0..3
    gamma: torch.Tensor  # (n,) float32
    contrast: torch.Tensor  # (n,) float32

    def rows(self, index: slice | torch.Tensor) -> AugmentParams:
        """The draws of some samples (e.g. one rank's shard of the global batch)."""
        return AugmentParams(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def sample_params(
    n: int, size: int, generator: torch.Generator, spec: AugmentSpec = AugmentSpec()
) -> AugmentParams:
    """Draw the augmentation of n samples of side `size` from `generator` (always the same
    number of draws, whatever the spec, so a spec change does not shift later random numbers)."""
    g = generator
    p = int(round(spec.max_shift * size))
    shift = torch.randint(-p, p + 1, (n, 2), generator=g)
    flips = torch.rand(n, 2, generator=g) < 0.5
    rot = torch.randint(0, 4, (n,), generator=g)
    u = torch.rand(n, 2, generator=g)
    lo, hi = math.log(spec.gamma[0]), math.log(spec.gamma[1])
    gamma = torch.exp(lo + (hi - lo) * u[:, 0])
    contrast = spec.contrast[0] + (spec.contrast[1] - spec.contrast[0]) * u[:, 1]
    return AugmentParams(
        shift=shift,
        flip_h=flips[:, 0] & spec.flip,
        flip_v=flips[:, 1] & spec.flip,
        rot=rot if spec.rotate else torch.zeros_like(rot),
        gamma=gamma,
        contrast=contrast,
    )


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move a (C, H, W) tensor by whole pixels, filling with zeros (pad, then crop)."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    padded = F.pad(x, (p, p, p, p))  # (C, H + 2p, W + 2p)
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def apply_params(
    images: torch.Tensor, masks: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images (B, 1, S, S) in [0, 1] and masks (B, S, S) with B samples' draws.

    Returns new tensors; the inputs are not modified.
    """
    if images.dim() != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"expected images (B, C, H, W) and masks (B, H, W), got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}"
        )
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"90-degree rotations need square slices, got {tuple(images.shape[-2:])}")
    if params.rot.shape[0] != images.shape[0]:
        raise ValueError(f"{params.rot.shape[0]} draws for a batch of {images.shape[0]}")
    out_images, out_masks = [], []
    for i in range(images.shape[0]):
        # Stack image and mask so every geometric step moves both identically: (C + 1, S, S).
        both = torch.cat([images[i], masks[i].unsqueeze(0).to(images.dtype)], dim=0)
        both = _shift(both, int(params.shift[i, 0]), int(params.shift[i, 1]))
        if params.flip_h[i]:
            both = both.flip(-1)
        if params.flip_v[i]:
            both = both.flip(-2)
        both = torch.rot90(both, int(params.rot[i]), dims=(-2, -1))
        img = both[:-1].clamp(0, 1) ** float(params.gamma[i])
        mean = img.mean()
        img = ((img - mean) * float(params.contrast[i]) + mean).clamp(0, 1)
        out_images.append(img)
        out_masks.append(both[-1].round().to(masks.dtype))
    return torch.stack(out_images), torch.stack(out_masks)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    spec: AugmentSpec = AugmentSpec(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw and apply one random augmentation per sample; see `apply_params`."""
    params = sample_params(images.shape[0], images.shape[-1], generator, spec)
    return apply_params(images, masks, params)

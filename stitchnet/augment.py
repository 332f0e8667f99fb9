"""Batch augmentation on preloaded tensors, driven by an explicit `torch.Generator`.

Geometry (a shift by pad-and-crop, flips, 90-degree rotations) is applied identically to the image
and its mask. Every geometric step moves whole pixels, so the mask keeps its exact class ids (what
nearest-neighbour resampling would give) and stays aligned with the image pixel for pixel. Pixels
shifted in from outside are air: 0 in the image and class 0 (background) in the mask. Intensity
jitter (gamma, then contrast about the image mean, clamped to [0, 1]) touches the image only.

Drawing the random parameters (`sample_params`) is separate from applying them (`apply_params`):
under DDP every rank draws the parameters of the whole global batch from the same generator
state and applies only its own rows, so all ranks' generators stay in step.

Scanner variation (HU offset, noise, reconstruction kernel, slice thickness) is a separate option
in `stitchnet.scanner_aug`, which the training loop applies after these.
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
        both = _geometry(both, params, i)
        img = both[:-1].clamp(0, 1) ** float(params.gamma[i])
        mean = img.mean()
        img = ((img - mean) * float(params.contrast[i]) + mean).clamp(0, 1)
        out_images.append(img)
        out_masks.append(both[-1].round().to(masks.dtype))
    return torch.stack(out_images), torch.stack(out_masks)


def _geometry(x: torch.Tensor, params: AugmentParams, i: int) -> torch.Tensor:
    """Row i's shift, flips and rotation of a (C, S, S) tensor (whole-pixel moves only)."""
    x = _shift(x, int(params.shift[i, 0]), int(params.shift[i, 1]))
    if params.flip_h[i]:
        x = x.flip(-1)
    if params.flip_v[i]:
        x = x.flip(-2)
    return torch.rot90(x, int(params.rot[i]), dims=(-2, -1))


def apply_geometry(maps: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Move label-like maps (B, S, S) (e.g. the lung field) exactly as `apply_params` moves the
    masks of the same draws: same pixels, exact values, zeros shifted in."""
    if maps.dim() != 3 or params.rot.shape[0] != maps.shape[0]:
        raise ValueError(
            f"expected maps (B, H, W) and B draws, got {tuple(maps.shape)} and "
            f"{params.rot.shape[0]} draws"
        )
    return torch.stack([_geometry(m.unsqueeze(0), params, i)[0] for i, m in enumerate(maps)])


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    spec: AugmentSpec = AugmentSpec(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw and apply one random augmentation per sample; see `apply_params`."""
    params = sample_params(images.shape[0], images.shape[-1], generator, spec)
    return apply_params(images, masks, params)


# ---------------------------------------------------------------------------------------------
# Strong views for semi-supervised objectives (FixMatch, UniMatch, BCP): intensity jitter
# (brightness, contrast, gamma), Gaussian blur and CutMix/copy-paste boxes. No colour ops: a CT
# slice has one channel whose value is a window of Hounsfield units. As above, drawing
# (`sample_strong`, `sample_boxes`) is separate from applying (`apply_strong`, `box_masks`), so
# a strong view is a deterministic function of the generator state it was drawn from.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrongSpec:
    """How strong a strong view is. Defaults follow UniMatch's medical recipe (Yang et al., CVPR
    2023: jitter with p 0.8, blur with sigma 0.1-2 and p 0.5), with its colour jitter reduced to
    what one grey channel has: brightness, contrast and gamma."""

    jitter_p: float = 0.8  # probability of the intensity jitter
    brightness: tuple[float, float] = (-0.1, 0.1)  # added to the [0, 1] image
    contrast: tuple[float, float] = (0.75, 1.25)  # factor about the image mean
    gamma: tuple[float, float] = (0.7, 1.5)  # drawn log-uniformly
    blur_p: float = 0.5  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels
    cutmix_p: float = 0.5  # probability that a row gets a CutMix box
    cutmix_area: tuple[float, float] = (0.02, 0.4)  # box area as a fraction of the slice
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)  # box height / width


@dataclass(frozen=True)
class StrongParams:
    """Per-sample strong-view draws for n samples (CPU tensors, first dimension n)."""

    jitter: torch.Tensor  # (n,) bool
    brightness: torch.Tensor  # (n,) float32
    contrast: torch.Tensor  # (n,) float32
    gamma: torch.Tensor  # (n,) float32
    blur: torch.Tensor  # (n,) bool
    sigma: torch.Tensor  # (n,) float32
    cutmix: torch.Tensor  # (n,) bool: whether the row's box is used
    box: torch.Tensor  # (n, 4) int64 (y0, y1, x0, x1), ends exclusive

    def rows(self, index: slice | torch.Tensor) -> StrongParams:
        """The draws of some samples (one rank's rows of the global batch)."""
        return StrongParams(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def sample_boxes(
    n: int,
    size: int,
    generator: torch.Generator,
    area: tuple[float, float],
    ratio: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """n boxes (n, 4) int64 (y0, y1, x0, x1) inside a size x size slice: area fraction drawn
    uniformly from `area`, height/width log-uniformly from `ratio`, position uniformly. Always
    3n uniform draws, whatever the ranges."""
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    a = area[0] + (area[1] - area[0]) * u[:, 0]
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * u[:, 1])
    h = (size * torch.sqrt(a * r)).round().clamp(1, size).long()  # (n,)
    w = (size * torch.sqrt(a / r)).round().clamp(1, size).long()
    # One more pair of uniforms places the box; drawn here so the count is fixed (3 + 2 per row).
    pos = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    y0 = (pos[:, 0] * (size - h + 1)).floor().long()
    x0 = (pos[:, 1] * (size - w + 1)).floor().long()
    return torch.stack([y0, y0 + h, x0, x0 + w], dim=1)


def sample_strong(
    n: int, size: int, generator: torch.Generator, spec: StrongSpec = StrongSpec()
) -> StrongParams:
    """Draw n strong views for slices of side `size` (a fixed number of draws per row)."""
    g = generator
    u = torch.rand(n, 6, generator=g)
    glo, ghi = math.log(spec.gamma[0]), math.log(spec.gamma[1])
    return StrongParams(
        jitter=u[:, 0] < spec.jitter_p,
        brightness=spec.brightness[0] + (spec.brightness[1] - spec.brightness[0]) * u[:, 1],
        contrast=spec.contrast[0] + (spec.contrast[1] - spec.contrast[0]) * u[:, 2],
        gamma=torch.exp(glo + (ghi - glo) * u[:, 3]),
        blur=u[:, 4] < spec.blur_p,
        sigma=spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[:, 5],
        cutmix=torch.rand(n, generator=g) < spec.cutmix_p,
        box=sample_boxes(n, size, g, spec.cutmix_area, spec.cutmix_ratio),
    )


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a (C, H, W) image with a separable Gaussian of `sigma` px (radius 3 sigma, at least
    1), reflecting at the borders so the edge does not darken."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()  # (2r + 1,)
    x = F.pad(
        image.unsqueeze(0), (radius, radius, radius, radius), mode="reflect"
    )  # (1,C,H+2r,W+2r)
    c = image.shape[0]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # rows: (1, C, H+2r, W)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # cols: (1, C, H, W)
    return x[0]


def apply_strong(images: torch.Tensor, params: StrongParams) -> torch.Tensor:
    """Strong intensity views of images (B, C, S, S) in [0, 1]: jitter (gamma, contrast about the
    mean, brightness, each clamped to [0, 1]) then blur. CutMix is not applied here: it needs a
    partner image, which the objective chooses (see `box_masks`). Returns a new tensor."""
    if images.dim() != 4 or params.jitter.shape[0] != images.shape[0]:
        raise ValueError(
            f"expected images (B, C, H, W) and B strong draws, got {tuple(images.shape)} and "
            f"{params.jitter.shape[0]} draws"
        )
    out = []
    for i in range(images.shape[0]):
        img = images[i]
        if params.jitter[i]:
            img = img.clamp(0, 1) ** float(params.gamma[i])
            mean = img.mean()
            img = ((img - mean) * float(params.contrast[i]) + mean).clamp(0, 1)
            img = (img + float(params.brightness[i])).clamp(0, 1)
        if params.blur[i]:
            img = gaussian_blur(img, float(params.sigma[i]))
        out.append(img)
    return torch.stack(out)


def box_masks(boxes: torch.Tensor, size: int, use: torch.Tensor | None = None) -> torch.Tensor:
    """(n, size, size) bool, True inside each row's box (n, 4) (y0, y1, x0, x1); rows where `use`
    is False get an empty mask."""
    r = torch.arange(size)
    inside_y = (r >= boxes[:, 0:1]) & (r < boxes[:, 1:2])  # (n, size)
    inside_x = (r >= boxes[:, 2:3]) & (r < boxes[:, 3:4])  # (n, size)
    masks = inside_y[:, :, None] & inside_x[:, None, :]  # (n, size, size)
    if use is not None:
        masks &= use.view(-1, 1, 1)
    return masks

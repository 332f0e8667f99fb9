"""Scanner variation: augmentations that imitate how CT scanners and protocols differ.

A model trained on a few slices from one source has seen one scanner's calibration, noise,
reconstruction kernel and slice thickness. These transforms draw other ones, per slice, on the
model's input (HU mapped through the data config's `lung_window` onto [0, 1]):

    thickness  a thick slice averages tissue over millimetres (partial volume): the slice is
               mixed with a blurred copy of itself
    offset     calibration drift moves every tissue by a few tens of HU
    noise      quantum noise of random strength; blurred noise has the grain of real CT noise
    kernel     a soft reconstruction kernel blurs, a sharp one enhances edges (unsharp mask)

They run in that order: the kernel comes last so that it shapes the noise as reconstruction does
(a soft kernel smooths and weakens it, a sharp one strengthens it). Ranges are given in HU and
divided by the window width, which the caller passes from the data config; blur widths are in
pixels of the slice as the model sees it.

Limitations, all because the input is already windowed:
- A pixel at 0 or 1 lies beyond the window and its HU is lost; the offset and the noise leave it
  alone (the padding outside the field of view is far below the window, and bone far above it).
  Offset and noise are added to the other pixels before one clip to [0, 1], so the offset is exact
  only for pixels that stay inside the window.
- 8-bit slices (PNG/JPG) carry no HU scale; the configured window is taken as their mapping, so
  "30 HU" there means 30/1500 of the grey range.
- Real partial volume averages along z; on a 2-D slice the in-plane isotropic blur stands in.
- At small working sizes (64 px) resampling has already averaged much of the noise and of the
  kernel's texture away; the default ranges are on the strong side there.

As in `stitchnet.augment`, drawing (`sample_scanner`, a fixed number of draws per row whatever
the spec) is separate from applying (`apply_scanner`), so under DDP every rank draws the whole
global batch and applies only its rows. A row's noise field comes from its own drawn seed, so a
rank generates only the noise of its own rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from stitchnet.augment import gaussian_blur
from stitchnet.config import from_dict


@dataclass(frozen=True)
class ScannerAugSpec:
    """How often and how strongly each scanner difference is drawn (HU, or pixels for blurs)."""

    offset_p: float = 0.5  # probability of a calibration offset
    offset_hu: float = 30.0  # offset drawn uniformly from [-offset_hu, offset_hu] HU
    noise_p: float = 0.5  # probability of added noise
    noise_hu: tuple[float, float] = (0.0, 20.0)  # noise std drawn uniformly from this range, HU
    noise_grain_p: float = 0.5  # of the noisy slices, the fraction whose noise is blurred
    noise_grain: float = 0.7  # px: Gaussian sigma that correlates the noise (std kept as drawn)
    kernel_p: float = 0.5  # probability of another reconstruction kernel
    kernel_sharp_p: float = 0.5  # of those, the fraction sharp (unsharp mask), else soft (blur)
    soft_sigma: tuple[float, float] = (0.3, 1.0)  # px: a soft kernel's Gaussian blur
    sharp_amount: tuple[float, float] = (0.1, 0.5)  # unsharp mask x + a (x - blur(x)), a drawn
    sharp_sigma: float = 1.0  # px: the blur the unsharp mask subtracts
    thick_p: float = 0.3  # probability of a thick slice
    thick_sigma: tuple[float, float] = (0.5, 1.5)  # px: blur standing for neighbouring tissue
    thick_mix: tuple[float, float] = (0.3, 0.7)  # weight of the blurred copy in the mix

    def __post_init__(self) -> None:
        for name in ("offset_p", "noise_p", "noise_grain_p", "kernel_p", "kernel_sharp_p"):
            _check(name, getattr(self, name), 0.0, 1.0)
        _check("thick_p", self.thick_p, 0.0, 1.0)
        _check("offset_hu", self.offset_hu, 0.0, None)
        _check("noise_grain", self.noise_grain, 0.0, None)
        _check("sharp_sigma", self.sharp_sigma, 0.0, None, open_low=True)
        _check_range("noise_hu", self.noise_hu, 0.0, None)
        _check_range("soft_sigma", self.soft_sigma, 0.0, None, open_low=True)
        _check_range("sharp_amount", self.sharp_amount, 0.0, None)
        _check_range("thick_sigma", self.thick_sigma, 0.0, None, open_low=True)
        _check_range("thick_mix", self.thick_mix, 0.0, 1.0)


def _check(name: str, v: Any, lo: float, hi: float | None, open_low: bool = False) -> None:
    ok = isinstance(v, (int, float)) and (v > lo if open_low else v >= lo)
    ok = ok and (hi is None or v <= hi)
    if not ok:
        bound = f"{'>' if open_low else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"scanner_aug.{name} must be a number {bound}, got {v!r}")


def _check_range(name: str, v: Any, lo: float, hi: float | None, open_low: bool = False) -> None:
    if not (isinstance(v, (tuple, list)) and len(v) == 2):
        raise ValueError(f"scanner_aug.{name} must be a (low, high) pair, got {v!r}")
    _check(f"{name}[0]", v[0], lo, hi, open_low)
    _check(f"{name}[1]", v[1], v[0], hi)


def scanner_spec(value: ScannerAugSpec | dict[str, Any] | None) -> ScannerAugSpec | None:
    """The spec of a run config's `train.scanner_aug`: None stays off, a dict names fields
    ({}: the defaults); unknown field names are refused with the list of valid ones."""
    if value is None or isinstance(value, ScannerAugSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"scanner_aug must be a dict of ScannerAugSpec fields, got {value!r}")
    return from_dict(ScannerAugSpec, value)


def scanner_config(value: ScannerAugSpec | dict[str, Any] | None) -> dict[str, Any] | None:
    """Every field of the spec as a JSON-ready dict (pairs as lists), for the run config: the
    stored config then names every range a run trained with and reads back equal from JSON."""
    spec = scanner_spec(value)
    if spec is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


@dataclass(frozen=True)
class ScannerParams:
    """Per-sample draws for n samples (CPU tensors, first dimension n); 0 means "not drawn"."""

    offset: torch.Tensor  # (n,) float32 HU
    noise: torch.Tensor  # (n,) float32 noise std, HU
    grain: torch.Tensor  # (n,) float32 px sigma correlating the noise (0: white noise)
    noise_seed: torch.Tensor  # (n,) int64 seed of the row's noise field
    soft: torch.Tensor  # (n,) float32 px sigma of a soft kernel's blur
    sharp: torch.Tensor  # (n,) float32 unsharp amount of a sharp kernel
    sharp_sigma: torch.Tensor  # (n,) float32 px sigma the unsharp mask subtracts
    thick_sigma: torch.Tensor  # (n,) float32 px sigma of the thick-slice blur
    thick_mix: torch.Tensor  # (n,) float32 weight of the blurred copy

    def rows(self, index: slice | torch.Tensor) -> ScannerParams:
        """The draws of some samples (one rank's rows of the global batch)."""
        return ScannerParams(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def _uniform(u: torch.Tensor, lo_hi: tuple[float, float]) -> torch.Tensor:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u


def sample_scanner(n: int, spec: ScannerAugSpec, generator: torch.Generator) -> ScannerParams:
    """Draw the scanner variation of n samples: always 11 uniforms and one seed per row."""
    u = torch.rand(n, 11, generator=generator)
    seed = torch.randint(0, 2**62, (n,), generator=generator)
    on_offset, on_noise = u[:, 0] < spec.offset_p, u[:, 2] < spec.noise_p
    on_kernel, on_thick = u[:, 5] < spec.kernel_p, u[:, 8] < spec.thick_p
    sharp = u[:, 6] < spec.kernel_sharp_p
    zero = torch.zeros(n)
    return ScannerParams(
        offset=torch.where(on_offset, spec.offset_hu * (2 * u[:, 1] - 1), zero),
        noise=torch.where(on_noise, _uniform(u[:, 3], spec.noise_hu), zero),
        grain=torch.where(on_noise & (u[:, 4] < spec.noise_grain_p), spec.noise_grain, zero),
        noise_seed=seed,
        soft=torch.where(on_kernel & ~sharp, _uniform(u[:, 7], spec.soft_sigma), zero),
        sharp=torch.where(on_kernel & sharp, _uniform(u[:, 7], spec.sharp_amount), zero),
        sharp_sigma=torch.full((n,), float(spec.sharp_sigma)),
        thick_sigma=torch.where(on_thick, _uniform(u[:, 9], spec.thick_sigma), zero),
        thick_mix=torch.where(on_thick, _uniform(u[:, 10], spec.thick_mix), zero),
    )


def noise_field(shape: tuple[int, ...], seed: int, grain: float = 0.0) -> torch.Tensor:
    """Unit-std noise of `shape` (C, H, W) on the CPU from `seed`: white, or blurred with a
    Gaussian of `grain` px and scaled back to std 1 (the grain of reconstructed CT noise)."""
    field = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if grain > 0:
        field = gaussian_blur(field, grain)
        field = field / field.std()
    return field


def apply_scanner(
    images: torch.Tensor, params: ScannerParams, window: tuple[float, float]
) -> torch.Tensor:
    """Scanner variation of images (B, C, S, S) in [0, 1], windowed through `window` (lo, hi)
    HU: thick-slice mix, then offset and noise (one clip), then the kernel. Returns a new
    tensor; masks need nothing, since no pixel moves."""
    width = float(window[1]) - float(window[0])
    if not width > 0:
        raise ValueError(f"the HU window must have low < high, got {tuple(window)}")
    if images.dim() != 4 or params.offset.shape[0] != images.shape[0]:
        raise ValueError(
            f"expected images (B, C, H, W) and B scanner draws, got {tuple(images.shape)} and "
            f"{params.offset.shape[0]} draws"
        )
    out = []
    for i in range(images.shape[0]):
        img = images[i]  # (C, S, S)
        if params.thick_mix[i] > 0:
            m = float(params.thick_mix[i])
            img = (1 - m) * img + m * gaussian_blur(img, float(params.thick_sigma[i]))
        if params.offset[i] != 0 or params.noise[i] > 0:
            # Only pixels inside the window have a known HU value to move.
            inside = (img > 0) & (img < 1)
            shift = torch.full_like(img, float(params.offset[i]) / width)
            if params.noise[i] > 0:
                field = noise_field(
                    tuple(img.shape), int(params.noise_seed[i]), float(params.grain[i])
                )
                shift = shift + float(params.noise[i]) / width * field.to(img)
            img = torch.where(inside, img + shift, img).clamp(0, 1)
        if params.soft[i] > 0:
            img = gaussian_blur(img, float(params.soft[i]))
        elif params.sharp[i] > 0:
            detail = img - gaussian_blur(img, float(params.sharp_sigma[i]))
            img = (img + float(params.sharp[i]) * detail).clamp(0, 1)
        out.append(img)
    return torch.stack(out)

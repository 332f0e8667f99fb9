# Kept whole (~450 lines): one model file read top to bottom, with the ELBO's terms as small
# pure functions beside the ladder that produces them.
"""The shared variational autoencoder (SVAE, paper Figs. 3b and 5, Table 2).

A five-level ladder VAE. Bottom-up, MobileNetV2 turns the image x into d1..d5 (strides 2..32;
32, 64, 128, 256, 512 filters at width 1.0, each adapted from MobileNetV2's own widths by a 1x1
convolution). Each level i has a one-channel latent map z_i at that level's resolution. Top-down,
z_i -> d_i (conv/Smooth stack), d_i -> d~_(i-1) (4x4 transposed conv, stride 2, LightSmooth), and
d~_(i-1) -> the prior p(z_(i-1) | z_i), a diagonal Gaussian. The top prior p(z5) is N(0, I).

Inference follows the ladder VAE: at level i the bottom-up estimate (the d->z map applied to the
encoder's d_i) and the top-down prior (the d->z map applied to the decoder's d~_i) are combined
by precision weighting. The SVAE's point is that both use the SAME d->z module (`shared=True`);
`shared=False` gives each its own module, the unshared ladder-VAE ablation.

`LadderTrunk` is all of the above and is reused whole by StitchNet. `SVAE` puts a per-pixel Beta
likelihood on x on top of it and is trained on images alone (it does not segment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from stitchnet.models.base import SegmentationModel, perturb_features
from stitchnet.models.blocks import (
    BOTTLENECK_ABOVE,
    ConvBlock,
    Smooth,
    UpBlock,
    light_smooth,
    pointwise,
)
from stitchnet.models.mobilenetv2 import MobileNetV2Encoder, load_encoder_weights
from stitchnet.probability import (
    beta_log_prob,
    beta_mean,
    gaussian_kl,
    gaussian_kl_standard,
    gaussian_sample,
    positive,
    precision_weighted,
)

NUM_LEVELS = 5
REDUCTIONS = ("pixel_mean", "sum", "term_mean")


@dataclass(frozen=True)
class SVAEConfig:
    """The SVAE trunk and its ELBO. StitchNet's config extends this one.

    Reductions of the negative ELBO (each is then averaged over the rows of the batch):
        "pixel_mean": the paper's objective (a sum over pixels and latent units) divided by the
            number of input pixels; the same optimum as "sum", but the learning rate does not
            depend on the image size.
        "sum": the paper's objective as written.
        "term_mean": the authors' released code: the reconstruction term averaged over input
            pixels and each level's KL averaged over that level's latent units, which weights the
            coarse levels' KL far more than the text's objective does.
    """

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # d1..d5 filters at width 1 (Table 2)
    width: float = 1.0  # multiplier on `channels` (rounded to multiples of 4 so f/4 is whole)
    encoder_width: float = 1.0  # MobileNetV2 width_mult
    encoder_weights: str | None = None  # None (random init, the default), "imagenet" or a path
    shared: bool = True  # one d->z module per level for inference and generation (the SVAE)
    bottleneck_above: int = BOTTLENECK_ABOVE  # linear bottleneck convs above this many filters
    eps: float = 1e-4  # added after softplus to Gaussian scales and Beta parameters
    x_eps: float = 1e-4  # x is clipped to [x_eps, 1 - x_eps] in the Beta log-density
    image_size: int = 352  # side of the images that `sample` generates (multiple of 32)
    reduction: str = "pixel_mean"  # how the negative ELBO is normalised (see the docstring)
    kl_warmup_steps: int = 0  # KL weight ramps 0 -> 1 over this many training steps (0: none)
    init_std: float = (
        0.1  # initial std of every latent Gaussian (scale branch bias); see GaussianMap
    )
    latent_channels: int = 1  # channels of each z_i (the paper: 1)
    # "Free bits" (Kingma et al. 2016): each level's batch-mean KL is penalised only above this
    # many nats per latent unit, so that the coarse levels are not pushed into collapse. 0: none
    # (the paper). Only the minimised loss changes; the reported KL is always the true one.
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        if len(self.channels) != NUM_LEVELS:
            raise ValueError(
                f"channels must list {NUM_LEVELS} filter counts (d1..d5), got {self.channels}"
            )
        if self.width <= 0 or self.encoder_width <= 0:
            raise ValueError(
                f"width and encoder_width must be > 0, got {self.width} and {self.encoder_width}"
            )
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.image_size <= 0 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (five stride-2 levels), "
                f"got {self.image_size}"
            )
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")
        if self.kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 nats per latent unit, got {self.free_bits}")

    @property
    def d_channels(self) -> tuple[int, ...]:
        """Filters of d1..d5 after `width`, multiples of 4 so that the f/4 stages are whole."""
        return tuple(max(4, round(c * self.width / 4) * 4) for c in self.channels)


class GaussianMap(nn.Module):
    """d~_i -> (mu, var) of the diagonal Gaussian over z_i (Fig. 5b).

    conv3x3 to f/2, LightSmooth, conv3x3 to f/4, LightSmooth, then two conv3x3 branches to k
    channels each (k = latent_channels, 1 in the paper): the mean, and the scale through
    softplus + eps.
    """

    def __init__(
        self, f: int, bottleneck_above: int, eps: float, init_std: float = 1.0, k: int = 1
    ) -> None:
        super().__init__()
        self.eps = eps
        self.body = nn.Sequential(
            ConvBlock(f, f // 2, bottleneck_above=bottleneck_above),
            light_smooth(f // 2, bottleneck_above=bottleneck_above),
            ConvBlock(f // 2, f // 4, bottleneck_above=bottleneck_above),
            light_smooth(f // 4, bottleneck_above=bottleneck_above),
        )
        self.mean = nn.Conv2d(f // 4, k, 3, padding=1)
        self.scale = nn.Conv2d(f // 4, k, 3, padding=1)
        # Start with narrow Gaussians (std ~ init_std) so that the latents carry the image from
        # the first step instead of drowning it in unit noise; the KL can widen them later.
        nn.init.constant_(self.scale.bias, math.log(math.expm1(init_std)))

    def forward(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(d)  # (B, f/4, h, w)
        return self.mean(h), positive(self.scale(h), self.eps) ** 2  # (B, k, h, w) each


def _latent_to_features(f: int, bottleneck_above: int, k: int = 1) -> nn.Sequential:
    """z_i -> d_i (Fig. 5c): conv3x3 to f/2, LightSmooth, conv3x3 to f, LightSmooth, Smooth."""
    return nn.Sequential(
        ConvBlock(k, f // 2, bottleneck_above=bottleneck_above),
        light_smooth(f // 2, bottleneck_above=bottleneck_above),
        ConvBlock(f // 2, f, bottleneck_above=bottleneck_above),
        light_smooth(f, bottleneck_above=bottleneck_above),
        Smooth(f, bottleneck_above=bottleneck_above),
    )


@dataclass
class LadderPass:
    """What one pass through the trunk produced; lists run over levels 1..5 (index 0 = level 1)."""

    features: torch.Tensor  # (B, f1 / 2, H, W): d~0, the decoder's features at input resolution
    z: list[torch.Tensor]  # (B, k, H/2^i, W/2^i) the latents used (samples or means)
    d_dec: list[torch.Tensor]  # (B, f_i, H/2^i, W/2^i) the decoder's d_i = g(z_i)
    d_enc: list[torch.Tensor] = field(default_factory=list)  # the encoder's d_i (empty: prior)
    kl_maps: list[torch.Tensor] = field(default_factory=list)  # (B, k, h_i, w_i) KL per unit


class LadderTrunk(nn.Module):
    """Encoder, the five levels of latents and the decoder, up to full-resolution features.

    `forward(x, sample, with_kl)` runs inference (bottom-up, then top-down); `generate(n, size)`
    runs the generative model from z5 ~ N(0, I). Both return a `LadderPass`.
    """

    def __init__(self, config: SVAEConfig) -> None:
        super().__init__()
        self.config = config
        fs = config.d_channels
        ba = config.bottleneck_above
        k = config.latent_channels
        self.encoder = MobileNetV2Encoder(in_channels=1, width_mult=config.encoder_width)
        if config.encoder_weights is not None:
            load_encoder_weights(self.encoder, config.encoder_weights)
        self.adapt = nn.ModuleList(
            pointwise(c, f) for c, f in zip(self.encoder.out_channels, fs, strict=True)
        )
        # Bottom-up d_i -> z_i, levels 1..5. With sharing these also give the priors of 1..4.
        self.infer_z = nn.ModuleList(GaussianMap(f, ba, config.eps, config.init_std, k) for f in fs)
        # Level 5's prior is N(0, I), so only levels 1..4 have a generative d->z map.
        self.prior_z = (
            None
            if config.shared
            else nn.ModuleList(GaussianMap(f, ba, config.eps, config.init_std, k) for f in fs[:-1])
        )
        self.z_to_d = nn.ModuleList(_latent_to_features(f, ba, k) for f in fs)
        # up[i] maps level i+1 down to level i; up[0] maps d1 to d~0 at the input resolution.
        # d~0 has half of d1's filters: the full-resolution layers cost most of a training step,
        # and its heads need only a few channels (4 logits, 8 Beta parameters).
        widths = (fs[0] // 2, *fs)
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i], ba) for i in range(NUM_LEVELS))
        self.out_channels = widths[0]
        # Counts training passes, for the KL warm-up; a buffer so that it is checkpointed.
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def posterior_map(self, level: int) -> GaussianMap:
        """The bottom-up d_level -> z_level map (level 1..5)."""
        return self.infer_z[level - 1]

    def prior_map(self, level: int) -> GaussianMap:
        """The top-down d~_level -> z_level map (level 1..4): the same module when shared."""
        if not 1 <= level < NUM_LEVELS:
            raise ValueError(f"levels 1..{NUM_LEVELS - 1} have a learnt prior, got level {level}")
        maps = self.infer_z if self.prior_z is None else self.prior_z
        return maps[level - 1]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 1, H, W) -> [d1..d5], d_i of shape (B, f_i, H/2^i, W/2^i)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return [a(f) for a, f in zip(self.adapt, self.encoder(x), strict=True)]

    def forward(
        self,
        x: torch.Tensor,
        sample: bool = True,
        with_kl: bool = True,
        generator: torch.Generator | None = None,
    ) -> LadderPass:
        """Infer z from x and decode it.

        Args:
            x: (B, 1, H, W) images in [0, 1], H and W multiples of 32.
            sample: draw each z_i from q (one Monte Carlo sample, reparameterised); False uses
                the posterior means, which is what segmentation at test time wants.
            with_kl: compute the KL(q || p) map of every level (skip for cheap inference).
            generator: random source for the samples.
        """
        d_enc = self.encode(x)
        mu, var = self.posterior_map(NUM_LEVELS)(d_enc[-1])  # (B, k, H/32, W/32)
        z = gaussian_sample(mu, var, generator) if sample else mu
        kl_maps = [gaussian_kl_standard(mu, var)] if with_kl else []
        zs, d_dec = [z], [self.z_to_d[-1](z)]
        for level in range(NUM_LEVELS - 1, 0, -1):
            d_tilde = self.up[level](d_dec[0])  # (B, f_level, 2h, 2w)
            mu_p, var_p = self.prior_map(level)(d_tilde)
            mu_b, var_b = self.posterior_map(level)(d_enc[level - 1])
            mu, var = precision_weighted(mu_b, var_b, mu_p, var_p)
            z = gaussian_sample(mu, var, generator) if sample else mu
            if with_kl:
                kl_maps.insert(0, gaussian_kl(mu, var, mu_p, var_p))
            zs.insert(0, z)
            d_dec.insert(0, self.z_to_d[level - 1](z))
        features = self.up[0](d_dec[0])  # (B, f1 / 2, H, W)
        return LadderPass(features, zs, d_dec, d_enc, kl_maps)

    def generate(
        self,
        n: int,
        image_size: int | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> LadderPass:
        """Ancestral sampling: z5 ~ N(0, I), then each z_i ~ p(z_i | z_(i+1)) down to d~0.

        `image_size` defaults to the config's.
        `temperature` scales the standard deviation of every draw (1: the model's prior; 0: z5
        and every later z_i at their means). Below 1 it trades diversity for cleaner images, as
        is usual when showing samples of hierarchical VAEs.
        """
        if image_size is None:
            image_size = self.config.image_size
        if n < 1 or image_size <= 0 or image_size % 32:
            raise ValueError(
                f"generate needs n >= 1 and image_size a positive multiple of 32, "
                f"got n={n}, image_size={image_size}"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        top = image_size // 2**NUM_LEVELS
        ref = self.up[0][0].weight  # samples follow the model's device and dtype
        shape = (n, self.config.latent_channels, top, top)
        mu = torch.zeros(shape, device=ref.device, dtype=ref.dtype)
        scale = temperature**2
        z = gaussian_sample(mu, torch.full_like(mu, scale), generator)
        zs, d_dec = [z], [self.z_to_d[-1](z)]
        for level in range(NUM_LEVELS - 1, 0, -1):
            mu_p, var_p = self.prior_map(level)(self.up[level](d_dec[0]))
            z = gaussian_sample(mu_p, scale * var_p, generator)
            zs.insert(0, z)
            d_dec.insert(0, self.z_to_d[level - 1](z))
        return LadderPass(self.up[0](d_dec[0]), zs, d_dec)

    def kl_weight(self) -> float:
        """The KL's weight under warm-up: steps seen / kl_warmup_steps, capped at 1.

        Advances the step count when called in training mode, so call it once per training loss.
        """
        warmup = self.config.kl_warmup_steps
        steps = int(self.steps_seen)
        if self.training:
            self.steps_seen += 1
        return 1.0 if warmup == 0 else min(1.0, steps / warmup)


def recon_divisor(reduction: str, num_pixels: int) -> int:
    """What the reconstruction term (a sum over input pixels) is divided by under `reduction`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return 1 if reduction == "sum" else num_pixels


def elbo_terms(
    recon_nll: torch.Tensor,
    kl_maps: list[torch.Tensor],
    num_pixels: int,
    reduction: str,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalise per-row negative log-likelihood and per-level KL as the reduction says.

    Args:
        recon_nll: (B,) negative log-likelihood summed over the input's pixels.
        kl_maps: per level, (B, k, h_i, w_i) KL per latent unit.
        num_pixels: H * W of the input.
        reduction: one of REDUCTIONS (see SVAEConfig).
    Returns the scaled (B,) reconstruction term and the scaled (B,) KL of every level.
    """
    divisor = recon_divisor(reduction, num_pixels)
    kls = [k.sum(dim=(1, 2, 3)) for k in kl_maps]  # each (B,)
    if reduction == "term_mean":
        kls = [k / m[0].numel() for k, m in zip(kls, kl_maps, strict=True)]
    else:
        kls = [k / divisor for k in kls]
    return recon_nll / divisor, kls


def free_bits_excess(
    kls: list[torch.Tensor],
    kl_maps: list[torch.Tensor],
    num_pixels: int,
    reduction: str,
    free_bits: float,
) -> torch.Tensor:
    """What free bits add to the loss: the sum over levels of relu(floor - batch-mean KL).

    With it, the KL part of the loss is the sum over levels of max(batch-mean KL, floor): a level
    under its floor costs the floor, a constant, so nothing pushes it further towards collapse.

    Args:
        kls: per level, (B,) KL already normalised by `elbo_terms`.
        kl_maps: the same levels' (B, k, h_i, w_i) KL maps (their sizes set the floors).
        num_pixels, reduction: as given to `elbo_terms`, so that the floor of `free_bits` nats per
            latent unit is normalised as the KL is.
        free_bits: nats per latent unit; 0 returns exactly 0 (the plain ELBO).
    """
    total = kls[0].new_zeros(())
    if free_bits == 0:  # exactly the plain ELBO, even where rounding leaves a KL just below 0
        return total
    for kl, kl_map in zip(kls, kl_maps, strict=True):
        units = kl_map[0].numel()
        divisor = units if reduction == "term_mean" else recon_divisor(reduction, num_pixels)
        total = total + torch.relu(free_bits * units / divisor - kl.mean())
    return total


def negative_elbo(
    recon: torch.Tensor,
    kls: list[torch.Tensor],
    kl_maps: list[torch.Tensor],
    num_pixels: int,
    config: SVAEConfig,
    kl_weight: float,
) -> torch.Tensor:
    """The minimised loss: batch mean of recon + kl_weight * total KL, plus the free-bits excess.

    `recon` (B,) and `kls` are the terms `elbo_terms` returned; `kl_weight` is the warm-up weight.
    """
    loss = (recon + kl_weight * torch.stack(kls).sum(dim=0)).mean()
    excess = free_bits_excess(kls, kl_maps, num_pixels, config.reduction, config.free_bits)
    return loss + kl_weight * excess


def kl_report(kls: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batch means of the total KL and of each level's, as "kl", "kl_1".."kl_5"."""
    out = {"kl": torch.stack(kls).sum(dim=0).mean()}
    out.update({f"kl_{i + 1}": k.mean() for i, k in enumerate(kls)})
    return out


class SVAE(SegmentationModel):
    """The SVAE as an image model: per-pixel Beta(x | alpha, beta) from the decoder's features.

    It does not segment: `segments = False` tells callers (evaluator, predict) that `forward`
    returns the reconstruction mean (B, 1, H, W) in (0, 1), not class logits. `loss(batch)` is the
    negative ELBO over every row of the batch, labelled or not (masks are ignored), with one Monte
    Carlo sample of z; it returns "loss", "nll", "kl" and "kl_1".."kl_5", normalised as
    `config.reduction` says. "loss" = "nll" + (KL warm-up weight) * "kl".
    """

    name: ClassVar[str] = "svae"
    config_class: ClassVar[type] = SVAEConfig
    uses_unlabelled: ClassVar[bool] = True
    segments: ClassVar[bool] = False  # forward returns an image, not segmentation logits

    def __init__(self, config: SVAEConfig) -> None:
        super().__init__(config)
        self.trunk = LadderTrunk(config)
        self.beta_head = nn.Conv2d(self.trunk.out_channels, 2, 3, padding=1)

    def _beta_params(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = positive(self.beta_head(features), self.config.eps)  # (B, 2, H, W)
        return ab[:, :1], ab[:, 1:]  # (B, 1, H, W) each

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        """Reconstruction mean (B, 1, H, W) from the posterior means (no sampling).

        feature_dropout p > 0 drops channels of d~0, the features the Beta head reads."""
        features = self.trunk(x, sample=False, with_kl=False).features  # (B, f1 / 2, H, W)
        alpha, beta = self._beta_params(perturb_features(features, feature_dropout))
        return beta_mean(alpha, beta)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        out = self.trunk(x, sample=True, with_kl=True)
        alpha, beta = self._beta_params(out.features)
        nll = -beta_log_prob(x, alpha, beta, self.config.x_eps).sum(dim=(1, 2, 3))  # (B,)
        cfg = self.config
        num_pixels = x.shape[-2] * x.shape[-1]
        nll, kls = elbo_terms(nll, out.kl_maps, num_pixels, cfg.reduction)
        loss = negative_elbo(nll, kls, out.kl_maps, num_pixels, cfg, self.trunk.kl_weight())
        return {"loss": loss, "nll": nll.mean(), **kl_report(kls)}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        image_size: int | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """n images (n, 1, S, S) from the prior: the Beta means at each pixel, in (0, 1)."""
        passed = self.trunk.generate(n, image_size, generator, temperature)
        alpha, beta = self._beta_params(passed.features)
        return beta_mean(alpha, beta)


PRESETS: dict[str, SVAEConfig] = {
    "paper": SVAEConfig(),
    # Two CPU cores: 128-px inputs (the cpu data preset's size, which `sample` follows) and
    # 64-px inputs, at the paper's widths (as StitchNet's cpu and cpu-small).
    "cpu": SVAEConfig(image_size=128),
    "cpu-small": SVAEConfig(image_size=64),
    "debug": SVAEConfig(width=0.25, encoder_width=0.25, image_size=64),
}

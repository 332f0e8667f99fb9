"""StitchNet (paper Eqs. 4-8, Figs. 6-7): a semi-supervised segmenter built on the SVAE.

The generative story: z ~ p(z) (the SVAE's five levels of latents), y ~ Cat(pi(z)) per pixel, and
four "styles" b, h, g, c ~ Beta(alpha_k(z), beta_k(z)) per pixel, one for each class (background,
healthy, GGO, consolidation). The image x is stitched together by taking, at each pixel, the style
of the class y names. Hence, per pixel,

    labelled row:    log p(x, y | z) = log pi_y + log Beta(x | alpha_y, beta_y)
    unlabelled row:  log p(x | z)    = logsumexp_k (log pi_k + log Beta(x | alpha_k, beta_k))

and the objective is the ELBO, likelihood - KL(q(z | x) || p(z)), with one Monte Carlo sample of z
from the SVAE's ladder posterior. pi and the Beta parameters come from the decoder's features at
input resolution (d~0: one more transposed conv and LightSmooth below d1).

The authors' released TensorFlow code differs from the paper's text in several places; each is a
config option here, defaulting to the text:
    label_loss: "categorical" (text: -log pi_y) or "focal" (code: focal loss, gamma 2, times 100);
        beyond both, "ce+dice" adds a soft Dice on pi over the labelled rows (class-balanced).
    likelihood: "mixture" (text: the marginal above on unlabelled rows) or "expected" (code:
        sum_k pi_k * (-log Beta_k(x)), an upper bound on the mixture's negative log-likelihood).
        Labelled rows stitch with the true label under both.
    reduction: "pixel_mean" (default: the text's sum divided by the number of input pixels),
        "sum" (the text as written) or "term_mean" (code: reconstruction and each level's KL
        averaged over their own pixels); see SVAEConfig.
    kl_warmup_steps: 0 in both (no warm-up); a positive value ramps the KL weight from 0 to 1.
    encoder_weights: None (MobileNetV2 from scratch) or "imagenet" / a path.
`label_weight` multiplies the label term (categorical or focal) of labelled rows; raising it keeps
the four label channels from being drowned by the per-pixel image likelihood (1.0: the text).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stitchnet.config import NUM_CLASSES
from stitchnet.models.base import SegmentationModel, perturb_features
from stitchnet.models.losses import soft_dice_loss
from stitchnet.models.svae import (
    LadderPass,
    LadderTrunk,
    SVAEConfig,
    elbo_terms,
    kl_report,
    negative_elbo,
    recon_divisor,
)
from stitchnet.probability import (
    beta_log_prob,
    beta_mean,
    categorical_log_likelihood,
    expected_nll,
    focal_nll,
    mixture_log_likelihood,
    positive,
    style_log_likelihood,
)

LABEL_LOSSES = ("categorical", "focal", "ce+dice")
LIKELIHOODS = ("mixture", "expected")


@dataclass(frozen=True)
class StitchNetConfig(SVAEConfig):
    """The SVAE trunk's fields (see SVAEConfig) plus StitchNet's likelihood and label terms."""

    # "categorical" (paper text), "focal" (authors' code) or "ce+dice" (categorical + soft Dice)
    label_loss: str = "categorical"
    focal_gamma: float = 2.0  # focal loss exponent (label_loss="focal")
    focal_weight: float = 100.0  # the authors' code multiplies the focal loss by this
    likelihood: str = "mixture"  # unlabelled rows: "mixture" (text) or "expected" (code)
    label_weight: float = 1.0  # multiplies the label term of labelled rows (1.0: paper text)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_loss not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {LABEL_LOSSES}, got {self.label_loss!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.label_weight < 0 or self.focal_weight < 0 or self.focal_gamma < 0:
            raise ValueError(
                f"label_weight, focal_weight and focal_gamma must be >= 0, got "
                f"{self.label_weight}, {self.focal_weight}, {self.focal_gamma}"
            )


class StitchNet(SegmentationModel):
    """Semi-supervised segmentation by a stitched-style generative model on the SVAE.

    Args:
        config: a StitchNetConfig (`shared=False` gives the unshared ladder-VAE ablation).

    `forward(x, feature_dropout)` is the cheap inference path: posterior means top-down (no
    sampling, no KL, no style heads), returning class logits (B, 4, H, W); feature_dropout p > 0
    drops channels of the features pi_head reads. `outputs(x)` returns everything else.
    `loss(batch)` is the negative ELBO over labelled and unlabelled rows, as a dict of batch means:
        "loss": the minimised objective, nll + (KL warm-up weight) * kl averaged over all rows
            (the reduction, by default per input pixel, is config.reduction);
        "nll_labelled", "nll_unlabelled": the reconstruction terms, averaged over labelled /
            unlabelled rows (0 where the batch has none); the labelled one includes
            label_weight * label term;
        "label_term": the unweighted label loss (categorical -log pi_y, the weighted focal
            loss, or -log pi_y plus the labelled rows' soft Dice) of labelled rows, on the same
            scale;
        "kl", "kl_1".."kl_5": KL(q || p), total and per level, averaged over all rows.
    """

    name: ClassVar[str] = "stitchnet"
    config_class: ClassVar[type] = StitchNetConfig
    uses_unlabelled: ClassVar[bool] = True
    segments: ClassVar[bool] = True

    def __init__(self, config: StitchNetConfig) -> None:
        super().__init__(config)
        self.trunk = LadderTrunk(config)
        f = self.trunk.out_channels
        self.pi_head = nn.Conv2d(f, NUM_CLASSES, 3, padding=1)
        # alpha and beta of each class's style: channels (alpha_0..3, beta_0..3).
        self.style_head = nn.Conv2d(f, 2 * NUM_CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        """Segmentation logits (B, 4, H, W) from the posterior means."""
        features = self._pi_features(self.trunk(x, sample=False, with_kl=False))
        return self.pi_head(perturb_features(features, feature_dropout))

    def _pi_features(self, passed: LadderPass) -> torch.Tensor:
        """What pi_head reads: here d~0, the ladder's top-down features (B, f1 / 2, H, W)."""
        return passed.features

    def _styles(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = positive(self.style_head(features), self.config.eps)  # (B, 8, H, W)
        return ab[:, :NUM_CLASSES], ab[:, NUM_CLASSES:]  # (B, 4, H, W) each

    def outputs(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Everything the model says about x.

        Args:
            x: (B, 1, H, W) images.
            sample: draw z from q instead of using the posterior means.
        Returns:
            "logits" (B, 4, H, W); "reconstruction" (B, 1, H, W), the stitched image: the Beta
            mean of each pixel's most probable class; "reconstruction_mean" (B, 1, H, W), the
            pi-weighted mean of the four styles (the mean of p(x | z)); "styles" (B, 4, H, W), the
            Beta means of b, h, g, c; "kl_maps", a list over levels 1..5 of (B, 1, h_i, w_i) KL
            per latent unit.
        """
        out = self.trunk(x, sample=sample, with_kl=True, generator=generator)
        result = self._decode(self._pi_features(out), out.features)
        result["kl_maps"] = out.kl_maps
        return result

    def _decode(
        self, pi_features: torch.Tensor, style_features: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = self.pi_head(pi_features)  # (B, 4, H, W)
        styles = beta_mean(*self._styles(style_features))  # (B, 4, H, W)
        labels = logits.argmax(dim=1, keepdim=True)  # (B, 1, H, W)
        return {
            "logits": logits,
            "reconstruction": styles.gather(1, labels),  # (B, 1, H, W)
            "reconstruction_mean": (logits.softmax(dim=1) * styles).sum(dim=1, keepdim=True),
            "styles": styles,
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss_with_logits(batch)[0]

    def loss_with_logits(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The negative ELBO's terms (see `loss`) and pi's logits (B, 4, H, W) of every row, from
        the same pass: z drawn from q, as the ELBO needs (not the posterior means of forward)."""
        missing = sorted({"image", "mask", "labelled"} - set(batch))
        if missing:
            raise KeyError(
                f"StitchNet.loss needs batch keys image, mask, labelled; missing {missing}"
            )
        x, y, labelled = batch["image"], batch["mask"], batch["labelled"].bool()
        cfg = self.config
        out = self.trunk(x, sample=True, with_kl=True)
        logits = self.pi_head(self._pi_features(out))  # (B, 4, H, W)
        log_pi = F.log_softmax(logits, dim=1)
        alpha, beta = self._styles(out.features)
        log_px = beta_log_prob(x, alpha, beta, cfg.x_eps)  # (B, 4, H, W): x broadcast to 4 styles

        lab, unl = labelled.nonzero().squeeze(1), (~labelled).nonzero().squeeze(1)
        num_pixels = x.shape[-2] * x.shape[-1]
        recon = x.new_zeros(x.shape[0])  # (B,) negative log-likelihood per row
        label_nll = x.new_zeros(0)
        if lab.numel():
            if cfg.label_loss == "focal":
                label_nll = cfg.focal_weight * focal_nll(log_pi[lab], y[lab], cfg.focal_gamma)
            else:
                label_nll = -categorical_log_likelihood(log_pi[lab], y[lab])  # (L,)
            if cfg.label_loss == "ce+dice":
                # The Dice is one number for all labelled rows (pooled, so that a class absent
                # from one slice is still scored), a mean over pixels: times num_pixels it joins
                # each row's sum over pixels, and under "pixel_mean" the label term is exactly
                # losses.segmentation_loss(logits, y, "ce+dice") of the labelled rows.
                label_nll = label_nll + num_pixels * soft_dice_loss(log_pi[lab], y[lab])
            style_nll = -style_log_likelihood(log_px[lab], y[lab])
            recon = recon.index_put((lab,), cfg.label_weight * label_nll + style_nll)
        if unl.numel():
            if cfg.likelihood == "mixture":
                unl_nll = -mixture_log_likelihood(log_pi[unl], log_px[unl])
            else:
                unl_nll = expected_nll(log_pi[unl], log_px[unl])
            recon = recon.index_put((unl,), unl_nll)

        recon, kls = elbo_terms(recon, out.kl_maps, num_pixels, cfg.reduction)
        # The label term is a reconstruction term, so it takes the same normaliser.
        label_nll = label_nll / recon_divisor(cfg.reduction, num_pixels)
        loss = negative_elbo(recon, kls, out.kl_maps, num_pixels, cfg, self.trunk.kl_weight())
        zero = x.new_zeros(())
        terms = {
            "loss": loss,
            "nll_labelled": recon[lab].mean() if lab.numel() else zero,
            "nll_unlabelled": recon[unl].mean() if unl.numel() else zero,
            "label_term": label_nll.mean() if lab.numel() else zero,
            **kl_report(kls),
        }
        return terms, logits

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        image_size: int | None = None,
        temperature: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """n draws from the prior: "image" (n, 1, S, S) stitched Beta means in (0, 1), "mask"
        (n, S, S) the most probable class per pixel, and "styles" (n, 4, S, S). `temperature`
        scales every latent draw's std (see LadderTrunk.generate)."""
        passed = self.trunk.generate(n, image_size, generator, temperature)
        decoded = self._decode(passed.features, passed.features)
        return {
            "image": decoded["reconstruction"],
            "mask": decoded["logits"].argmax(dim=1),
            "styles": decoded["styles"],
        }


_BASE = StitchNetConfig()
PRESETS: dict[str, StitchNetConfig] = {
    "paper": _BASE,
    # Two CPU cores, 144 steps at 64 px. The paper's widths (1.0): at half width the level-1
    # d->z map narrows to 4 filters and StitchNet sat ~200 steps on the "no lesion" plateau, at
    # full width ~100-125 (docs/methods.md). The label term is weighted 10 and the KL ramped in
    # over the first 60 steps, because with the paper's weights (1, no warm-up) StitchNet learnt
    # no lesion pixel in 120 steps at 128 px.
    "cpu-small": dataclasses.replace(
        _BASE,
        image_size=64,
        label_weight=10.0,
        kl_warmup_steps=60,
    ),
    # The cpu-small model at the cpu data preset's 128 px, the size `sample` draws at.
    "cpu": dataclasses.replace(_BASE, image_size=128, label_weight=10.0, kl_warmup_steps=60),
    "debug": dataclasses.replace(_BASE, width=0.25, encoder_width=0.25, image_size=64),
}

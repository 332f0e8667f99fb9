"""StitchNet with skips (registry name `stitchnet-skip`): beyond the paper, kept beside it.

The faithful StitchNet segments from d~0 alone, so every fact about a lesion must pass through the
one-channel latents z1..z5 (docs/methods.md, "The CPU preset"). Here pi, the per-pixel class
distribution, reads a small U-Net decoder instead: it starts at the encoder's deterministic d5,
and each block upsamples x2 and concatenates the encoder's bottom-up map of that stride (d4, d3,
d2, d1); the last block concatenates the ladder's top-down d~0 at input resolution:

    d5 -> up, [d4] -> up, [d3] -> up, [d2] -> up, [d1] -> up, [d~0] -> pi_head -> pi (B, 4, H, W)

Everything else is StitchNet's, reused by subclassing: the ladder, the style head (the four Beta
styles still read d~0 only, so they stay a function of z), the stitched likelihood of labelled
and unlabelled rows, the KL terms, warm-up, free bits and reductions. The ELBO remains the
generative term; what changes is that pi now depends on x through the skips as well as through
z. On unlabelled rows the mixture logsumexp_k(log pi_k + log Beta_k(x)) then rewards pi for
putting its mass on the styles that explain each pixel: a regulariser on the segmentation rather
than the likelihood of a generative model of y. For the same reason the model has no prior
sample of a segmentation (`sample` raises): without an image there are no encoder features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from stitchnet.config import NUM_CLASSES
from stitchnet.models.stitchnet import StitchNet, StitchNetConfig
from stitchnet.models.svae import NUM_LEVELS, LadderPass
from stitchnet.models.unet import DecoderBlock


@dataclass(frozen=True)
class StitchNetSkipConfig(StitchNetConfig):
    """StitchNet's fields (see StitchNetConfig and SVAEConfig) plus the skip decoder's widths."""

    # Output channels of the five skip-decoder blocks, deepest first (strides 16, 8, 4, 2, 1):
    # the U-Net's (256, 128, 64, 32, 16) halved above stride 2, because d1..d5 are narrower
    # than MobileNetV2's maps and the step must stay within ~3x a U-Net step on CPU.
    skip_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    # Categorical plus a soft Dice on pi: consolidation is ~5 % of the labelled pixels (GGO 8 %,
    # healthy lung 47 %, background 40 %), so under the per-pixel categorical term alone its
    # gradient is ~1/10 of the common classes', and every StitchNet run of the semi-supervised
    # comparison lost it. The batch-pooled Dice weights the four classes equally whatever their
    # pixel counts; the categorical term keeps pi a calibrated per-pixel posterior, which
    # confidence-thresholded pseudo-labels need and a Dice alone does not give. Focal loss (also
    # an option) reweights pixels by confidence, not by class.
    label_loss: str = "ce+dice"
    # The per-pixel Beta log-density of the image is several nats per pixel against ~1 for the
    # label term; weighted 10 (as StitchNet's CPU presets) the labels are not drowned by it.
    label_weight: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.skip_channels) != NUM_LEVELS or min(self.skip_channels) < 1:
            raise ValueError(
                f"skip_channels needs {NUM_LEVELS} positive widths (strides 16, 8, 4, 2, 1), "
                f"got {self.skip_channels}"
            )


class SkipDecoder(nn.Module):
    """A U-Net decoder over the encoder's d1..d5 that ends on the ladder's d~0.

    Args:
        d_channels: filters of d1..d5 (SVAEConfig.d_channels).
        top_down_channels: filters of d~0 (LadderTrunk.out_channels).
        channels: output filters of the five blocks, deepest first.
    `forward(d_enc, top_down)`: [d1..d5], d_i (B, f_i, H/2^i, W/2^i), and d~0 (B, f0, H, W)
    -> (B, channels[-1], H, W).
    """

    def __init__(
        self, d_channels: tuple[int, ...], top_down_channels: int, channels: tuple[int, ...]
    ) -> None:
        super().__init__()
        skips = (*reversed(d_channels[:-1]), top_down_channels)  # d4, d3, d2, d1, d~0
        blocks = []
        c_in = d_channels[-1]
        for c_skip, c_out in zip(skips, channels, strict=True):
            blocks.append(DecoderBlock(c_in, c_skip, c_out))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c_in

    def forward(self, d_enc: list[torch.Tensor], top_down: torch.Tensor) -> torch.Tensor:
        y = d_enc[-1]  # (B, f5, H/32, W/32)
        for block, skip in zip(self.blocks, [*reversed(d_enc[:-1]), top_down], strict=True):
            y = block(y, skip)  # (B, c_out, 2h, 2w)
        return y  # (B, channels[-1], H, W)


class StitchNetSkip(StitchNet):
    """StitchNet whose pi_head reads a skip decoder over the encoder's maps and d~0.

    Args:
        config: a StitchNetSkipConfig.

    The interface and the loss terms are StitchNet's (see its docstring); `forward(x,
    feature_dropout)` drops channels of the skip decoder's output, the features pi_head reads.
    """

    name: ClassVar[str] = "stitchnet-skip"
    config_class: ClassVar[type] = StitchNetSkipConfig

    def __init__(self, config: StitchNetSkipConfig) -> None:
        super().__init__(config)
        self.skip_decoder = SkipDecoder(
            config.d_channels, self.trunk.out_channels, config.skip_channels
        )
        # Replaces StitchNet's pi_head on d~0: pi reads the skip decoder instead.
        self.pi_head = nn.Conv2d(self.skip_decoder.out_channels, NUM_CLASSES, 3, padding=1)

    def _pi_features(self, passed: LadderPass) -> torch.Tensor:
        """The skip decoder over the encoder's d1..d5 and d~0: (B, skip_channels[-1], H, W)."""
        return self.skip_decoder(passed.d_enc, passed.features)

    def sample(self, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "stitchnet-skip has no prior sample: its pi reads encoder features of an observed "
            "image (use outputs(x)); the faithful 'stitchnet' samples images and masks"
        )


_BASE = StitchNetSkipConfig()
PRESETS: dict[str, StitchNetSkipConfig] = {
    "paper": _BASE,
    # Two CPU cores at 128 px: the ladder at half width (d1..d5: 16..256 filters) keeps a step
    # of 8 labelled + 8 unlabelled rows within ~3x a U-Net step (the faithful StitchNet at full
    # width costs ~6x). The faithful model needs full width because its segmentation passes
    # through the level-1 latent's d->z map; here pi has the skips. KL ramped in over 60 steps
    # as in StitchNet's CPU presets.
    "cpu": dataclasses.replace(_BASE, image_size=128, width=0.5, kl_warmup_steps=60),
    "cpu-small": dataclasses.replace(_BASE, image_size=64, width=0.5, kl_warmup_steps=60),
    "debug": dataclasses.replace(
        _BASE,
        width=0.25,
        encoder_width=0.25,
        image_size=64,
        skip_channels=(32, 16, 16, 8, 8),
    ),
}

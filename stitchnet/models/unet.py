"""U-Net baseline: a MobileNetV2 encoder and a decoder that upsamples with skip connections.

Each decoder block doubles the resolution, concatenates the encoder feature map of that stride,
and applies two 3x3 conv-BN-ReLU layers. Five blocks take the stride-32 bottleneck back to the
input resolution; the last has no skip (the encoder has no stride-1 output).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stitchnet.models.base import SegmentationModel, perturb_features
from stitchnet.models.losses import check_loss_kind, supervised_loss
from stitchnet.models.mobilenetv2 import MobileNetV2Encoder, load_encoder_weights


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1  # CT slices are grey
    num_classes: int = 4  # background, healthy lung, GGO, consolidation (2 for the lung segmenter)
    width_mult: float = 1.0  # MobileNetV2 width; ImageNet weights exist only for 1.0
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # one per decoder block, deep first
    encoder_weights: str | None = None  # None, "imagenet", or a path to an encoder state dict
    loss: str = "ce"  # "ce" | "dice" | "focal" | "ce+dice"

    def __post_init__(self) -> None:
        if len(self.decoder_channels) != 5:
            raise ValueError(
                f"UNetConfig.decoder_channels needs 5 entries (one per stride-2 level), "
                f"got {self.decoder_channels}"
            )
        if self.num_classes < 2:
            raise ValueError(f"UNetConfig.num_classes must be >= 2, got {self.num_classes}")
        check_loss_kind(self.loss, "UNetConfig")


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (if any), then two conv-BN-ReLU layers."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(c_in + c_skip, c_out)
        self.conv2 = ConvBNReLU(c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, c_in, 2h, 2w)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (B, c_in + c_skip, 2h, 2w)
        return self.conv2(self.conv1(x))  # (B, c_out, 2h, 2w)


class UNet(SegmentationModel):
    """MobileNetV2 U-Net.

    Args:
        config: a `UNetConfig`. With `encoder_weights` set, the encoder is loaded here.

    `forward(x, feature_dropout)`: (B, in_channels, H, W), H and W multiples of 32 -> logits
    (B, num_classes, H, W). feature_dropout p > 0 drops channels of all five encoder maps before
    the decoder reads them (bottleneck and skips, as UniMatch's medical U-Net does).
    """

    name = "unet"
    config_class = UNetConfig

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        self.encoder = MobileNetV2Encoder(config.in_channels, config.width_mult)
        if config.encoder_weights is not None:
            load_encoder_weights(self.encoder, config.encoder_weights)
        enc = self.encoder.out_channels  # shallow to deep, strides 2..32
        # Block i upsamples to stride 2^(4-i) and takes the encoder map of that stride as skip.
        skips = (enc[3], enc[2], enc[1], enc[0], 0)
        blocks = []
        c_in = enc[4]
        for c_skip, c_out in zip(skips, config.decoder_channels, strict=True):
            blocks.append(DecoderBlock(c_in, c_skip, c_out))
            c_in = c_out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c_in, config.num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        # 5 maps, strides 2, 4, 8, 16, 32
        feats = [perturb_features(f, feature_dropout) for f in self.encoder(x)]
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        y = feats[4]  # (B, C5, H/32, W/32)
        for block, skip in zip(self.decoder, skips, strict=True):
            y = block(y, skip)
        return self.head(y)  # (B, num_classes, H, W)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return supervised_loss(self, batch, self.config.loss)


# cpu and cpu-small keep width 1.0: it is the cheapest baseline on CPU (SegNet-VGG16 at full width
# costs about ten times more) and the only width the ImageNet encoder weights exist for.
PRESETS: dict[str, UNetConfig] = {
    "paper": UNetConfig(),
    "cpu": UNetConfig(),
    "cpu-small": UNetConfig(),
    "debug": dataclasses.replace(
        UNetConfig(), width_mult=0.35, decoder_channels=(64, 32, 16, 16, 8)
    ),
}

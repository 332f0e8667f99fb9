"""SegNet baseline (Badrinarayanan et al., 2017): VGG16-BN encoder, mirrored unpooling decoder.

The decoder mirrors the encoder block by block, deepest first: max-unpool with the encoder's
argmax indices (values go back to the positions they were pooled from, zeros elsewhere), then
as many 3x3 conv-BN-ReLU layers as the encoder block had, the last one narrowing to the next
shallower block's channels. A final 3x3 convolution gives the class scores.

Cost: at width 1.0 SegNet-VGG16 runs about ten times slower than the MobileNetV2 U-Net on two CPU
cores, so the cpu-small preset narrows it to width 0.25 (channels 16..128).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from stitchnet.models.base import SegmentationModel, perturb_features
from stitchnet.models.losses import check_loss_kind, supervised_loss
from stitchnet.models.vgg16 import VGG16_BLOCKS, VGG16Encoder, conv_bn_relu


@dataclass(frozen=True)
class SegNetConfig:
    in_channels: int = 1  # CT slices are grey
    num_classes: int = 4  # background, healthy lung, GGO, consolidation
    width_mult: float = 1.0  # VGG16 width; 1.0 is the original 64..512 channels
    loss: str = "ce"  # "ce" | "dice" | "focal" | "ce+dice"

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"SegNetConfig.num_classes must be >= 2, got {self.num_classes}")
        check_loss_kind(self.loss, "SegNetConfig")


class SegNet(SegmentationModel):
    """SegNet with a VGG16-BN encoder.

    Args:
        config: a `SegNetConfig`.

    `forward(x, feature_dropout)`: (B, in_channels, H, W), H and W at least 32 -> logits
    (B, num_classes, H, W). Sizes that are not multiples of 32 work too: unpooling restores each
    pre-pool size. feature_dropout p > 0 drops channels of the encoder's output (the deepest map,
    the decoder's only input besides the pooling indices).
    """

    name = "segnet"
    config_class = SegNetConfig

    def __init__(self, config: SegNetConfig) -> None:
        super().__init__(config)
        self.encoder = VGG16Encoder(config.in_channels, config.width_mult)
        chans = self.encoder.out_channels
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        blocks = []
        # Deepest first: decoder block k restores the resolution of encoder block k.
        for k in reversed(range(len(VGG16_BLOCKS))):
            n_convs = VGG16_BLOCKS[k][1]
            c_out = chans[k - 1] if k > 0 else chans[0]
            layers: list[nn.Module] = []
            for i in range(n_convs):
                layers += conv_bn_relu(chans[k], c_out if i == n_convs - 1 else chans[k])
            blocks.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(chans[0], config.num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        enc = self.encoder(x)
        y = perturb_features(enc.features[-1], feature_dropout)  # (B, C5, H/32, W/32)
        for block, idx, size in zip(
            self.decoder, reversed(enc.indices), reversed(enc.sizes), strict=True
        ):
            y = self.unpool(y, idx, output_size=size[-2:])  # (B, C_k, 2h, 2w)
            y = block(y)  # (B, C_{k-1}, 2h, 2w)
        return self.head(y)  # (B, num_classes, H, W)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return supervised_loss(self, batch, self.config.loss)


PRESETS: dict[str, SegNetConfig] = {
    "paper": SegNetConfig(),
    # Width 0.25: full-width SegNet-VGG16 is ~10x slower than the U-Net on two CPU cores.
    "cpu": dataclasses.replace(SegNetConfig(), width_mult=0.25),
    "cpu-small": dataclasses.replace(SegNetConfig(), width_mult=0.25),
    "debug": dataclasses.replace(SegNetConfig(), width_mult=0.125),
}

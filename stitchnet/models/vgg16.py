"""VGG16 with batch norm (Simonyan & Zisserman, 2015) as the encoder of SegNet.

Thirteen 3x3 conv-BN-ReLU layers in five blocks (2, 2, 3, 3, 3 convolutions), each block ending
in a 2x2 max-pool. The pools keep their argmax indices and the pre-pool sizes so that a SegNet
decoder can put each value back where it came from (max-unpooling) instead of learning to
upsample.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

# Channels of each block at width 1.0 and the number of convolutions in it.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def scaled_channels(channels: int, width_mult: float) -> int:
    """Channel count at `width_mult`, at least 4 so no layer collapses at tiny widths."""
    return max(4, int(round(channels * width_mult)))


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class VGGFeatures(NamedTuple):
    """What the encoder hands to a SegNet decoder; every list is ordered shallow to deep."""

    features: list[torch.Tensor]  # pooled output of each block, strides 2, 4, 8, 16, 32
    indices: list[torch.Tensor]  # argmax indices of each pool, same shapes as `features`
    sizes: list[torch.Size]  # (B, C, H, W) of each block's output before pooling


class VGG16Encoder(nn.Module):
    """VGG16-BN without its classifier.

    Args:
        in_channels: channels of the input image (1 for CT slices).
        width_mult: multiplier on every channel count (1.0 is the original 64..512).

    `forward(x)` with x (B, in_channels, H, W), H and W at least 32, returns a `VGGFeatures`.
    """

    def __init__(self, in_channels: int = 1, width_mult: float = 1.0) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"VGG16Encoder in_channels must be >= 1, got {in_channels}")
        if width_mult <= 0:
            raise ValueError(f"VGG16Encoder width_mult must be > 0, got {width_mult}")
        self.in_channels = in_channels
        self.width_mult = width_mult
        blocks = []
        c = in_channels
        for channels, n_convs in VGG16_BLOCKS:
            c_out = scaled_channels(channels, width_mult)
            layers: list[nn.Module] = []
            for _ in range(n_convs):
                layers += conv_bn_relu(c, c_out)
                c = c_out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.out_channels: tuple[int, ...] = tuple(
            scaled_channels(ch, width_mult) for ch, _ in VGG16_BLOCKS
        )

    def forward(self, x: torch.Tensor) -> VGGFeatures:
        if min(x.shape[-2:]) < 32:
            raise ValueError(
                f"VGG16Encoder needs height and width >= 32 (five 2x2 pools), "
                f"got {tuple(x.shape[-2:])}"
            )
        features, indices, sizes = [], [], []
        for block in self.blocks:
            x = block(x)  # (B, C_k, h, w)
            sizes.append(x.shape)
            x, idx = self.pool(x)  # (B, C_k, h // 2, w // 2)
            features.append(x)
            indices.append(idx)
        return VGGFeatures(features, indices, sizes)

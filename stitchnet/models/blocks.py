"""The SVAE's building blocks (paper Fig. 4), all from one parametrised convolution block.

`ConvBlock` is a 3x3 convolution followed by batch norm and ReLU. Where the block outputs more than
`bottleneck_above` filters (64 in the paper), the convolution is a linear bottleneck instead: 1x1
down to a quarter of the filters, 3x3, then 1x1 back up, which costs about a ninth of the
multiply-adds of a full 3x3 at that width. The paper puts batch norm and ReLU after every
convolution, so each of the three convolutions of a bottleneck gets them too. With
`residual=True` the block adds its input (the paper's ResBlock).

`Smooth` is a ConvBlock followed by `num_res` ResBlocks: 3 for the paper's Smooth, 1 for its
LightSmooth (`light_smooth`).
"""

from __future__ import annotations

import torch
from torch import nn

BOTTLENECK_ABOVE = (
    64  # the paper: linear bottlenecks "when the number of filters is greater than 64"
)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [
        # No bias: batch norm's shift makes it redundant.
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ConvBlock(nn.Module):
    """3x3 convolution (or linear bottleneck above `bottleneck_above` filters), BN, ReLU.

    Args:
        c_in: input channels.
        c_out: output channels; must equal c_in when residual.
        residual: add the input to the output (the paper's ResBlock).
        bottleneck_above: use the 1x1-3x3-1x1 bottleneck when c_out exceeds this.
    Spatial size is kept.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        residual: bool = False,
        bottleneck_above: int = BOTTLENECK_ABOVE,
    ) -> None:
        super().__init__()
        if residual and c_in != c_out:
            raise ValueError(
                f"a residual ConvBlock needs c_in == c_out to add its input, got {c_in} -> {c_out}"
            )
        self.residual = residual
        if c_out > bottleneck_above:
            mid = max(1, c_out // 4)
            layers = (
                _conv_bn_relu(c_in, mid, 1)
                + _conv_bn_relu(mid, mid, 3)
                + _conv_bn_relu(mid, c_out, 1)
            )
        else:
            layers = _conv_bn_relu(c_in, c_out, 3)
        self.body = nn.Sequential(*layers)
        if residual:
            # Zero the last BN scale so each ResBlock starts as the identity: the ladder stacks
            # ~50 BN-ReLU convs end to end, and without this the gradient grows ~1.2x per layer.
            nn.init.zeros_(layers[-2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Smooth(nn.Sequential):
    """A ConvBlock c_in -> c_out, then `num_res` residual ConvBlocks at c_out (Fig. 4b)."""

    def __init__(
        self,
        c_in: int,
        c_out: int | None = None,
        num_res: int = 3,
        bottleneck_above: int = BOTTLENECK_ABOVE,
    ) -> None:
        c_out = c_in if c_out is None else c_out
        super().__init__(
            ConvBlock(c_in, c_out, bottleneck_above=bottleneck_above),
            *(
                ConvBlock(c_out, c_out, residual=True, bottleneck_above=bottleneck_above)
                for _ in range(num_res)
            ),
        )


def res_block(channels: int, bottleneck_above: int = BOTTLENECK_ABOVE) -> ConvBlock:
    """The paper's ResBlock (Fig. 4a): a ConvBlock with a residual add."""
    return ConvBlock(channels, channels, residual=True, bottleneck_above=bottleneck_above)


def light_smooth(
    c_in: int, c_out: int | None = None, bottleneck_above: int = BOTTLENECK_ABOVE
) -> Smooth:
    """The paper's LightSmooth: a Smooth with one ResBlock instead of three."""
    return Smooth(c_in, c_out, num_res=1, bottleneck_above=bottleneck_above)


def pointwise(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 convolution, BN, ReLU: changes the channel count only (e.g. to adapt encoder widths)."""
    return nn.Sequential(*_conv_bn_relu(c_in, c_out, 1))


class UpBlock(nn.Sequential):
    """d_i -> d~_(i-1) (Fig. 5a): 4x4 transposed conv, stride 2, BN, ReLU, then LightSmooth.

    (B, c_in, h, w) -> (B, c_out, 2h, 2w). The figure keeps the filter count; here it changes to
    the next level's width so that the shared d->z map of that level accepts both the encoder's
    d_(i-1) and the decoder's d~_(i-1).
    """

    def __init__(self, c_in: int, c_out: int, bottleneck_above: int = BOTTLENECK_ABOVE) -> None:
        super().__init__(
            nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            light_smooth(c_out, bottleneck_above=bottleneck_above),
        )

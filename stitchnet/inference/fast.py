"""An eval-only copy of a model that runs faster on a CPU, with the same outputs up to rounding.

In eval mode a batch norm is a fixed per-channel affine map, y = (x - mean) / sqrt(var + eps) *
gamma + beta, so it can be folded into the convolution right before it (weights scaled per output
channel, a bias added) and replaced by an identity. Every model here builds its conv -> BN pairs
as neighbours in an `nn.Sequential` (models/blocks.py, unet.py, mobilenetv2.py, vgg16.py), so one
walk over the Sequentials finds them all. StitchNet has ~3x more BN layers per FLOP than the
U-Net (many thin convolutions in the ladder), so it gains the most.

The model passed in is never changed: training keeps its batch norms.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a conv in an nn.Sequential into that
    conv, in place; the BN becomes nn.Identity. Returns how many were folded.

    The model must be in eval mode: folding uses the running statistics, as eval does.
    """
    if model.training:
        raise ValueError("fold_batchnorm: the model is in training mode; expected model.eval()")
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
                transpose = isinstance(conv, nn.ConvTranspose2d)
                module._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                module._modules[b] = nn.Identity()
                folded += 1
    return folded


def inference_copy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A deep copy of `model` in eval mode with batch norm folded (and optionally channels-last
    weights), its gradients off. Use it under torch.inference_mode()."""
    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast

"""Segmentation losses shared by every model: small pure functions of (logits, target).

Shapes: `logits` (B, C, H, W) unnormalised scores, `target` (B, H, W) int64 class ids in [0, C).
Every loss is a scalar averaged over all B * H * W pixels (Dice: over classes, see below).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_KINDS = ("ce", "dice", "focal", "ce+dice")


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(
            f"expected logits (B, C, H, W) and target (B, H, W), got logits "
            f"{tuple(logits.shape)} and target {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree on "
            f"batch size or spatial size"
        )
    if target.numel() and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(
            f"target class ids must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes, "
            f"found range [{int(target.min())}, {int(target.max())}]; check num_classes"
        )


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of -log softmax(logits)[target]."""
    _check(logits, target)
    return F.cross_entropy(logits, target)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and the one-hot target.

    Intersections and sums are pooled over the whole batch, so a class absent from one slice
    does not make that slice's Dice undefined. `eps` is added to numerator and denominator:
    a class absent from both target and prediction then scores Dice 1 (no penalty) rather
    than 0/0, and the gradient stays finite when a class is nearly absent.
    """
    _check(logits, target)
    probs = logits.softmax(dim=1)  # (B, C, H, W)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)  # (B, C, H, W)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (C,)
    total = probs.sum(dims) + onehot.sum(dims)  # (C,)
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean over pixels of -(1 - p_t)^gamma log p_t (Lin et al., 2017); gamma = 0 gives CE.

    Down-weights pixels that are already classified confidently, which helps the rare lesion
    classes against the abundant background.
    """
    _check(logits, target)
    logp_t = logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)  # (B, H, W)
    weight = (1 - logp_t.exp()).pow(gamma)
    return -(weight * logp_t).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Dispatch on `kind`: "ce", "dice", "focal" or "ce+dice" (the plain sum of the two)."""
    if kind == "ce":
        return cross_entropy(logits, target)
    if kind == "dice":
        return soft_dice_loss(logits, target)
    if kind == "focal":
        return focal_loss(logits, target)
    if kind == "ce+dice":
        return cross_entropy(logits, target) + soft_dice_loss(logits, target)
    raise ValueError(f"unknown segmentation loss {kind!r}; expected one of {list(LOSS_KINDS)}")


def check_loss_kind(kind: str, owner: str) -> None:
    """Config-time check, so a typo fails when the config is built rather than mid-training."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"{owner}.loss is {kind!r}; expected one of {list(LOSS_KINDS)}")


def supervised_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    kind: str,
    logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """`segmentation_loss` of `model` on the rows of `batch` that have a ground-truth mask.

    Unlabelled rows are dropped before the forward pass, so they neither cost time nor move
    batch-norm statistics. With no labelled row the loss is a zero built from the parameters:
    `backward()` still runs (every gradient is zero) and a training loop needs no special case.
    `logits` (B, num_classes, H, W): the logits of EVERY row, already computed by the caller
    (one forward pass over labelled and unlabelled rows); the loss then reads their labelled rows.
    """
    labelled = batch["labelled"].bool()
    if not labelled.any():
        zero = torch.stack([p.sum() for p in model.parameters()]).sum() * 0.0
        return {"loss": zero, "seg": zero}
    if logits is None:
        logits = model(batch["image"][labelled])  # (L, num_classes, H, W)
    else:
        logits = logits[labelled]
    seg = segmentation_loss(logits, batch["mask"][labelled], kind)
    return {"loss": seg, "seg": seg}

"""Pieces the semi-supervised objectives share: pseudo-labels, the lung restriction, CutMix of a
strong view with a partner row, and the masked cross-entropy.

The lung rule (one rule for every method): where the batch carries "lung" (B, H, W) 0/1, a
pixel outside the lung field gets pseudo-label background (0) with confidence 1. Outside the lung
field the ground truth is background by definition (the classes are background, healthy lung,
GGO, consolidation), so this is a free, exact label rather than a discarded pixel. Inside the
lung the model's own pseudo-label stands. Without "lung" nothing is restricted.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from stitchnet.augment import StrongParams, apply_strong, box_masks


def pseudo_labels(
    probs: torch.Tensor,
    threshold: float,
    class_thresholds: tuple[float, ...] | None = None,
    lung: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels from class probabilities (B, C, H, W).

    A pixel is kept where its confidence (the top probability) reaches the threshold of its
    predicted class: `class_thresholds[c]` when given (class-aware), else `threshold`.
    Returns labels (B, H, W) int64, keep (B, H, W) bool, confidence (B, H, W) float.
    """
    conf, labels = probs.max(dim=1)  # (B, H, W) each
    if lung is not None:
        outside = lung == 0  # (B, H, W)
        labels = labels.masked_fill(outside, 0)
        conf = conf.masked_fill(outside, 1.0)
    if class_thresholds is None:
        thr = torch.full_like(conf, threshold)
    else:
        if len(class_thresholds) != probs.shape[1]:
            raise ValueError(
                f"class_thresholds has {len(class_thresholds)} entries; expected one per class "
                f"({probs.shape[1]})"
            )
        thr = torch.tensor(class_thresholds, dtype=conf.dtype, device=conf.device)[labels]
    return labels, conf >= thr, conf


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Pixel cross-entropy weighted by `weight` (B, H, W) (0/1 keep masks or soft weights),
    averaged over ALL pixels, as FixMatch and UniMatch do: rejected pixels count as zeros, so the
    term shrinks while few pixels pass the threshold instead of over-weighting those few."""
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B, H, W)
    return (ce * weight.to(ce.dtype)).sum() / max(ce.numel(), 1)


def cutmix_with_partner(
    images: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
    params: StrongParams,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste each row's box from its partner, the next row of the same batch (row i takes row
    (i + 1) mod n), into images (n, C, S, S), labels and keep (n, S, S), for rows whose
    `params.cutmix` is set. The partner's pseudo-labels move with its pixels (UniMatch)."""
    size = images.shape[-1]
    box = box_masks(params.box, size, params.cutmix).to(images.device)  # (n, S, S)

    def roll(t: torch.Tensor) -> torch.Tensor:
        return t.roll(-1, dims=0)  # row i now holds row i + 1 (mod n)

    images = torch.where(box.unsqueeze(1), roll(images), images)  # (n, C, S, S)
    labels = torch.where(box, roll(labels), labels)
    keep = torch.where(box, roll(keep), keep)
    return images, labels, keep


def strong_view(images: torch.Tensor, params: StrongParams) -> torch.Tensor:
    """The strong intensity view of weak views (n, C, S, S) (jitter and blur; no CutMix)."""
    return apply_strong(images, params).to(images.device)


def accepts_feature_dropout(model: torch.nn.Module) -> bool:
    """Whether `model(x, feature_dropout=p)` is supported (UniMatch's feature perturbation)."""
    return "feature_dropout" in inspect.signature(model.forward).parameters


def lesion_share(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Share of kept pixels whose pseudo-label is a lesion (GGO 2 or consolidation 3): a
    diagnostic, since a threshold that only ever passes background teaches nothing new."""
    kept = keep.sum()
    return ((labels >= 2) & keep).sum() / kept.clamp(min=1)

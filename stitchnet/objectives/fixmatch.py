"""FixMatch (Sohn et al., NeurIPS 2020) for segmentation: weak-to-strong consistency.

Each unlabelled row's weak view (the loop's mild geometric augmentation) is classified without
gradients; pixels whose confidence reaches the threshold become hard pseudo-labels for the strong
view of the same row (intensity jitter, blur, and with probability 1/2 a CutMix box pasted from
the next unlabelled row together with that row's pseudo-labels):

    loss = model.loss(batch) + lambda_u * CE(student(strong), pseudo-labels) on kept pixels

The pseudo-labels come from the student itself (FixMatch) or, with `teacher_ema` set, from an EMA
teacher. Pixels outside the lung field are background with confidence 1 (see pseudo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from stitchnet.augment import sample_strong
from stitchnet.objectives.base import Draws, Objective, rows_of
from stitchnet.objectives.pseudo import (
    cutmix_with_partner,
    lesion_share,
    masked_cross_entropy,
    pseudo_labels,
    strong_view,
)


@dataclass(frozen=True)
class FixMatchConfig:
    threshold: float = 0.95  # confidence threshold tau (Sohn et al. 2020: 0.95)
    lambda_u: float = 1.0  # weight of the unlabelled term (Sohn et al. 2020: 1)
    # Class-aware thresholds, one per class (background, healthy, GGO, consolidation), e.g.
    # (0.95, 0.95, 0.7, 0.7) to let lesion pixels through; None: `threshold` for every class.
    class_thresholds: tuple[float, float, float, float] | None = None
    cutmix: bool = True  # CutMix the strong view with a partner row (UniMatch's recipe)
    teacher_ema: float | None = None  # EMA decay of a teacher for pseudo-labels; None: student
    # Generative models: False keeps the unlabelled rows out of model.loss, so they reach the
    # model only through the consistency term (asks what the ELBO adds on top of it).
    elbo_unlabelled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")


class FixMatch(Objective):
    name: ClassVar[str] = "fixmatch"
    config_class: ClassVar[type] = FixMatchConfig
    semi_supervised: ClassVar[bool] = True
    views: ClassVar[tuple[str, ...]] = ("s1",)  # strong views drawn per row
    term_names: ClassVar[tuple[str, ...]] = ("loss_u",)  # logged parts of the unlabelled term

    def draw(self, n: int, size: int, generator: torch.Generator) -> Draws:
        return {v: sample_strong(n, size, generator) for v in self.views}

    @torch.no_grad()
    def _weak(
        self, xw: torch.Tensor, lung: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels and keep mask (u, S, S) from the weak views (u, 1, S, S)."""
        source = self.teacher if self.teacher is not None else self.model
        probs = source(xw).float().softmax(dim=1)  # (u, 4, S, S)
        cfg = self.config
        labels, keep, _ = pseudo_labels(probs, cfg.threshold, cfg.class_thresholds, lung)
        return labels, keep

    def _strong(
        self, xw: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, params
    ) -> torch.Tensor:
        """The masked CE of the student on one strong (and maybe CutMixed) view."""
        xs = strong_view(xw, params)  # (u, 1, S, S)
        if self.config.cutmix:
            xs, labels, keep = cutmix_with_partner(xs, labels, keep, params)
        return masked_cross_entropy(self.model(xs), labels, keep)

    def _model_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """model.loss on every row, or on the labelled rows alone (elbo_unlabelled=False)."""
        if self.config.elbo_unlabelled:
            return dict(self.model.loss(batch))
        rows = batch["labelled"].bool()
        return dict(self.model.loss({k: v[rows] for k, v in batch.items()}))

    def _unlabelled(self, batch: dict[str, torch.Tensor]):
        """Rows without masks: indices (u,), weak views (u, 1, S, S), lung (u, S, S) or None."""
        unl = (~batch["labelled"].bool()).nonzero().squeeze(1)
        lung = batch["lung"][unl] if "lung" in batch else None
        return unl, batch["image"][unl], lung

    def forward(
        self, batch: dict[str, torch.Tensor], draws: Draws | None = None
    ) -> dict[str, torch.Tensor]:
        terms = self._model_loss(batch)
        unl, xw, lung = self._unlabelled(batch)
        zero = terms["loss"].new_zeros(())
        extra = dict.fromkeys((*self.term_names, "mask_ratio", "lesion_share"), zero)
        if unl.numel() and draws is not None:
            labels, keep = self._weak(xw, lung)
            loss_u, parts = self._consistency(xw, labels, keep, rows_of(draws, unl.cpu()))
            terms["loss"] = terms["loss"] + loss_u
            extra.update(parts)
            extra["mask_ratio"] = keep.float().mean()
            extra["lesion_share"] = lesion_share(labels, keep)
        return {**terms, **extra}

    def _consistency(
        self, xw: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, draws: Draws
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted unlabelled term and its named parts (`term_names`), on this rank's rows."""
        loss_u = self._strong(xw, labels, keep, draws["s1"])
        return self.config.lambda_u * loss_u, {"loss_u": loss_u}


PRESETS = {"default": FixMatchConfig()}

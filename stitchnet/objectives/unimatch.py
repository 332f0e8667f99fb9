"""UniMatch (Yang et al., CVPR 2023), its medical recipe: FixMatch with two strong views and a
feature-perturbation stream.

    loss = model.loss(batch)
         + w_s1 * CE(student(strong 1), pl) + w_s2 * CE(student(strong 2), pl)
         + w_fp * CE(student(weak, feature_dropout=0.5), pl)

on the kept pixels; each strong view has its own CutMix box. UniMatch's code weighs
(loss_x + 0.25 s1 + 0.25 s2 + 0.5 fp) / 2; relative to the labelled loss that is the default
`weights` (0.25, 0.25, 0.5). The feature stream needs a model whose forward accepts
`feature_dropout`; for one that does not, the stream is left out (a warning says so) and its
term is logged as 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from stitchnet.objectives.base import Draws
from stitchnet.objectives.fixmatch import FixMatch
from stitchnet.objectives.pseudo import accepts_feature_dropout, masked_cross_entropy


@dataclass(frozen=True)
class UniMatchConfig:
    threshold: float = 0.95  # Yang et al. 2023 (medical): conf_thresh 0.95
    weights: tuple[float, float, float] = (0.25, 0.25, 0.5)  # strong 1, strong 2, feature stream
    feature_dropout: float = 0.5  # Dropout2d on the features (UniMatch: 0.5)
    class_thresholds: tuple[float, float, float, float] | None = None  # see FixMatchConfig
    cutmix: bool = True
    teacher_ema: float | None = None  # None: the student's own weak prediction (UniMatch)
    elbo_unlabelled: bool = True  # see FixMatchConfig

    def __post_init__(self) -> None:
        if len(self.weights) != 3:
            raise ValueError(f"weights needs 3 entries (s1, s2, fp), got {self.weights}")


class UniMatch(FixMatch):
    name: ClassVar[str] = "unimatch"
    config_class: ClassVar[type] = UniMatchConfig
    views: ClassVar[tuple[str, ...]] = ("s1", "s2")
    term_names: ClassVar[tuple[str, ...]] = ("loss_s1", "loss_s2", "loss_fp")

    def __init__(self, model, config) -> None:
        super().__init__(model, config)
        self.perturbs = accepts_feature_dropout(model)
        if not self.perturbs:
            warnings.warn(
                f"{type(model).__name__}.forward has no feature_dropout argument; UniMatch "
                f"runs without its feature-perturbation stream",
                stacklevel=2,
            )

    def _consistency(
        self, xw: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, draws: Draws
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            "loss_s1": self._strong(xw, labels, keep, draws["s1"]),
            "loss_s2": self._strong(xw, labels, keep, draws["s2"]),
            "loss_fp": xw.new_zeros(()),
        }
        if self.perturbs:
            logits_fp = self.model(xw, feature_dropout=self.config.feature_dropout)
            parts["loss_fp"] = masked_cross_entropy(logits_fp, labels, keep)
        w1, w2, wf = self.config.weights
        loss = w1 * parts["loss_s1"] + w2 * parts["loss_s2"] + wf * parts["loss_fp"]
        return loss, parts


PRESETS = {"default": UniMatchConfig()}

"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017).

The teacher is an exponential moving average of the student (`ema.py`). Each unlabelled row is
seen by the teacher as its weak view and by the student as a strong intensity view (jitter and
blur, no CutMix); the squared distance of their class probabilities, averaged over the lung field
(every pixel where the batch has no "lung"), is the consistency term, ramped in with a sigmoid:

    loss = model.loss(batch) + consistency * sigmoid_rampup(step, rampup_steps) * MSE
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from stitchnet.augment import sample_strong
from stitchnet.objectives.base import Draws
from stitchnet.objectives.ema import sigmoid_rampup
from stitchnet.objectives.fixmatch import FixMatch
from stitchnet.objectives.pseudo import strong_view


@dataclass(frozen=True)
class MeanTeacherConfig:
    # Tarvainen & Valpola 2017: EMA decay 0.99 during the ramp-up (0.999 after it in their
    # ImageNet runs); SSL4MIS keeps 0.99 throughout, as here.
    teacher_ema: float = 0.99
    consistency: float = 0.1  # the ramped weight's final value (SSL4MIS's medical default, 0.1)
    rampup_steps: int = 200  # sigmoid ramp-up exp(-5 (1 - t)^2) over this many steps


class MeanTeacher(FixMatch):
    # A FixMatch subclass only for `_unlabelled`; it draws and weighs its own way.
    name: ClassVar[str] = "mean_teacher"
    config_class: ClassVar[type] = MeanTeacherConfig

    def draw(self, n: int, size: int, generator: torch.Generator) -> Draws:
        return {"s1": sample_strong(n, size, generator)}

    def forward(
        self, batch: dict[str, torch.Tensor], draws: Draws | None = None
    ) -> dict[str, torch.Tensor]:
        terms = dict(self.model.loss(batch))
        unl, xw, lung = self._unlabelled(batch)
        cfg = self.config
        weight = cfg.consistency * sigmoid_rampup(int(self.steps), cfg.rampup_steps)
        zero = terms["loss"].new_zeros(())
        mse = zero
        if unl.numel() and draws is not None:
            with torch.no_grad():
                target = self.teacher(xw).float().softmax(dim=1)  # (u, 4, S, S)
            student = self.model(strong_view(xw, draws["s1"].rows(unl.cpu()))).softmax(dim=1)
            sq = (student - target).pow(2).sum(dim=1)  # (u, S, S)
            field = torch.ones_like(sq) if lung is None else lung.to(sq.dtype)
            # Mean over lung pixels, and over the 4 classes as the usual MSE does.
            mse = (sq * field).sum() / (field.sum().clamp(min=1) * target.shape[1])
            terms["loss"] = terms["loss"] + weight * mse
        return {**terms, "consistency": mse, "consistency_weight": zero + weight}


PRESETS = {"default": MeanTeacherConfig()}

"""Bidirectional copy-paste (BCP; Bai et al., CVPR 2023), in its self-training stage.

A labelled row l (mask y) is paired with an unlabelled row u (teacher pseudo-label p). With the
box M (side 2/3 of the slice, random position: the paper's beta = 2/3):

    in  = l outside M, u inside M     target y outside, p inside
    out = u outside M, l inside M     target p outside, y inside

The student's cross-entropy on both mixed images weighs pseudo-labelled pixels by alpha = 0.5
(the paper's default), and the teacher is an EMA of the student (decay 0.99). Pairs are taken in
row order on each rank, as many as the smaller of the two shares. Differences from the paper:
no separate pre-training stage (the model's own loss runs alongside from step 1), and the mixed
loss is CE only (the paper adds Dice). Pixels outside the lung field are background (pseudo.py).

    loss = model.loss(batch) + weight * (CE_in + CE_out) / 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from stitchnet.augment import StrongSpec, box_masks, sample_strong
from stitchnet.objectives.base import Draws
from stitchnet.objectives.fixmatch import FixMatch
from stitchnet.objectives.pseudo import masked_cross_entropy, pseudo_labels


@dataclass(frozen=True)
class BCPConfig:
    teacher_ema: float = 0.99  # Bai et al. 2023: EMA decay 0.99
    alpha: float = 0.5  # weight of pseudo-labelled pixels in the mixed loss (paper: 0.5)
    box_side: float = 2 / 3  # the pasted box's side as a fraction of the slice (paper: 2/3)
    weight: float = 1.0  # weight of the mixed loss beside model.loss(batch)


class BCP(FixMatch):
    name: ClassVar[str] = "bcp"
    config_class: ClassVar[type] = BCPConfig

    def draw(self, n: int, size: int, generator: torch.Generator) -> Draws:
        area = self.config.box_side**2
        spec = StrongSpec(cutmix_p=1.0, cutmix_area=(area, area), cutmix_ratio=(1.0, 1.0))
        return {"box": sample_strong(n, size, generator, spec)}

    def forward(
        self, batch: dict[str, torch.Tensor], draws: Draws | None = None
    ) -> dict[str, torch.Tensor]:
        terms = dict(self.model.loss(batch))
        lab = batch["labelled"].bool().nonzero().squeeze(1)
        unl, _, _ = self._unlabelled(batch)
        n = min(lab.numel(), unl.numel())
        zero = terms["loss"].new_zeros(())
        extra = {"loss_mix": zero, "pseudo_lesion": zero}
        if n and draws is not None:
            lab, unl = lab[:n], unl[:n]
            xl, yl, xu = batch["image"][lab], batch["mask"][lab], batch["image"][unl]
            lung = batch["lung"][unl] if "lung" in batch else None
            with torch.no_grad():
                probs = self.teacher(xu).float().softmax(dim=1)  # (n, 4, S, S)
            yu, _, _ = pseudo_labels(probs, 0.0, None, lung)  # hard labels, every pixel kept
            size = xl.shape[-1]
            m = box_masks(draws["box"].rows(lab.cpu()).box, size).to(xl.device)  # (n, S, S)
            a = self.config.alpha
            x_in = torch.where(m.unsqueeze(1), xu, xl)  # (n, 1, S, S)
            x_out = torch.where(m.unsqueeze(1), xl, xu)
            y_in, y_out = torch.where(m, yu, yl), torch.where(m, yl, yu)  # (n, S, S)
            w_in = torch.where(m, a, 1.0)  # pseudo-labelled pixels weigh alpha
            w_out = torch.where(m, 1.0, a)
            logits = self.model(torch.cat([x_in, x_out]))  # (2n, 4, S, S)
            loss_mix = masked_cross_entropy(
                logits, torch.cat([y_in, y_out]), torch.cat([w_in, w_out]).float()
            )
            terms["loss"] = terms["loss"] + self.config.weight * loss_mix
            extra = {"loss_mix": loss_mix, "pseudo_lesion": (yu >= 2).float().mean()}
        return {**terms, **extra}


PRESETS = {"default": BCPConfig()}

"""One-pass weak-to-strong consistency: FixMatch whose strong views ride in the model's own pass.

UniMatch (`unimatch.py`) runs the student four times a step (model.loss over every row, two
strong views and a feature-perturbed view of the unlabelled rows) plus a no-grad pass for the
pseudo-labels: ~7x a supervised U-Net step at preset cpu, against the comparison's target of
<= 3x. Here the student runs once:

    labels, keep = threshold(no-grad pass over the weak views)                     (FixMatch)
    x            = the labelled rows as they are, each unlabelled row replaced by its strong
                   view (intensity jitter, blur, CutMix with the next unlabelled row)
    terms, logits = model.loss_with_logits(x)      # supervised loss / ELBO, and every row's logits
    loss         = terms["loss"] + lambda_u * CE(logits[unlabelled], labels) on kept pixels

For a generative model the unlabelled rows' ELBO is then the ELBO of their strong views, a
regulariser on augmented images instead of the weak ones; for a discriminative model the
unlabelled rows now pass through its batch norm with the labelled ones (as in UniMatch).

Lesion paste (`lesion_paste` p > 0, for few labels): with probability p, an unlabelled row takes
the GGO and consolidation pixels of a labelled row of the same batch (row i takes labelled row
i mod L) inside its own lung field, with their ground-truth classes, kept whatever the threshold,
before its strong view is made. With 5 labelled slices the unlabelled stream then meets the few
labelled lesions in many other lungs: copy-paste between labelled and unlabelled slices (BCP's
idea) at the lesions' own outline instead of a box. The "paste" draw's `cutmix` flags say which
rows take a paste; with p = 0 nothing is drawn for it, so the random stream is FixMatch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from stitchnet.augment import StrongSpec, sample_strong
from stitchnet.objectives.base import Draws, rows_of
from stitchnet.objectives.fixmatch import FixMatch
from stitchnet.objectives.pseudo import (
    cutmix_with_partner,
    lesion_share,
    masked_cross_entropy,
    strong_view,
)


@dataclass(frozen=True)
class OnePassConfig:
    threshold: float = 0.95  # FixMatch's tau (Sohn et al. 2020)
    lambda_u: float = 1.0  # FixMatch's weight of the unlabelled term
    class_thresholds: tuple[float, float, float, float] | None = None  # see FixMatchConfig
    cutmix: bool = True  # CutMix the strong view with the next unlabelled row (UniMatch)
    teacher_ema: float | None = None  # EMA teacher for pseudo-labels; None: the student's own
    lesion_paste: float = 0.0  # probability that an unlabelled row takes a labelled row's lesions

    def __post_init__(self) -> None:
        for name in ("threshold", "lesion_paste"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


class OnePass(FixMatch):
    name: ClassVar[str] = "one_pass"
    config_class: ClassVar[type] = OnePassConfig

    def draw(self, n: int, size: int, generator: torch.Generator) -> Draws:
        draws = {"s1": sample_strong(n, size, generator)}
        if self.config.lesion_paste > 0:
            spec = StrongSpec(cutmix_p=self.config.lesion_paste)
            draws["paste"] = sample_strong(n, size, generator, spec)
        return draws

    def forward(
        self, batch: dict[str, torch.Tensor], draws: Draws | None = None
    ) -> dict[str, torch.Tensor]:
        unl, xw, lung = self._unlabelled(batch)
        if not unl.numel() or draws is None:
            terms = dict(self.model.loss(batch))
            zero = terms["loss"].new_zeros(())
            return {
                **terms,
                **dict.fromkeys(("loss_u", "mask_ratio", "lesion_share", "pasted"), zero),
            }
        mine = rows_of(draws, unl.cpu())
        labels, keep = self._weak(xw, lung)
        pasted = torch.zeros_like(keep)
        if "paste" in mine:
            xw, labels, keep, pasted = paste_lesions(
                batch, xw, labels, keep, lung, mine["paste"].cutmix
            )
        xs = strong_view(xw, mine["s1"])  # (u, 1, S, S)
        if self.config.cutmix:
            xs, labels, keep = cutmix_with_partner(xs, labels, keep, mine["s1"])
        image = batch["image"].index_copy(0, unl, xs)  # strong views in the unlabelled rows
        terms, logits = self.model.loss_with_logits({**batch, "image": image})
        terms = dict(terms)
        loss_u = masked_cross_entropy(logits[unl], labels, keep)
        terms["loss"] = terms["loss"] + self.config.lambda_u * loss_u
        return {
            **terms,
            "loss_u": loss_u,
            "mask_ratio": keep.float().mean(),
            "lesion_share": lesion_share(labels, keep),
            "pasted": pasted.float().mean(),
        }


def paste_lesions(
    batch: dict[str, torch.Tensor],
    xw: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
    lung: torch.Tensor | None,
    use: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste labelled lesions into the weak views of unlabelled rows.

    Args:
        batch: the step's batch (labelled rows give images and masks).
        xw: weak views (u, 1, S, S) of the unlabelled rows; labels, keep: their pseudo-labels and
            keep mask (u, S, S); lung: their lung fields (u, S, S) or None (no restriction).
        use: (u,) bool, the rows that take a paste.
    Returns xw, labels, keep with the pasted pixels (ground-truth classes, kept), and the pasted
    mask (u, S, S). Row i takes labelled row i mod L; with no labelled row nothing changes.
    """
    lab = batch["labelled"].bool().nonzero().squeeze(1)  # (L,)
    if not lab.numel():
        return xw, labels, keep, torch.zeros_like(keep)
    partner = lab[torch.arange(len(xw), device=lab.device) % lab.numel()]  # (u,)
    yl = batch["mask"][partner]  # (u, S, S)
    m = (yl >= 2) & use.to(yl.device)[:, None, None]  # GGO or consolidation, rows that paste
    if lung is not None:
        m = m & lung.bool()
    xw = torch.where(m.unsqueeze(1), batch["image"][partner], xw)
    return xw, torch.where(m, yl, labels), keep | m, m


PRESETS = {"default": OnePassConfig()}

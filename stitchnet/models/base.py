"""The one interface every model implements, so one training loop and one evaluator serve all.

Batch contract (what the training loop passes to `loss`):
    batch["image"]    float32 (B, 1, H, W) in [0, 1]
    batch["mask"]     int64   (B, H, W) class ids 0..3 (rows where labelled is False hold zeros)
    batch["labelled"] bool    (B,) True where the row has a ground-truth mask

`forward(x, feature_dropout=0.0)` returns segmentation logits (B, 4, H, W): what the evaluator
and `predict` use. `feature_dropout` p > 0 applies `F.dropout2d(features, p)` (always, in train or
eval mode) to the features right before the model's decoder or head: UniMatch's feature-
perturbation stream. Each model's forward says which features; p = 0 is exactly the plain forward.
`loss(batch)` returns a dict of named scalar terms; "loss" is the one that is minimised.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stitchnet.models.losses import supervised_loss


def perturb_features(features: torch.Tensor, p: float) -> torch.Tensor:
    """`F.dropout2d(features, p)` in training style whatever the module's mode; p = 0: `features`.

    Whole channels are zeroed and the rest scaled by 1 / (1 - p), as UniMatch's medical U-Net
    perturbs its encoder features. Draws from torch's global generator, so a fixed
    `torch.manual_seed` gives the same channels. Returning the input itself at p = 0 keeps the
    plain forward bitwise unchanged.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"feature_dropout must lie in [0, 1), got {p}")
    return F.dropout2d(features, p, training=True) if p > 0 else features


class SegmentationModel(nn.Module):
    """Base class: subclasses set `name`, `config_class`, and implement forward and loss."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    uses_unlabelled: ClassVar[bool] = False  # True: rows with labelled=False contribute to the loss

    def __init__(self, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 4, H, W) logits; see the module docstring for feature_dropout."""
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss_with_logits(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`loss(batch)` and the class logits (B, 4, H, W) of EVERY row, from one forward pass,
        so that an objective can score the unlabelled rows without running the model again.

        This default serves the discriminative models (their config names a supervised `loss`):
        one forward over all rows, the supervised loss on the labelled ones. Unlike `loss`, the
        unlabelled rows then pass through the network (and its batch-norm statistics) too.
        Generative models override it.
        """
        logits = self(batch["image"])  # (B, 4, H, W)
        return supervised_loss(self, batch, self.config.loss, logits), logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class ids (B, H, W) from logits."""
        return self.forward(x).argmax(dim=1)

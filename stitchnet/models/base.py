"""The one interface every model implements, so one training loop and one evaluator serve all.

Batch contract (what the training loop passes to `loss`):
    batch["image"]    float32 (B, 1, H, W) in [0, 1]
    batch["mask"]     int64   (B, H, W) class ids 0..3 (rows where labelled is False hold zeros)
    batch["labelled"] bool    (B,) True where the row has a ground-truth mask

`forward(x)` returns segmentation logits (B, 4, H, W): what the evaluator and `predict` use.
`loss(batch)` returns a dict of named scalar terms; "loss" is the one that is minimised.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,1,H,W) -> (B,4,H,W)
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class ids (B, H, W) from logits."""
        return self.forward(x).argmax(dim=1)

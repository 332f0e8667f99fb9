"""`none`: today's behaviour, the model's own loss and nothing else (bitwise the same loss).

Semi-supervised models (StitchNet, the SVAE) still see unlabelled rows through their ELBO;
supervised models (U-Net, SegNet) train on labelled rows only.
"""

from __future__ import annotations

from typing import ClassVar

from stitchnet.objectives.base import NoConfig, Objective


class Supervised(Objective):
    name: ClassVar[str] = "none"
    config_class: ClassVar[type] = NoConfig


PRESETS = {"default": NoConfig()}

"""The objective: what the one training loop asks for a step's loss.

An `Objective` wraps the model and is the module DistributedDataParallel wraps (DDP averages
gradients only after a call of its own forward, and every student pass of a step happens inside
this forward). The loop calls, each step:

    draws = objective.draw(n, size, generator)   # strong views / boxes of the whole global batch,
                                                 # from the loop's seeded generator (None: nothing)
    terms = wrapped(batch, draws.rows(mine))     # forward: named scalar terms, "loss" minimised
    ...backward, guarded optimizer step...
    objective.after_step(skipped)                # e.g. the EMA teacher, only on applied steps

`model.loss(batch)` (the supervised loss, or the ELBO of a generative model) is called ONCE per
step: StitchNet's KL warm-up counter advances inside it. Consistency terms are added on top.

The teacher (if any) is a frozen copy of the model held by the objective: its parameters do not
require gradients, so DDP neither reduces nor reports them, and `objective_state()` (stored in
last.pt as "objective_state") carries it with the step counters. Validation, best.pt and
`TrainResult.model` use the STUDENT weights (`eval_model()`): one rule for every objective, and
the student is what the optimizer state in last.pt belongs to.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from stitchnet.augment import StrongParams
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives.ema import ema_update

Draws = dict[str, StrongParams]


def rows_of(draws: Draws | None, index: torch.Tensor) -> Draws | None:
    """One rank's rows of the global batch's draws."""
    return None if draws is None else {k: v.rows(index) for k, v in draws.items()}


class Objective(nn.Module):
    """Base class: `forward(batch, draws)` returns the model's own loss terms unchanged.

    Subclasses set `name` and `config_class`, and override `draw` and `forward`. A config with a
    `teacher_ema` decay (not None) gets an EMA teacher, updated in `after_step`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    semi_supervised: ClassVar[bool] = False  # True: unlabelled rows feed a consistency term

    def __init__(self, model: SegmentationModel, config: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        if self.semi_supervised and not getattr(model, "segments", True):
            raise ValueError(
                f"objective {self.name!r} needs class logits from model.forward, but "
                f"{model.name!r} returns an image (segments=False); use objective 'none'"
            )
        self.model = model
        self.config = config
        self.teacher: SegmentationModel | None = None
        if getattr(config, "teacher_ema", None) is not None:
            self._make_teacher()
        # Steps seen (applied or skipped) and updates applied: ramps and the EMA warm-up use them.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def uses_unlabelled(self) -> bool:
        """Whether the loop should put unlabelled rows in each batch."""
        return self.semi_supervised or bool(self.model.uses_unlabelled)

    def draw(self, n: int, size: int, generator: torch.Generator) -> Draws | None:
        """Random draws for the n rows of the whole global batch (identical on every rank)."""
        return None

    def forward(
        self, batch: dict[str, torch.Tensor], draws: Draws | None = None
    ) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)

    def after_step(self, skipped: bool) -> None:
        """Called once per step after the optimizer step (or the skip): the EMA moves only on
        applied steps, so a skipped NaN step cannot leak into the teacher."""
        decay = getattr(self.config, "teacher_ema", None)  # None: no teacher, or a frozen one
        if self.teacher is not None and decay is not None and not skipped:
            ema_update(self.teacher, self.model, decay, int(self.updates))
        self.steps += 1
        self.updates += int(not skipped)

    def eval_model(self) -> SegmentationModel:
        """The weights validation, best.pt and TrainResult.model use: the student."""
        return self.model

    def objective_state(self) -> dict[str, torch.Tensor]:
        """Everything but the student: the teacher's state and the step counters."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_objective_state(self, state: dict[str, torch.Tensor], where: str = "") -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("model.")]
        if missing or unexpected:
            raise ValueError(
                f"{where or 'objective state'}: does not fit objective {self.name!r} "
                f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})"
            )

    # Helpers shared by the semi-supervised methods.

    def _make_teacher(self) -> None:
        """A frozen copy of the student, in eval mode (BatchNorm uses its averaged statistics)."""
        self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Objective:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never trains: no BN statistics of its own
        return self


@dataclass(frozen=True)
class NoConfig:
    """The supervised objective has no settings."""

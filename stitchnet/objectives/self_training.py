"""Self-training (ST; Yang et al., "ST++: Make Self-training Work Better for Semi-supervised
Semantic Segmentation", CVPR 2022): a student learns from a finished supervised teacher.

    teacher  = a supervised run's best.pt (any segmenting model), frozen, in eval mode
    labels   = argmax teacher(weak view), on EVERY pixel (ST has no confidence threshold);
               outside the lung field: background (the project's lung rule, pseudo.py)
    student  = trained from scratch, one pass a step as in `one_pass`: the labelled rows as
               they are, each unlabelled row replaced by its strong view (intensity jitter,
               blur, CutMix with the next unlabelled row, moving the labels with it)
    loss     = model.loss_with_logits(batch)["loss"] + lambda_u * CE(student(strong), labels)

Unlike FixMatch or UniMatch the pseudo-labels do not come from the model being trained, so they
cannot drift with it: they are as good as a converged supervised model, from the first step on.
ST labels the unlabelled set once, offline; here the frozen teacher labels each unlabelled row
when the loop draws it, which gives the same labels on the unaugmented image and lets the weak
geometric augmentation move image and labels together. ST's strong views are colour jitter,
grayscale, blur and CutOut; CT has no colour, so they are this project's strong views. ST++'s
selection of reliable images (the stability of the teacher's predictions over its checkpoints)
is left out: it needs the teacher's earlier checkpoints, which a run folder does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from stitchnet.checkpoint import model_from_checkpoint
from stitchnet.objectives.one_pass import OnePass, OnePassConfig


@dataclass(frozen=True)
class SelfTrainingConfig(OnePassConfig):
    # A supervised run folder (its best.pt) or a checkpoint file: the frozen teacher.
    teacher: str = ""
    threshold: float = 0.0  # ST: every pixel's hard pseudo-label counts (no threshold)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError(
                "self_training needs a teacher: a supervised run folder or checkpoint, e.g. "
                "--ssl-set teacher=runs/unet (train it first with --ssl none)"
            )
        if self.teacher_ema is not None:
            raise ValueError("self_training's teacher is frozen: leave teacher_ema unset")


class SelfTraining(OnePass):
    """One-pass consistency whose pseudo-labels come from a frozen, finished supervised model.

    The teacher is stored in the objective's state (last.pt), so a resumed run labels with the
    same weights even if the teacher's folder has changed since.
    """

    name: ClassVar[str] = "self_training"
    config_class: ClassVar[type] = SelfTrainingConfig

    def __init__(self, model, config: SelfTrainingConfig) -> None:
        super().__init__(model, config)
        device = next(model.parameters()).device
        teacher, _ = model_from_checkpoint(config.teacher, map_location=device)
        if not getattr(teacher, "segments", True):
            raise ValueError(
                f"self_training's teacher {config.teacher} is a {teacher.name!r} model, which "
                "returns an image, not class logits"
            )
        self.teacher = teacher.requires_grad_(False).eval()

"""Frozen run configuration and the named presets.

One `RunConfig` describes a whole training run: which model (by registry name) with which model
config, how the data is prepared and how training proceeds. Presets are derived with
`dataclasses.replace`, never mutated. Everything round-trips through plain dicts (JSON/YAML).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PRESETS = ("paper", "cpu", "cpu-small", "debug")
CLASS_NAMES = ("background", "healthy", "ggo", "consolidation")
NUM_CLASSES = 4


@dataclass(frozen=True)
class DataConfig:
    """How slices are turned into model inputs (the paper's pre-processing)."""

    image_size: int = 352  # square working size; must be a multiple of 32 (five stride-2 levels)
    crop_to_lung: bool = (
        True  # crop to the lung field's bounding box (paper: "cropped to lung field")
    )
    crop_margin: float = 0.05  # margin around the lung box, as a fraction of the box side
    morph_radius: int = 3  # disk radius (px at 256 px) for the opening and closing of the lung mask
    lung_window: tuple[float, float] = (-1250.0, 250.0)  # HU window mapped to [0, 1] (DICOM/NIfTI)
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.image_size % 32 != 0 or self.image_size <= 0:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (five stride-2 levels), "
                f"got {self.image_size}; try {max(32, round(self.image_size / 32) * 32)}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training loop serves every model; these are its knobs."""

    epochs: int = 80
    batch_size: int = 8  # labelled slices per step
    unlabelled_batch_size: int = 0  # unlabelled slices per step (0: labelled only)
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # clip the gradient norm to this (None: no clipping)
    # A step whose gradient norm exceeds this is skipped, not applied. Set far above healthy steps:
    # StitchNet's raw norms are ~1e6-1e7 at initialisation (each BN-normalised one-channel latent
    # multiplies the gradient ~30-70x on its way up the ladder); clipping to `grad_clip` then
    # rescales them, as in the authors' code.
    skip_grad_norm: float | None = 1e10
    seed: int = 0
    augment: bool = True
    channels_last: bool = False
    max_labelled: int | None = (
        None  # use only the first N labelled training slices (label efficiency)
    )
    steps_per_epoch: int | None = None  # None: one pass over the labelled training slices
    eval_every: int = 1  # validate every N epochs
    checkpoint_every: int = 1  # write last.pt every N epochs (and after the last one)
    log_every: int = 10  # steps between CSV log lines
    # Scanner variation (HU offset, noise, kernel, slice thickness) on every training image, with
    # or without `augment`: None is off; a dict of stitchnet.scanner_aug.ScannerAugSpec fields
    # ({}: its defaults) is on. Kept a dict so this module needs no torch.
    scanner_aug: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunConfig:
    model: str
    model_config: dict[str, Any]  # the model's own frozen config, as a dict (see models.registry)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "paper"
    # The semi-supervised objective (stitchnet.objectives: "none", "mean_teacher", "fixmatch",
    # "unimatch", "bcp") and its config as a dict ({}: the method's paper defaults).
    objective: str = "none"
    objective_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        data = _from_dict(DataConfig, d.get("data", {}))
        train = _from_dict(TrainConfig, d.get("train", {}))
        return cls(
            model=d["model"],
            model_config=dict(d.get("model_config", {})),
            data=data,
            train=train,
            preset=d.get("preset", "paper"),
            objective=d.get("objective", "none"),
            objective_config=dict(d.get("objective_config", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(klass: type, d: dict[str, Any]) -> Any:
    """Build a frozen dataclass from a dict, refusing unknown keys (a typo must not pass)."""
    names = {f.name: f for f in fields(klass)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(
            f"unknown {klass.__name__} keys {unknown}; expected some of {sorted(names)}"
        )
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return klass(**kwargs)


def from_dict(klass: type, d: dict[str, Any]) -> Any:
    return _from_dict(klass, d)


# Data and training presets. Model presets live beside each model (see models.registry).
DATA_PRESETS: dict[str, DataConfig] = {
    "paper": DataConfig(image_size=352),
    # 2 CPU cores: 128 px keeps small lesions that 64 px loses; the recommended model in <= 30 min.
    "cpu": DataConfig(image_size=128),
    "cpu-small": DataConfig(image_size=64),  # 2 CPU cores: the whole comparison in < 30 min
    "debug": DataConfig(image_size=64),
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(epochs=80, batch_size=8, lr=3e-4, grad_clip=1.0),
    # 60 epochs of 4 labelled batches of 8 = 240 steps at 128 px (see docs/methods.md, "cpu").
    "cpu": TrainConfig(
        epochs=60, batch_size=8, lr=1e-3, grad_clip=1.0, eval_every=3, checkpoint_every=5
    ),
    # 36 epochs of 4 steps: StitchNet needs ~100-125 steps to leave the "no lesion" plateau.
    # Validating every 2 and checkpointing every 4 epochs keeps those costs below ~10 %.
    "cpu-small": TrainConfig(
        epochs=36, batch_size=8, lr=1e-3, grad_clip=1.0, eval_every=2, checkpoint_every=4
    ),
    "debug": TrainConfig(epochs=2, batch_size=4, lr=1e-3, grad_clip=1.0, augment=False),
}


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    return preset

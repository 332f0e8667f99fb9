"""Objective registry: the semi-supervised methods, each built by name from its frozen config.

Each module defines an `Objective` subclass, its frozen `<Method>Config` with its paper's
defaults, and `PRESETS = {"default": <Method>Config()}` (not `self_training`, whose config needs
the user's own supervised run as its teacher). `build_objective(name, model, config)`
answers a wrong name with the valid ones. See docs/objectives.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from stitchnet.config import from_dict
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives.base import Objective

# name -> (module, class). Imported lazily, like the model registry.
_REGISTRY: dict[str, tuple[str, str]] = {
    "none": ("stitchnet.objectives.supervised", "Supervised"),
    "mean_teacher": ("stitchnet.objectives.mean_teacher", "MeanTeacher"),
    "fixmatch": ("stitchnet.objectives.fixmatch", "FixMatch"),
    "unimatch": ("stitchnet.objectives.unimatch", "UniMatch"),
    "bcp": ("stitchnet.objectives.bcp", "BCP"),
    "one_pass": ("stitchnet.objectives.one_pass", "OnePass"),
    "self_training": ("stitchnet.objectives.self_training", "SelfTraining"),
}
OBJECTIVES = tuple(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; expected one of {list(OBJECTIVES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def objective_config(name: str, config: Any = None) -> Any:
    """The method's config: its paper defaults, updated by a dict (unknown keys are refused) or
    given whole as the config object."""
    klass = objective_class(name).config_class
    if config is None or isinstance(config, klass):
        return config if config is not None else klass()
    if isinstance(config, dict):
        return from_dict(klass, config)
    raise TypeError(f"objective config must be a dict or {klass.__name__}, got {config!r}")


def build_objective(name: str, model: SegmentationModel, config: Any = None) -> Objective:
    """Wrap `model` in the objective `name` (see OBJECTIVES) with `config` (dict, object, None)."""
    return objective_class(name)(model, objective_config(name, config))


__all__ = ["OBJECTIVES", "Objective", "build_objective", "objective_class", "objective_config"]

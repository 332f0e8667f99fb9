"""Model registry: every model is built by name from its own frozen config.

Each model module defines `<Model>` (a `SegmentationModel`), its frozen `<Model>Config`, and
`PRESETS: dict[str, <Model>Config]` keyed by "paper", "cpu", "cpu-small", "debug".
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from stitchnet.config import check_preset, from_dict
from stitchnet.models.base import SegmentationModel

# name -> (module, class). Imported lazily so `import stitchnet` stays cheap.
_REGISTRY: dict[str, tuple[str, str]] = {
    "unet": ("stitchnet.models.unet", "UNet"),
    "segnet": ("stitchnet.models.segnet", "SegNet"),
    "stitchnet": ("stitchnet.models.stitchnet", "StitchNet"),
    # The unshared ladder-VAE ablation: StitchNet with shared=False (separate d->z modules).
    "ladder": ("stitchnet.models.stitchnet", "StitchNet"),
    "svae": ("stitchnet.models.svae", "SVAE"),
    # Beyond the paper: StitchNet whose pi also reads the encoder's maps through U-Net skips.
    "stitchnet-skip": ("stitchnet.models.stitchnet_skip", "StitchNetSkip"),
}
# Config fields that a registry name fixes on top of the model's own presets.
_NAME_OVERRIDES: dict[str, dict[str, Any]] = {"ladder": {"shared": False}}

MODEL_NAMES = tuple(_REGISTRY)


def model_class(name: str) -> type[SegmentationModel]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {list(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def model_config(name: str, preset: str = "paper", **overrides: Any) -> Any:
    """The model's preset config with the registry name's and the caller's overrides applied."""
    check_preset(preset)
    module = importlib.import_module(_REGISTRY[name][0]) if name in _REGISTRY else None
    if module is None:
        raise ValueError(f"unknown model {name!r}; expected one of {list(_REGISTRY)}")
    base = module.PRESETS[preset]
    return dataclasses.replace(base, **{**_NAME_OVERRIDES.get(name, {}), **overrides})


def config_from_dict(name: str, d: dict[str, Any]) -> Any:
    return from_dict(model_class(name).config_class, d)


def build_model(name: str, config: Any = None, preset: str = "paper") -> SegmentationModel:
    """Build a model by registry name; `config` may be the config object, a dict, or None."""
    klass = model_class(name)
    if config is None:
        config = model_config(name, preset)
    elif isinstance(config, dict):
        config = config_from_dict(name, config)
    return klass(config)


__all__ = ["MODEL_NAMES", "SegmentationModel", "build_model", "model_class", "model_config"]

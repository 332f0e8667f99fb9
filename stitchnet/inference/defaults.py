"""The default model that ships in the package: where it is, how it loads, what it is.

`stitchnet segment SCAN --out DIR` without --model uses stitchnet/assets/default_model.pt: a
StitchNet checkpoint (checkpoint.py's format, so `load_checkpoint` checks it) whose weights are
stored in float16 to keep the file small, with no optimizer or RNG state. Beside it,
default_model.json records how it was made: the training command, the data, the dates, the
hardware, and its test scores as `stitchnet evaluate` computes them, on the run's own test split,
with the float16 weights as shipped.

It is made (or replaced) from a trained run folder by stitchnet/make_default.py, which lives
outside this package because it scores the weights through the plain API, and segmenting a scan
must not import the training loop that API brings:

    python -m stitchnet.make_default RUN_DIR [--labelled data/medseg_covid19_train50]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from stitchnet.checkpoint import model_from_checkpoint, resolve_checkpoint
from stitchnet.config import RunConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "default_model.pt"
DEFAULT_INFO = ASSETS / "default_model.json"
MAKE_COMMAND = "python -m stitchnet.make_default RUN_DIR"


def load_segmentation_model(
    path: str | Path | None = None,
) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """(model in eval mode with float32 weights, its RunConfig, a short description).

    `path`: a run folder (its best.pt) or a checkpoint; None: the shipped default model. The
    default's float16 weights become float32 on load: `load_state_dict` copies each tensor into
    the float32 parameter the model was built with.
    """
    if path is None:
        if not DEFAULT_MODEL.is_file():
            raise FileNotFoundError(
                f"{DEFAULT_MODEL}: the default model is not installed; pass --model RUN_DIR or "
                f"make it with `{MAKE_COMMAND}`"
            )
        path = DEFAULT_MODEL
    model, ckpt = model_from_checkpoint(path)
    info = {
        "path": str(resolve_checkpoint(path)),
        "model_name": ckpt["model_name"],
        "default": Path(path) == DEFAULT_MODEL,
        "epoch": ckpt.get("epoch"),
        "stitchnet_version": ckpt.get("stitchnet_version"),  # the code that trained it
    }
    return model.float().eval(), RunConfig.from_dict(ckpt["run_config"]), info


def default_model_summary() -> str:
    """One paragraph for `stitchnet segment --help`: what the shipped default model is."""
    if not DEFAULT_INFO.is_file():
        return f"No default model is installed; make one with `{MAKE_COMMAND}`."
    info = json.loads(DEFAULT_INFO.read_text())
    scores = info.get("test_scores", {})
    dice = scores.get("lesion_dice")
    return (
        f"Default model: {info.get('model_name')} ({info.get('status', '')}), trained "
        f"{info.get('trained', '?')} on {info.get('hardware', '?')} with `{info.get('command')}`; "
        f"test lesion Dice {dice if dice is None else round(dice, 3)} on "
        f"{scores.get('n_images', '?')} test slices of {info.get('data')}. "
        f"Details: {DEFAULT_INFO.name} beside the weights; remake it with `{MAKE_COMMAND}`."
    )

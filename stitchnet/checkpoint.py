"""Self-describing checkpoints: a checkpoint alone rebuilds the model that wrote it.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so it loads with
`torch.load(weights_only=True)`, which runs no pickled code):

    format            "stitchnet-checkpoint"
    format_version    bumped when the layout changes in a way old readers cannot follow
    stitchnet_version the package version that wrote it
    model_name        registry name (see stitchnet.models), model_config: the model's config dict
    run_config        the whole RunConfig as a dict; seed: its training seed
    epoch, step       training progress when written (epoch = epochs completed)
    metrics           validation metrics at that point (may be empty)
    split             slice ids per part, e.g. {"train": [...], "val": [...]}
    model_state       the model's state dict; optimizer_state: the optimizer's (or None)
    rng               random-number-generator states, so a resumed run continues exactly
    objective_name    the training objective (stitchnet.objectives), objective_config: its config
    objective_state   the objective's own state: its EMA teacher and step counters (last.pt; {}
                      where there is none to keep). Version 1 files read as objective "none".
    extra             anything else the writer needs back (training history, best score, ...)

Files are written to a temporary name and renamed, so a crash never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

import stitchnet
from stitchnet.config import RunConfig
from stitchnet.models import build_model
from stitchnet.models.base import SegmentationModel

FORMAT = "stitchnet-checkpoint"
FORMAT_VERSION = 2  # 2: objective_name, objective_config, objective_state
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


class CheckpointError(ValueError):
    """A file that exists but cannot be used as the checkpoint the caller asked for."""


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Write `path` through `write(file)` on a temporary sibling, then rename it into place.

    The rename is atomic on one filesystem, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged_dir(out_dir: str | Path, prefix: str) -> Iterator[Path]:
    """A temporary folder beside `out_dir`, renamed to it when the block ends without an error
    and removed when it raises: an output folder is either complete or absent, never half
    written (a previous `out_dir` is replaced only on success)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def config_dict(config: Any) -> dict[str, Any]:
    """A model config as a plain dict (configs are frozen dataclasses)."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"model config must be a dataclass or dict, got {type(config).__name__}")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (or any `.module` wrapper)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def save_checkpoint(
    path: str | Path,
    model: SegmentationModel,
    run_config: RunConfig,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    epoch: int,
    step: int,
    metrics: dict[str, Any] | None = None,
    split: dict[str, list[str]] | None = None,
    rng: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    objective_state: dict[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint to `path` (atomically) and return the path.
    `objective_state` is the objective's own state (its teacher), what a resume needs."""
    model = unwrap(model)
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stitchnet_version": stitchnet.__version__,
        "model_name": run_config.model,
        "model_config": config_dict(model.config),
        "run_config": run_config.to_dict(),
        "seed": run_config.train.seed,
        "epoch": int(epoch),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "split": {k: list(v) for k, v in (split or {}).items()},
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "rng": rng if rng is not None else {},
        "objective_name": run_config.objective,
        "objective_config": dict(run_config.objective_config),
        "objective_state": dict(objective_state or {}),
        "extra": dict(extra or {}),
    }
    return atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(
    path: str | Path, expected_model: str | None = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing anything else with a clear error."""
    path = Path(path)
    if not path.is_file():
        where = "a folder, not a file" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"checkpoint {path}: {where}; expected a .pt file from training")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a corrupt pickle fails in many ways; all mean "unreadable"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable StitchNet checkpoint (truncated, corrupt, or holding "
            f"objects that are unsafe to load): {first_line}"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a StitchNet checkpoint: format tag {found!r}, expected {FORMAT!r} "
            f"(a bare state dict can be loaded with model.load_state_dict(torch.load(path)))"
        )
    version = ckpt.get("format_version")
    if not (isinstance(version, int) and 1 <= version <= FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r} (written by stitchnet "
            f"{ckpt.get('stitchnet_version')}); this stitchnet {stitchnet.__version__} reads "
            f"version {FORMAT_VERSION} and older ones; use the matching stitchnet version"
        )
    if version == 1:  # before objectives: every run trained with the model's own loss
        ckpt = {"objective_name": "none", "objective_config": {}, "objective_state": {}, **ckpt}
    if expected_model is not None and ckpt.get("model_name") != expected_model:
        raise CheckpointError(
            f"{path} holds a {ckpt.get('model_name')!r} model, expected {expected_model!r}"
        )
    return ckpt


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating tensors in float16 (integer buffers kept): half the file;
    `load_state_dict` copies them back into the float32 parameters."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save_half_copy(src: str | Path, dst: str | Path) -> Path:
    """A float16 copy of a checkpoint without its optimizer state, small enough to carry off a
    machine (e.g. from a lent GPU); it still loads with `load_checkpoint`."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt["model_state"] = half_state(ckpt["model_state"])
    ckpt["optimizer_state"] = None
    return atomic_write(dst, lambda f: torch.save(ckpt, f))


def resolve_checkpoint(path_or_run_dir: str | Path) -> Path:
    """A .pt file as given, or a run folder's best checkpoint."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        best = path / BEST_NAME
        if not best.is_file():
            found = sorted(p.name for p in path.glob("*.pt")) or "no .pt files"
            raise FileNotFoundError(
                f"run folder {path} has no {BEST_NAME} (found: {found}); "
                f"train it first or pass a checkpoint file"
            )
        return best
    return path


def model_from_checkpoint(
    path_or_run_dir: str | Path, expected_model: str | None = None, map_location: Any = "cpu"
) -> tuple[SegmentationModel, dict[str, Any]]:
    """Rebuild the model a checkpoint (or a run folder's best.pt) describes, weights loaded, in
    eval mode. Returns (model, checkpoint dict)."""
    path = resolve_checkpoint(path_or_run_dir)
    ckpt = load_checkpoint(path, expected_model, map_location)
    model = build_model(ckpt["model_name"], ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit a {ckpt['model_name']!r} model built from the stored "
            f"config: {str(e).splitlines()[0]}"
        ) from e
    return model.eval(), ckpt

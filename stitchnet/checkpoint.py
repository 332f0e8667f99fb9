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
import pickletools
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stitchnet.config import RunConfig
from stitchnet.models import config_from_dict, model_class
from stitchnet.models.base import SegmentationModel
from stitchnet.outdir import atomic_write
from stitchnet.version import __version__

FORMAT = "stitchnet-checkpoint"
FORMAT_VERSION = 2  # 2: objective_name, objective_config, objective_state
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


class CheckpointError(ValueError):
    """A file that exists but cannot be used as the checkpoint the caller asked for."""


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
        "stitchnet_version": __version__,
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
        with warnings.catch_warnings():
            # Raised for pickles that torch.save does not write; the error below says more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a corrupt pickle fails in many ways; all mean "unreadable"
        raise CheckpointError(
            f"{path} is not a readable StitchNet checkpoint: {_unreadable_reason(path, e)}; "
            f"it was read as data only, so no code in it ran"
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
            f"{ckpt.get('stitchnet_version')}); this stitchnet {__version__} reads "
            f"version {FORMAT_VERSION} and older ones; use the matching stitchnet version"
        )
    if version == 1:  # before objectives: every run trained with the model's own loss
        ckpt = {"objective_name": "none", "objective_config": {}, "objective_state": {}, **ckpt}
    _check_fields(path, ckpt)
    if expected_model is not None and ckpt.get("model_name") != expected_model:
        raise CheckpointError(
            f"{path} holds a {ckpt.get('model_name')!r} model, expected {expected_model!r}"
        )
    return ckpt


# The fields a reader needs to rebuild the model and its data preparation, with what each holds.
_REQUIRED = {
    "model_name": (str, "the registry name of the model"),
    "model_config": (dict, "the model's config as a dict"),
    "model_state": (dict, "the model's state dict"),
    "run_config": (dict, "the RunConfig of the run that wrote it, as a dict"),
}


def _check_fields(path: Path, ckpt: dict[str, Any]) -> None:
    """Refuse a checkpoint whose required fields are absent or of the wrong kind, naming the
    field, before a reader meets a KeyError or TypeError far from the file."""
    for key, (kind, meaning) in _REQUIRED.items():
        if key not in ckpt:
            raise CheckpointError(f"{path} has no {key!r} field; expected {meaning}")
        if not isinstance(ckpt[key], kind):
            raise CheckpointError(
                f"{path}: {key} is a {type(ckpt[key]).__name__}, expected {meaning}"
            )
    try:
        RunConfig.from_dict(ckpt["run_config"])
    except KeyError as e:
        raise CheckpointError(
            f"{path}: run_config has no {e.args[0]!r} field; expected {_REQUIRED['run_config'][1]}"
        ) from e
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: run_config is not a valid RunConfig: {e}") from e


# Terminal escape sequences (PyTorch colours parts of its messages) and what torch.load calls
# a class it refuses to import.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
# Sentences of PyTorch's messages that advise rather than report (loading unsafely, allowlists).
_ADVICE = re.compile(
    r"weights.only|arbitrary code|trust|file an issue|documentation|safe_globals|two options",
    re.IGNORECASE,
)
_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\][\s.]*")  # where in PyTorch's C++ it failed
_ZIP_HEAD = b"PK\x03\x04"  # what torch.save writes since PyTorch 1.6
_LEGACY_HEAD = b"\x80\x02\x8a\n"  # older torch.save: a protocol-2 pickle of its magic number


def _plain_text(text: str) -> str:
    """`text` on one line, without escape codes or other control characters."""
    text = _ANSI.sub("", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in this project's words.

    PyTorch's own message advises loading again with weights_only=False, which would run any
    code the file holds and is no remedy for a truncated or foreign file, so only its facts are
    kept: the refused class, a missing zip directory."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_HEAD))
    message = _plain_text(str(err))
    refused = _GLOBAL.search(message)
    if refused:
        return (
            f"it holds objects that are not plain tensors and numbers "
            f"(unsupported global {refused.group(1)})"
        )
    if not head:
        return "an empty file (0 bytes)"
    if head == _ZIP_HEAD:
        if "central directory" in message:
            return "truncated: its zip archive has no central directory, which is written last"
        if "Weights only load failed" in message:  # torch's safe reader refused what it holds
            return f"it holds objects that are not plain tensors and numbers ({_fact(message)})"
        return f"a zip archive that torch.save did not write, or a damaged one ({_fact(message)})"
    if isinstance(err, EOFError) and head[:1] == b"\x80":
        return "truncated: its pickle ends before the data it announces"
    if head == _LEGACY_HEAD:
        return f"a damaged file in the old torch.save format ({_fact(message)})"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # a pickle's PROTO opcode and version
        held = _first_global(path)
        return "a Python pickle, not a torch.save file" + (f" (it holds {held})" if held else "")
    return "not a PyTorch file (neither a zip archive nor a pickle)"


def _fact(message: str) -> str:
    """The first sentence of a torch.load error that reports rather than advises."""
    message = _ENFORCE.sub("", message.split("WeightsUnpickler error:")[-1].strip())
    facts = [s.strip(" .") for s in message.split(". ") if s.strip(" .")]
    facts = [s for s in facts if not _ADVICE.search(s)]
    return facts[0] if facts else "no further detail"


def _first_global(path: Path, max_ops: int = 100_000) -> str | None:
    """The first class or function a pickle imports (`module.name`), found by reading its
    opcodes with pickletools, which runs nothing; None where there is none or it cannot tell."""
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for i, (op, arg, _) in enumerate(pickletools.genops(f)):
                if op.name in ("GLOBAL", "INST"):
                    return ".".join(str(arg).split(" ", 1))
                if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}"
                if isinstance(arg, str):
                    strings.append(arg)
                if i >= max_ops:
                    break
    except Exception:  # a damaged pickle: the caller says so without the class name
        return None
    return None


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating tensors in float16 (integer buffers kept): half the file;
    `load_state_dict` copies them back into the float32 parameters."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save_half_copy(src: str | Path, dst: str | Path) -> Path:
    """A float16 copy of a checkpoint without its optimizer state, small enough to carry off a
    machine (e.g. back from a GPU server); it still loads with `load_checkpoint`."""
    ckpt = load_checkpoint(src)
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
    name = ckpt["model_name"]
    model = _build_stored_model(path, name, ckpt["model_config"])
    not_fitting = f"{path}: weights do not fit a {name!r} model built from the stored model_config"
    mismatch = _state_mismatch(ckpt["model_state"], model.state_dict())
    if mismatch:
        raise CheckpointError(f"{not_fitting}: {mismatch}")
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as e:  # names and shapes fit; what remains is PyTorch's own finding
        raise CheckpointError(f"{not_fitting}: {_fact(_plain_text(str(e)))}") from e
    return model.eval(), ckpt


def _build_stored_model(path: Path, name: str, config: dict[str, Any]) -> SegmentationModel:
    """The model `name` built from a checkpoint's model_config, or an error naming the field."""
    try:
        klass = model_class(name)
    except ValueError as e:
        raise CheckpointError(f"{path}: model_name: {e}") from e
    try:
        return klass(config_from_dict(name, config))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: model_config does not build a {name!r} model: {e}") from e


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _state_mismatch(stored: dict[str, Any], wanted: dict[str, torch.Tensor]) -> str:
    """How a stored state dict differs from the model's ('' where it fits): the counts of
    missing keys, unexpected keys and keys of another shape, each with its first example."""
    missing = [k for k in wanted if k not in stored]
    unexpected = [k for k in stored if k not in wanted]
    not_tensors = [k for k in wanted if k in stored and not isinstance(stored[k], torch.Tensor)]
    reshaped = [
        k
        for k in wanted
        if isinstance(stored.get(k), torch.Tensor) and stored[k].shape != wanted[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{_count(len(missing), 'missing key')} (first {missing[0]!r})")
    if unexpected:
        parts.append(f"{_count(len(unexpected), 'unexpected key')} (first {unexpected[0]!r})")
    if not_tensors:
        k = not_tensors[0]
        parts.append(
            f"{_count(len(not_tensors), 'key')} holding no tensor "
            f"(first {k!r}: a {type(stored[k]).__name__})"
        )
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{_count(len(reshaped), 'key')} of another shape (first {k!r}: stored "
            f"{tuple(stored[k].shape)}, model {tuple(wanted[k].shape)})"
        )
    return "; ".join(parts)

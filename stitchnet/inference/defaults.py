"""The default model that ships in the package, and the one command that makes it.

`stitchnet segment SCAN --out DIR` without --model uses stitchnet/assets/default_model.pt: a
StitchNet checkpoint (checkpoint.py's format, so `load_checkpoint` checks it) whose weights are
stored in float16 to keep the file small, with no optimizer or RNG state. Beside it,
default_model.json records how it was made: the training command, the data, the dates, the
hardware, and its test scores as `stitchnet evaluate` computes them, on the run's own test split,
with the float16 weights as shipped.

Make (or replace) it from a trained run folder:

    python -m stitchnet.inference.defaults RUN_DIR [--labelled data/medseg_covid19_train50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from stitchnet.checkpoint import (
    half_state,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
)
from stitchnet.config import RunConfig
from stitchnet.outdir import atomic_write

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "default_model.pt"
DEFAULT_INFO = ASSETS / "default_model.json"
MAKE_COMMAND = "python -m stitchnet.inference.defaults RUN_DIR"


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


def make_default_model(
    run_dir: str | Path,
    labelled: str | Path = "data/medseg_covid19_train50",
    out: str | Path = DEFAULT_MODEL,
    command: str | None = None,
    status: str = "",
    hardware: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `out` (float16 weights) and its .json from RUN_DIR/best.pt; return the json.

    The test scores are those of the float16 weights, on the test part of RUN_DIR/splits.json.
    """
    from stitchnet.evaluate import evaluate
    from stitchnet.pipeline import prepare_folder

    run = Path(run_dir)
    best = resolve_checkpoint(run)
    ckpt = load_checkpoint(best)
    slim = {k: v for k, v in ckpt.items() if k not in ("optimizer_state", "rng", "extra", "split")}
    slim["model_state"] = half_state(ckpt["model_state"])
    slim["optimizer_state"], slim["rng"], slim["extra"] = None, {}, {}
    splits_path = run / "splits.json"
    if not splits_path.is_file():
        raise FileNotFoundError(f"{splits_path}: not found; expected the run's split from training")
    test_ids = json.loads(splits_path.read_text())["test"]
    slim["split"] = {"test": list(test_ids)}
    out = Path(out)
    atomic_write(out, lambda f: torch.save(slim, f))
    model, _, _ = load_segmentation_model(out)  # score the weights as shipped (float16 -> 32)
    cfg = RunConfig.from_dict(ckpt["run_config"])
    data = prepare_folder(labelled, cfg.data, cache_dir, progress, require_masks=True)
    index = {sid: i for i, sid in enumerate(data.ids)}
    missing = [s for s in test_ids if s not in index]
    if missing:
        raise ValueError(
            f"{labelled}: test slices {missing[:3]} of {splits_path} not found; expected the "
            f"folder the run was trained on"
        )
    scores = evaluate(model, data.subset([index[s] for s in test_ids], name="test")).to_dict()
    train = cfg.train
    info = {
        "model_name": ckpt["model_name"],
        "status": status,
        "command": command
        or (
            f"stitchnet train --model {ckpt['model_name']} --labelled {labelled} "
            f"--preset {cfg.preset} --seed {train.seed} --out {run}"
        ),
        "make_command": f"python -m stitchnet.inference.defaults {run} --labelled {labelled}",
        "data": str(labelled),
        "preset": cfg.preset,
        "image_size": cfg.data.image_size,
        "epochs_trained": ckpt.get("epoch"),
        "trained": dt.datetime.fromtimestamp(best.stat().st_mtime).date().isoformat(),
        "made": dt.date.today().isoformat(),
        "hardware": hardware or _hardware(),
        "stitchnet_version": ckpt.get("stitchnet_version"),
        "torch_version": torch.__version__,
        "weights": "float16",
        "size_bytes": out.stat().st_size,
        "test_scores": scores,
    }
    json_path = out.with_suffix(".json")
    atomic_write(json_path, lambda f: f.write(json.dumps(info, indent=2) + "\n"), binary=False)
    for path in (out, json_path):
        path.chmod(0o644)  # package data: readable by every user of an installed package
    return info


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, torch threads " + str(
        torch.get_num_threads()
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stitchnet.inference.defaults",
        description="Make the shipped default model from a trained run folder: float16 weights "
        "from RUN_DIR/best.pt, scored on the run's test split, with a json record beside them.",
    )
    p.add_argument("run_dir", help="a run folder written by `stitchnet train`")
    p.add_argument("--labelled", default="data/medseg_covid19_train50", help="its labelled data")
    p.add_argument("--out", default=str(DEFAULT_MODEL), help="default: the package's asset")
    p.add_argument("--command", default=None, help="the exact training command, if not plain")
    p.add_argument("--status", default="", help="e.g. 'provisional' or 'recommended'")
    p.add_argument("--hardware", default=None, help="where it was trained (default: this machine)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        info = make_default_model(
            args.run_dir,
            args.labelled,
            args.out,
            args.command,
            args.status,
            args.hardware,
            progress=not args.quiet,
        )
    except (ValueError, OSError) as err:
        print(f"defaults: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} ({info['size_bytes']} bytes); test lesion Dice "
        f"{info['test_scores']['lesion_dice']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

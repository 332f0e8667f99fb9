"""Make (or replace) the default model shipped in the package from a trained run folder.

    python -m stitchnet.make_default RUN_DIR [--labelled data/medseg_covid19_train50]

It writes float16 weights from RUN_DIR/best.pt to stitchnet/assets/default_model.pt and, beside
them, default_model.json: the training command, the data, the dates, the hardware, and the test
scores of the weights as shipped on the run's own test split. It scores them through the plain
API (pipeline.prepare_folder), which is why it lives outside stitchnet.inference: segmenting a
scan never imports the training loop.
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

from stitchnet.checkpoint import half_state, load_checkpoint, resolve_checkpoint
from stitchnet.config import RunConfig
from stitchnet.evaluate import evaluate
from stitchnet.inference.defaults import DEFAULT_MODEL, load_segmentation_model
from stitchnet.outdir import atomic_write
from stitchnet.pipeline import prepare_folder


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
        "make_command": f"python -m stitchnet.make_default {run} --labelled {labelled}",
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
        prog="python -m stitchnet.make_default",
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
        print(f"make_default: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} ({info['size_bytes']} bytes); test lesion Dice "
        f"{info['test_scores']['lesion_dice']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

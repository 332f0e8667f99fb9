"""Time of one training step of each objective, relative to a supervised U-Net step.

Not a test: prints numbers. Every objective wraps the same model (U-Net by default, `cpu-small`
widths) at the same size with 8 labelled + 8 unlabelled random [0, 1] slices; the baseline is
the supervised U-Net ("none"), which uses the labelled rows only. One warm-up step, then the
median of `--steps` timed steps (forward, backward, Adam, after_step). The project's target for the
recommended model: <= 3x.

    python benchmarks/ssl_step.py                     # 128 px, U-Net, 3 timed steps
    python benchmarks/ssl_step.py --size 64 --model stitchnet --steps 2
    python benchmarks/ssl_step.py --recommended     # the target: the recommended model and
                                                    # objective vs the U-Net, both at preset cpu
    python benchmarks/ssl_step.py --recommended --ssl unimatch   # another objective, same model
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stitchnet.checkpoint import save_checkpoint
from stitchnet.config import RunConfig
from stitchnet.models import build_model, model_config
from stitchnet.objectives import OBJECTIVES, build_objective
from stitchnet.objectives.base import rows_of


def fresh_unet_run(preset: str) -> str:
    """A checkpoint of an untrained U-Net at `preset`, as self_training's teacher: a teacher's
    weights do not change the time of its forward pass."""
    path = Path(tempfile.mkdtemp(prefix="ssl_step_teacher_")) / "best.pt"
    unet = build_model("unet", model_config("unet", preset))
    return str(
        save_checkpoint(path, unet, RunConfig(model="unet", model_config={}), epoch=0, step=0)
    )


def step_time(
    model_name: str,
    objective: str,
    size: int,
    n_lab: int,
    n_unl: int,
    steps: int,
    preset: str = "cpu-small",
    overrides: dict | None = None,
    channels_last: bool = False,
):
    torch.manual_seed(0)
    cfg = model_config(model_name, preset, image_size=size) if model_name != "unet" else None
    model = build_model(model_name, cfg or model_config("unet", preset))
    if objective == "self_training" and "teacher" not in (overrides or {}):
        overrides = {**(overrides or {}), "teacher": fresh_unet_run(preset)}
    obj = build_objective(objective, model, overrides)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    n = n_lab + n_unl
    batch = {
        "image": torch.rand(n, 1, size, size, generator=g),
        "mask": torch.randint(0, 4, (n, size, size), generator=g),
        "labelled": torch.arange(n) < n_lab,
        "lung": torch.ones(n, size, size, dtype=torch.uint8),
    }
    if objective == "none" and not model.uses_unlabelled:
        batch = {k: v[:n_lab] for k, v in batch.items()}  # the supervised baseline's batch
    if channels_last:  # as `train` does with TrainConfig.channels_last
        model.to(memory_format=torch.channels_last)
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        draws = rows_of(obj.draw(len(batch["image"]), size, g), torch.arange(len(batch["image"])))
        loss = obj(batch, draws)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.after_step(False)
        if i:  # step 0 is the warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--model", default="unet")
    p.add_argument("--labelled", type=int, default=8)
    p.add_argument("--unlabelled", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--recommended",
        action="store_true",
        help="time only the recommended model + objective against the U-Net, at --preset",
    )
    p.add_argument(
        "--preset", default=None, help="model widths (default cpu-small; cpu with --recommended)"
    )
    p.add_argument("--repeats", type=int, default=3, help="alternating pairs with --recommended")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="both models and their inputs channels-last (TrainConfig.channels_last)",
    )
    p.add_argument(
        "--ssl", default=None, help="with --recommended: this objective instead of the recommended"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.recommended:
        recommended(a)
        return
    print(f"{a.size} px, {a.labelled} labelled + {a.unlabelled} unlabelled, {a.threads} threads")
    print("| model | objective | s/step | U-Net s/step | x supervised U-Net |")
    print("|---|---|---|---|---|")
    for name in OBJECTIVES:
        # The baseline is re-timed beside each objective: on a shared machine the load drifts.
        base = step_time("unet", "none", a.size, a.labelled, a.unlabelled, a.steps)
        t = step_time(a.model, name, a.size, a.labelled, a.unlabelled, a.steps)
        print(f"| {a.model} | {name} | {t:.3f} | {base:.3f} | {t / base:.2f} |", flush=True)


def recommended(a: argparse.Namespace) -> None:
    """The recommended configuration's step against a supervised U-Net step, both at one preset,
    timed in alternating pairs (the ratio of each pair, then their median)."""
    from stitchnet.presets import (
        RECOMMENDED_MODEL,
        RECOMMENDED_OBJECTIVE,
        RECOMMENDED_OBJECTIVE_OVERRIDES,
    )

    objective = a.ssl or RECOMMENDED_OBJECTIVE
    # The recommended objective with its settings (lesion paste); another objective as it is.
    overrides = None if a.ssl else RECOMMENDED_OBJECTIVE_OVERRIDES
    preset = a.preset or "cpu"
    print(
        f"{preset} preset, {a.size} px, {a.labelled} labelled + {a.unlabelled} unlabelled, "
        f"{a.threads} threads" + (", channels-last" if a.channels_last else "")
    )
    print("| pair | U-Net (none) s/step | recommended s/step | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for i in range(a.repeats):
        base = step_time(
            "unet", "none", a.size, a.labelled, a.unlabelled, a.steps, preset, None, a.channels_last
        )
        t = step_time(
            RECOMMENDED_MODEL,
            objective,
            a.size,
            a.labelled,
            a.unlabelled,
            a.steps,
            preset,
            overrides,
            a.channels_last,
        )
        ratios.append(t / base)
        print(f"| {i + 1} | {base:.3f} | {t:.3f} | {t / base:.2f} |", flush=True)
    print(
        f"{RECOMMENDED_MODEL} + {objective} / supervised U-Net step: median "
        f"{statistics.median(ratios):.2f}x (the target: <= 3x)"
    )


if __name__ == "__main__":
    main()

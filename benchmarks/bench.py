"""Throughput, latency and peak memory of every model, with ratios to the U-Net of the same run.

Not a test: a benchmark that prints numbers. Each measurement runs in a fresh subprocess so that
its peak resident memory (ru_maxrss) belongs to that model alone.

    python benchmarks/bench.py                      # CPU preset size (64 px) and 352 px
    python benchmarks/bench.py --sizes 64 --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

MODELS = ("unet", "segnet", "stitchnet")


def measure(model_name: str, preset: str, size: int, batch: int, steps: int) -> dict:
    """Run inside the child: time train steps and inference on random [0, 1] slices."""
    import resource

    import torch

    from stitchnet.models import build_model, model_config

    torch.manual_seed(0)
    model = build_model(model_name, model_config(model_name, preset))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size)
    batch_dict = {
        "image": x,
        "mask": torch.randint(0, 4, (batch, size, size)),
        "labelled": torch.tensor([i % 2 == 0 for i in range(batch)]),
    }
    if not model.uses_unlabelled:
        batch_dict["labelled"] = torch.ones(batch, dtype=torch.bool)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(batch_dict)["loss"].backward()
        opt.step()

    model.train()
    step()  # warm-up: allocator and kernel selection
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    train_s = (time.perf_counter() - t0) / steps
    model.eval()
    with torch.no_grad():
        model(x[:1])
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x[:1])
        infer_s = (time.perf_counter() - t0) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name,
        "preset": preset,
        "size": size,
        "batch": batch,
        "params_m": n_params / 1e6,
        "train_slices_per_s": batch / train_s,
        "train_step_s_per_slice": train_s / batch,
        "infer_ms_per_slice": infer_s * 1000,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    from stitchnet.config import DATA_PRESETS

    cpu_size = DATA_PRESETS["cpu-small"].image_size
    p.add_argument("--sizes", type=int, nargs="+", default=[cpu_size, 352])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="slices per step (default: 12 at the CPU size = cpu-small's 8 labelled + 4 "
        "unlabelled, 4 at 352 px)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(measure(**spec)))
        return
    rows = []
    for size in args.sizes:
        # The CPU preset's own configs at its size; the paper's configs at 352 px.
        preset = "paper" if size >= 352 else "cpu-small"
        for name in MODELS:
            spec = {
                "model_name": name,
                "preset": preset,
                "size": size,
                "batch": args.batch or (12 if size < 352 else 4),
                "steps": args.steps,
            }
            out = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"measured {name} at {size} px", file=sys.stderr, flush=True)
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, python {platform.python_version()}"
    )
    head = (
        "model",
        "preset",
        "size",
        "params (M)",
        "train slices/s",
        "train x U-Net",
        "infer ms/slice",
        "infer x U-Net",
        "peak RSS MB",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        base = next(b for b in rows if b["model"] == "unet" and b["size"] == r["size"])
        train_ratio = r["train_step_s_per_slice"] / base["train_step_s_per_slice"]
        infer_ratio = r["infer_ms_per_slice"] / base["infer_ms_per_slice"]
        print(
            f"| {r['model']} | {r['preset']} | {r['size']} | {r['params_m']:.2f} | "
            f"{r['train_slices_per_s']:.2f} | {train_ratio:.2f} | {r['infer_ms_per_slice']:.1f} | "
            f"{infer_ratio:.2f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()

"""Where StitchNet's inference time goes: per-module wall time at the CPU preset's size.

python benchmarks/profile_inference.py [--size 64] [--model stitchnet]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from stitchnet.models import build_model, model_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--model", default="stitchnet")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    model = build_model(args.model, model_config(args.model, args.preset)).eval()
    x = torch.rand(1, 1, args.size, args.size)
    spent: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    # Time the top-level children of the trunk (encoder, adapters, d->z maps, z->d maps, ups).
    trunk = getattr(model, "trunk", model)
    for name, child in trunk.named_children():
        # ModuleLists are never called themselves: time their members, summed under one name.
        members = list(child) if isinstance(child, torch.nn.ModuleList) else [child]
        for k, member in enumerate(members):
            key = (name, k)
            member.register_forward_pre_hook(
                lambda m, i, key=key: starts.__setitem__(key, time.perf_counter())
            )
            member.register_forward_hook(
                lambda m, i, o, key=key: spent.__setitem__(
                    key[0], spent[key[0]] + time.perf_counter() - starts[key]
                )
            )
    with torch.no_grad():
        model(x)
        spent.clear()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            model(x)
        total = (time.perf_counter() - t0) / args.repeats
    print(f"{args.model} {args.preset} at {args.size} px: {total * 1000:.1f} ms per slice")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        ms = s / args.repeats * 1000
        print(f"  {name:12s} {ms:7.1f} ms  {100 * ms / (total * 1000):5.1f} %")


if __name__ == "__main__":
    main()

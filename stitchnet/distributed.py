"""Data-parallel plumbing for the training loop: the torchrun process group and random states.

Under `torchrun` (WORLD_SIZE > 1) every rank runs the same loop; `Dist` says which rank this is
and makes joint decisions (`any`). `rng_state`/`restore_rng` capture every generator a resumed
run must restore, including each rank's own torch state.
"""

from __future__ import annotations

import atexit
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank (keeps the ranks' decisions equal)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(device: str | torch.device | None) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when there is one, and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world > 1 else 0)
    if world <= 1:
        return Dist(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives use the current device
    if not dist.is_initialized():
        # The group lives until the process exits: later train() calls in the same torchrun
        # process reuse it, because re-creating a destroyed group on torchrun's store can hang.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_end_group)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def _end_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(sampler: torch.Generator, d: Dist) -> dict[str, Any]:
    """Every generator a resumed run must restore; torch's global state differs per rank."""
    own = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    per_rank = [own]
    if d.world > 1:
        per_rank = [None] * d.world
        dist.all_gather_object(per_rank, own)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "sampler": sampler.get_state(),
        "torch": [s["torch"] for s in per_rank],
        "cuda": [s["cuda"] for s in per_rank],
        # numpy's key array goes in as a tensor so the checkpoint stays loadable weights_only.
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any], sampler: torch.Generator, d: Dist) -> None:
    sampler.set_state(state["sampler"])
    if len(state["torch"]) == d.world:
        torch.set_rng_state(state["torch"][d.rank])
        if state["cuda"][d.rank] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"][d.rank])
    else:
        print(
            f"note: checkpoint has RNG states of {len(state['torch'])} ranks, this run has "
            f"{d.world}; model noise continues from a fresh seed, batches continue exactly"
        )
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))

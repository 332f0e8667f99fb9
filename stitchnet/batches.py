"""What each training step draws: the labelled part, the rows per step, and a step's batch.

Fixed for a run and identical on every rank: every rank draws the same global batch indices
from the same seeded generator (`epoch_indices`) and keeps its own disjoint share of them
(`step_batch`), so data-parallel runs see exactly the batches of a single-process run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from stitchnet.augment import apply_geometry, apply_params, sample_params
from stitchnet.config import RunConfig
from stitchnet.data.types import PreparedSet
from stitchnet.distributed import Dist
from stitchnet.objectives import Objective
from stitchnet.scanner_aug import ScannerAugSpec, apply_scanner, sample_scanner, scanner_spec


def index_stream(n: int, count: int, g: torch.Generator) -> torch.Tensor:
    """`count` indices into n items: whole random permutations back to back, so every item is
    drawn once before any is drawn twice."""
    perms = [torch.randperm(n, generator=g) for _ in range(math.ceil(count / n))]
    return torch.cat(perms)[:count] if perms else torch.zeros(0, dtype=torch.long)


def labelled_part(train_set: PreparedSet, cfg: RunConfig) -> PreparedSet:
    """The first `max_labelled` slices of a seeded shuffle (nested across N for one seed)."""
    if train_set.masks is None:
        raise ValueError(f"training set {train_set.name or ''!r} has no masks; it must be labelled")
    n = cfg.train.max_labelled
    if n is None or n >= len(train_set):
        return train_set
    if n <= 0:
        raise ValueError(f"train.max_labelled must be positive or None, got {n}")
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.train.seed))
    return train_set.subset(order[:n].tolist())


@dataclass
class Plan:
    """Which rows each step draws: fixed for a run, identical on every rank."""

    labelled: PreparedSet
    unlabelled: PreparedSet | None  # None unless the model learns from unlabelled rows
    batch_l: int  # labelled rows per step, over all ranks
    batch_u: int  # unlabelled rows per step, over all ranks
    steps: int  # steps per epoch
    augment: bool
    scanner: ScannerAugSpec | None  # scanner variation of every row (None: off)
    window: tuple[float, float]  # the data config's HU window: scanner ranges are in HU

    def mine(self, d: Dist) -> torch.Tensor:
        """This rank's rows of the whole step's draws: its labelled rows, then its unlabelled."""
        bl, bu = self.batch_l, self.batch_u
        return torch.cat(
            [torch.arange(bl)[d.rank :: d.world], bl + torch.arange(bu)[d.rank :: d.world]]
        )

    @property
    def has_lungs(self) -> bool:
        """Every pool the batch draws from carries a lung field (else no batch["lung"])."""
        pools = [self.labelled] + ([self.unlabelled] if self.unlabelled is not None else [])
        return all(p.lungs is not None for p in pools)

    def split(self, val_set: PreparedSet | None) -> dict[str, list[str]]:
        out = {"train": self.labelled.ids, "val": val_set.ids if val_set is not None else []}
        if self.unlabelled is not None:
            out["unlabelled"] = self.unlabelled.ids
        return out


def make_plan(
    cfg: RunConfig,
    objective: Objective,
    train_set: PreparedSet,
    unlabelled: PreparedSet | None,
    d: Dist,
    say: Any,
) -> Plan:
    """The run's plan: its labelled part, whether unlabelled rows are drawn, rows per step."""
    tc = cfg.train
    labelled = labelled_part(train_set, cfg)
    if len(labelled) == 0:
        raise ValueError(f"training set {train_set.name or ''!r} is empty")
    use_unl = (
        objective.uses_unlabelled()
        and unlabelled is not None
        and len(unlabelled) > 0
        and tc.unlabelled_batch_size > 0
    )
    if unlabelled is not None and not use_unl:
        say(
            f"note: {cfg.model} with objective {cfg.objective!r} trains on labelled slices only "
            f"here; the unlabelled set is unused"
        )
    if tc.batch_size < d.world:
        raise ValueError(f"train.batch_size {tc.batch_size} is smaller than the {d.world} ranks")
    return Plan(
        labelled=labelled,
        unlabelled=unlabelled if use_unl else None,
        batch_l=tc.batch_size,
        batch_u=tc.unlabelled_batch_size if use_unl else 0,
        steps=tc.steps_per_epoch or math.ceil(len(labelled) / tc.batch_size),
        augment=tc.augment,
        scanner=scanner_spec(tc.scanner_aug),
        window=cfg.data.lung_window,
    )


def epoch_indices(plan: Plan, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    lab = index_stream(len(plan.labelled), plan.steps * plan.batch_l, g)
    if plan.unlabelled is None:
        return lab, None
    return lab, index_stream(len(plan.unlabelled), plan.steps * plan.batch_u, g)


def step_batch(
    plan: Plan,
    lab_idx: torch.Tensor,
    unl_idx: torch.Tensor | None,
    s: int,
    g: torch.Generator,
    d: Dist,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Step s's rows for this rank: its share of the labelled, then of the unlabelled indices,
    augmented with its rows of the whole step's draw (so every rank's generator stays in step).
    With lung fields in every pool, batch["lung"] (B, S, S) uint8 moves exactly like the masks."""
    bl, bu = plan.batch_l, plan.batch_u
    li = lab_idx[s * bl : (s + 1) * bl][d.rank :: d.world]
    images, masks = [plan.labelled.images[li]], [plan.labelled.masks[li]]
    flags = [torch.ones(len(li), dtype=torch.bool)]
    lungs = [plan.labelled.lungs[li]] if plan.has_lungs else []
    if plan.unlabelled is not None:
        ui = unl_idx[s * bu : (s + 1) * bu][d.rank :: d.world]
        images.append(plan.unlabelled.images[ui])  # (u, 1, S, S)
        masks.append(torch.zeros(len(ui), *plan.labelled.masks.shape[1:], dtype=torch.long))
        flags.append(torch.zeros(len(ui), dtype=torch.bool))
        lungs += [plan.unlabelled.lungs[ui]] if plan.has_lungs else []
    batch = {"image": torch.cat(images), "mask": torch.cat(masks), "labelled": torch.cat(flags)}
    if lungs:
        batch["lung"] = torch.cat(lungs).to(torch.uint8)  # (B, S, S) 0/1
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if plan.augment:
        draws = sample_params(bl + bu, plan.labelled.images.shape[-1], g).rows(plan.mine(d))
        batch["image"], batch["mask"] = apply_params(batch["image"], batch["mask"], draws)
        if lungs:
            batch["lung"] = apply_geometry(batch["lung"], draws)
    if plan.scanner is not None:
        # Labelled rows and the unlabelled weak view alike; masks and lung fields stay as they are.
        shots = sample_scanner(bl + bu, plan.scanner, g).rows(plan.mine(d))
        batch["image"] = apply_scanner(batch["image"], shots, plan.window)
    return batch

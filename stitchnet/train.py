"""The one training loop every model goes through.

`train(cfg, train_set, val_set, out_dir)` builds the model named by the config, trains it with Adam
on preloaded tensors, validates each epoch with the shared evaluator (selecting on lesion Dice,
the mean of the GGO and consolidation F1 means), and writes into `out_dir`:

    config.json  the RunConfig, written at the start
    log.csv      one line every `log_every` steps and at each epoch end (loss terms, validation)
    last.pt      every epoch: weights, optimizer, RNG states, history (what a resume needs)
    best.pt      the epoch with the best validation lesion Dice (the last epoch without a val set)

Rerunning with the same `out_dir` resumes after the last finished epoch and ends with exactly the
weights an uninterrupted run would have; a finished run returns at once without training.

Under `torchrun` (WORLD_SIZE > 1) the same function runs data-parallel: every rank draws the same
global batch indices from the same seeded generator, keeps its own disjoint share of them
(`stitchnet.batches`), and DistributedDataParallel averages the gradients. Only rank 0 writes
files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from stitchnet.batches import epoch_indices, make_plan, step_batch
from stitchnet.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    load_checkpoint,
    save_checkpoint,
)
from stitchnet.config import RunConfig
from stitchnet.data.types import PreparedSet
from stitchnet.distributed import Dist, restore_rng, rng_state, seed_everything, setup
from stitchnet.evaluate import evaluate
from stitchnet.models import build_model
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives import Objective, build_objective
from stitchnet.objectives.base import Draws, rows_of
from stitchnet.outdir import atomic_write
from stitchnet.runlog import CsvLog, Mean, tensorboard, val_metrics

# Training fields that may change between a run and its resumption: they change neither the
# weights of the epochs already done nor the random numbers drawn for the next ones.
RESUMABLE_CHANGES = {"epochs", "eval_every", "log_every", "checkpoint_every"}
TIMING_STEPS = 5  # the per-step time is measured over steps 2..5 (step 1 includes warm-up)


@dataclass
class TrainResult:
    model: SegmentationModel  # best weights loaded, eval mode
    out_dir: Path
    best_path: Path
    last_path: Path
    history: list[dict[str, Any]]  # one row per finished epoch (the epoch-end log.csv lines)
    skipped_steps: int  # steps without an update: non-finite loss or gradient norm too large
    wall_time: float  # seconds of training over every invocation that built this run
    best_epoch: int
    best_metric: float  # validation overall F1 of best.pt (NaN without a validation set)
    start_epoch: int = 0  # epochs already done when this call began (resumed runs)


@dataclass
class _State:
    """What a resume restores beyond weights and optimizer."""

    epoch: int = 0
    step: int = 0
    skipped: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_resume_config(path: Path, stored: dict[str, Any], cfg: RunConfig) -> None:
    old = _flat(RunConfig.from_dict(stored).to_dict())
    new = _flat(cfg.to_dict())
    allowed = {f"train.{k}" for k in RESUMABLE_CHANGES}
    diffs = [
        f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now"
        for k in sorted(set(old) | set(new))
        if k not in allowed and old.get(k) != new.get(k)
    ]
    if diffs:
        raise ValueError(
            f"{path} was written by a different run config ({'; '.join(diffs)}); pass "
            f"resume=False to start over or choose another out_dir"
        )


def train(
    cfg: RunConfig,
    train_set: PreparedSet,
    val_set: PreparedSet | None,
    out_dir: str | Path,
    unlabelled: PreparedSet | None = None,
    resume: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train `cfg.model` on `train_set` (and `unlabelled` for models that use it); see the module
    docstring for what is written to `out_dir` and how resuming and DDP work."""
    if val_set is not None and val_set.masks is None:
        raise ValueError(f"validation set {val_set.name or ''!r} has no masks; it must be labelled")
    d, device = setup(device)
    result = _train(cfg, train_set, val_set, Path(out_dir), unlabelled, resume, progress, d, device)
    d.barrier()  # every rank returns only once rank 0 has written its files
    return result


def _say(enabled: bool) -> Any:
    """Console output through tqdm (so it does not break the bar), or nothing."""
    return tqdm.write if enabled else (lambda *args, **kwargs: None)


def _step(
    wrapped: nn.Module,
    batch: dict[str, torch.Tensor],
    draws: Draws | None,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    tc: Any,
    d: Dist,
    device: torch.device,
) -> tuple[dict[str, float], bool]:
    """One guarded update. Returns the loss terms and whether the update was skipped: a
    non-finite loss or gradient norm, or a norm above `skip_grad_norm`, leaves the weights and
    the optimizer state untouched (decided jointly, so all ranks skip together)."""
    losses = wrapped(batch, draws)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    # The total norm before clipping; max_norm=inf measures without clipping.
    norm = float(nn.utils.clip_grad_norm_(params, tc.grad_clip or math.inf))
    # One device-to-host copy for all terms rather than one per term.
    values = torch.stack([v.detach().float() for v in losses.values()]).tolist()
    terms = dict(zip(losses, values, strict=True))
    bad = not (math.isfinite(terms["loss"]) and math.isfinite(norm))
    bad = bad or (tc.skip_grad_norm is not None and norm > tc.skip_grad_norm)
    if d.any(bad, device):
        optimizer.zero_grad(set_to_none=True)
        return terms, True
    optimizer.step()
    return terms, False


def _validate(objective: Objective, val_set: PreparedSet, d: Dist) -> dict[str, float]:
    if d.world > 1:
        # BatchNorm statistics differ per rank; evaluating rank 0's on every rank gives all
        # ranks the same scores, hence the same best epoch, without sending the scores around.
        # The objective's buffers include the student's and the teacher's (an EMA of them).
        for b in objective.buffers():
            dist.broadcast(b, src=0)
    metrics = val_metrics(evaluate(objective.eval_model(), val_set))
    objective.train()
    return metrics


def _resume(
    out: Path,
    cfg: RunConfig,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    sampler: torch.Generator,
    d: Dist,
) -> tuple[_State, dict[str, torch.Tensor]]:
    """Restore weights, teacher, optimizer, RNG states and progress from out/last.pt; the best
    weights so far from out/best.pt."""
    ckpt = load_checkpoint(out / LAST_NAME, expected_model=cfg.model)
    _check_resume_config(out / LAST_NAME, ckpt["run_config"], cfg)
    objective.model.load_state_dict(ckpt["model_state"])
    objective.load_objective_state(ckpt["objective_state"], str(out / LAST_NAME))
    optimizer.load_state_dict(ckpt["optimizer_state"])
    restore_rng(ckpt["rng"], sampler, d)
    best = load_checkpoint(out / BEST_NAME, expected_model=cfg.model)["model_state"]
    return _State(**ckpt["extra"]["state"]), best


def _train(
    cfg: RunConfig,
    train_set: PreparedSet,
    val_set: PreparedSet | None,
    out: Path,
    unlabelled: PreparedSet | None,
    resume: bool,
    progress: bool,
    d: Dist,
    device: torch.device,
) -> TrainResult:
    tc = cfg.train
    say = _say(progress and d.main)
    seed_everything(tc.seed)
    model = build_model(cfg.model, cfg.model_config)
    # Each rank's model noise (dropout, latent sampling) differs; DDP broadcasts rank 0's weights.
    torch.manual_seed(tc.seed + d.rank)
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    # The objective wraps the model (and copies it into a teacher, if it has one).
    objective = build_objective(cfg.objective, model, cfg.objective_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = torch.Generator().manual_seed(tc.seed)  # batch indices and augmentation, all ranks
    plan = make_plan(cfg, objective, train_set, unlabelled, d, say)
    split = plan.split(val_set)

    state, best_state = _State(), None
    if resume and (out / LAST_NAME).exists():
        state, best_state = _resume(out, cfg, objective, optimizer, sampler, d)
        say(f"resuming {out} after epoch {state.epoch} (step {state.step})")
    elif d.main:
        for stale in (out / LAST_NAME, out / BEST_NAME):
            stale.unlink(missing_ok=True)
    start_epoch = state.epoch
    if state.epoch >= tc.epochs:
        say(f"{out}: all {state.epoch} epochs done; not retraining")
        return _result(model, best_state, out, state, start_epoch)

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cfg.to_dict(), indent=2)
        atomic_write(out / "config.json", lambda f: f.write(text + "\n"), binary=False)
    log = CsvLog(out / "log.csv", start_epoch, d.main)
    board = tensorboard(out, d.main)
    # DDP wraps the objective: its forward holds every student pass of the step. The teacher's
    # parameters do not require gradients, so DDP leaves them out of its reduction.
    wrapped: nn.Module = objective
    if d.world > 1:
        # Some models leave parts unused on some batches (e.g. no unlabelled rows).
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    say(
        f"{cfg.model}: {sum(p.numel() for p in params):,} trainable parameters; "
        f"{len(plan.labelled)} labelled slices"
        f"{f', {len(plan.unlabelled)} unlabelled' if plan.unlabelled is not None else ''}; "
        f"{plan.steps} steps/epoch; {device}{f' x {d.world} ranks' if d.world > 1 else ''}"
    )
    bar = tqdm(
        total=tc.epochs * plan.steps,
        initial=start_epoch * plan.steps,
        disable=not (progress and d.main),
        desc=cfg.model,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    step_times: list[float] = []
    size, mine = plan.labelled.images.shape[-1], plan.mine(d)
    objective.train()
    for epoch in range(start_epoch + 1, tc.epochs + 1):
        lab_idx, unl_idx = epoch_indices(plan, sampler)
        epoch_mean, window_mean = Mean(), Mean()
        for s in range(plan.steps):
            t0 = time.perf_counter()
            batch = step_batch(plan, lab_idx, unl_idx, s, sampler, d, device)
            if tc.channels_last:
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            draws = rows_of(objective.draw(plan.batch_l + plan.batch_u, size, sampler), mine)
            terms, skipped = _step(wrapped, batch, draws, optimizer, params, tc, d, device)
            objective.after_step(skipped)
            state.skipped += skipped
            state.step += 1
            epoch_mean.add(terms, skipped)
            window_mean.add(terms, skipped)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{terms['loss']:.4f}", skipped=state.skipped)
            step_times.append(time.perf_counter() - t0)
            if len(step_times) == TIMING_STEPS:
                per_step = sum(step_times[1:]) / (TIMING_STEPS - 1)
                left = (tc.epochs - epoch + 1) * plan.steps - s - 1
                say(
                    f"measured {per_step:.3f} s/step (steps 2-{TIMING_STEPS}); "
                    f"about {per_step * left / 60:.1f} min of training to go"
                )
            if (s + 1) % tc.log_every == 0 and s + 1 < plan.steps:
                log.write(_row(epoch, state, window_mean, started))
                window_mean = Mean()

        validate = val_set is not None and (epoch % tc.eval_every == 0 or epoch == tc.epochs)
        metrics = _validate(objective, val_set, d) if validate else {}
        # Select on Table 1's overall F1 (GGO, consolidation and non-lesion F1 averaged): lesion
        # Dice alone rewards an early model that paints every pixel as consolidation.
        score = metrics.get("val_overall_f1", math.nan)
        # Without validation the latest epoch is the best we know; NaN never beats a number.
        better = not math.isnan(score) and (state.best_metric is None or score > state.best_metric)
        improved = best_state is None or val_set is None or (validate and better)
        state.epoch = epoch
        state.elapsed += time.perf_counter() - started
        started = time.perf_counter()
        row = {**_row(epoch, state, epoch_mean, None), **metrics}
        state.history.append(row)
        log.write(row)
        if board is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, float) and not math.isnan(v):
                    board.add_scalar(k, v, state.step)
        if validate:
            say(f"epoch {epoch}: val overall F1 {score:.4f}" + (" (best)" if improved else ""))
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state.best_metric = None if math.isnan(score) else score
            state.best_epoch = epoch
        rng = rng_state(sampler, d)  # a collective under DDP: every rank takes part
        common = dict(epoch=epoch, step=state.step, metrics=metrics, split=split)
        # best.pt may run ahead of last.pt (written every `checkpoint_every` epochs): a resume
        # repeats the epochs since last.pt, and the loop is deterministic on CPU, so it reaches
        # the same best weights again.
        if d.main and improved:
            save_checkpoint(out / BEST_NAME, model, cfg, **common)
        if d.main and (epoch % tc.checkpoint_every == 0 or epoch == tc.epochs):
            save_checkpoint(
                out / LAST_NAME,
                model,
                cfg,
                optimizer,
                rng=rng,
                extra={"state": vars(state)},
                objective_state=objective.objective_state(),
                **common,
            )
    bar.close()
    if board is not None:
        board.close()
    say(f"done: {out} (best epoch {state.best_epoch}, {state.skipped} skipped steps)")
    return _result(model, best_state, out, state, start_epoch)


def _row(epoch: int, state: _State, mean: Mean, started: float | None) -> dict[str, Any]:
    """A log line: mean loss terms over the good steps since the previous line."""
    seconds = state.elapsed + (0.0 if started is None else time.perf_counter() - started)
    return {
        "epoch": epoch,
        "step": state.step,
        **mean.means(),
        "skipped_steps": state.skipped,
        "seconds": round(seconds, 3),
    }


def _result(
    model: SegmentationModel,
    best_state: dict[str, torch.Tensor] | None,
    out: Path,
    state: _State,
    start_epoch: int,
) -> TrainResult:
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(
        model=model.eval(),
        out_dir=out,
        best_path=out / BEST_NAME,
        last_path=out / LAST_NAME,
        history=state.history,
        skipped_steps=state.skipped,
        wall_time=state.elapsed,
        best_epoch=state.best_epoch,
        best_metric=math.nan if state.best_metric is None else state.best_metric,
        start_epoch=start_epoch,
    )

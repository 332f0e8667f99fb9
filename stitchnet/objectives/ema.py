"""The exponential moving average (EMA) teacher and the consistency ramp-up: pure functions.

The EMA follows Mean Teacher (Tarvainen & Valpola, 2017) as SSL4MIS implements it: the decay is
`min(1 - 1 / (step + 1), decay)`, so the first updates copy the student almost entirely (a
teacher that averaged its random initialisation for hundreds of steps would give useless
pseudo-labels early on).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def ema_decay(step: int, decay: float) -> float:
    """The decay used at update number `step` (0-based): min(1 - 1/(step + 1), decay)."""
    return min(1.0 - 1.0 / (step + 1), decay)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> float:
    """teacher <- a * teacher + (1 - a) * student for every float parameter and buffer, with
    a = ema_decay(step, decay); integer buffers (BatchNorm's num_batches_tracked, the ladder's
    steps_seen counter) are COPIED, since an average of counters is meaningless. Returns a."""
    a = ema_decay(step, decay)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if t_state.keys() != s_state.keys():
        diff = sorted(set(t_state) ^ set(s_state))
        raise ValueError(f"teacher and student differ in their state keys: {diff[:5]}")
    for k, t in t_state.items():
        s = s_state[k].detach()
        if t.is_floating_point():
            t.mul_(a).add_(s, alpha=1.0 - a)
        else:
            t.copy_(s)
    return a


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = clip(step / length, 0, 1): Mean Teacher's ramp-up, 1 from
    step `length` on (and always 1 when length is 0)."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))

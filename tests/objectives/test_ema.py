"""EMA teacher and ramp-up: the formulas, checked on hand-made modules and values."""

import math

import pytest
import torch
from torch import nn

from stitchnet.objectives.ema import ema_decay, ema_update, sigmoid_rampup


def _pair():
    student, teacher = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([1.0, 3.0]))
        teacher.weight.copy_(torch.tensor([0.0, 1.0]))
        student.running_mean.copy_(torch.tensor([2.0, 2.0]))
        student.num_batches_tracked.fill_(7)
        teacher.num_batches_tracked.fill_(100)
    return teacher, student


def test_decay_warms_up_then_caps():
    assert ema_decay(0, 0.99) == 0.0  # the first update copies the student
    assert ema_decay(1, 0.99) == 0.5
    assert ema_decay(9, 0.99) == pytest.approx(0.9)
    assert ema_decay(1000, 0.99) == 0.99


def test_update_is_the_formula_and_integer_buffers_are_copied():
    teacher, student = _pair()
    a = ema_update(teacher, student, decay=0.99, step=3)  # a = min(1 - 1/4, 0.99) = 0.75
    assert a == 0.75
    assert teacher.weight.tolist() == [0.25, 1.5]  # 0.75 * [0, 1] + 0.25 * [1, 3]
    assert teacher.running_mean.tolist() == [0.5, 0.5]  # 0.75 * 0 + 0.25 * 2
    assert int(teacher.num_batches_tracked) == 7  # copied, not averaged towards 100
    assert student.weight.tolist() == [1.0, 3.0]  # the student is untouched


def test_update_refuses_different_modules():
    with pytest.raises(ValueError, match="differ in their state keys"):
        ema_update(nn.Linear(2, 2), nn.BatchNorm1d(2), 0.99, 0)


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0

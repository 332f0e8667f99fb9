"""The shared slice kernel and the batch-norm folding, on tiny models and hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stitchnet.inference.fast import fold_batchnorm, inference_copy
from stitchnet.inference.kernel import predict_classes
from stitchnet.models import MODEL_NAMES, build_model, model_config


class _Fixed(nn.Module):
    """Logits that make class (row + col) % 4 win on a 4x4 grid, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        idx = torch.arange(4)
        self.register_buffer("cls", (idx[:, None] + idx[None, :]) % 4)  # (4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = nn.functional.one_hot(self.cls, 4).permute(2, 0, 1).float()  # (4, 4, 4)
        return logits[None].expand(x.shape[0], -1, -1, -1) + self.w  # (B, 4, 4, 4)


def test_predict_classes_pastes_each_crop_back():
    images = torch.zeros(3, 1, 4, 4)
    boxes = [(0, 8, 0, 8), (2, 6, 4, 8), (0, 4, 0, 4)]
    shapes = [(8, 8), (10, 10), (4, 4)]
    out = list(predict_classes(_Fixed(), images, boxes, shapes, batch_size=2))
    assert [o.shape for o in out] == shapes and all(o.dtype == np.uint8 for o in out)
    # Box 1 is 4x4, the prediction's size: pasted as is; outside the box is background.
    grid = (np.arange(4)[:, None] + np.arange(4)[None, :]) % 4
    assert np.array_equal(out[1][2:6, 4:8], grid)
    assert out[1][:2].sum() == 0 and out[1][:, :4].sum() == 0
    # Box 0 is 8x8: each predicted pixel covers a 2x2 block.
    assert np.array_equal(out[0], np.kron(grid, np.ones((2, 2), dtype=int)))


def test_predict_classes_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 boxes"):
        list(predict_classes(_Fixed(), torch.zeros(3, 1, 4, 4), [(0, 4, 0, 4)] * 2, [(4, 4)] * 3))


def _randomised(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, model_config(name, "debug")).eval()
    for m in model.modules():  # running statistics far from the identity, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "svae"])
def test_inference_copy_matches_the_model(name):
    model = _randomised(name)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fast = inference_copy(model)
    assert n_bn > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn  # untouched
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        a, b = model(x), fast(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_fold_refuses_training_mode():
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))

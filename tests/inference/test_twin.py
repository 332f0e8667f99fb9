"""The healthy twin on real bundled slices, with a tiny randomly initialised StitchNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stitchnet.data.preprocess import resize_image, resize_mask
from stitchnet.inference.twin import healthy_twin, paste_twin_hu, window_to_hu
from stitchnet.models import build_model

LABELLED = Path(__file__).resolve().parents[2] / "data" / "medseg_covid19_train50"

SLICES = ("z000", "z015", "z032")  # slices with much GGO and consolidation


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 1, 64, 64) real images in [0, 1] and their (3, 64, 64) true class ids."""
    images, masks = [], []
    for s in SLICES:
        img = np.asarray(Image.open(LABELLED / "images" / f"{s}.png"), dtype=np.float32) / 255
        images.append(resize_image(img, 64))
        masks.append(resize_mask(np.asarray(Image.open(LABELLED / "masks" / f"{s}.png")), 64))
    return torch.stack(images).reshape(3, 1, 64, 64), torch.stack(masks).reshape(3, 64, 64)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("stitchnet", preset="debug")


def test_twin_with_true_labels_replaces_exactly_the_lesions(model, batch):
    x, y = batch
    assert (y >= 2).sum() > 500 and (y < 2).sum() > 500  # real lesions and real lung
    twin, diff = healthy_twin(model, x, labels=y)
    styles = model.eval().outputs(x)["styles"]  # (3, 4, 64, 64)
    model.train()
    lesion = (y >= 2).unsqueeze(1)
    assert twin.shape == diff.shape == x.shape
    assert torch.equal(twin[~lesion], x[~lesion])  # bit for bit
    assert torch.equal(diff[~lesion], torch.zeros_like(diff[~lesion]))
    assert torch.allclose(twin[lesion], styles[:, 1:2][lesion])  # healthy style there
    assert torch.allclose(diff, twin - x)
    assert float(twin.min()) >= 0 and float(twin.max()) <= 1  # Beta means stay in (0, 1)
    assert model.training  # mode restored


def test_twin_with_the_models_own_labels(model, batch):
    x, _ = batch
    with torch.no_grad():
        pred = model.eval()(x).argmax(dim=1)  # (3, 64, 64), forward uses the posterior means
    model.train()
    twin, diff = healthy_twin(model, x)
    keep = (pred < 2).unsqueeze(1)
    assert torch.equal(twin[keep], x[keep])
    assert torch.count_nonzero(diff[keep]) == 0
    assert torch.equal(twin, healthy_twin(model, x)[0])  # deterministic: no latent draw


def test_twin_refuses_a_model_without_styles(batch):
    with pytest.raises(TypeError, match="StitchNet-like"):
        healthy_twin(build_model("unet", preset="debug"), batch[0])
    with pytest.raises(ValueError, match="labels shape"):
        healthy_twin(build_model("stitchnet", preset="debug"), batch[0], labels=batch[1][:, :10])


def test_window_to_hu_by_hand():
    assert window_to_hu(np.array([0.0, 0.5, 1.0])).tolist() == [-1250.0, -500.0, 250.0]
    assert window_to_hu(np.array([0.25]), (-160.0, 240.0)).tolist() == [-60.0]


def test_paste_twin_hu_keeps_every_non_lesion_voxel():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 400, size=(10, 12)).astype(np.float32)
    lesion = np.zeros((10, 12), dtype=bool)
    lesion[3:5, 4:7] = True
    out = paste_twin_hu(hu, np.full((8, 8), 0.5), lesion, box=(2, 8, 3, 11))
    assert np.array_equal(out[~lesion], hu[~lesion])
    assert np.allclose(out[lesion], -500.0)  # 0.5 in the default lung window
    with pytest.raises(ValueError, match="outside the model's crop"):
        paste_twin_hu(hu, np.zeros((8, 8)), lesion, box=(4, 8, 3, 11))

"""`loss_with_logits`: the same terms as `loss`, plus every row's logits, from one pass."""

import pytest
import torch

from stitchnet import pipeline
from stitchnet.models import build_model


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Four real bundled slices at 64 px: images (4, 1, 64, 64), masks (4, 64, 64)."""
    from tests.conftest import LABELLED, copy_slices

    tmp = tmp_path_factory.mktemp("lwl")
    folder = copy_slices(LABELLED, tmp / "labelled", 4)
    data_cfg = pipeline.run_config("unet", "debug").data
    data = pipeline.prepare_folder(folder, data_cfg, tmp / "cache", progress=False)
    return data.images, data.masks


@pytest.mark.parametrize("name", ["unet", "segnet", "stitchnet", "stitchnet-skip"])
def test_loss_with_logits_is_loss_plus_every_rows_logits(name, slices):
    x, y = slices
    batch = {"image": x, "mask": y, "labelled": torch.ones(4, dtype=torch.bool)}
    model = build_model(name, preset="debug")
    torch.manual_seed(0)  # StitchNet draws z from q in its loss
    terms = model.loss(batch)
    torch.manual_seed(0)
    terms2, logits = model.loss_with_logits(batch)
    assert terms2.keys() == terms.keys()
    for k in terms:
        assert torch.allclose(terms2[k], terms[k], rtol=1e-5, atol=1e-6), k
    assert logits.shape == (4, 4, 64, 64)
    # With unlabelled rows, the logits still cover every row and the loss still trains.
    batch["labelled"] = torch.tensor([True, True, False, False])
    terms3, logits3 = model.loss_with_logits(batch)
    assert logits3.shape == (4, 4, 64, 64) and torch.isfinite(terms3["loss"])
    terms3["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

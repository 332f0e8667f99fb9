"""Pseudo-labels, the lung rule, the masked cross-entropy and CutMix, on hand-made tensors."""

import math

import pytest
import torch

from stitchnet.augment import StrongParams
from stitchnet.objectives.pseudo import (
    cutmix_with_partner,
    lesion_share,
    masked_cross_entropy,
    pseudo_labels,
)


def _probs():
    """(1, 4, 1, 3): pixel 0 sure background (0.97), pixel 1 unsure GGO (0.6), pixel 2 sure
    consolidation (0.96)."""
    p = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.1, 0.2, 0.6, 0.1], [0.02, 0.01, 0.01, 0.96]])
    return p.T.reshape(1, 4, 1, 3)


def test_threshold_keeps_only_confident_pixels():
    labels, keep, conf = pseudo_labels(_probs(), 0.95)
    assert labels.tolist() == [[[0, 2, 3]]]
    assert keep.tolist() == [[[True, False, True]]]
    assert conf[0, 0].tolist() == pytest.approx([0.97, 0.6, 0.96])


def test_class_aware_thresholds_let_lesions_through():
    _, keep, _ = pseudo_labels(_probs(), 0.95, class_thresholds=(0.99, 0.95, 0.5, 0.5))
    assert keep.tolist() == [[[False, True, True]]]  # background now needs 0.99
    with pytest.raises(ValueError, match="one per class"):
        pseudo_labels(_probs(), 0.95, class_thresholds=(0.5, 0.5))


def test_outside_the_lung_is_background_with_full_confidence():
    lung = torch.tensor([[[1, 0, 0]]], dtype=torch.uint8)
    labels, keep, conf = pseudo_labels(_probs(), 0.95, lung=lung)
    assert labels.tolist() == [[[0, 0, 0]]]  # pixel 2's consolidation lies outside the lung
    assert keep.tolist() == [[[True, True, True]]]
    assert conf[0, 0].tolist() == pytest.approx([0.97, 1.0, 1.0])


def test_masked_cross_entropy_averages_over_all_pixels():
    logits = torch.zeros(1, 4, 1, 2)  # uniform: CE = log 4 at every pixel
    labels = torch.tensor([[[1, 2]]])
    keep = torch.tensor([[[True, False]]])
    assert float(masked_cross_entropy(logits, labels, keep)) == pytest.approx(math.log(4) / 2)


def test_lesion_share_of_kept_pixels():
    labels = torch.tensor([[[0, 2, 3, 1]]])
    keep = torch.tensor([[[True, True, False, True]]])
    assert float(lesion_share(labels, keep)) == pytest.approx(1 / 3)


def test_cutmix_pastes_the_next_rows_box_with_its_labels():
    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4).clone()  # row i is all i
    labels = torch.arange(3).view(3, 1, 1).expand(3, 4, 4).clone()
    keep = torch.tensor([True, False, True]).view(3, 1, 1).expand(3, 4, 4).clone()
    box = torch.tensor([[0, 2, 0, 2], [1, 3, 1, 3], [0, 4, 0, 4]])
    params = StrongParams(
        jitter=torch.zeros(3, dtype=torch.bool),
        brightness=torch.zeros(3),
        contrast=torch.ones(3),
        gamma=torch.ones(3),
        blur=torch.zeros(3, dtype=torch.bool),
        sigma=torch.ones(3),
        cutmix=torch.tensor([True, False, True]),  # row 1 keeps its own pixels
        box=box,
    )
    out, lab, kp = cutmix_with_partner(images, labels, keep, params)
    assert out[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert torch.equal(out[1], images[1])
    assert (out[2] == 0).all() and (lab[2] == 0).all() and kp[2].all()  # whole box from row 0
    assert lab[0, :2, :2].eq(1).all() and not kp[0, :2, :2].any() and kp[0, 2:, :].all()

"""The shipped model on real CT without COVID-19 lesions: a healthy scan stays healthy when its
calibration drifts by +-25 HU (a scanner's drifts by about +-20 HU).

The scan is the real COPDGene mid-chest crop of data/realct_nonlesion_dev (normal lungs, read by
a radiologist's eye as clear); benchmarks/specificity.py prints the same numbers for every scan
of that set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stitchnet.data.volumes import read_volume
from stitchnet.inference.burden import lesion_burden
from stitchnet.inference.defaults import load_segmentation_model
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.segment import segment_volume

SCAN = (
    Path(__file__).resolve().parents[2]
    / "data/realct_nonlesion_dev/cip_copdgene_crop2/crop_ct_2slices.nii.gz"
)
MAX_LESION_PCT = 2.0  # of the lung: the specificity target on lesion-free scans


@pytest.fixture(scope="module")
def shipped():
    net, cfg, _ = load_segmentation_model()
    return inference_copy(net), cfg


@pytest.mark.parametrize("shift", [-25.0, 0.0, 25.0])
def test_a_healthy_scan_shifted_by_25_hu_stays_healthy(shipped, shift):
    net, cfg = shipped
    vol = read_volume(SCAN)
    vol.hu = np.where(vol.body, vol.hu + np.float32(shift), vol.hu).astype(np.float32)
    seg = segment_volume(net, cfg.data, vol, progress=False)
    total = lesion_burden(seg.labels, seg.lung, vol.voxel_volume_ml())["total"]
    assert total["lung_ml"] > 20.0  # both lungs of the crop found (~29 mL), not an empty field
    assert total["lesion_pct"] <= MAX_LESION_PCT, total

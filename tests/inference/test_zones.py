"""Zones of each lung (inference/zones.py) on hand-built volumes whose answer is counted by hand,
and on a real segmentation: the zones of segment's burden.json against its own NIfTI files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import volume_factory as vf

from stitchnet.inference.scan import segment_scan
from stitchnet.inference.zones import ZONES, zone_burden

DISPLAY = ("S", "L", "P")  # (Z, Y, X): inferior -> superior, right -> left, anterior -> posterior


def _hand_volume() -> tuple[np.ndarray, np.ndarray]:
    """(8, 4, 6) display volume. Right lung (side 1): rows y 0-1, slices z 1-6, columns x 0-3;
    left lung (side 2): rows y 2-3, slices z 0-4, columns x 1-3. Lesions:
      right: GGO on slice z 6 at (y 0, x 0-3)   -> 4 voxels, upper third, x 0-1 ventral, 2-3 dorsal
             consolidation at z 1, y 1, x 3      -> 1 voxel, lower third, dorsal
      left:  GGO at z 2, y 2, x 1               -> 1 voxel, middle third, ventral
    """
    labels = np.zeros((8, 4, 6), np.uint8)
    sides = np.zeros_like(labels)
    sides[1:7, 0:2, 0:4] = 1
    sides[0:5, 2:4, 1:4] = 2
    labels[sides > 0] = 1
    labels[6, 0, 0:4] = 2
    labels[1, 1, 3] = 3
    labels[2, 2, 1] = 2
    return labels, sides


def _zone_voxels(zones: dict, side: str, key: str = "lung_voxels") -> dict[str, int]:
    return {zone: zones[side][zone][key] for zone in ZONES}


def test_thirds_and_halves_counted_by_hand():
    labels, sides = _hand_volume()
    zones = zone_burden(labels, sides, DISPLAY, voxel_ml=0.5)
    # Right lung: 6 slices of 2 x 4 voxels -> 2 slices (16 voxels) a third; 4 columns -> 2 a half.
    assert _zone_voxels(zones, "right") == {
        "upper": 16, "middle": 16, "lower": 16, "ventral": 24, "dorsal": 24,
    }  # fmt: skip
    assert _zone_voxels(zones, "right", "ggo_voxels") == {
        "upper": 4, "middle": 0, "lower": 0, "ventral": 2, "dorsal": 2,
    }  # fmt: skip
    assert _zone_voxels(zones, "right", "consolidation_voxels") == {
        "upper": 0, "middle": 0, "lower": 1, "ventral": 0, "dorsal": 1,
    }  # fmt: skip
    # Left lung: 5 slices of 2 x 3 -> centres at 0.5 .. 4.5 of 5: thirds of 2 / 1 / 2 slices;
    # 3 columns: the middle column's centre is on the half-way line and goes dorsal (1 / 2).
    assert _zone_voxels(zones, "left") == {
        "upper": 12, "middle": 6, "lower": 12, "ventral": 10, "dorsal": 20,
    }  # fmt: skip
    assert _zone_voxels(zones, "left", "ggo_voxels") == {
        "upper": 0, "middle": 1, "lower": 0, "ventral": 1, "dorsal": 0,
    }  # fmt: skip
    upper = zones["right"]["upper"]
    assert upper["lung_ml"] == 8.0 and upper["ggo_ml"] == 2.0
    assert upper["ggo_pct"] == 25.0 and upper["lesion_pct"] == 25.0  # 4 of 16
    assert zones["left"]["middle"]["ggo_pct"] == pytest.approx(100 / 6)


@pytest.mark.parametrize("flip", ["S", "P", "both"])
def test_axis_direction_comes_from_the_axis_codes(flip):
    """The same voxels stored upside down (I) or back to front (A) give the same zones."""
    labels, sides = _hand_volume()
    expected = zone_burden(labels, sides, DISPLAY, 1.0)
    codes = list(DISPLAY)
    if flip in ("S", "both"):
        labels, sides, codes[0] = labels[::-1], sides[::-1], "I"
    if flip in ("P", "both"):
        labels, sides, codes[2] = labels[:, :, ::-1], sides[:, :, ::-1], "A"
    assert zone_burden(labels, sides, codes, 1.0) == expected


def test_any_axis_order():
    """(Z, Y, X) stored as (X, Y, Z) with codes (P, L, S): the axes are found by their codes."""
    labels, sides = _hand_volume()
    moved = zone_burden(labels.transpose(2, 1, 0), sides.transpose(2, 1, 0), ("P", "L", "S"), 1.0)
    assert moved == zone_burden(labels, sides, DISPLAY, 1.0)


def test_missing_lung_gives_empty_zones_and_no_percentages():
    labels, sides = _hand_volume()
    labels[sides == 2], sides[sides == 2] = 0, 0  # no left lung
    left = zone_burden(labels, sides, DISPLAY, 1.0)["left"]
    assert all(left[z]["lung_voxels"] == 0 and left[z]["ggo_pct"] is None for z in ZONES)


def test_codes_without_a_cranio_caudal_axis_are_refused():
    labels, sides = _hand_volume()
    with pytest.raises(ValueError, match="no S/I axis"):
        zone_burden(labels, sides, ("L", "P", "R"), 1.0)


def test_segment_zones_match_its_nifti_and_add_up_to_each_lung(tmp_path):
    """A real segmentation of a LAS NIfTI scan: burden.json's zones (from the display arrays)
    equal the zones of labels.nii.gz and lung.nii.gz read with their own affine, and each
    lung's thirds and halves add up to its volume."""
    scan, _, _ = vf.make_nifti(tmp_path / "scan.nii.gz", n_slices=6, size=96, axcodes="LAS")
    burden = segment_scan(
        scan, tmp_path / "out", overlays=False, report=False, twin=False, progress=False
    )
    labels_img = nib.load(tmp_path / "out" / "labels.nii.gz")
    labels = np.asarray(labels_img.dataobj)
    sides = np.asarray(nib.load(tmp_path / "out" / "lung.nii.gz").dataobj)
    from_file = zone_burden(
        labels, sides, nib.aff2axcodes(labels_img.affine), burden["voxel_volume_ml"]
    )
    assert from_file == burden["zones"]  # the same voxels, counted in the other order
    for side in ("right", "left"):
        lung = burden["regions"][side]
        assert lung["lung_voxels"] > 0
        zones = burden["zones"][side]
        for part in (("upper", "middle", "lower"), ("ventral", "dorsal")):
            for key in ("lung_voxels", "ggo_voxels", "consolidation_voxels"):
                assert sum(zones[z][key] for z in part) == lung[key], (side, part, key)
            assert sum(zones[z]["lung_ml"] for z in part) == pytest.approx(lung["lung_ml"])

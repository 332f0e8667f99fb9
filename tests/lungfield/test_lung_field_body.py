"""The lung field stays in the patient's body: not in a CT table's cradle, bowel gas or outside air.

A whole-body scan is built from a real bundled chest slice (volume_factory's display scan) on a
538 mm-class field of view: below the chest, abdomen/pelvis slices of soft tissue with a vertebra
and bowel-gas pockets; under the patient's back on every slice a dense curved cradle (600 HU,
4 px = 8.8 mm thick) whose walls reach up the flanks and meet the patient through 1-pixel straps
(a pad's lip), so the air under the back is enclosed and is not connected to the air around the
patient; scanner padding outside a circular field of view. Then the real scans of
data/realct_nonlesion_dev (see its PROVENANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
import volume_factory as vf

from stitchnet.config import DataConfig
from stitchnet.data.images import hu_window, read_image_file
from stitchnet.data.volumes import read_volume
from stitchnet.inference.defaults import load_segmentation_model
from stitchnet.inference.segment import segment_volume
from stitchnet.lungfield import net as lungfield
from stitchnet.lungfield.body import body_mask, body_slice, drop_outside_air
from stitchnet.lungfield.net import load_lung_segmenter, lung_box, lung_fields
from stitchnet.lungfield.volume import (
    LEFT,
    RIGHT,
    NoLungError,
    lung_field,
    outside_air,
    split_lungs,
)

REAL = vf.REPO / "data" / "realct_nonlesion_dev"
WINDOW = DataConfig().lung_window
S0 = 150  # px of the factory canvas the chest slice comes from
SIZE = 192  # px per side of the whole-body canvas
SPACING = (5.0, 2.2, 2.2)  # mm along (Z, Y, X): a 422 mm field of view
N_ABDOMEN, N_CHEST = 8, 6  # slices, inferior to superior
TISSUE_HU, FAT_HU, BONE_HU, CRADLE_HU, STRAP_HU = 40.0, -100.0, 400.0, 600.0, -100.0
# Bowel gas: (first slice, last slice, row offset, column offset, radius px) from the body's
# centre. The top abdomen slice (7, the liver dome under the diaphragm) holds none.
GAS = [(0, 2, -25, -10, 6), (1, 4, 20, 5, 8), (3, 3, 5, -30, 5), (4, 6, -15, 15, 7)]
# Dice of the lung field against the bundled slices' lung masks, measured on the chest slices
# z000, z002-z005 repeated through the chest: 0.935, 0.946, 0.892, 0.956, 0.951. (z001: the
# segmenter finds no lung in it at this scale, lungs 45 % of the field of view; not a 3-D issue.)
MIN_DICE = 0.85
SOURCES = [0, 2, 3, 4, 5]


@dataclass
class BodyScan:
    hu: np.ndarray  # (Z, Y, X) float32 HU, display orientation
    fov: np.ndarray  # (Z, Y, X) bool, inside the field of view
    body: np.ndarray  # (Z, Y, X) bool, the patient as built (the cradle and straps not in it)
    lung: np.ndarray  # (Z, Y, X) bool, the source slice's own lung mask
    strap: np.ndarray  # (Z, Y, X) bool, the straps joining the cradle's walls to the patient
    cradle_air: np.ndarray  # (Z, Y, X) bool, the air the cradle and straps enclose
    gas: np.ndarray  # (Z, Y, X) bool, bowel gas


def whole_body_scan(source: int = 0, pad: float = -3024.0) -> BodyScan:
    """The bundled slice `source` as the chest (repeated: a lung continuous in 3-D), abdomen
    slices below it, and the cradle under the back on every slice (see the module docstring)."""
    chest = vf.display_scan(source + 1, S0, pad)
    hu0, lung0 = chest.hu[source], chest.lung[source] > 0  # (S0, S0)
    rows, cols = np.nonzero((hu0 != vf.AIR_HU) & chest.body[source])
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    h, w = rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    c = (SIZE - 1) / 2
    fov = (yy - c) ** 2 + (xx - c) ** 2 <= (SIZE / 2 - 1) ** 2
    cy, cx = c, c - 10  # the body's centre, anterior of the canvas centre (columns run A->P)
    a, b = h / 2 + 26, w / 2 + 22  # its semi-axes: the crop's corners lie inside it
    ellipse = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2
    body = ellipse <= 1
    # The cradle: an elliptic shell 4 px outside the flanks and 8 px behind the back, its walls
    # ending at `tip`; the strap fills the gap between each wall's end and the body.
    inner = ((yy - cy) / (a + 4)) ** 2 + ((xx - cx) / (b + 8)) ** 2
    outer = ((yy - cy) / (a + 8)) ** 2 + ((xx - cx) / (b + 12)) ** 2
    tip = int(round(cx + 0.3 * b))
    cradle = (inner >= 1) & (outer < 1) & (xx >= tip)
    gap = ~body & (inner < 1) & (xx >= tip)
    strap, cradle_air = gap & (xx == tip), gap & (xx > tip)
    n = N_ABDOMEN + N_CHEST
    hu = np.full((n, SIZE, SIZE), vf.AIR_HU, dtype=np.float32)
    lung = np.zeros((n, SIZE, SIZE), dtype=bool)
    gas = np.zeros((n, SIZE, SIZE), dtype=bool)
    y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
    for z in range(n):
        hu[z][body] = TISSUE_HU
        hu[z][body & (ellipse > 0.85)] = FAT_HU
        hu[z][cradle], hu[z][strap] = CRADLE_HU, STRAP_HU
        if z < N_ABDOMEN:
            hu[z][(yy - cy) ** 2 + (xx - (cx + b - 22)) ** 2 <= 8**2] = BONE_HU  # a vertebra
            for first, last, dy, dx, r in GAS:
                if first <= z <= last:
                    gas[z] |= (yy - (cy + dy)) ** 2 + (xx - (cx + dx)) ** 2 <= r**2
            hu[z][gas[z]] = vf.AIR_HU
        else:
            hu[z, y0 : y0 + h, x0 : x0 + w] = hu0[crop]
            lung[z, y0 : y0 + h, x0 : x0 + w] = lung0[crop]
        hu[z][~fov] = pad
    full = np.broadcast_to
    return BodyScan(
        hu,
        full(fov, hu.shape).copy(),
        full(body, hu.shape).copy(),
        lung,
        full(strap, hu.shape).copy(),
        full(cradle_air, hu.shape).copy(),
        gas,
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def segmenter():
    return load_lung_segmenter()


def segmenter_fields(seg, hu: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: the shipped 2-D lung segmenter's field on each slice, as segment runs it."""
    images = [hu_window(plane, WINDOW) for plane in hu]
    return np.stack(lung_fields(seg, images, DataConfig().morph_radius, drop_air_around=False)) > 0


def scan_lung_field(seg, hu, fov, spacing, source="scan"):
    """The lung field as `segment_volume` computes it: 2-D fields cut to the body, then 3-D."""
    body = body_mask(hu, fov, spacing)
    fields = segmenter_fields(seg, hu)
    inside = fields & body
    return lung_field(inside.astype(np.uint8), hu, body, source, int((fields & ~body).sum()))


# ---------------------------------------------------------------------------------------------
# The body mask


def test_the_cradle_air_is_enclosed_so_outside_air_alone_keeps_it():
    # The failure this guards against: on each slice the air under the back is enclosed by the
    # patient, the cradle and the straps, so the air-around-the-patient rule does not see it.
    scan = whole_body_scan()
    for z in (0, N_ABDOMEN + 2):
        assert not outside_air(scan.hu[z], scan.fov[z])[scan.cradle_air[z]].any()


def test_body_holds_the_patient_not_the_cradle_its_air_or_outside_air():
    scan = whole_body_scan()
    body = body_mask(scan.hu, scan.fov, SPACING)
    assert not (body & scan.cradle_air).any()
    assert body[scan.body].all()  # all of the patient, its lungs and bowel gas filled in
    # Nothing else but the straps (tissue touching the patient): not the cradle, the air
    # around, the padding.
    assert not (body & ~scan.body & ~scan.strap).any()


def test_body_slice_cuts_a_table_touching_the_patient_by_a_strap():
    # Erosion radius 3 px. A 36 x 36 patient (rows 6-41, columns 4-39) with a lung; behind its
    # back a 7-px plate (columns 43-49) whose walls (rows 2-5 and 42-45, columns 40-42) reach
    # the patient's corners through 1-px straps at column 39: the air under the back (rows 6-41,
    # columns 40-42) is closed in, 4-connected. Eroded, the plate keeps 38 px, the patient 576.
    hu = np.full((64, 64), -1000.0)
    hu[6:42, 4:40] = 40.0
    hu[18:30, 16:28] = -850.0  # the lung
    hu[2:46, 43:50] = 600.0  # the plate
    hu[2:6, 40:43] = hu[42:46, 40:43] = 600.0  # its walls
    hu[5, 39] = hu[42, 39] = -100.0  # the straps
    fov = np.ones_like(hu, dtype=bool)
    assert not outside_air(hu, fov)[20, 41]  # closed in: the air-around rule keeps it
    body = body_slice(hu, fov, radius=3)
    assert body[6:42, 4:40].all()  # the patient, its lung filled in
    assert not body[6:42, 40:43].any()  # the air under the back
    assert not body[:, 43:].any()  # the plate


# ---------------------------------------------------------------------------------------------
# The lung field of the whole-body scan


@pytest.mark.parametrize("source", SOURCES)
def test_lung_field_of_a_whole_body_scan_is_the_lungs(segmenter, source):
    scan = whole_body_scan(source)
    found = scan_lung_field(segmenter, scan.hu, scan.fov, SPACING).mask
    assert not (found & scan.cradle_air).any()
    assert not (found & scan.gas).any()
    assert not (found & ~scan.body).any()
    assert not found[:N_ABDOMEN].any()  # nothing in the abdomen or pelvis
    assert dice(found, scan.lung) >= MIN_DICE


def test_cradle_air_and_bowel_gas_marked_as_lung_are_left_out_and_reported(segmenter):
    # A segmenter that marks all of the cradle's air and the bowel gas as lung, as the shipped
    # one did on a real whole-body scan.
    scan = whole_body_scan()
    body = body_mask(scan.hu, scan.fov, SPACING)
    marked = segmenter_fields(segmenter, scan.hu) | scan.cradle_air | scan.gas
    inside = marked & body
    result = lung_field(inside.astype(np.uint8), scan.hu, body, "scan", int((marked & ~body).sum()))
    assert not (result.mask & (scan.cradle_air | scan.gas | ~scan.body)).any()
    assert dice(result.mask, scan.lung) >= MIN_DICE
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert result.outside_voxels >= scan.cradle_air.sum()  # all of the cradle's air
    assert result.dropped_voxels >= scan.gas.sum()  # all of the gas
    note = result.note(voxel_ml)
    outside_ml = float(note.split("left out ")[1].split(" mL")[0])
    assert outside_ml >= scan.cradle_air.sum() * voxel_ml - 0.05  # printed to 0.1 mL


def test_segment_volume_keeps_the_lungs_off_the_cradle(tmp_path):
    # The whole `segment` path on the scan written as NIfTI (padding -2048, as LIDC has it).
    scan = whole_body_scan(pad=-2048.0)
    path = vf.dicom_to_nifti(
        tmp_path / "body.nii.gz", scan.hu, vf.dicom_affine(len(scan.hu), SPACING)
    )
    vol = read_volume(path)
    assert np.array_equal(vol.hu, scan.hu)
    model, run_config, _ = load_segmentation_model()
    result = segment_volume(model, run_config.data, vol, progress=False)
    lung = result.lung > 0
    assert not (lung & (scan.cradle_air | scan.gas | ~scan.body)).any()
    assert not (result.labels[~lung]).any()
    assert dice(lung, scan.lung) >= MIN_DICE
    assert {RIGHT, LEFT} <= set(np.unique(result.lung).tolist())


# ---------------------------------------------------------------------------------------------
# Real scans (data/realct_nonlesion_dev)


def test_real_abdomen_slices_have_no_lung(segmenter):
    # Upper abdomen, no lung in view, four density rods and the table under the patient.
    vol = read_volume(REAL / "cip_copdgene_abdomen2")
    body = body_mask(vol.hu, vol.body, vol.spacing)
    assert not (body & ~vol.body).any()
    # The rods (rows 178-334 of columns 440-466 of the display slice) and the table are not
    # the patient; the patient's centre is.
    assert not body[:, 178:335, 440:467].any() and body[:, 256, 256].all()
    with pytest.raises(NoLungError, match="no lung found"):
        scan_lung_field(segmenter, vol.hu, vol.body, vol.spacing, vol.source)


def test_real_thorax_64_has_two_lungs_of_plausible_volume(segmenter):
    # 64 x 64 x 50 at 5.3 x 5.3 x 7 mm from the upper abdomen to the apices (a COPDGene-style
    # inspiratory scan). Measured: right 4,733 mL, left 3,956 mL, 8.7 L together. That is above
    # the 3-7 L of a typical adult at full inspiration, and it is what this patient holds:
    # the air-like voxels (< -400 HU) inside the body alone make 8.0 L, and the lungs' median
    # is -920 HU, hyperinflated (emphysematous) lung. The right lung is the larger (~55 %).
    vol = read_volume(REAL / "cip_testinput64" / "TestInput.nii.gz")
    found = scan_lung_field(segmenter, vol.hu, vol.body, vol.spacing, vol.source)
    sides = split_lungs(found.mask)
    ml = vol.voxel_volume_ml()
    right, left = (sides == RIGHT).sum() * ml, (sides == LEFT).sum() * ml
    assert 3000 <= left < right <= 6000
    assert 0.5 <= right / (right + left) <= 0.6
    body = body_mask(vol.hu, vol.body, vol.spacing)
    air_ml = (body & (vol.hu < -400)).sum() * ml  # a threshold estimate of the same lungs
    assert 0.9 <= (right + left) / air_ml <= 1.2
    assert not found.mask[:3].any()  # slices 0-2: liver and stomach, below the lungs
    assert not (found.mask & ~body).any()


def test_real_chest_crop_lungs_are_found(segmenter):
    # A tight crop of the mid-chest (the ribs at its edges): both lungs, covering the crop's air.
    vol = read_volume(REAL / "cip_copdgene_crop2" / "crop_ct_2slices.nii.gz")
    found = scan_lung_field(segmenter, vol.hu, vol.body, vol.spacing, vol.source)
    sides = split_lungs(found.mask)
    ml = vol.voxel_volume_ml()
    assert (sides == RIGHT).sum() * ml > 10 and (sides == LEFT).sum() * ml > 10
    air = vol.hu < -400
    assert (air & found.mask).sum() >= 0.95 * air.sum()  # measured 0.98; airways are the rest


# ---------------------------------------------------------------------------------------------
# One windowed slice without HU (`stitchnet predict`)


def test_drop_outside_air_drops_a_field_part_in_the_air_around_the_body():
    image = np.full((40, 40), 0.17)  # air (-1000 HU in the lung window)
    image[8:32, 8:32] = 0.8  # a body
    image[14:26, 12:18] = 0.27  # a lung in it
    field = np.zeros((40, 40), np.uint8)
    field[14:26, 12:18] = 1
    field[0:5, 0:30] = 1  # air above the body
    kept = drop_outside_air(field, image)
    assert kept[14:26, 12:18].all() and kept.sum() == 12 * 6
    # Cropped to the chest (lungs through its edges, no air around): nothing dropped.
    crop = image[8:32, 8:32].copy()
    crop[0:12, 4:10] = 0.1
    field = np.zeros_like(crop, np.uint8)
    field[0:12, 4:10] = 1
    assert np.array_equal(drop_outside_air(field, crop), field)


def test_predict_lung_field_of_the_lidc_slice_stays_off_the_outside_air(segmenter):
    # The LIDC slice (read with pydicom: it has no Modality tag) shows the whole body in air.
    ds = pydicom.dcmread(REAL / "lidc_lungmask_slice" / "0.dcm")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    field = lung_fields(segmenter, [hu_window(hu, WINDOW)], DataConfig().morph_radius)[0] > 0
    padding = hu < -1500
    around = outside_air(hu, ~padding)  # air joined to the slice's border or to the padding
    assert (field & around).sum() <= 0.01 * field.sum()
    y0, y1, x0, x1 = lung_box(field.astype(np.uint8))
    assert (y1 - y0) * (x1 - x0) < 0.8 * hu.size  # the crop box is on the lungs again


def test_drop_outside_air_leaves_every_bundled_labelled_slice_alone(segmenter, monkeypatch):
    # The bundled slices are cropped to the lungs (their lungs touch the edges): lung_fields
    # with the rule gives every one of them the same field as without it.
    images = [read_image_file(p) for p in sorted((vf.LABELLED / "images").glob("*.png"))]
    radius = DataConfig().morph_radius
    with_rule = lung_fields(segmenter, images, radius)
    monkeypatch.setattr(lungfield, "drop_outside_air", lambda field, image: field)
    without = lung_fields(segmenter, images, radius)
    assert len(with_rule) == 50
    for k, (a, b) in enumerate(zip(with_rule, without, strict=True)):
        assert np.array_equal(a, b), k

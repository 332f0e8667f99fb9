"""The healthy twin: hand-worked slices, and the shipped default model on real bundled slices."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import volume_factory as vf
from test_segment_scan import _chest

from stitchnet.data.images import hu_window, read_image_file, read_label_file
from stitchnet.data.preprocess import resize_image
from stitchnet.data.volumes import read_volume
from stitchnet.inference.defaults import DEFAULT_MODEL, load_segmentation_model
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.scan import segment_scan
from stitchnet.inference.segment import segment_volume
from stitchnet.inference.twin import (
    AIR_HU,
    _remove_haze,
    healthy_style,
    healthy_twin_slice,
    reference_mask,
    style_inputs,
    style_to_hu,
    style_twin_slice,
    style_twin_volume,
    twin_mode,
    twin_volume,
)
from stitchnet.lungfield.net import lung_box

needs_default = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no default model shipped")


def _lung_with_ggo(size: int = 96) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """(H, W) HU and labels: healthy lung -850 HU with noise, a vertical vessel (-50 HU, 3 px)
    running through a GGO disk (haze +400 HU on the lung, radius 20 px) in the middle."""
    rng = np.random.default_rng(0)
    hu = -850.0 + rng.normal(0.0, 15.0, (size, size))
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= 20**2
    hu[disk] += 400.0
    vessel = (slice(None), slice(size // 2 - 1, size // 2 + 2))
    hu[vessel] = -50.0
    labels = np.where(disk, 2, 1).astype(np.uint8)
    return hu.astype(np.float32), labels, vessel


def test_remove_haze_by_hand():
    # Haze -400 HU (600 HU of tissue above air), healthy level -850 (150): the tissue ratio is 1/4.
    hu = np.array([-400.0, -200.0, -600.0, -1000.0, -1020.0])
    got = _remove_haze(hu, np.full(5, -400.0), np.full(5, -850.0))
    # haze -> level; 200 HU above the haze rides on the level; 400 HU of tissue -> 100; air stays
    # air; below air is floored at air.
    assert got.tolist() == [-850.0, -650.0, -900.0, -1000.0, -1000.0]


def test_ggo_becomes_the_surrounding_lung_and_keeps_its_vessel():
    hu, labels, vessel = _lung_with_ggo()
    twin = healthy_twin_slice(hu, labels, spacing=(0.7, 0.7))
    lesion = labels == 2
    assert twin.shape == hu.shape and twin.dtype == np.float32
    assert np.array_equal(twin[~lesion], hu[~lesion])  # bit for bit off the lesion
    parenchyma = lesion.copy()
    parenchyma[vessel] = False
    # The haze is gone: inside the disk the lung is back within 30 HU of its -850.
    assert abs(float(twin[parenchyma].mean()) - (-850.0)) < 30
    assert float(hu[parenchyma].mean()) > -500  # it was GGO before
    # The vessel is still there, well above the lung around it.
    on_vessel = lesion.copy()
    on_vessel[:, : hu.shape[1] // 2 - 1] = False
    on_vessel[:, hu.shape[1] // 2 + 2 :] = False
    assert float(twin[on_vessel].mean()) > float(twin[parenchyma].mean()) + 300
    # No step at the border: the lesion's outer ring of voxels matches the lung just outside.
    grown = np.zeros_like(lesion)
    grown[1:-1, 1:-1] = lesion[:-2, 1:-1] | lesion[2:, 1:-1] | lesion[1:-1, :-2] | lesion[1:-1, 2:]
    inner = parenchyma & ~(
        lesion & np.roll(lesion, 1, 0) & np.roll(lesion, -1, 0) & np.roll(lesion, 1, 1)
    )
    outer = grown & ~lesion
    outer[vessel] = False
    assert abs(float(twin[inner].mean()) - float(hu[outer].mean())) < 25


def test_a_slice_without_healthy_lung_takes_the_scans_level():
    hu = np.full((2, 40, 40), -300.0, np.float32)
    labels = np.full((2, 40, 40), 3, np.uint8)  # slice 1: all consolidation
    hu[0], labels[0] = -880.0, 1  # slice 0: all aerated healthy lung
    twin = twin_volume(hu, labels, spacing=(1.0, 1.0))
    assert np.array_equal(twin[0], hu[0])
    assert np.allclose(twin[1], -880.0, atol=1e-3)
    # Alone, the slice has no reference; the textbook level stands in.
    alone = healthy_twin_slice(hu[1], labels[1])
    assert np.allclose(alone, -850.0, atol=1e-3)
    assert np.array_equal(twin_volume(hu[:1], labels[:1]), hu[:1])  # no lesion: the scan itself


def test_reference_leaves_out_vessels_and_dense_rim():
    hu = np.array([[-950.0, -700.0, -300.0, 40.0]])
    labels = np.array([[1, 1, 1, 2]])
    assert reference_mask(hu, labels).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="same"):
        healthy_twin_slice(hu, labels[:, :2])
    with pytest.raises(ValueError, match="labels"):
        twin_volume(hu[None], labels)


@pytest.fixture(scope="module")
def default_twin(tmp_path_factory):
    """A 10-slice 256 px chest of bundled slices z000-z009 through the default model."""
    net, cfg, _ = load_segmentation_model()
    hu = _chest(10, 256).hu
    root = tmp_path_factory.mktemp("twin")
    nii = vf.dicom_to_nifti(root / "scan.nii.gz", hu, vf.dicom_affine(10), "LAS")
    vol = read_volume(nii)
    seg = segment_volume(inference_copy(net), cfg.data, vol, progress=False, twin=True)
    return vol, seg


@needs_default
@pytest.mark.parametrize("z", [7, 9])  # MedSeg z007, z009: GGO beside much healthy lung
def test_default_models_twin_reads_as_its_healthy_lung(default_twin, z):
    vol, seg = default_twin
    hu, labels, twin = vol.hu[z], seg.labels[z], seg.twin_hu[z]
    lesion, healthy = labels >= 2, labels == 1
    assert lesion.sum() > 1000 and healthy.sum() > 1000
    healthy_median = float(np.median(hu[healthy]))
    # The lesions were denser than the healthy lung; in the twin they sit at its level.
    assert float(hu[lesion].mean()) > healthy_median + 100
    assert abs(float(twin[lesion].mean()) - healthy_median) < 100
    assert float(twin[lesion].min()) >= AIR_HU
    assert np.array_equal(twin[~lesion], hu[~lesion])


@needs_default
def test_twin_file_has_the_inputs_geometry(tmp_path):
    hu = _chest(4, 128).hu
    nii = vf.dicom_to_nifti(tmp_path / "scan.nii.gz", hu, vf.dicom_affine(4), "LAS")
    segment_scan(nii, tmp_path / "out", overlays=False, progress=False, report=False)
    _check_twin_file(nii, tmp_path / "out")


def test_style_twin_shifts_the_style_onto_the_patients_lung():
    hu, labels, vessel = _lung_with_ggo()
    lesion = labels == 2
    # A style 50 HU denser than this lung everywhere: the offset measured on the healthy lung
    # (-850 - -800 = -50) takes it back, so the haze becomes -850, as in the level twin.
    twin = style_twin_slice(hu, labels, np.full(hu.shape, -800.0, np.float32), (0.7, 0.7))
    assert np.array_equal(twin[~lesion], hu[~lesion])
    parenchyma = lesion.copy()
    parenchyma[vessel] = False
    assert abs(float(twin[parenchyma].mean()) - (-850.0)) < 30
    # What the style says inside the lesion, where no reference can correct it, is passed on:
    # 100 HU more on the right half of the disk gives 100 HU more there in the twin.
    style = np.full(hu.shape, -800.0, np.float32)
    style[:, hu.shape[1] // 2 + 2 :][lesion[:, hu.shape[1] // 2 + 2 :]] += 100.0
    right = parenchyma.copy()
    right[:, : hu.shape[1] // 2 + 10] = False
    left = parenchyma.copy()
    left[:, hu.shape[1] // 2 - 10 :] = False
    shaped = style_twin_slice(hu, labels, style, (0.7, 0.7))
    assert abs(float(shaped[right].mean()) - float(shaped[left].mean()) - 100.0) < 20


def test_style_twin_refuses_lesions_without_style_and_bad_modes():
    hu, labels, _ = _lung_with_ggo(48)
    style = np.full(hu.shape, np.nan, np.float32)
    style[:, :30] = -850.0  # the crop box misses part of the lesion
    with pytest.raises(ValueError, match="no style"):
        style_twin_slice(hu, labels, style)
    with pytest.raises(ValueError, match="no style for lesion slices"):
        style_twin_volume(hu[None], labels[None], {}, [(0, 48, 0, 48)], (-1250.0, 250.0))
    assert [twin_mode(v) for v in (True, False, None, "level", "style")] == [
        "level",
        None,
        None,
        "level",
        "style",
    ]
    with pytest.raises(ValueError, match="expected one of level, style"):
        twin_mode("smooth")


@pytest.fixture(scope="module")
def default_model():
    net, cfg, _ = load_segmentation_model()
    return inference_copy(net), cfg


def _bundled(name: str, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A bundled labelled slice in HU (through the model's window) and its class ids."""
    gray = read_image_file(vf.LABELLED / "images" / f"{name}.png")
    labels = read_label_file(vf.LABELLED / "masks" / f"{name}.png").astype(np.uint8)
    return (window[0] + (window[1] - window[0]) * gray).astype(np.float32), labels


def _style_twin(model, cfg, hu, labels):
    window, size = cfg.data.lung_window, cfg.data.image_size
    box = lung_box((labels >= 1).astype(np.uint8), cfg.data.crop_margin)
    x = resize_image(hu_window(hu, window)[box[0] : box[1], box[2] : box[3]], size)[None]
    hide, fill = style_inputs(hu, labels, box, size, window)
    assert hide.shape == (size, size) and hide.any() and not hide.all()
    style = healthy_style(model, x, hide[None], np.array([fill]))[0]  # (S, S)
    assert float(style.min()) >= 0.0 and float(style.max()) <= 1.0
    return style_twin_slice(hu, labels, style_to_hu(style, box, hu.shape, window))


@needs_default
@pytest.mark.parametrize("name", ["z011", "z013"])  # GGO beside much healthy lung
def test_default_models_style_twin_lowers_ggo_to_the_healthy_lung(default_model, name):
    model, cfg = default_model
    hu, labels = _bundled(name, cfg.data.lung_window)
    ggo = labels == 2
    assert ggo.sum() > 1000
    twin = _style_twin(model, cfg, hu, labels)
    assert np.array_equal(twin[labels < 2], hu[labels < 2])  # bit for bit off the lesions
    assert np.array_equal(twin, _style_twin(model, cfg, hu, labels))  # deterministic
    assert float(twin[labels >= 2].min()) >= AIR_HU
    healthy = float(hu[reference_mask(hu, labels)].mean())
    before, after = float(hu[ggo].mean()), float(twin[ggo].mean())
    assert before > healthy + 100  # the GGO was denser than the healthy lung
    assert abs(after - healthy) < 0.5 * abs(before - healthy)


@needs_default
def test_style_twin_file_has_the_inputs_geometry_and_its_mode(tmp_path):
    hu = _chest(4, 128).hu
    nii = vf.dicom_to_nifti(tmp_path / "scan.nii.gz", hu, vf.dicom_affine(4), "LAS")
    burden = segment_scan(
        nii, tmp_path / "out", overlays=False, progress=False, report=False, twin_mode="style"
    )
    assert burden["healthy_twin"]["mode"] == "style"
    assert (
        json.loads((tmp_path / "out" / "burden.json").read_text())["healthy_twin"]
        == (burden["healthy_twin"])
    )
    _check_twin_file(nii, tmp_path / "out")
    with pytest.raises(ValueError, match="twin mode 'styl'"):
        segment_scan(nii, tmp_path / "bad", progress=False, twin_mode="styl")
    assert not (tmp_path / "bad").exists()


def _check_twin_file(nii, out_dir):
    """The written twin has the input's shape and affine, changes only lesion voxels, and makes
    most of them less dense."""
    src, out = nib.load(nii), nib.load(out_dir / "healthy_twin.nii.gz")
    labels = np.asarray(nib.load(out_dir / "labels.nii.gz").dataobj)
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    twin, scan = np.asarray(out.dataobj), np.asarray(src.dataobj).astype(np.float32)
    assert (labels >= 2).sum() > 100
    assert np.array_equal(twin[labels < 2], scan[labels < 2])
    assert (twin[labels >= 2] < scan[labels >= 2]).mean() > 0.5  # lesions made less dense

"""`stitchnet segment` end to end on small DICOM and NIfTI chest scans built from bundled slices.

The factory places each bundled (tightly cropped) slice in air; a real chest has its chest wall
around the lungs. `_chest` puts soft tissue around the crop and leaves a ring of air between the
patient and the scanner's field of view, so the scans have air outside the body, FOV padding, and
lungs enclosed by the body, as real scans do. The shipped default model segments them.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import volume_factory as vf
from PIL import Image

from stitchnet.cli import main
from stitchnet.data.volumes import read_volume
from stitchnet.inference import scan as scan_module
from stitchnet.inference.burden import lesion_burden
from stitchnet.inference.defaults import DEFAULT_MODEL
from stitchnet.inference.scan import segment_scan

SIZE = 96  # px per slice side
N = 4  # slices
_original_display_scan = vf.display_scan


def _chest(n_slices: int = 6, size: int = 128, pad: float = -3024.0) -> vf.DisplayScan:
    """The factory's scan with soft tissue (40 HU) around the crop out to 0.47 of the side, and
    air (-1000 HU) from there to the field of view."""
    scan = _original_display_scan(n_slices, size, pad)
    placed = ((scan.hu != vf.AIR_HU) & scan.body).any(axis=0)  # (Y, X) where the crops lie
    rows, cols = np.nonzero(placed)
    crop = np.zeros((size, size), dtype=bool)
    crop[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    chest_wall = ((yy - c) ** 2 + (xx - c) ** 2 <= (0.47 * size) ** 2) & ~crop
    hu = scan.hu.copy()
    hu[:, chest_wall & scan.body[0]] = 40.0
    return vf.DisplayScan(hu, scan.masks, scan.lung, scan.body)


@pytest.fixture(autouse=True)
def _chest_scans(monkeypatch):
    monkeypatch.setattr(vf, "display_scan", _chest)


def _air_outside_body(size: int = SIZE) -> np.ndarray:
    """(Y, X) bool: the air ring between the chest wall and the field of view."""
    scan = _chest(1, size)
    return (scan.hu[0] == -1000.0) & scan.body[0] & _ring(size)


def _ring(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 > (0.47 * size) ** 2


def _labels_display(out: Path, scan: Path) -> tuple[np.ndarray, np.ndarray]:
    """labels.nii.gz and lung.nii.gz of `out` back in the scan's display orientation."""
    vol = read_volume(scan)
    arrays = []
    for name in ("labels.nii.gz", "lung.nii.gz"):
        data = np.asarray(nib.load(out / name).dataobj)
        xyz = nib.orientations.apply_orientation(data, vol.ornt)  # input -> (L, P, S) order
        arrays.append(np.transpose(xyz, (2, 0, 1)))  # -> (Z, Y, X), as Volume.hu
    return arrays[0], arrays[1]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    """A tree with the chest CT series and a shorter second CT series, segmented once."""
    mp = pytest.MonkeyPatch()
    mp.setattr(vf, "display_scan", _chest)
    root = tmp_path_factory.mktemp("scan")
    folder, hu, _ = vf.make_dicom_series(root / "tree", N, SIZE, series_uid="1.2.3.4.100")
    vf.make_dicom_series(root / "tree", 2, SIZE, subfolder="scout", series_uid="1.2.3.4.200")
    out = root / "out"
    burden = segment_scan(root / "tree", out, progress=False)
    mp.undo()
    return root, folder, hu, out, burden


def test_dicom_tree_outputs_geometry_and_series(dicom_run):
    root, _, hu, out, burden = dicom_run
    # The shipped default is StitchNet-family (stitchnet-skip), so the healthy twin comes too.
    # (Hidden names are the output folder's own bookkeeping, not outputs.)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "burden.csv",
        "burden.json",
        "healthy_twin.nii.gz",
        "healthy_twin_diff.nii.gz",
        "labels.nii.gz",
        "lung.nii.gz",
        "overlays",
        "report.html",
    ]
    assert burden["series_uid"] == "1.2.3.4.100"  # the CT series with the most slices
    assert burden["failed_outputs"] == []
    assert json.loads((out / "burden.json").read_text()) == burden
    labels = nib.load(out / "labels.nii.gz")
    expected_affine = vf.dicom_affine(N)
    assert labels.shape == (SIZE, SIZE, N) == nib.load(out / "lung.nii.gz").shape
    assert np.allclose(labels.affine, expected_affine)
    assert labels.get_data_dtype() == np.uint8
    assert len(list((out / "overlays").glob("slice_*.png"))) == N
    assert Image.open(out / "overlays" / "slice_0000.png").size == (SIZE, SIZE)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_lesions_only_inside_lung_and_body_and_burden_matches_labels(dicom_run):
    root, folder, hu, out, burden = dicom_run
    labels, lung = _labels_display(out, root / "tree")
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels > 0).any()
    assert np.array_equal(labels > 0, lung > 0)  # inside the lung: class >= 1; outside: 0
    assert (labels[:, _air_outside_body()] == 0).all()  # the air around the patient
    assert (labels[hu < -1500] == 0).all()  # the scanner's FOV padding
    voxel_ml = 2.5 * 0.8 * 0.7 / 1000  # the factory's spacing
    assert burden["voxel_volume_ml"] == pytest.approx(voxel_ml)
    total = burden["regions"]["total"]
    assert total["ggo_ml"] == pytest.approx((labels == 2).sum() * voxel_ml)
    assert total["lung_ml"] == pytest.approx((lung > 0).sum() * voxel_ml)
    for region, expected in lesion_burden(labels, lung, voxel_ml).items():
        assert burden["regions"][region] == pytest.approx(expected)
    # The lung mask follows the bundled slices' own lung field, slice by slice, in order.
    truth = vf.display_scan(N, SIZE).lung > 0
    for z in range(N):
        inter = (truth[z] & (lung[z] > 0)).sum()
        assert inter / (truth[z] | (lung[z] > 0)).sum() > 0.5, z


def test_nifti_conversion_gives_identical_labels(dicom_run, tmp_path):
    root, folder, hu, out, _ = dicom_run
    nii = vf.dicom_to_nifti(tmp_path / "scan.nii.gz", hu, vf.dicom_affine(N), axcodes="LAS")
    segment_scan(nii, tmp_path / "out", overlays=False, progress=False)
    a = nib.as_closest_canonical(nib.load(out / "labels.nii.gz"))
    b = nib.as_closest_canonical(nib.load(tmp_path / "out" / "labels.nii.gz"))
    assert np.allclose(a.affine, b.affine)
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert nib.load(tmp_path / "out" / "labels.nii.gz").shape == nib.load(nii).shape


def test_cli_segment_and_help_name_the_default_model(dicom_run, tmp_path, capsys):
    assert DEFAULT_MODEL.is_file()
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    shipped = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())["model_name"]
    assert f"Default model: {shipped}" in capsys.readouterr().out
    root = dicom_run[0]
    code = main(["segment", str(root / "tree"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0 and (tmp_path / "o" / "burden.json").is_file()
    assert "mL" in capsys.readouterr().out


def _no_lung_nifti(path: Path) -> Path:
    """A 'scan' of soft tissue only: a real volume with no lung anywhere."""
    data = np.full((32, 32, 4), 40, dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), str(path))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "empty folder"),
        ("png", "2-D image"),
        ("mr", "CT"),
        ("no_lung", "no lung found"),
    ],
)
def test_bad_input_exit_2_and_nothing_complete(tmp_path, capsys, case, message):
    if case == "empty":
        scan = tmp_path / "empty"
        scan.mkdir()
    elif case == "png":
        scan = tmp_path / "slice.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(scan)
    elif case == "mr":
        scan, _, _ = vf.make_dicom_series(tmp_path / "mr", 3, 32, modality="MR")
    else:
        scan = _no_lung_nifti(tmp_path / "tissue.nii.gz")
    out = tmp_path / "results" / "out"
    code = main(["segment", str(scan), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("stitchnet segment: error:") and message in err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temp folder either


REQUIRED = ("labels.nii.gz", "lung.nii.gz", "burden.json", "burden.csv")
# Each optional output and what it writes, as docs/segment.md lists them.
OPTIONAL = {
    "uncertainty": ["uncertainty.nii.gz", "uncertainty_mi.nii.gz", "uncertainty.csv"],
    "healthy_twin": ["healthy_twin.nii.gz", "healthy_twin_diff.nii.gz"],
    "overlays": ["overlays"],
    "report": ["report.html"],
    "dicom_seg": ["labels_seg.dcm"],
}
ALL_OUTPUTS = ["--uncertainty", "--samples", "2", "--dicom-seg", "--quiet"]


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _break_volume_writes(monkeypatch, bad_name: str) -> None:
    """write_label_volume, as segment_scan calls it, fails for the file `bad_name` only."""
    real = scan_module.write_label_volume

    def write(vol, array, path, dtype):
        if Path(path).name == bad_name:
            raise _disk_full(path)
        return real(vol, array, path, dtype)

    monkeypatch.setattr(scan_module, "write_label_volume", write)


def _break(monkeypatch, output: str) -> str:
    """Make one optional output's writer raise; return the error burden.json should name."""
    if output == "uncertainty":
        # The second of its three files fails: the other two must go with it.
        _break_volume_writes(monkeypatch, "uncertainty_mi.nii.gz")
        return "OSError: [Errno 28] No space left on device: '{out}/uncertainty_mi.nii.gz'"
    if output == "healthy_twin":
        _break_volume_writes(monkeypatch, "healthy_twin.nii.gz")
        return "OSError: [Errno 28] No space left on device: '{out}/healthy_twin.nii.gz'"
    if output == "overlays":
        real = scan_module._write_overlay

        def overlay(folder, z, hu, labels, window):
            if z == 2:  # one slice of four: the PNGs written beside it must not stay
                raise MemoryError("overlay of slice 2")
            real(folder, z, hu, labels, window)

        monkeypatch.setattr(scan_module, "_write_overlay", overlay)
        return "MemoryError: overlay of slice 2"

    def fail(*args, **kwargs):
        raise ValueError(f"{output} writer broken")

    # The report's and the SEG's writers, as scan.py calls them.
    monkeypatch.setattr(
        scan_module, "write_viewer" if output == "report" else "write_volume_seg", fail
    )
    return f"ValueError: {output} writer broken"


@pytest.mark.parametrize("output", list(OPTIONAL))
def test_failed_optional_output_costs_nothing_else(
    dicom_run, tmp_path, capsys, monkeypatch, output
):
    root = dicom_run[0]
    error = _break(monkeypatch, output)
    out = tmp_path / "out"
    assert main(["segment", str(root / "tree"), "--out", str(out), *ALL_OUTPUTS]) == 0

    error = error.format(out=out)  # the message names the final folder, not the staging one
    captured = capsys.readouterr()
    files = OPTIONAL[output]
    note = f"{output} ({', '.join(files)}) not written: {error}"
    assert f"warning: {note}" in captured.err.splitlines()
    assert note not in captured.out  # said once, as the warning
    wrote = captured.out.split(" wrote ", 1)[1].splitlines()[0]
    assert not [name for name in files if name in wrote]
    assert all(name in wrote for name in REQUIRED)

    present = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    others = {name for key, names in OPTIONAL.items() if key != output for name in names}
    assert present == set(REQUIRED) | others  # every other output is whole; this one is gone
    burden = json.loads((out / "burden.json").read_text())
    assert burden["failed_outputs"] == [{"output": output, "files": files, "error": error}]
    assert note in burden["notes"]
    if output in ("uncertainty", "healthy_twin"):
        assert burden[output]["files"] == []
    # The required outputs are those of an unbroken run.
    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    assert np.array_equal(labels, np.asarray(nib.load(dicom_run[3] / "labels.nii.gz").dataobj))
    assert burden["regions"] == dicom_run[4]["regions"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_failed_required_output_leaves_no_output(dicom_run, tmp_path, capsys, monkeypatch):
    _break_volume_writes(monkeypatch, "lung.nii.gz")
    out = tmp_path / "results" / "out"
    code = main(["segment", str(dicom_run[0] / "tree"), "--out", str(out), *ALL_OUTPUTS])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "No space left on device" in err and "lung.nii.gz" in err
    assert not out.exists()
    assert not any(out.parent.iterdir())  # no staging folder either

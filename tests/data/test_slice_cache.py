"""The slice cache: built once, reused without reading a volume, rebuilt when an input changes."""

from __future__ import annotations

import json
import os

import pytest
import torch
import volume_datasets as vd

from stitchnet.cli import main
from stitchnet.config import DATA_PRESETS, DataConfig
from stitchnet.data import volumes
from stitchnet.data.volume_dataset import prepare_volumes

CFG = DATA_PRESETS["debug"]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    vd.nnunet_dataset(root, n_cases=3, per_case=2)
    return root


class ReadCounter:
    """read_volume, counting the paths it reads."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.real = volumes.read_volume

    def __call__(self, path, *args, **kwargs):
        self.read.append(os.path.basename(path))
        return self.real(path, *args, **kwargs)


def no_read(path, *args, **kwargs):
    raise AssertionError(f"read_volume({path}) on a run that should use the cache")


def test_a_second_run_reads_no_volume(dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare_volumes(dataset, CFG, cache, progress=False)
    monkeypatch.setattr(volumes, "read_volume", no_read)
    second = prepare_volumes(dataset, CFG, cache, progress=False)
    assert second.ids == first.ids and second.patient_ids == first.patient_ids
    assert torch.equal(second.images, first.images) and torch.equal(second.masks, first.masks)
    assert torch.equal(second.lungs, first.lungs) and second.boxes == first.boxes


def test_an_entry_holds_the_scale_spacing_case_and_lung_fraction(dataset, tmp_path):
    cache = tmp_path / "cache"
    prepare_volumes(dataset, CFG, cache, progress=False)
    entries = sorted((cache / "scans").glob("*.json"))
    assert len(entries) == 3 and len(list((cache / "scans").glob("*.pt"))) == 3
    meta = json.loads(entries[0].read_text())
    assert meta["case_id"] in {"case0", "case1", "case2"}
    assert meta["hu_window"] == [-1250.0, 250.0]  # the model's window: HU = lo + x (hi - lo)
    assert meta["spacing"] == list(vd.SPACING)  # mm along display (Z, Y, X), from the header
    tensors = torch.load(entries[0].with_suffix(".pt"), weights_only=True)
    assert tensors["images"].dtype == torch.float16 and tensors["images"].shape[1:] == (1, 64, 64)
    fractions = tensors["lung_fraction"]
    # Lung / body on each kept slice: a labelled slice stays even where the 3-D lung field
    # left it out (the stacked slices of different patients do not all join in 3-D).
    assert len(fractions) == len(tensors["z"]) and bool(((fractions >= 0) & (fractions < 1)).all())
    assert float(fractions.max()) > 0.02


def test_a_changed_file_is_read_again_and_only_it(dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    prepare_volumes(dataset, CFG, cache, progress=False)
    label = dataset / "labelsTr" / "case1.nii.gz"
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: a new mtime
    counter = ReadCounter()
    monkeypatch.setattr(volumes, "read_volume", counter)
    prepare_volumes(dataset, CFG, cache, progress=False)
    assert counter.read == ["case1_0000.nii.gz"]


def test_other_reader_settings_make_other_entries(dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    prepare_volumes(dataset, CFG, cache, progress=False)
    counter = ReadCounter()
    monkeypatch.setattr(volumes, "read_volume", counter)
    prepare_volumes(dataset, DataConfig(image_size=96), cache, progress=False)
    assert len(counter.read) == 3
    counter.read.clear()
    prepare_volumes(dataset, CFG, cache, progress=False, labelled=False)  # no labels: new entries
    assert len(counter.read) == 3


def test_a_damaged_entry_is_made_again(dataset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare_volumes(dataset, CFG, cache, progress=False)
    victim = sorted((cache / "scans").glob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    counter = ReadCounter()
    monkeypatch.setattr(volumes, "read_volume", counter)
    again = prepare_volumes(dataset, CFG, cache, progress=False)
    assert len(counter.read) == 1 and torch.equal(again.images, first.images)


def test_prepare_builds_the_cache_that_train_then_reads(dataset, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    args = ["prepare", str(dataset), "--preset", "debug", "--cache", str(cache), "--quiet"]
    assert main(args) == 0
    assert "prepared 6 labelled slices at 64 px" in capsys.readouterr().out
    monkeypatch.setattr(volumes, "read_volume", no_read)
    assert len(prepare_volumes(dataset, CFG, cache, progress=False, labelled=True)) == 6

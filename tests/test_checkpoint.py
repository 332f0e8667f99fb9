from dataclasses import dataclass

import pytest
import torch

import stitchnet
import stitchnet.models as registry
from stitchnet import checkpoint as C
from stitchnet.config import RunConfig, TrainConfig
from stitchnet.models.base import SegmentationModel


@dataclass(frozen=True)
class TinyConfig:
    channels: int = 3
    kernel: tuple[int, int] = (3, 3)


class Tiny(SegmentationModel):
    name = "tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.conv = torch.nn.Conv2d(1, config.channels, config.kernel, padding=1)
        self.bn = torch.nn.BatchNorm2d(config.channels)
        self.head = torch.nn.Conv2d(config.channels, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


@pytest.fixture(autouse=True)
def tiny_in_registry(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "tiny", (__name__, "Tiny"))


def _cfg(seed=3) -> RunConfig:
    return RunConfig(model="tiny", model_config={"channels": 5}, train=TrainConfig(seed=seed))


def _trained(cfg: RunConfig):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(channels=5))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.rand(2, 1, 8, 8)).sum().backward()  # fills BN statistics and Adam moments
    opt.step()
    return model, opt


def test_round_trip_rebuilds_the_model(tmp_path):
    cfg = _cfg()
    model, opt = _trained(cfg)
    split = {"train": ["a", "b"], "val": ["c"]}
    path = C.save_checkpoint(
        tmp_path / "run" / "best.pt",
        model,
        cfg,
        opt,
        epoch=4,
        step=40,
        metrics={"val_lesion_dice": 0.5},
        split=split,
        extra={"note": "x"},
    )
    ckpt = C.load_checkpoint(path, expected_model="tiny")
    assert ckpt["format"] == "stitchnet-checkpoint"
    assert ckpt["stitchnet_version"] == stitchnet.__version__
    assert ckpt["model_name"] == "tiny"
    assert ckpt["model_config"] == {"channels": 5, "kernel": (3, 3)}
    assert RunConfig.from_dict(ckpt["run_config"]) == cfg
    assert (ckpt["seed"], ckpt["epoch"], ckpt["step"]) == (3, 4, 40)
    assert ckpt["metrics"] == {"val_lesion_dice": 0.5}
    assert ckpt["split"] == split and ckpt["extra"] == {"note": "x"}
    assert ckpt["optimizer_state"]["state"]  # Adam moments are kept for resuming

    for where in (path, tmp_path / "run"):  # a file, or a run folder meaning its best.pt
        rebuilt, _ = C.model_from_checkpoint(where)
        assert isinstance(rebuilt, Tiny) and not rebuilt.training
        assert rebuilt.config == TinyConfig(channels=5)
        for (k, a), b in zip(
            model.state_dict().items(), rebuilt.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), k
    assert not list((tmp_path / "run").glob(".*tmp"))  # the temporary file was renamed away


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: no such file"):
        C.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match=r"has no best\.pt \(found: no \.pt files\)"):
        C.model_from_checkpoint(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(
        C.CheckpointError, match=r"broken\.pt is not a readable StitchNet checkpoint"
    ):
        C.load_checkpoint(path)


def test_truncated_file(tmp_path):
    model, opt = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "last.pt", model, _cfg(), opt, epoch=1, step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="not a readable StitchNet checkpoint"):
        C.load_checkpoint(path)


def test_other_torch_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Tiny(TinyConfig()).state_dict(), path)
    with pytest.raises(C.CheckpointError, match="not a StitchNet checkpoint: format tag None"):
        C.load_checkpoint(path)


def test_wrong_model_name(tmp_path):
    model, _ = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "m.pt", model, _cfg(), epoch=1, step=1)
    with pytest.raises(C.CheckpointError, match="holds a 'tiny' model, expected 'unet'"):
        C.load_checkpoint(path, expected_model="unet")


def test_incompatible_format_version(tmp_path, monkeypatch):
    model, _ = _trained(_cfg())
    monkeypatch.setattr(C, "FORMAT_VERSION", 99)
    path = C.save_checkpoint(tmp_path / "new.pt", model, _cfg(), epoch=1, step=1)
    monkeypatch.setattr(C, "FORMAT_VERSION", 1)
    with pytest.raises(C.CheckpointError, match="format version 99 .* reads version 1"):
        C.load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    model, _ = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "m.pt", model, _cfg(), epoch=1, step=1)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"] = {"channels": 7}
    torch.save(ckpt, path)
    with pytest.raises(C.CheckpointError, match="weights do not fit a 'tiny' model"):
        C.model_from_checkpoint(path)


def test_objective_name_config_and_state_are_stored(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(_cfg(), objective="fixmatch", objective_config={"threshold": 0.9})
    model, _ = _trained(cfg)
    state = {"steps": torch.tensor(3), "teacher.w": torch.ones(2)}
    path = C.save_checkpoint(tmp_path / "m.pt", model, cfg, epoch=1, step=3, objective_state=state)
    ckpt = C.load_checkpoint(path)
    assert ckpt["format_version"] == 2
    assert ckpt["objective_name"] == "fixmatch"
    assert ckpt["objective_config"] == {"threshold": 0.9}
    assert torch.equal(ckpt["objective_state"]["teacher.w"], torch.ones(2))
    assert RunConfig.from_dict(ckpt["run_config"]) == cfg


def test_a_version_1_checkpoint_reads_as_objective_none(tmp_path):
    model, _ = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "m.pt", model, _cfg(), epoch=1, step=1)
    old = torch.load(path, weights_only=True)
    old["format_version"] = 1
    for key in ("objective_name", "objective_config", "objective_state"):
        del old[key]
    torch.save(old, path)
    ckpt = C.load_checkpoint(path)
    assert (ckpt["objective_name"], ckpt["objective_config"]) == ("none", {})
    assert ckpt["objective_state"] == {}


def test_half_copy_keeps_integer_buffers_and_loads(tmp_path):
    model, opt = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "best.pt", model, _cfg(), opt, epoch=1, step=1)
    half = C.save_half_copy(path, tmp_path / "best.half.pt")
    ckpt = C.load_checkpoint(half)
    assert ckpt["optimizer_state"] is None
    for key, value in model.state_dict().items():
        stored = ckpt["model_state"][key]
        if value.is_floating_point():
            assert stored.dtype == torch.float16
            torch.testing.assert_close(stored.float(), value, atol=1e-2, rtol=1e-3)
        else:
            assert stored.dtype == value.dtype and torch.equal(stored, value)

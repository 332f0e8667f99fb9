import os
import pickle
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import stitchnet
import stitchnet.models as registry
from stitchnet import checkpoint as C
from stitchnet.cli import main
from stitchnet.config import RunConfig, TrainConfig
from stitchnet.models.base import SegmentationModel

LABELLED = Path(__file__).resolve().parents[1] / "data" / "medseg_covid19_train50"


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


def _assert_plain(message: str) -> None:
    """A message in the project's words: no PyTorch advice to load unsafely, no escape codes."""
    assert "weights_only" not in message and "arbitrary code" not in message
    assert "\x1b" not in message and "\n" not in message


def _refusal(path, load=C.load_checkpoint) -> str:
    with pytest.raises(C.CheckpointError) as caught:
        load(path)
    message = str(caught.value)
    _assert_plain(message)
    assert message.startswith(str(path))
    return message


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    data = random.Random(0).randbytes(4096)
    assert data[:1] != b"\x80" and data[:2] != b"PK"  # neither a pickle's nor a zip's header
    path.write_bytes(data)
    message = _refusal(path)
    assert "is not a readable StitchNet checkpoint: not a PyTorch file" in message
    assert message.endswith("it was read as data only, so no code in it ran")


def test_text_and_empty_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_bytes(b"this is not a zip archive")
    assert "not a PyTorch file (neither a zip archive nor a pickle)" in _refusal(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "an empty file (0 bytes)" in _refusal(empty)


def _debug_checkpoint(path):
    """A real registry model (SegNet's debug preset) written by the project's save_checkpoint."""
    cfg = RunConfig(model="segnet", model_config={}, preset="debug")
    model = registry.build_model("segnet", preset="debug")
    return C.save_checkpoint(path, model, cfg, epoch=1, step=1)


def test_truncated_file(tmp_path):
    path = _debug_checkpoint(tmp_path / "last.pt")
    model, _ = C.model_from_checkpoint(path)  # whole, it loads
    assert type(model).__name__ == "SegNet"
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 10):  # the zip's central directory is at the end
        path.write_bytes(data[:keep])
        message = _refusal(path, C.model_from_checkpoint)
        assert "truncated: its zip archive has no central directory" in message


class Stranger:
    """Any class: a checkpoint must hold only tensors, numbers, strings, lists and dicts."""


class Trap:
    """Unpickling this runs os.mkdir(marker): what loading a hostile file unsafely would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickled_objects_are_refused_and_not_run(tmp_path):
    inside = tmp_path / "inside.pt"
    ckpt = torch.load(_debug_checkpoint(inside), weights_only=True)
    ckpt["extra"] = {"note": Stranger()}
    torch.save(ckpt, inside)
    message = _refusal(inside)
    assert re.search(
        r"not plain tensors and numbers \(unsupported global [\w.]*Stranger\)", message
    )

    marker = tmp_path / "ran"
    for path, write in (
        (tmp_path / "saved.pt", lambda p: torch.save({"x": Trap(marker)}, p)),
        (tmp_path / "pickled.pt", lambda p: p.write_bytes(pickle.dumps(Trap(marker), 4))),
    ):
        write(path)
        message = _refusal(path)
        # os.mkdir is posix.mkdir or nt.mkdir, as the platform names it
        assert re.search(r"(unsupported global|it holds) \w+\.mkdir\)", message), message
        with pytest.raises(C.CheckpointError):
            C.save_half_copy(path, tmp_path / "half.pt")
    assert not marker.exists()
    assert not (tmp_path / "half.pt").exists()


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


def _rewritten(tmp_path, change) -> Path:
    """A tiny model's checkpoint, loaded, changed by `change(ckpt)` and saved again."""
    model, _ = _trained(_cfg())
    path = C.save_checkpoint(tmp_path / "m.pt", model, _cfg(), epoch=1, step=1)
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("key", ["model_name", "model_config", "model_state", "run_config"])
def test_a_missing_field_is_named(tmp_path, key):
    path = _rewritten(tmp_path, lambda ckpt: ckpt.pop(key))
    assert f"m.pt has no {key!r} field; expected " in _refusal(path, C.model_from_checkpoint)


def test_a_field_of_the_wrong_kind_is_named(tmp_path):
    path = _rewritten(tmp_path, lambda ckpt: ckpt.update(model_config=None))
    message = _refusal(path)
    assert "m.pt: model_config is a NoneType, expected the model's config as a dict" in message


def test_a_run_config_without_model_is_named(tmp_path):
    path = _rewritten(tmp_path, lambda ckpt: ckpt["run_config"].pop("model"))
    assert "m.pt: run_config has no 'model' field" in _refusal(path)
    path = _rewritten(tmp_path, lambda ckpt: ckpt["run_config"]["train"].update(epohcs=3))
    assert re.search(
        r"run_config is not a valid RunConfig: unknown TrainConfig keys \['epohcs'\]",
        _refusal(path),
    )


def test_an_unknown_model_name(tmp_path):
    path = _rewritten(tmp_path, lambda ckpt: ckpt.update(model_name="unet3d"))
    message = _refusal(path, C.model_from_checkpoint)
    assert "m.pt: model_name: unknown model 'unet3d'; expected one of [" in message
    assert "'stitchnet-skip'" in message  # the valid names are listed


def test_a_model_config_with_an_unknown_field(tmp_path):
    path = _rewritten(tmp_path, lambda ckpt: ckpt["model_config"].update(widht=3))
    message = _refusal(path, C.model_from_checkpoint)
    assert (
        "model_config does not build a 'tiny' model: unknown TinyConfig keys ['widht']" in message
    )


def test_weights_that_do_not_fit_the_config(tmp_path):
    # 7 channels instead of 5 changes conv.weight/bias, the four BN tensors and head.weight;
    # head.bias (4 classes) and the BN step counter keep their shapes.
    path = _rewritten(tmp_path, lambda ckpt: ckpt.update(model_config={"channels": 7}))
    message = _refusal(path, C.model_from_checkpoint)
    assert message.endswith(
        "m.pt: weights do not fit a 'tiny' model built from the stored model_config: 7 keys of "
        "another shape (first 'conv.weight': stored (5, 1, 3, 3), model (7, 1, 3, 3))"
    )


def test_a_missing_an_unexpected_and_a_reshaped_key(tmp_path):
    def change(ckpt):
        state = ckpt["model_state"]
        del state["bn.running_mean"], state["bn.running_var"]
        state["stray.weight"] = torch.zeros(2)
        state["head.weight"] = torch.zeros(4, 5, 3, 3)  # the model's head is a 1x1 conv

    message = _refusal(_rewritten(tmp_path, change), C.model_from_checkpoint)
    assert message.endswith(
        "model_config: 2 missing keys (first 'bn.running_mean'); 1 unexpected key (first "
        "'stray.weight'); 1 key of another shape (first 'head.weight': stored (4, 5, 3, 3), "
        "model (4, 5, 1, 1))"
    )


def test_a_state_entry_that_is_no_tensor(tmp_path):
    path = _rewritten(tmp_path, lambda ckpt: ckpt["model_state"].update({"conv.bias": 3}))
    message = _refusal(path, C.model_from_checkpoint)
    assert message.endswith("1 key holding no tensor (first 'conv.bias': a int)")


@pytest.mark.parametrize("bad", ["noise", "no_model_name"])
def test_cli_evaluate_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys, bad):
    if bad == "noise":
        path = tmp_path / "noise.pt"
        path.write_bytes(random.Random(0).randbytes(4096))
    else:
        path = _rewritten(tmp_path, lambda ckpt: ckpt.pop("model_name"))
    out = tmp_path / "eval"
    status = main(["evaluate", str(path), str(LABELLED), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"stitchnet evaluate: error: {path}")
    _assert_plain(err.strip())
    assert not out.exists()


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

"""The training loop on a tiny synthetic problem: a pixel's class is its intensity's quartile."""

import csv
import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import stitchnet.models as registry
import stitchnet.train as T
from stitchnet.checkpoint import load_checkpoint, save_checkpoint
from stitchnet.config import DataConfig, RunConfig, TrainConfig
from stitchnet.data.types import PreparedSet
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives import OBJECTIVES


@dataclass(frozen=True)
class TinyConfig:
    channels: int = 8
    dropout: float = 0.1  # uses the global RNG, so resuming must restore it
    nan_loss: bool = False  # every loss is NaN (for the skip guard)


class TinyNet(SegmentationModel):
    name = "tiny"
    config_class = TinyConfig
    seen: list = []  # batches the loss saw, for tests that inspect them

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        c = config.channels
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, c, 3, padding=1),
            torch.nn.BatchNorm2d(c),
            torch.nn.ReLU(),
            torch.nn.Dropout2d(config.dropout),
            torch.nn.Conv2d(c, 4, 1),
        )

    def forward(self, x):
        return self.body(x)

    def loss(self, batch):
        TinyNet.seen.append({k: v.clone() for k, v in batch.items()})
        lab = batch["labelled"]
        ce = F.cross_entropy(self(batch["image"][lab]), batch["mask"][lab])
        if self.config.nan_loss:
            ce = ce * math.nan
        return {"loss": ce, "ce": ce.detach()}


class TinySemi(TinyNet):
    uses_unlabelled = True


@pytest.fixture(autouse=True)
def one_thread():
    # Tensors this small train 10x faster on one thread than on two contended ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def tiny_in_registry(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "tiny", (__name__, "TinyNet"))
    monkeypatch.setitem(registry._REGISTRY, "tiny_semi", (__name__, "TinySemi"))
    TinyNet.seen.clear()


def make_set(n: int, seed: int, size: int = 16, labelled: bool = True) -> PreparedSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = (images[:, 0] * 4).long().clamp(max=3) if labelled else None
    return PreparedSet(
        images=images,
        masks=masks,
        ids=[f"s{seed}_{i}" for i in range(n)],
        patient_ids=[None] * n,
        boxes=[(0, size, 0, size)] * n,
        orig_shapes=[(size, size)] * n,
        name=f"synthetic{seed}",
    )


def config(model="tiny", **train) -> RunConfig:
    base = dict(epochs=2, batch_size=4, lr=0.03, augment=True, log_every=1, seed=5)
    return RunConfig(model=model, model_config={}, train=TrainConfig(**{**base, **train}))


def test_loss_goes_down_and_files_are_written(tmp_path):
    cfg = config(epochs=10, lr=0.1)
    res = T.train(cfg, make_set(8, 0), make_set(4, 1), tmp_path, progress=False)
    losses = [row["ce"] for row in res.history]
    assert losses[-1] < 0.6 * losses[0]
    assert res.history[-1]["val_lesion_dice"] > res.history[0]["val_lesion_dice"]
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "log.csv", "last.pt", "best.pt"}
    assert RunConfig.load(tmp_path / "config.json") == cfg
    with (tmp_path / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["epoch", "step", "loss"]
    assert {"val_lesion_dice", "skipped_steps", "seconds"} <= set(rows[0])
    assert len(rows) == 10 * 2  # log_every=1, two steps per epoch: one window line + epoch line
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == res.best_epoch
    assert best["metrics"]["val_overall_f1"] == pytest.approx(res.best_metric)
    assert res.best_metric == max(r["val_overall_f1"] for r in res.history)
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, best["model_state"][k]), k
    assert best["split"]["train"] == make_set(8, 0).ids


class Killed(Exception):
    pass


def kill_then_resume(cfg, data, out, monkeypatch, dies_after) -> T.TrainResult:
    """Train into `out` until a checkpoint write for which dies_after(name, epoch) holds (the
    file is written, then the process "dies"), resume, and return the resumed result."""
    real_save = T.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if dies_after(path.name, kwargs["epoch"]):
            raise Killed

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        T.train(cfg, *data, out, progress=False)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    return T.train(cfg, *data, out, progress=False)


def assert_same_checkpoints(a_dir, b_dir) -> None:
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(a_dir / name), load_checkpoint(b_dir / name)
        assert a["epoch"] == b["epoch"]
        for k, v in a["model_state"].items():
            assert torch.equal(v, b["model_state"][k]), (name, k)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = config(epochs=3)
    data = make_set(8, 0), make_set(4, 1)
    whole = T.train(cfg, *data, tmp_path / "whole", progress=False)
    # The process dies right after epoch 1's checkpoint.
    resumed = kill_then_resume(
        cfg, data, tmp_path / "split", monkeypatch, lambda name, e: name == "last.pt" and e == 1
    )
    assert resumed.start_epoch == 1
    assert_same_checkpoints(tmp_path / "whole", tmp_path / "split")
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    with (tmp_path / "split" / "log.csv").open(newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "1", "2", "2", "3", "3"]


def test_checkpoint_every_spaces_last_pt_and_a_resume_repeats_the_gap(tmp_path, monkeypatch):
    cfg = config(epochs=5, checkpoint_every=2)
    data = make_set(8, 0), make_set(4, 1)
    real_save = T.save_checkpoint
    written = []

    def record(path, *args, **kwargs):
        written.append((path.name, kwargs["epoch"]))
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(T, "save_checkpoint", record)
    whole = T.train(cfg, *data, tmp_path / "whole", progress=False)
    assert [e for name, e in written if name == "last.pt"] == [2, 4, 5]

    monkeypatch.setattr(T, "save_checkpoint", real_save)
    # Epoch 3 or 4 runs past the last checkpoint (epoch 2), writes best.pt or last.pt, and dies.
    resumed = kill_then_resume(cfg, data, tmp_path / "split", monkeypatch, lambda n, e: e >= 3)
    assert resumed.start_epoch == 2
    assert_same_checkpoints(tmp_path / "whole", tmp_path / "split")
    assert resumed.best_epoch == whole.best_epoch


def test_finished_run_is_not_retrained(tmp_path):
    cfg = config(epochs=1)
    first = T.train(cfg, make_set(8, 0), make_set(4, 1), tmp_path, progress=False)
    stamp = (tmp_path / "last.pt").stat().st_mtime_ns
    TinyNet.seen.clear()
    again = T.train(cfg, make_set(8, 0), make_set(4, 1), tmp_path, progress=False)
    assert TinyNet.seen == []  # no training step ran
    assert (tmp_path / "last.pt").stat().st_mtime_ns == stamp
    assert again.start_epoch == 1 and again.history == first.history
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])


def test_resume_refuses_a_different_config(tmp_path):
    T.train(config(epochs=1), make_set(8, 0), None, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"train\.lr: 0\.03 in the checkpoint, 0\.1 now"):
        T.train(config(epochs=2, lr=0.1), make_set(8, 0), None, tmp_path, progress=False)
    fresh = T.train(
        config(epochs=1, lr=0.1), make_set(8, 0), None, tmp_path, resume=False, progress=False
    )
    assert fresh.start_epoch == 0


def test_nan_loss_step_is_skipped(tmp_path):
    cfg = dataclasses.replace(config(epochs=1, steps_per_epoch=1), model_config={"nan_loss": True})
    torch.manual_seed(cfg.train.seed)
    initial = TinyNet(TinyConfig(nan_loss=True))
    res = T.train(cfg, make_set(8, 0), None, tmp_path, progress=False)
    assert res.skipped_steps == 1
    for (k, before), after in zip(initial.named_parameters(), res.model.parameters(), strict=True):
        assert torch.equal(before, after), k
    assert math.isnan(res.history[0]["ce"])  # no good step to average


def test_exploding_gradient_norm_is_skipped(tmp_path):
    cfg = config(epochs=1, skip_grad_norm=1e-12)
    res = T.train(cfg, make_set(8, 0), None, tmp_path, progress=False)
    assert res.skipped_steps == 2  # every step of the epoch


def test_unlabelled_rows_join_each_batch(tmp_path):
    cfg = config(model="tiny_semi", epochs=1, unlabelled_batch_size=2, augment=False)
    unl = make_set(6, 9, labelled=False)
    T.train(cfg, make_set(8, 0), None, tmp_path, unlabelled=unl, progress=False)
    assert len(TinyNet.seen) == 2
    for batch in TinyNet.seen:
        assert batch["labelled"].tolist() == [True] * 4 + [False] * 2
        assert batch["image"].shape == (6, 1, 16, 16)
        assert not batch["mask"][4:].any()  # unlabelled rows carry zero masks
    unl_rows = torch.cat([b["image"][4:] for b in TinyNet.seen])
    assert all(any(torch.equal(r, u) for u in unl.images) for r in unl_rows)
    # A model that ignores unlabelled data gets labelled rows only.
    TinyNet.seen.clear()
    T.train(
        config(epochs=1, unlabelled_batch_size=2),
        make_set(8, 0),
        None,
        tmp_path / "sup",
        unlabelled=unl,
        progress=False,
    )
    assert all(b["labelled"].all() for b in TinyNet.seen)


def test_max_labelled_takes_a_nested_seeded_subset(tmp_path):
    ids = {}
    for n in (2, 5):
        T.train(
            config(epochs=1, max_labelled=n),
            make_set(8, 0),
            None,
            tmp_path / str(n),
            progress=False,
        )
        ids[n] = load_checkpoint(tmp_path / str(n) / "last.pt")["split"]["train"]
    assert len(ids[2]) == 2 and len(ids[5]) == 5
    assert ids[5][:2] == ids[2]
    assert set(ids[5]) <= set(make_set(8, 0).ids)


def test_unlabelled_training_or_validation_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="training set 'synthetic0' has no masks"):
        T.train(config(), make_set(4, 0, labelled=False), None, tmp_path, progress=False)
    with pytest.raises(ValueError, match="validation set 'synthetic1' has no masks"):
        T.train(config(), make_set(4, 0), make_set(4, 1, labelled=False), tmp_path, progress=False)


# ---- objectives: every model x objective on real slices; the teacher survives a resume ----

MODELS = ("unet", "segnet", "stitchnet", "svae", "ladder")


@pytest.fixture(scope="module")
def real_sets():
    """6 labelled and 4 unlabelled bundled slices, prepared at 64 px with their lung fields."""
    from stitchnet.data.preprocess import prepare
    from stitchnet.data.slice_folder import read_folder
    from stitchnet.data.sources import load_bundled

    cfg = DataConfig(image_size=64)
    lab = prepare(read_folder(load_bundled("labelled"))[:6], cfg, name="lab", progress=False)
    unl_records = read_folder(load_bundled("unlabelled"))[:4]
    unl = prepare(unl_records, cfg, name="unl", progress=False)
    return lab, unl


def ssl_config(model: str, objective: str, **train) -> RunConfig:
    base = dict(epochs=1, steps_per_epoch=2, batch_size=2, unlabelled_batch_size=2, seed=1)
    return RunConfig(
        model=model,
        model_config=dataclasses.asdict(registry.model_config(model, "debug")),
        train=TrainConfig(**{**base, **train}),
        objective=objective,
    )


def test_prepared_sets_carry_the_lung_field(real_sets):
    lab, unl = real_sets
    for s in (lab, unl):
        assert s.lungs is not None and s.lungs.shape == (len(s), 64, 64)
        assert s.lungs.dtype == torch.uint8 and set(s.lungs.unique().tolist()) == {0, 1}
    # Labelled lesions lie inside the segmenter's lung field almost everywhere.
    lesion = lab.masks >= 2
    assert (lab.lungs.bool() & lesion).sum() >= 0.9 * lesion.sum()
    assert torch.equal(lab.subset([2, 0]).lungs, lab.lungs[[2, 0]])


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_with_every_objective(model, objective, real_sets, tmp_path):
    lab, unl = real_sets
    cfg = ssl_config(model, objective)
    if objective == "self_training":  # its teacher: a finished run of a debug U-Net
        teacher = tmp_path / "teacher.pt"
        unet = registry.build_model("unet", preset="debug")
        save_checkpoint(teacher, unet, ssl_config("unet", "none"), epoch=1, step=2)
        cfg = dataclasses.replace(cfg, objective_config={"teacher": str(teacher)})
    if model == "svae" and objective != "none":
        with pytest.raises(ValueError, match="returns an image"):
            T.train(cfg, lab, None, tmp_path, unlabelled=unl, progress=False)
        return
    res = T.train(cfg, lab, None, tmp_path, unlabelled=unl, progress=False)
    assert res.skipped_steps == 0 and math.isfinite(res.history[0]["loss"])
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["objective_name"] == objective
    has_teacher = objective in ("mean_teacher", "bcp", "self_training")
    assert any(k.startswith("teacher.") for k in ckpt["objective_state"]) == has_teacher
    if objective != "none":  # the consistency terms are logged beside the model's own
        assert {"mask_ratio", "consistency", "loss_mix"} & set(res.history[0])


def test_the_batch_carries_the_lung_moved_with_the_mask(real_sets, tmp_path):
    lab, unl = real_sets
    cfg = RunConfig(
        model="tiny_semi",
        model_config={},
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, unlabelled_batch_size=2),
    )
    T.train(cfg, lab, None, tmp_path, unlabelled=unl, progress=False)
    for batch in TinyNet.seen:
        lung, mask = batch["lung"], batch["mask"]
        assert lung.shape == mask.shape and lung.dtype == torch.uint8
        lesion = mask[:2] >= 2  # augmented labelled rows: lesions stay inside the moved lung
        assert (lung[:2].bool() & lesion).sum() >= 0.9 * lesion.sum()


def test_resume_restores_the_teacher(tmp_path, monkeypatch):
    cfg = dataclasses.replace(
        config(model="tiny_semi", epochs=3, unlabelled_batch_size=2), objective="mean_teacher"
    )
    data = make_set(8, 0), make_set(4, 1)
    unl = make_set(6, 9, labelled=False)
    T.train(cfg, *data, tmp_path / "whole", unlabelled=unl, progress=False)

    real_save = T.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if path.name == "last.pt" and kwargs["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        T.train(cfg, *data, tmp_path / "split", unlabelled=unl, progress=False)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    T.train(cfg, *data, tmp_path / "split", unlabelled=unl, progress=False)
    assert_same_checkpoints(tmp_path / "whole", tmp_path / "split")
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["objective_state"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["objective_state"]
    assert a.keys() == b.keys() and any(k.startswith("teacher.") for k in a)
    assert int(a["updates"]) == 6  # 3 epochs of 2 applied steps
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The teacher is not the student: it is an average of the student's past weights.
    student = load_checkpoint(tmp_path / "whole" / "last.pt")["model_state"]
    assert not torch.equal(a["teacher.body.0.weight"], student["body.0.weight"])

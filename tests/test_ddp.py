"""Two-process data-parallel training through `torchrun`, as users launch it.

This file is also the worker: `torchrun --nproc_per_node 2 tests/test_ddp.py OUT` trains a tiny
model twice in one process (with BatchNorm, which starts the process group, then without, which
reuses it) and saves what each rank ended with.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import stitchnet.models as registry
from stitchnet.checkpoint import load_checkpoint
from stitchnet.config import RunConfig, TrainConfig
from stitchnet.data.types import PreparedSet
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives.base import Objective
from stitchnet.train import train

N_TRAIN, BATCH = 8, 4


@dataclass(frozen=True)
class TinyConfig:
    bn: bool = True


class TinyNet(SegmentationModel):
    name = "tiny"
    config_class = TinyConfig
    seen: list = []  # sample numbers of each step's rows on this rank

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4) if config.bn else torch.nn.Identity(),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 1),
        )

    def forward(self, x):
        return self.body(x)

    def loss(self, batch):
        TinyNet.seen.append([round(v * 100) for v in batch["image"][:, 0, 0, 0].tolist()])
        ce = F.cross_entropy(self(batch["image"]), batch["mask"])
        return {"loss": ce}


def make_set(n: int, seed: int) -> PreparedSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    images[:, 0, 0, 0] = torch.arange(n) / 100  # each slice carries its number
    return PreparedSet(
        images=images,
        masks=(images[:, 0] * 4).long().clamp(max=3),
        ids=[str(i) for i in range(n)],
        patient_ids=[None] * n,
        boxes=[(0, 8, 0, 8)] * n,
        orig_shapes=[(8, 8)] * n,
    )


def run(out: Path, bn: bool, objective: str = "none"):
    cfg = RunConfig(
        model="tiny",
        model_config={"bn": bn},
        train=TrainConfig(
            epochs=2,
            batch_size=BATCH,
            lr=0.03,
            augment=False,
            seed=1,
            unlabelled_batch_size=BATCH if objective != "none" else 0,
        ),
        objective=objective,
    )
    TinyNet.seen = []
    unl = make_set(N_TRAIN, 2) if objective != "none" else None
    return train(cfg, make_set(N_TRAIN, 0), make_set(4, 1), out, unlabelled=unl, progress=False)


def worker(out: Path) -> None:
    registry._REGISTRY["tiny"] = (__name__, "TinyNet")
    rank = int(os.environ["RANK"])
    for bn in (1, 0):
        res = run(out / f"bn{bn}", bool(bn))
        state = {"state": res.model.state_dict(), "seen": TinyNet.seen}
        torch.save(state, out / f"bn{bn}" / f"rank{rank}.pt")
    # Mean Teacher (with BatchNorm): the teacher and its buffers must agree across ranks.
    seen = {}
    after_step = Objective.after_step

    def keep(self, skipped):  # remember this rank's objective, to save its teacher below
        after_step(self, skipped)
        seen["objective"] = self

    Objective.after_step = keep
    res = run(out / "mt", True, "mean_teacher")
    teacher = seen["objective"].objective_state()
    torch.save({"state": res.model.state_dict(), "teacher": teacher}, out / "mt" / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, __file__, str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_ranks_end_identical_and_match_the_checkpoint(ddp_out):
    r0, r1 = (torch.load(ddp_out / "bn1" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    best = load_checkpoint(ddp_out / "bn1" / "best.pt")["model_state"]
    assert r0["state"].keys() == r1["state"].keys() == best.keys()
    for k in best:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
        assert torch.equal(r0["state"][k], best[k]), k


def test_each_rank_trains_on_a_disjoint_share_of_each_step(ddp_out):
    r0, r1 = (torch.load(ddp_out / "bn1" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    steps = 2 * N_TRAIN // BATCH
    assert len(r0["seen"]) == len(r1["seen"]) == steps
    for a, b in zip(r0["seen"], r1["seen"], strict=True):
        assert len(a) == len(b) == BATCH // 2 and not set(a) & set(b)
    for epoch in range(2):  # every slice once per epoch
        rows = slice(epoch * 2, epoch * 2 + 2)
        assert sorted(sum(r0["seen"][rows] + r1["seen"][rows], [])) == list(range(N_TRAIN))


def test_two_ranks_match_one_process(ddp_out, tmp_path, monkeypatch):
    # Without BatchNorm the averaged gradient of two half batches is the whole batch's gradient.
    monkeypatch.setitem(registry._REGISTRY, "tiny", (__name__, "TinyNet"))
    single = run(tmp_path, bn=False)
    two = load_checkpoint(ddp_out / "bn0" / "last.pt")["model_state"]
    one = load_checkpoint(tmp_path / "last.pt")["model_state"]
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    assert sorted(sum(TinyNet.seen[:2], [])) == list(range(N_TRAIN))
    assert single.skipped_steps == 0


def test_a_teacher_trains_identically_on_both_ranks(ddp_out):
    r0, r1 = (torch.load(ddp_out / "mt" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("state", "teacher"):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    ckpt = load_checkpoint(ddp_out / "mt" / "last.pt")
    for k, v in ckpt["objective_state"].items():
        assert torch.equal(v, r0["teacher"][k]), k
    teacher = {k: v for k, v in ckpt["objective_state"].items() if k.startswith("teacher.")}
    assert teacher and int(ckpt["objective_state"]["updates"]) == 2 * N_TRAIN // BATCH
    assert any("running_mean" in k for k in teacher)  # BN buffers are averaged too
    assert not torch.equal(teacher["teacher.body.0.weight"], ckpt["model_state"]["body.0.weight"])


if __name__ == "__main__":
    worker(Path(sys.argv[1]))

"""Each objective's loss on hand-made tensors, with a test-double model whose logits are known:

    logits(x) = k * [1 - x, 0, x, 0]   (background where x = 0, GGO where x = 1)

so at k = 10 a pixel of 0 or 1 is confident (> 0.9998) and a pixel of 0.5 is not (0.5).
"""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from stitchnet.augment import StrongParams
from stitchnet.models import build_model
from stitchnet.models.base import SegmentationModel
from stitchnet.objectives import OBJECTIVES, build_objective, objective_config
from stitchnet.objectives.fixmatch import FixMatchConfig


@dataclass(frozen=True)
class DoubleConfig:
    k: float = 10.0


class Double(SegmentationModel):
    name = "double"
    config_class = DoubleConfig

    def __init__(self, config: DoubleConfig) -> None:
        super().__init__(config)
        self.k = torch.nn.Parameter(torch.tensor(config.k))
        self.loss_calls, self.dropouts = 0, []

    def forward(self, x, feature_dropout: float = 0.0):
        self.dropouts.append(feature_dropout)
        z = torch.zeros_like(x)
        return self.k * torch.cat([1 - x, z, x, z], dim=1)  # (B, 4, H, W)

    def loss(self, batch):
        self.loss_calls += 1
        lab = batch["labelled"]
        ce = F.cross_entropy(self(batch["image"][lab]), batch["mask"][lab])
        return {"loss": ce, "seg": ce.detach()}

    def loss_with_logits(self, batch):
        self.loss_calls += 1
        self.seen_images = batch["image"].clone()
        logits = self(batch["image"])
        lab = batch["labelled"]
        ce = F.cross_entropy(logits[lab], batch["mask"][lab])
        return {"loss": ce, "seg": ce.detach()}, logits


def _batch():
    """2 labelled rows, then 2 unlabelled; each 4x4 slice has image rows 0-1 at 1 (8 pixels),
    row 2 at 0.5 (4) and row 3 at 0 (4): over the unlabelled slices 16 pixels of 1, 8 of 0.5
    and 8 of 0."""
    x = torch.zeros(4, 1, 4, 4)
    x[:, :, :2] = 1.0
    x[:, :, 2] = 0.5
    mask = (x[:, 0] == 1).long() * 2
    return {"image": x, "mask": mask, "labelled": torch.tensor([True, True, False, False])}


def _identity_views(n: int, brightness: float = 0.0) -> StrongParams:
    """Strong views that only add `brightness` (then clamp): no gamma, contrast, blur or box."""
    return StrongParams(
        jitter=torch.ones(n, dtype=torch.bool),
        brightness=torch.full((n,), brightness),
        contrast=torch.ones(n),
        gamma=torch.ones(n),
        blur=torch.zeros(n, dtype=torch.bool),
        sigma=torch.ones(n),
        cutmix=torch.zeros(n, dtype=torch.bool),
        box=torch.zeros(n, 4, dtype=torch.long),
    )


# CE of label 2 at logits k * [0.5, 0, 0.5, 0] (a pixel of 1 darkened to 0.5), k = 10.
CE_HALF = math.log(2 + 2 * math.exp(-5))
CE_SURE = math.log(1 + 3 * math.exp(-10))  # CE of the confident label at a pixel of 0 or 1


def test_registry_names_and_wrong_name():
    assert OBJECTIVES == (
        "none",
        "mean_teacher",
        "fixmatch",
        "unimatch",
        "bcp",
        "one_pass",
        "self_training",
    )
    with pytest.raises(ValueError, match=r"unknown objective 'fixmatc'; expected one of \["):
        build_objective("fixmatc", Double(DoubleConfig()))
    with pytest.raises(ValueError, match="unknown FixMatchConfig keys"):
        objective_config("fixmatch", {"treshold": 0.9})
    cfg = objective_config("fixmatch", {"class_thresholds": [0.95, 0.95, 0.7, 0.7]})
    assert cfg == FixMatchConfig(class_thresholds=(0.95, 0.95, 0.7, 0.7))


def test_none_is_the_models_own_loss():
    model = Double(DoubleConfig())
    b = _batch()
    terms = build_objective("none", model)(b, None)
    assert terms.keys() == {"loss", "seg"}
    assert torch.equal(terms["loss"], model.loss(b)["loss"])


def test_fixmatch_threshold_masks_what_it_should():
    model = Double(DoubleConfig())
    obj = build_objective("fixmatch", model, {"cutmix": False})
    b = _batch()
    # Darken the strong views by 0.5: sure GGO pixels (1) become 0.5, sure background stays 0.
    terms = obj(b, {"s1": _identity_views(4, brightness=-0.5)})
    assert model.loss_calls == 1  # the supervised/ELBO part runs once per step
    # Unlabelled pixels: 16 of 1 (kept, CE_HALF), 8 of 0.5 (rejected), 8 of 0 (kept, CE_SURE).
    assert terms["mask_ratio"].item() == pytest.approx(24 / 32)
    assert terms["loss_u"].item() == pytest.approx((16 * CE_HALF + 8 * CE_SURE) / 32, rel=1e-5)
    assert terms["lesion_share"].item() == pytest.approx(16 / 24)
    total = terms["seg"] + terms["loss_u"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    terms["loss"].backward()
    assert model.k.grad is not None and float(model.k.grad) != 0


def test_fixmatch_inside_the_lung_only():
    model = Double(DoubleConfig())
    obj = build_objective("fixmatch", model, {"cutmix": False})
    b = _batch()
    b["lung"] = torch.zeros(4, 4, 4, dtype=torch.uint8)  # no lung: every pixel is background
    terms = obj(b, {"s1": _identity_views(4, brightness=-0.5)})
    assert terms["mask_ratio"].item() == 1.0 and terms["lesion_share"].item() == 0.0
    # Label 0 everywhere: darkened 1-pixels give logits [5, 0, 5, 0], CE of class 0 = CE_HALF;
    # 0.5-pixels turn 0 (sure background, CE_SURE); 0-pixels stay 0 (CE_SURE).
    assert terms["loss_u"].item() == pytest.approx((16 * CE_HALF + 16 * CE_SURE) / 32, rel=1e-5)


def test_fixmatch_without_unlabelled_rows_adds_nothing():
    model = Double(DoubleConfig())
    b = _batch()
    b["labelled"] = torch.ones(4, dtype=torch.bool)
    terms = build_objective("fixmatch", model)(b, {"s1": _identity_views(4)})
    assert terms["loss_u"].item() == 0.0 and torch.equal(terms["loss"], model.loss(b)["loss"])


def test_unimatch_weights_two_views_and_the_feature_stream():
    model = Double(DoubleConfig())
    obj = build_objective("unimatch", model, {"cutmix": False})
    views = {"s1": _identity_views(4, -0.5), "s2": _identity_views(4, 0.0)}
    terms = obj(_batch(), views)
    assert 0.5 in model.dropouts  # the feature stream asked for dropout 0.5
    assert terms["loss_s1"].item() == pytest.approx((16 * CE_HALF + 8 * CE_SURE) / 32, rel=1e-5)
    assert terms["loss_s2"].item() == pytest.approx(24 * CE_SURE / 32, rel=1e-3)
    expected = terms["seg"] + 0.25 * terms["loss_s1"] + 0.25 * terms["loss_s2"]
    expected = expected + 0.5 * terms["loss_fp"]
    assert terms["loss"].item() == pytest.approx(float(expected), rel=1e-6)


def test_mean_teacher_ema_moves_only_on_applied_steps():
    model = Double(DoubleConfig(k=10.0))
    obj = build_objective("mean_teacher", model)
    assert not obj.teacher.k.requires_grad
    with torch.no_grad():
        model.k.fill_(4.0)
    obj.after_step(skipped=True)
    assert float(obj.teacher.k) == 10.0 and int(obj.updates) == 0 and int(obj.steps) == 1
    obj.after_step(skipped=False)  # update 0: decay min(1 - 1/1, 0.99) = 0, a copy
    assert float(obj.teacher.k) == 4.0
    with torch.no_grad():
        model.k.fill_(6.0)
    obj.after_step(skipped=False)  # update 1: decay 0.5
    assert float(obj.teacher.k) == 5.0
    state = obj.objective_state()
    assert set(state) == {"steps", "updates", "teacher.k"}  # not the student's weights


def test_mean_teacher_consistency_and_ramp():
    model = Double(DoubleConfig())
    obj = build_objective("mean_teacher", model, {"rampup_steps": 10})
    same = obj(_batch(), {"s1": _identity_views(4)})
    assert same["consistency"].item() == 0.0  # teacher == student, identical views
    assert same["consistency_weight"].item() == pytest.approx(0.1 * math.exp(-5))
    moved = obj(_batch(), {"s1": _identity_views(4, -0.5)})
    # 16 pixels of 1 turn 0.5: teacher p ~ (0, 0, 1, 0), student ~ (1/2, 0, 1/2, 0); 8 pixels
    # of 0.5 turn 0: teacher ~ (1/2, 0, 1/2, 0), student ~ (1, 0, 0, 0). Each squared distance
    # (summed over classes) is ~0.5; the mean is over 32 pixels and 4 classes.
    expected = 24 * 0.5 / (32 * 4)
    assert moved["consistency"].item() == pytest.approx(expected, rel=2e-2)


def test_bcp_with_a_whole_slice_box_and_alpha_zero_is_the_labelled_ce():
    model = Double(DoubleConfig(k=1.0))
    obj = build_objective("bcp", model, {"alpha": 0.0})
    b = _batch()
    whole = _identity_views(4)
    whole = StrongParams(**{**whole.__dict__, "box": torch.tensor([[0, 4, 0, 4]] * 4)})
    terms = obj(b, {"box": whole})
    # in = the unlabelled rows (weight 0), out = the labelled rows with their true masks.
    ce = F.cross_entropy(model(b["image"][:2]), b["mask"][:2])
    assert terms["loss_mix"].item() == pytest.approx(float(ce) / 2, rel=1e-6)


def test_a_model_without_class_logits_is_refused():
    svae = build_model("svae", preset="debug")
    with pytest.raises(ValueError, match="returns an image"):
        build_objective("fixmatch", svae)
    assert build_objective("none", svae).uses_unlabelled()  # the ELBO uses unlabelled rows


def test_ssl_objectives_use_unlabelled_rows_for_any_model(teacher_ckpt):
    unet = build_model("unet", preset="debug")
    assert not build_objective("none", unet).uses_unlabelled()
    for name in OBJECTIVES[1:]:
        config = {"teacher": str(teacher_ckpt)} if name == "self_training" else None
        assert build_objective(name, build_model("unet", preset="debug"), config).uses_unlabelled()


@pytest.mark.parametrize("name", ["fixmatch", "unimatch"])
def test_elbo_unlabelled_false_keeps_unlabelled_rows_out_of_model_loss(name):
    seen = []

    class Recording(Double):
        def loss(self, batch):
            seen.append(batch["labelled"].tolist())
            return super().loss(batch)

    draws = {"s1": _identity_views(4), "s2": _identity_views(4)}
    for elbo_unlabelled, expected in ((True, [True, True, False, False]), (False, [True, True])):
        seen.clear()
        obj = build_objective(name, Recording(DoubleConfig()), {"elbo_unlabelled": elbo_unlabelled})
        terms = obj(_batch(), draws)
        assert seen == [expected]
        # The consistency term is there either way: the unlabelled rows still train the model.
        assert "mask_ratio" in terms and float(terms["mask_ratio"]) > 0


def test_one_pass_runs_the_student_once_with_the_strong_views_in_the_batch():
    model = Double(DoubleConfig())
    obj = build_objective("one_pass", model, {"cutmix": False})
    b = _batch()
    terms = obj(b, {"s1": _identity_views(4, brightness=-0.5)})
    # Two passes in all: the no-grad weak pass over the 2 unlabelled rows, then ONE student pass
    # (model.loss_with_logits) over all 4 rows; no separate strong-view pass.
    assert model.loss_calls == 1 and len(model.dropouts) == 2
    assert torch.equal(model.seen_images[:2], b["image"][:2])  # labelled rows as they were
    assert torch.equal(model.seen_images[2:], (b["image"][2:] - 0.5).clamp(0, 1))  # strong views
    # The same pixels pass and the same CE as FixMatch's test: the logits are the pass's own.
    assert terms["mask_ratio"].item() == pytest.approx(24 / 32)
    assert terms["loss_u"].item() == pytest.approx((16 * CE_HALF + 8 * CE_SURE) / 32, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((terms["seg"] + terms["loss_u"]).item(), rel=1e-6)
    assert terms["pasted"].item() == 0.0
    terms["loss"].backward()
    assert float(model.k.grad) != 0


def test_lesion_paste_moves_labelled_lesions_inside_the_lung_with_their_classes():
    from stitchnet.objectives.one_pass import paste_lesions

    b = _batch()  # labelled rows: GGO (2) on image rows 0-1, where the image is 1
    b["mask"][1, 0, 0] = 3  # one consolidation pixel in labelled row 1
    xw = torch.zeros(2, 1, 4, 4)  # two unlabelled weak views, all 0
    labels, keep = torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.bool)
    lung = torch.ones(2, 4, 4, dtype=torch.uint8)
    lung[:, :, 0] = 0  # column 0 lies outside the lung field
    use = torch.tensor([True, False])  # only the first unlabelled row takes a paste
    x2, l2, k2, m = paste_lesions(b, xw, labels, keep, lung, use)
    # Row 0 takes labelled row 0's GGO (image rows 0-1) outside column 0: 2 x 3 = 6 pixels.
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, 1:] = True
    assert torch.equal(m[0], expected) and not m[1].any()
    assert torch.equal(x2[0, 0], expected.float()) and torch.equal(x2[1], xw[1])
    assert torch.equal(l2[0], expected.long() * 2) and torch.equal(k2[0], expected)
    # Row 1 pasting would take labelled row 1 (i mod L): its consolidation pixel lies at column
    # 0, outside the lung, so it is never pasted.
    _, l3, _, m3 = paste_lesions(b, xw, labels, keep, lung, torch.tensor([False, True]))
    assert (l3 == 3).sum() == 0 and m3[1].sum() == 6
    # Without labelled rows nothing changes.
    b["labelled"][:] = False
    x4, l4, k4, m4 = paste_lesions(b, xw, labels, keep, lung, use)
    assert torch.equal(x4, xw) and torch.equal(l4, labels) and not m4.any()


def test_one_pass_draws_a_paste_only_when_asked():
    g = torch.Generator().manual_seed(0)
    plain = build_objective("one_pass", Double(DoubleConfig())).draw(6, 8, g)
    pasted = build_objective("one_pass", Double(DoubleConfig()), {"lesion_paste": 0.5}).draw(
        6, 8, torch.Generator().manual_seed(0)
    )
    assert plain.keys() == {"s1"} and pasted.keys() == {"s1", "paste"}
    assert torch.equal(plain["s1"].box, pasted["s1"].box)  # the strong views are FixMatch's
    with pytest.raises(ValueError, match="lesion_paste must lie in"):
        objective_config("one_pass", {"lesion_paste": 1.5})


@pytest.fixture
def teacher_ckpt(tmp_path):
    """A checkpoint of a debug U-Net, as a finished supervised run leaves it."""
    from stitchnet.checkpoint import save_checkpoint
    from stitchnet.config import RunConfig

    path = tmp_path / "teacher" / "best.pt"
    path.parent.mkdir()
    unet = build_model("unet", preset="debug")
    return save_checkpoint(path, unet, RunConfig(model="unet", model_config={}), epoch=3, step=12)


def test_self_training_labels_every_pixel_from_its_frozen_teacher(teacher_ckpt):
    model = Double(DoubleConfig())
    obj = build_objective("self_training", model, {"teacher": str(teacher_ckpt), "cutmix": False})
    # The checkpoint's U-Net, frozen; swapped here for an unsure hand-made teacher (k = 3):
    # 1-pixels GGO at confidence 0.87, 0.5-pixels background at 0.41, 0-pixels background.
    assert obj.teacher.name == "unet" and not obj.teacher.training
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    obj.teacher = Double(DoubleConfig(k=3.0)).requires_grad_(False).eval()
    terms = obj(_batch(), {"s1": _identity_views(4)})
    # No threshold (ST): all 32 unlabelled pixels count, although none reaches 0.95.
    assert terms["mask_ratio"].item() == 1.0
    assert terms["lesion_share"].item() == pytest.approx(16 / 32)
    # The student (k = 10) against those labels: 1 -> GGO and 0 -> background are sure (CE_SURE);
    # at 0.5 the student's tie [5, 0, 5, 0] pays CE_HALF for the teacher's background.
    assert terms["loss_u"].item() == pytest.approx((24 * CE_SURE + 8 * CE_HALF) / 32, rel=1e-5)
    terms["loss"].backward()
    obj.after_step(skipped=False)
    assert float(obj.teacher.k) == 3.0  # frozen: no EMA of the student
    assert float(model.k.grad) != 0 and int(obj.updates) == 1
    assert "teacher.k" in obj.objective_state()  # a resume labels with the same teacher


def test_self_training_needs_a_frozen_teacher(teacher_ckpt):
    with pytest.raises(ValueError, match="self_training needs a teacher"):
        build_objective("self_training", Double(DoubleConfig()))
    with pytest.raises(ValueError, match="teacher is frozen"):
        objective_config("self_training", {"teacher": str(teacher_ckpt), "teacher_ema": 0.99})
    with pytest.raises(FileNotFoundError, match="has no best.pt"):
        build_objective(
            "self_training", Double(DoubleConfig()), {"teacher": str(teacher_ckpt.parent.parent)}
        )
    # A run folder stands for its best.pt.
    obj = build_objective(
        "self_training", Double(DoubleConfig()), {"teacher": str(teacher_ckpt.parent)}
    )
    assert obj.teacher.name == "unet" and obj.config.threshold == 0.0

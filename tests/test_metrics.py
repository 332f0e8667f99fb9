"""Metric values against cases worked out by hand (see the comments beside each number)."""

import math

import pytest
import torch

from stitchnet import metrics as M

# Image A (3x3). Class 0 is predicted as 1 at (0,0); consolidation (3) at (2,2) is missed.
TARGET_A = [[0, 1, 2], [1, 2, 2], [1, 1, 3]]
PRED_A = [[1, 1, 2], [1, 1, 2], [2, 1, 1]]
# Image B (3x3). Class 0 is absent from truth and prediction; class 3 is predicted at (1,0) but
# absent from the truth.
TARGET_B = [[1, 1, 1], [1, 2, 2], [1, 1, 1]]
PRED_B = [[1, 1, 1], [3, 2, 2], [1, 1, 1]]


def _matrix() -> torch.Tensor:
    pred = torch.tensor([PRED_A, PRED_B])
    target = torch.tensor([TARGET_A, TARGET_B])
    return M.confusion_matrix(pred, target, 4)


def test_confusion_counts_by_hand():
    counts = M.confusion_counts(
        torch.tensor([PRED_A, PRED_B]), torch.tensor([TARGET_A, TARGET_B]), 4
    )
    assert counts.shape == (2, 4, 3)
    # Image A, (tp, fp, fn): class 0 T={(0,0)} P={} ; class 1 T=4 px, P=6 px, 3 shared;
    # class 2 T={(0,2),(1,1),(1,2)} P={(0,2),(1,2),(2,0)}; class 3 T={(2,2)} P={}.
    assert counts[0].tolist() == [[0, 0, 1], [3, 3, 1], [2, 1, 1], [0, 0, 1]]
    # Image B: class 0 nowhere; class 1 T=7 P=6 all shared; class 2 exact; class 3 one false px.
    assert counts[1].tolist() == [[0, 0, 0], [6, 0, 1], [2, 0, 0], [0, 1, 0]]


def test_scores_of_image_a_by_hand():
    counts = M.confusion_counts(torch.tensor([PRED_A]), torch.tensor([TARGET_A]), 4)[0]
    s = M.scores(counts)
    # class 1: tp 3, fp 3, fn 1 -> IoU 3/7, F1 6/10, recall 3/4, precision 3/6
    assert s["iou"][1].item() == pytest.approx(3 / 7)
    assert s["f1"][1].item() == pytest.approx(0.6)
    assert s["recall"][1].item() == pytest.approx(0.75)
    assert s["precision"][1].item() == pytest.approx(0.5)
    # class 2: tp 2, fp 1, fn 1 -> 1/2, 2/3, 2/3, 2/3
    assert [s[m][2].item() for m in M.METRICS] == pytest.approx([0.5, 2 / 3, 2 / 3, 2 / 3])
    # class 3 missed: IoU, F1, recall 0; nothing predicted, so precision is undefined
    assert [s[m][3].item() for m in ("iou", "f1", "recall")] == [0.0, 0.0, 0.0]
    assert math.isnan(s["precision"][3].item())


def test_class_absent_from_both_is_skipped_or_one():
    counts = M.confusion_counts(torch.tensor([PRED_B]), torch.tensor([TARGET_B]), 4)[0]
    skip = M.scores(counts, absent="skip")
    assert all(math.isnan(skip[m][0].item()) for m in M.METRICS)
    one = M.scores(counts, absent="one")
    assert [one[m][0].item() for m in M.METRICS] == [1.0, 1.0, 1.0, 1.0]


def test_class_absent_from_truth_but_predicted():
    counts = M.confusion_counts(torch.tensor([PRED_B]), torch.tensor([TARGET_B]), 4)[0]
    for absent in M.ABSENT_OPTIONS:  # the "one" option changes nothing here: a pixel is predicted
        s = M.scores(counts, absent=absent)
        assert s["iou"][3].item() == 0.0
        assert s["f1"][3].item() == 0.0
        assert s["precision"][3].item() == 0.0
        assert math.isnan(s["recall"][3].item())  # no true pixel: recall undefined


def test_background_group_merges_classes_on_the_matrix():
    counts = M.group_counts(_matrix(), M.GROUPS["background"])
    # Image A, T={0,1} = {(0,0),(0,1),(1,0),(2,0),(2,1)}, P={0,1} = {(0,0),(0,1),(1,0),(1,1),
    # (2,1),(2,2)}: tp 4, fp 2, fn 1. The 0->1 confusion at (0,0) is a hit for the group, so
    # adding per-class counts (tp 3, fp 3, fn 2) would be wrong.
    assert counts[0].tolist() == [4, 2, 1]
    assert counts[1].tolist() == [6, 0, 1]
    s = M.scores(counts)
    assert s["iou"].tolist() == pytest.approx([4 / 7, 6 / 7])
    assert s["f1"].tolist() == pytest.approx([8 / 11, 12 / 13])
    assert s["recall"].tolist() == pytest.approx([4 / 5, 6 / 7])
    assert s["precision"].tolist() == pytest.approx([4 / 6, 1.0])


def test_population_std_by_hand():
    stat = M.mean_std(torch.tensor([1.0, 2.0, 3.0, 4.0, math.nan]))
    # mean 2.5; squared deviations 2.25, 0.25, 0.25, 2.25 sum to 5; 5 / 4 = 1.25 (not 5 / 3)
    assert stat == M.Stat(2.5, pytest.approx(math.sqrt(1.25)), 4)
    assert M.mean_std(torch.tensor([math.nan])) == M.Stat(None, None, 0)


def test_summary_skip_rule_by_hand():
    summary = M.summarize(_matrix(), absent="skip")
    g, c = summary["groups"], summary["classes"]
    assert g["ggo"]["iou"] == M.Stat(0.75, pytest.approx(0.25), 2)  # IoU 1/2 and 1
    assert g["consolidation"]["iou"] == M.Stat(0.0, 0.0, 2)
    assert g["consolidation"]["recall"] == M.Stat(0.0, 0.0, 1)  # image B has no true pixel
    assert g["consolidation"]["precision"] == M.Stat(0.0, 0.0, 1)  # image A predicts none
    assert g["background"]["iou"] == M.Stat(pytest.approx(5 / 7), pytest.approx(1 / 7), 2)
    assert c["background"]["iou"] == M.Stat(0.0, 0.0, 1)  # class 0 alone: image B is left out
    # Overall = mean of the three group means: (0.75 + 0 + 5/7) / 3
    assert g["overall"]["iou"].mean == pytest.approx((0.75 + 0.0 + 5 / 7) / 3)
    assert g["overall"]["iou"].n == 3


def test_summary_one_rule_counts_empty_images_as_perfect():
    c = M.summarize(_matrix(), absent="one")["classes"]
    assert c["background"]["iou"] == M.Stat(0.5, 0.5, 2)  # image A scores 0, image B scores 1


def test_overall_is_the_mean_of_the_group_means_as_in_the_paper():
    # The paper's U-Net IoU: GGO 0.391, CON 0.404, background 0.983 -> overall 0.593
    stat = M.overall([M.Stat(0.391, 0.28, 10), M.Stat(0.404, 0.331, 10), M.Stat(0.983, 0.023, 10)])
    assert round(stat.mean, 3) == 0.593
    assert M.overall([M.Stat(0.5, 0.1, 3), M.Stat(None, None, 0)]) == M.Stat(0.5, None, 1)


def test_lesion_dice_is_mean_of_ggo_and_consolidation_f1():
    summary = M.summarize(_matrix())
    ggo = (2 / 3 + 1.0) / 2
    assert M.lesion_dice(summary) == pytest.approx((ggo + 0.0) / 2)


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match=r"pred holds class ids 4\.\.4; expected 0\.\.3"):
        M.confusion_matrix(torch.tensor([[[4]]]), torch.tensor([[[0]]]), 4)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        M.confusion_matrix(
            torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 4
        )
    with pytest.raises(ValueError, match="absent must be one of"):
        M.iou(torch.zeros(3, dtype=torch.long), absent="zero")


def test_pooled_dice_counts_every_pixel_once():
    # Image 0: 10 GGO pixels, all found. Image 1: 2 GGO pixels missed (called healthy), and 2
    # healthy pixels called GGO. Per slice: F1 1.0 and 0.0 (mean 0.5); pooled: 2*10/(2*10+2+2).
    m = torch.zeros(2, 4, 4, dtype=torch.long)
    m[0, 2, 2] = 10
    m[0, 1, 1] = 90
    m[1, 2, 1] = 2
    m[1, 1, 2] = 2
    m[1, 1, 1] = 96
    pooled = M.pooled_dice(m)
    assert pooled["ggo"] == pytest.approx(20 / 24)
    assert pooled["consolidation"] is None  # no consolidation pixel anywhere
    assert pooled["lesion_dice"] == pytest.approx(20 / 24)  # the one defined lesion
    assert M.summarize(m)["groups"]["ggo"]["f1"].mean == pytest.approx(0.5)
    # Background group (0 and 1): tp 90 + 96, fp 2 (GGO called healthy), fn 2.
    assert pooled["background"] == pytest.approx(2 * 186 / (2 * 186 + 2 + 2))

"""Segmentation metrics from per-image confusion counts (the paper's Eq. 1 and its mean and STD).

Every score starts from one per-image confusion matrix `matrix[b, t, p]`: the number of pixels of
image b whose true class is t and whose predicted class is p. A class, or a group of classes such
as the paper's "background" (class 0 and healthy lung merged), reduces that matrix to three counts
per image: tp (true and predicted in the group), fp (predicted in, true outside) and fn (true in,
predicted outside). Merging must happen on the matrix, not by adding per-class counts: a pixel of
class 0 predicted as class 1 is an error for each class but a hit for the merged group.

    IoU = tp / (tp + fp + fn)        F1 (Dice) = 2 tp / (2 tp + fp + fn)
    recall = tp / (tp + fn)          precision = tp / (tp + fp)

Absent classes (the rule every report prints, `ABSENT_RULE`): a metric whose denominator is zero
for an image is undefined for that image and is left out of the mean and the STD. So IoU and F1
are undefined when the class is absent from both truth and prediction, recall when it is absent
from the truth, precision when it is absent from the prediction; `n` is the number of images where
the metric is defined. With `absent="one"` an image where the class is absent from both truth and
prediction scores 1 on all four metrics instead (a correct "nothing here"); the other undefined
cases are still left out.

Summaries follow the paper: the mean over images and the population STD (divided by n). The
"overall" row of Table 1 is the mean of the three group means (GGO, consolidation, background).

Lesion Dice, the model-selection metric, is the mean of the GGO and consolidation F1 means
(`lesion_dice`). Two other Dice scores are kept apart under their own names because they answer
other questions, both under the same zero-denominator rule:
    any_lesion_dice   per image, GGO and consolidation merged into one lesion class (the
                      calibration study correlates it with per-slice uncertainty);
    pooled_dice       over all pixels of all images at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stitchnet.config import CLASS_NAMES, NUM_CLASSES

METRICS = ("iou", "f1", "recall", "precision")
# Table 1's rows: the two lesions on their own, and every non-lesion pixel as "background".
GROUPS: dict[str, tuple[int, ...]] = {"ggo": (2,), "consolidation": (3,), "background": (0, 1)}
LESION_GROUPS = ("ggo", "consolidation")
LESION_CLASSES = (2, 3)  # GGO and consolidation, merged by `any_lesion_dice`
ABSENT_OPTIONS = ("skip", "one")

ABSENT_RULE = (
    "A metric whose denominator is zero for an image is undefined there and left out of the mean "
    "and STD (IoU/F1: class absent from truth and prediction; recall: absent from truth; "
    "precision: absent from prediction); n counts the images where it is defined."
)
ABSENT_RULE_ONE = (
    "An image where the class is absent from truth and prediction scores 1 on every metric; "
    "other zero denominators (recall: absent from truth; precision: absent from prediction) are "
    "undefined and left out of the mean and STD; n counts the images where it is defined."
)


def absent_rule(absent: str) -> str:
    """The sentence a report prints for the chosen absent-class option."""
    _check_absent(absent)
    return ABSENT_RULE if absent == "skip" else ABSENT_RULE_ONE


def _check_absent(absent: str) -> None:
    if absent not in ABSENT_OPTIONS:
        raise ValueError(f"absent must be one of {list(ABSENT_OPTIONS)}, got {absent!r}")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image confusion matrices (B, C, C) int64, indexed [image, true class, predicted class].

    `pred` and `target` are class ids of the same shape (B, H, W).
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred and target must both be (B, H, W) class ids, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} holds class ids {int(t.min())}..{int(t.max())}; "
                f"expected 0..{num_classes - 1}"
            )
    b = pred.shape[0]
    c = num_classes
    # One bincount over all images: image i's pixels land in bins [i*C*C, (i+1)*C*C).
    offset = torch.arange(b, device=pred.device).view(b, 1, 1) * (c * c)
    flat = (offset + target.long() * c + pred.long()).reshape(-1)
    return torch.bincount(flat, minlength=b * c * c).view(b, c, c).cpu()  # (B, C, C)


def group_counts(matrix: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """tp, fp, fn (B, 3) of the union of `classes`, read off confusion matrices (B, C, C)."""
    inside = torch.zeros(matrix.shape[-1], dtype=torch.bool)
    inside[list(classes)] = True
    tp = matrix[:, inside][:, :, inside].sum(dim=(1, 2))
    fp = matrix[:, ~inside][:, :, inside].sum(dim=(1, 2))
    fn = matrix[:, inside][:, :, ~inside].sum(dim=(1, 2))
    return torch.stack([tp, fp, fn], dim=-1)  # (B, 3)


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """tp, fp, fn per image and class: (B, C, 3) int64."""
    matrix = confusion_matrix(pred, target, num_classes)
    return torch.stack([group_counts(matrix, [k]) for k in range(num_classes)], dim=1)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den as float64, NaN where den is zero (the metric is undefined there)."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def _split(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if counts.shape[-1] != 3:
        raise ValueError(f"counts must end in (tp, fp, fn), got shape {tuple(counts.shape)}")
    return counts[..., 0], counts[..., 1], counts[..., 2]


def _absent_one(score: torch.Tensor, counts: torch.Tensor, absent: str) -> torch.Tensor:
    _check_absent(absent)
    if absent == "one":
        score = torch.where(counts.sum(dim=-1) == 0, torch.ones_like(score), score)
    return score


def iou(counts: torch.Tensor, absent: str = "skip") -> torch.Tensor:
    """|T ∩ P| / |T ∪ P| from counts (..., 3); NaN where undefined."""
    tp, fp, fn = _split(counts)
    return _absent_one(_ratio(tp, tp + fp + fn), counts, absent)


def f1(counts: torch.Tensor, absent: str = "skip") -> torch.Tensor:
    """Dice, 2 |T ∩ P| / (|T| + |P|), from counts (..., 3); NaN where undefined."""
    tp, fp, fn = _split(counts)
    return _absent_one(_ratio(2 * tp, 2 * tp + fp + fn), counts, absent)


def recall(counts: torch.Tensor, absent: str = "skip") -> torch.Tensor:
    """|T ∩ P| / |T| from counts (..., 3); NaN where undefined."""
    tp, _, fn = _split(counts)
    return _absent_one(_ratio(tp, tp + fn), counts, absent)


def precision(counts: torch.Tensor, absent: str = "skip") -> torch.Tensor:
    """|T ∩ P| / |P| from counts (..., 3); NaN where undefined."""
    tp, fp, _ = _split(counts)
    return _absent_one(_ratio(tp, tp + fp), counts, absent)


SCORE_FUNCTIONS = {"iou": iou, "f1": f1, "recall": recall, "precision": precision}


def scores(counts: torch.Tensor, absent: str = "skip") -> dict[str, torch.Tensor]:
    """All four metrics from counts (..., 3), each of shape (...), NaN where undefined."""
    return {name: fn(counts, absent) for name, fn in SCORE_FUNCTIONS.items()}


@dataclass(frozen=True)
class Stat:
    """Mean and population STD over the images where a metric is defined; None when n is 0."""

    mean: float | None
    std: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, entry: dict) -> Stat:
        """The inverse of `to_dict` (metrics.json writes an undefined mean or STD as null)."""
        mean, std = entry.get("mean"), entry.get("std")
        return cls(
            None if mean is None else float(mean),
            None if std is None else float(std),
            int(entry.get("n") or 0),
        )


def mean_std(values: torch.Tensor) -> Stat:
    """The paper's Mean and STD (divided by n, not n - 1), ignoring NaN (undefined) entries."""
    v = values.double().reshape(-1)
    v = v[~torch.isnan(v)]
    n = int(v.numel())
    if n == 0:
        return Stat(None, None, 0)
    mean = v.mean()
    std = ((v - mean) ** 2).mean().sqrt()
    return Stat(float(mean), float(std), n)


def overall(group_stats: Sequence[Stat]) -> Stat:
    """Table 1's overall: the mean of the group means; n is how many group means were defined.

    A group with no image where the metric is defined is left out, like an undefined image.
    """
    means = [s.mean for s in group_stats if s.mean is not None]
    if not means:
        return Stat(None, None, 0)
    return Stat(sum(means) / len(means), None, len(means))


def per_image_scores(matrix: torch.Tensor, absent: str = "skip") -> dict[str, torch.Tensor]:
    """Every per-image score (N,) keyed "class_<name>_<metric>" and "group_<name>_<metric>"."""
    out: dict[str, torch.Tensor] = {}
    for k, name in enumerate(CLASS_NAMES[: matrix.shape[-1]]):
        for metric, value in scores(group_counts(matrix, [k]), absent).items():
            out[f"class_{name}_{metric}"] = value
    for name, classes in GROUPS.items():
        for metric, value in scores(group_counts(matrix, classes), absent).items():
            out[f"group_{name}_{metric}"] = value
    return out


Summary = dict[str, dict[str, dict[str, Stat]]]


def summarize(matrix: torch.Tensor, absent: str = "skip") -> Summary:
    """Mean/STD/n of every metric over images, from confusion matrices (N, C, C).

    Returns {"groups": {ggo, consolidation, background, overall}, "classes": {background,
    healthy, ggo, consolidation}}, each mapping metric name -> Stat. The "background" group is
    classes 0 and 1 merged; the "background" class is class 0 alone.
    """
    if matrix.shape[-1] != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES}-class confusion matrices, got {matrix.shape}")
    per_image = per_image_scores(matrix, absent)
    classes = {
        name: {m: mean_std(per_image[f"class_{name}_{m}"]) for m in METRICS} for name in CLASS_NAMES
    }
    groups = {
        name: {m: mean_std(per_image[f"group_{name}_{m}"]) for m in METRICS} for name in GROUPS
    }
    groups["overall"] = {m: overall([groups[g][m] for g in GROUPS]) for m in METRICS}
    return {"groups": groups, "classes": classes}


def summary_from_dict(content: dict) -> Summary:
    """A Summary read back from metrics.json content (its "groups" and "classes", each metric's
    mean, std and n), so that tables of finished runs are built as those of fresh results."""
    return {
        part: {
            name: {m: Stat.from_dict(entry) for m, entry in stats.items()}
            for name, stats in content.get(part, {}).items()
        }
        for part in ("groups", "classes")
    }


LESION_DICE_MISSING = ("skip", "nan")


def lesion_dice(summary: Summary, missing: str = "skip") -> float:
    """The model-selection metric: the mean of the GGO and consolidation F1 means.

    `missing` says what a lesion whose F1 is undefined on every image (no image of the set has
    it in truth or prediction) does:
        "skip"  it is left out and the other lesion's mean stands alone (NaN if both are); a
                model is still ranked on the lesion the set can score.
        "nan"   the lesion Dice is undefined (NaN). The reproduce report compares and averages
                runs with this: a run scored on one lesion is not comparable with one scored on
                two.
    """
    if missing not in LESION_DICE_MISSING:
        raise ValueError(f"missing must be one of {list(LESION_DICE_MISSING)}, got {missing!r}")
    means = [summary["groups"][g]["f1"].mean for g in LESION_GROUPS]
    if missing == "nan" and None in means:
        return math.nan
    means = [m for m in means if m is not None]
    return sum(means) / len(means) if means else math.nan


def any_lesion_dice(matrix: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of "any lesion" (GGO and consolidation merged) against the rest: (N, C, C)
    confusion matrices -> (N,) float64, NaN where the image has no lesion in truth or prediction.

    Unlike `lesion_dice` it does not care which lesion a pixel was called, and it scores single
    images; so an empty slice cannot count as a perfect one when Dice is correlated with anything.
    """
    return f1(group_counts(matrix, LESION_CLASSES))


def pooled_dice(matrix: torch.Tensor) -> dict[str, float | None]:
    """Dice of each Table-1 group over all pixels of all images, and their lesion mean.

    Per-slice means weight a slice with ten lesion pixels like one with ten thousand; pooled
    scores count every pixel once (published consolidation Dice differs by ~0.1 between the two).
    None where the group has no pixel in either the truth or the prediction.
    """
    total = matrix.sum(dim=0, keepdim=True)  # (1, C, C)
    out: dict[str, float | None] = {}
    for name, classes in GROUPS.items():
        score = float(f1(group_counts(total, classes))[0])
        out[name] = None if math.isnan(score) else score
    lesions = [out[g] for g in LESION_GROUPS if out[g] is not None]
    out["lesion_dice"] = sum(lesions) / len(lesions) if lesions else None
    return out

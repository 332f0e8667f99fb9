"""Train/validation/test splits: made once with a seed, saved to JSON, then always reloaded.

The paper splits the labelled data 60/20/20 by patient, so no patient's slices fall in two parts.
Where a source has no patient ids (the bundled MedSeg slices), the split falls back to slices and
says so loudly in the split itself: slices of one patient may then sit in train and test alike.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.errors import DataError

PARTS = ("train", "val", "test")
SLICE_SPLIT_WARNING = (
    "WARNING: this split is by SLICE, not by patient: the data carry no patient ids, so slices of "
    "one patient may fall in both training and test parts and scores may be optimistic."
)


def make_splits(
    ids: Sequence[str],
    patient_ids: Sequence[str | None],
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Split slice ids into train/val/test, by patient where every slice has a patient id.

    With patient ids, whole patients are shuffled (seeded) and the first round(test_fraction * P)
    go to test, the next round(val_fraction * P) to val, the rest to train; each part gets at least
    one patient when its fraction is above zero. Without any patient ids the same is done with
    slices, and the result carries `"by": "slice"` and a `"warning"`. Ids keep their input order
    within each part.
    """
    ids = [str(i) for i in ids]
    if len(ids) != len(patient_ids):
        raise ValueError(
            f"got {len(ids)} ids but {len(patient_ids)} patient ids; expected one each"
        )
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"slice ids repeat (e.g. {dup}); expected unique ids to split")
    for what, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{what} must lie in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must leave slices for training, got "
            f"{val_fraction} + {test_fraction}"
        )
    missing = [i for i, p in zip(ids, patient_ids, strict=True) if p is None]
    if missing and len(missing) < len(ids):
        raise DataError(
            f"{len(missing)} of {len(ids)} slices have no patient id (e.g. {missing[:3]}); "
            f"expected ids on all slices (split by patient) or on none (split by slice)"
        )
    by = "slice" if missing else "patient"
    groups = ids if by == "slice" else [str(p) for p in patient_ids]
    unique = sorted(set(groups))
    if len(unique) < 3 and (val_fraction > 0 and test_fraction > 0):
        raise DataError(
            f"only {len(unique)} {by}(s) to split; expected at least 3 for train, val and test"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = _part_size(test_fraction, len(unique))
    n_val = _part_size(val_fraction, len(unique))
    part_of = {}
    for rank, g in enumerate(unique[i] for i in order):
        part_of[g] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    splits: dict[str, Any] = {
        "by": by,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        **{
            part: [i for i, g in zip(ids, groups, strict=True) if part_of[g] == part]
            for part in PARTS
        },
    }
    if by == "patient":
        splits["patients"] = {
            part: sorted(g for g in unique if part_of[g] == part) for part in PARTS
        }
    else:
        splits["warning"] = SLICE_SPLIT_WARNING
        warnings.warn(SLICE_SPLIT_WARNING, stacklevel=2)
    return splits


def _part_size(fraction: float, n: int) -> int:
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))


def check_no_patient_leak(
    splits: Mapping[str, Any], patient_ids: Mapping[str, str | None] | Sequence[str | None]
) -> None:
    """Raise if one patient has slices in two parts; `patient_ids` maps slice id -> patient id.

    A sequence is taken as aligned with train + val + test ids in that order. Slices without a
    patient id are not checked (there is nothing to leak on).
    """
    all_ids = [i for part in PARTS for i in splits[part]]
    if not isinstance(patient_ids, Mapping):
        if len(patient_ids) != len(all_ids):
            raise ValueError(
                f"got {len(patient_ids)} patient ids for {len(all_ids)} split slices; expected "
                f"a mapping slice id -> patient id or one id per slice"
            )
        patient_ids = dict(zip(all_ids, patient_ids, strict=True))
    parts_of: dict[str, set[str]] = {}
    for part in PARTS:
        for i in splits[part]:
            p = patient_ids.get(i)
            if p is not None:
                parts_of.setdefault(str(p), set()).add(part)
    leaks = {p: sorted(parts) for p, parts in parts_of.items() if len(parts) > 1}
    if leaks:
        some = dict(sorted(leaks.items())[:5])
        raise DataError(
            f"{len(leaks)} patient(s) have slices in more than one part, e.g. {some}; "
            f"expected each patient in exactly one of {list(PARTS)}"
        )


def save_splits(path: str | Path, splits: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a per-process name, then renamed: under torchrun every rank makes the same
    # split, and none may read another's half-written file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(splits), indent=2))
    tmp.replace(path)


def load_splits(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read splits ({e}); expected JSON from save_splits") from e
    missing = [k for k in ("by", *PARTS) if k not in splits]
    if missing:
        raise DataError(
            f"{path}: splits lack keys {missing}; expected 'by', 'train', 'val', 'test'"
        )
    return splits


def load_or_make_splits(
    path: str | Path,
    ids: Sequence[str],
    patient_ids: Sequence[str | None],
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Reload `path` if it exists (refusing it when its ids differ from `ids`), else make and save.

    A saved split always wins over the seed and fractions given here: the split is made once.
    """
    path = Path(path)
    if not path.exists():
        splits = make_splits(ids, patient_ids, seed, val_fraction, test_fraction)
        save_splits(path, splits)
        return splits
    splits = load_splits(path)
    saved = [i for part in PARTS for i in splits[part]]
    extra, absent = sorted(set(saved) - set(ids)), sorted(set(ids) - set(saved))
    if extra or absent or len(saved) != len(set(saved)):
        raise DataError(
            f"{path}: saved split does not match this dataset: {len(absent)} slice(s) of the data "
            f"are not in it (e.g. {absent[:3]}), {len(extra)} of its slice(s) are not in the data "
            f"(e.g. {extra[:3]}); expected the same {len(ids)} ids. Delete the file to make a new "
            f"split, or point to the split made for this dataset"
        )
    if splits["by"] == "patient":
        check_no_patient_leak(splits, dict(zip(ids, patient_ids, strict=True)))
    elif "warning" in splits:
        warnings.warn(splits["warning"], stacklevel=2)
    if (splits.get("seed"), splits.get("val_fraction"), splits.get("test_fraction")) != (
        seed,
        val_fraction,
        test_fraction,
    ):
        warnings.warn(
            f"{path}: reusing the saved split (seed {splits.get('seed')}, fractions "
            f"{splits.get('val_fraction')}/{splits.get('test_fraction')}) rather than making one "
            f"with seed {seed} and {val_fraction}/{test_fraction}",
            stacklevel=2,
        )
    return splits


def split_indices(splits: Mapping[str, Any], ids: Sequence[str]) -> dict[str, list[int]]:
    """Positions of each part's ids in `ids`, e.g. for `PreparedSet.subset`."""
    where = {i: k for k, i in enumerate(ids)}
    missing = [i for part in PARTS for i in splits[part] if i not in where]
    if missing:
        raise DataError(
            f"split ids {missing[:3]} are not in the data; expected a split made for it"
        )
    return {part: [where[i] for i in splits[part]] for part in PARTS}

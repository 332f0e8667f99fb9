"""`--label-map NAME|FILE`: how a label volume's values become our four classes.

Our classes: 0 background, 1 healthy lung, 2 ground-glass opacity (GGO), 3 consolidation. The
map itself is `LabelMap` (one class for slices and volumes, with the presets the slice readers
take by name); this module also names the built-ins the CLI offers, reads a map from a JSON file
or from an nnU-Net / MSD dataset.json, and refuses the maps this project cannot train a 4-class
head on.

Built-ins (`LABEL_MAP_HELP` is what --help prints):

    ours     0 1 2 3 are already our classes (identity).
    medseg   MedSeg's raw labels: 0 none, 1 GGO, 2 consolidation, 3 pleural effusion. Effusion
             is fluid outside the lung parenchyma, so it becomes background (0), as in Inf-Net's
             ground truth. MedSeg has no healthy-lung class: healthy lung (1) is the lung mask
             given beside the labels minus the lesions, or, with none given, the lung field that
             `segment` finds (lungfield.volume).
    binary   0 background, 1 lesion of unknown kind. Refused for training and evaluation: a
             4-class head needs to know GGO from consolidation, and calling every lesion one of
             them would teach the model that the other does not exist. Training on it would need
             a marginal loss, -log(p_GGO + p_cons) on lesion pixels, in every model's loss; that
             is not built.

A FILE is JSON: {"map": {"0": 0, "1": 2, "2": 3}, "lung_fill": [0]} ("lung_fill": the source values
that become healthy lung inside the lung mask, optional). A label value the map does not list is
refused (`LabelMap.apply`), naming the values found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.data.errors import DataError


@dataclass(frozen=True)
class LabelMap:
    """How a source's mask values become our ids (0 bg, 1 healthy lung, 2 GGO, 3 consolidation).

    Some sources label only lesions and ship the lung field separately. For those, `lung_fill`
    lists the source values that become healthy lung (1) where the lung mask is set; everywhere
    else they keep their mapped id.
    """

    name: str
    mapping: tuple[tuple[int, int], ...]  # (source id, our id) pairs; tuples keep the map hashable
    lung_fill: tuple[int, ...] = ()  # source ids set to 1 inside the lung field (needs a lung mask)

    def __post_init__(self) -> None:
        bad = sorted({ours for _, ours in self.mapping} - {0, 1, 2, 3})
        if bad:
            raise ValueError(f"label map {self.name!r} maps to {bad}; our class ids are 0..3")

    @classmethod
    def from_dict(
        cls, name: str, mapping: Mapping[int, int], lung_fill: Iterable[int] = ()
    ) -> LabelMap:
        return cls(
            name, tuple(sorted((int(k), int(v)) for k, v in mapping.items())), tuple(lung_fill)
        )

    @property
    def source_ids(self) -> tuple[int, ...]:
        return tuple(src for src, _ in self.mapping)

    def apply(self, raw: np.ndarray, lung: np.ndarray | None = None, path: str = "") -> np.ndarray:
        """Map a (H, W) array of source ids to (H, W) uint8 class ids; `path` names it in errors."""
        values = np.unique(raw)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise DataError(
                f"{path}: mask holds non-integer values {values[np.mod(values, 1) != 0][:5]}; "
                f"expected integer class ids {list(self.source_ids)} (label map {self.name!r})"
            )
        unexpected = sorted(set(values.astype(np.int64).tolist()) - set(self.source_ids))
        if unexpected:
            raise DataError(
                f"{path}: mask holds values {unexpected} outside label map {self.name!r}; "
                f"expected only {list(self.source_ids)}. Pass another label_map (presets: "
                f"{sorted(LABEL_MAPS)}) or LabelMap.from_dict(...)"
            )
        ids = raw.astype(np.int64)
        out = np.zeros(raw.shape, dtype=np.uint8)
        for src, ours in self.mapping:
            out[ids == src] = ours
        if self.lung_fill:
            if lung is None:
                raise DataError(
                    f"{path}: label map {self.name!r} needs a lung mask to mark healthy lung "
                    f"(its source has no healthy-lung class); expected a lung/ file beside the mask"
                )
            fill = np.isin(ids, self.lung_fill) & (lung > 0)
            out[fill] = 1
        return out


IDENTITY = LabelMap.from_dict("identity", {0: 0, 1: 1, 2: 2, 3: 3})
# MedSeg's raw labels: 0 none, 1 GGO, 2 consolidation, 3 pleural effusion. Effusion is neither
# parenchyma nor a lesion class, so it becomes background (as in Inf-Net's ground truth) and is not
# filled as healthy lung even though MedSeg's lung mask covers it.
MEDSEG_RAW = LabelMap.from_dict("medseg-raw", {0: 0, 1: 2, 2: 3, 3: 0}, lung_fill=(0,))
# CC-CCII's lesion masks as publicly described: background, lung field, GGO, consolidation,
# stored as 0..3 in 8-bit PNGs: an assumption, not checked against the real files.
CCCCII = LabelMap.from_dict("cc-ccii", {0: 0, 1: 1, 2: 2, 3: 3})
LABEL_MAPS: dict[str, LabelMap] = {m.name: m for m in (IDENTITY, MEDSEG_RAW, CCCCII)}


def get_label_map(label_map: str | LabelMap) -> LabelMap:
    if isinstance(label_map, LabelMap):
        return label_map
    if label_map not in LABEL_MAPS:
        raise ValueError(f"unknown label map {label_map!r}; expected one of {sorted(LABEL_MAPS)}")
    return LABEL_MAPS[label_map]


BINARY = LabelMap.from_dict("binary", {0: 0, 1: 2})  # only so the name resolves; always refused
BUILT_IN: dict[str, LabelMap] = {"ours": IDENTITY, "medseg": MEDSEG_RAW, "binary": BINARY}
REFUSED = {
    "binary": (
        "a binary lesion mask cannot say GGO from consolidation, and the 4-class head needs both "
        "(a marginal loss over the two is not built); label the lesions by kind, or pass a map "
        "FILE that says which class your lesion label is"
    )
}
LABEL_MAP_HELP = (
    "how the label files' values become our classes (0 background, 1 healthy lung, 2 GGO, "
    "3 consolidation): 'ours' (identity; the default, or what dataset.json's label names say); "
    "'medseg' (1 GGO, 2 consolidation, 3 pleural effusion -> background, healthy lung from the "
    "lung mask or the lung field); 'binary' (lesion of unknown kind: refused, the 4-class head "
    'needs the kind); or a JSON FILE {"map": {"0": 0, "1": 2}, "lung_fill": [0]}'
)
# dataset.json label names, lower-cased, that say which of our classes a label is.
NAME_CLASSES = {
    "background": 0,
    "pleural effusion": 0,
    "effusion": 0,
    "lung": 1,
    "healthy lung": 1,
    "healthy": 1,
    "ggo": 2,
    "ground glass": 2,
    "ground-glass opacity": 2,
    "ground glass opacity": 2,
    "consolidation": 3,
}


class LabelMapError(DataError):
    """A label map that cannot be read or cannot serve the 4-class head."""


def resolve_label_map(spec: str | LabelMap | None, dataset_json: Path | None = None) -> LabelMap:
    """The map for `--label-map` (a built-in name or a JSON file); None: what `dataset_json`'s
    label names say, else `ours`. A refused map raises `LabelMapError` saying why."""
    if isinstance(spec, LabelMap):
        return spec
    if spec is None:
        if dataset_json is not None and dataset_json.is_file():
            return map_from_dataset_json(dataset_json)
        return IDENTITY
    if spec in REFUSED:
        raise LabelMapError(f"--label-map {spec}: refused; {REFUSED[spec]}")
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    path = Path(spec)
    if not path.is_file():
        raise LabelMapError(
            f"--label-map {spec}: neither a built-in map {sorted(BUILT_IN)} nor a JSON file"
        )
    return map_from_file(path)


def map_from_file(path: Path) -> LabelMap:
    """A LabelMap from JSON {"map": {source value: our class}, "lung_fill": [values]}."""
    data = _read_json(path)
    mapping = data.get("map") if isinstance(data, dict) else None
    if not isinstance(mapping, dict) or not mapping:
        raise LabelMapError(
            f"{path}: no 'map' object; expected JSON such as "
            f'{{"map": {{"0": 0, "1": 2, "2": 3}}, "lung_fill": [0]}}'
        )
    try:
        pairs = {int(k): int(v) for k, v in mapping.items()}
        lung_fill = [int(v) for v in data.get("lung_fill", [])]
    except (TypeError, ValueError) as e:
        raise LabelMapError(
            f"{path}: map {mapping} holds a value that is not an integer ({e}); expected "
            f"integer source values mapped to our classes 0..3"
        ) from e
    try:
        return LabelMap.from_dict(path.stem, pairs, lung_fill)
    except ValueError as e:  # a class outside 0..3
        raise LabelMapError(f"{path}: {e}") from e


def map_from_dataset_json(path: Path) -> LabelMap:
    """The map that dataset.json's `labels` say: each label name matched to one of our classes
    (NAME_CLASSES, case and underscores ignored). A background plus one other label is a binary
    lesion mask and is refused like `--label-map binary`; an unknown name is refused with the
    names, so the user passes --label-map."""
    labels = dataset_labels(path)
    if len(labels) == 2 and 0 in labels:
        raise LabelMapError(
            f"{path}: labels {labels} are a binary lesion mask; refused: {REFUSED['binary']}"
        )
    ours, unknown, background = {}, [], []
    for value, name in labels.items():
        key = name.lower().replace("_", " ").strip()
        if key in NAME_CLASSES:
            ours[value] = NAME_CLASSES[key]
            background += [value] if key == "background" else []
        else:
            unknown.append(name)
    if unknown:
        raise LabelMapError(
            f"{path}: label names {unknown} have no class of ours (known: "
            f"{sorted(NAME_CLASSES)}); pass --label-map NAME|FILE"
        )
    # Without a healthy-lung label, background inside the lung mask is healthy lung (an
    # effusion label stays background: it is not parenchyma).
    lung_fill = () if 1 in ours.values() else tuple(background)
    return LabelMap.from_dict(f"{path.name} labels", ours, lung_fill)


def dataset_labels(path: Path) -> dict[int, str]:
    """dataset.json `labels` as {value: name}: nnU-Net v2 writes {"name": value}, the Medical
    Segmentation Decathlon {"value": "name"}; both are read. Region labels (a list of values,
    nnU-Net's regions) are refused: a voxel would then belong to several classes."""
    data = _read_json(path)
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, Mapping) or not labels:
        raise LabelMapError(f"{path}: no 'labels' object; expected e.g. {{'background': 0, ...}}")
    out: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[value] = str(key)  # nnU-Net v2: name -> value
        elif isinstance(value, str) and str(key).lstrip("-").isdigit():
            out[int(key)] = value  # MSD: "value" -> name
        else:
            raise LabelMapError(
                f"{path}: label {key!r}: {value!r}; expected name: integer (nnU-Net v2) or "
                f'"integer": name (Decathlon), not regions'
            )
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelMapError(f"{path}: cannot read as JSON ({e}); expected a JSON object") from e

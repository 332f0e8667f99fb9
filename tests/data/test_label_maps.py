"""--label-map: the built-ins, a JSON file, dataset.json's labels, and what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stitchnet.cli import build_parser
from stitchnet.data.errors import DataError
from stitchnet.data.label_maps import (
    LabelMapError,
    dataset_labels,
    map_from_dataset_json,
    resolve_label_map,
)

# A 1 x 2 x 4 label volume in MedSeg's values (0 none, 1 GGO, 2 consolidation, 3 effusion) and a
# lung mask that covers the first row only.
MEDSEG = np.array([[[0, 1, 2, 3], [0, 1, 2, 3]]])
LUNG = np.array([[[1, 1, 1, 1], [0, 0, 0, 0]]], dtype=np.uint8)


def test_ours_is_the_identity():
    raw = np.array([[[0, 1, 2, 3]]])
    assert resolve_label_map("ours").apply(raw).tolist() == [[[0, 1, 2, 3]]]
    assert resolve_label_map(None).apply(raw).tolist() == [[[0, 1, 2, 3]]]  # the default


def test_medseg_maps_lesions_fills_healthy_lung_and_makes_effusion_background():
    out = resolve_label_map("medseg").apply(MEDSEG, lung=LUNG)
    # In the lung: none -> healthy lung 1, GGO -> 2, consolidation -> 3, effusion -> 0 (not
    # parenchyma). Outside the lung nothing is healthy lung.
    assert out.tolist() == [[[1, 2, 3, 0], [0, 2, 3, 0]]]


def test_a_value_outside_the_map_is_refused_naming_it():
    raw = MEDSEG.copy()
    raw[0, 1, 0] = 7
    with pytest.raises(DataError, match=r"values \[7\] outside label map"):
        resolve_label_map("medseg").apply(raw, lung=LUNG, path="case.nii.gz")


def test_binary_masks_are_refused_for_the_four_class_head():
    with pytest.raises(LabelMapError, match="binary: refused.*GGO from consolidation"):
        resolve_label_map("binary")


def test_a_json_file_maps_values(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"map": {"0": 0, "5": 2, "9": 3}, "lung_fill": [0]}))
    lmap = resolve_label_map(str(path))
    raw = np.array([[[0, 5, 9, 0]]])
    lung = np.array([[[1, 1, 1, 0]]])
    assert lmap.apply(raw, lung=lung).tolist() == [[[1, 2, 3, 0]]]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"mapping": {"0": 0}}, "no 'map' object"),
        ({"map": {"0": 0, "1": 7}}, r"maps to \[7\]"),
        ({"map": {"zero": 0}}, "not an integer"),
    ],
)
def test_a_bad_json_file_is_refused(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(LabelMapError, match=match):
        resolve_label_map(str(path))


def test_an_unknown_name_is_refused_with_the_choices():
    with pytest.raises(LabelMapError, match=r"nor a JSON file"):
        resolve_label_map("nnunet-magic")


def test_nnunet_v2_labels_pick_the_map_by_name(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "GGO": 1, "Consolidation": 2}}))
    lmap = map_from_dataset_json(path)
    # No healthy-lung label: background inside the lung mask becomes healthy lung.
    out = lmap.apply(np.array([[[0, 1, 2, 0]]]), lung=np.array([[[1, 1, 1, 0]]]))
    assert out.tolist() == [[[1, 2, 3, 0]]]


def test_decathlon_labels_read_value_to_name(tmp_path):
    path = tmp_path / "dataset.json"
    labels = {"0": "background", "1": "lung", "2": "ground_glass", "3": "consolidation"}
    path.write_text(json.dumps({"labels": labels}))
    assert dataset_labels(path) == {
        0: "background",
        1: "lung",
        2: "ground_glass",
        3: "consolidation",
    }
    # A healthy-lung label of its own: nothing needs a lung mask.
    lmap = map_from_dataset_json(path)
    assert lmap.lung_fill == ()
    assert lmap.apply(np.array([[[0, 1, 2, 3]]])).tolist() == [[[0, 1, 2, 3]]]


def test_dataset_json_binary_and_unknown_labels_are_refused(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "infection": 1}}))
    with pytest.raises(LabelMapError, match="binary lesion mask"):
        map_from_dataset_json(path)
    path.write_text(json.dumps({"labels": {"background": 0, "tumour": 1, "GGO": 2}}))
    with pytest.raises(LabelMapError, match=r"\['tumour'\].*--label-map"):
        map_from_dataset_json(path)


def test_an_explicit_map_wins_over_dataset_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "infection": 1}}))
    assert resolve_label_map("ours", path).name == "identity"


def test_train_help_lists_the_built_ins():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    for name in ("'ours'", "'medseg'", "'binary'", "pleural effusion"):
        assert name in " ".join(text.split())

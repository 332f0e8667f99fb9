"""The plain Python API that the CLI is a thin layer over.

from stitchnet import pipeline
result = pipeline.fit("unet", "data/medseg_covid19_train50", "runs/unet", preset="cpu-small")
metrics = pipeline.evaluate_folder("runs/unet", "data/medseg_covid19_train50", "runs/unet/eval")
pipeline.predict_folder("runs/unet", "some/folder", "runs/unet/pred")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stitchnet.checkpoint import model_from_checkpoint
from stitchnet.config import DATA_PRESETS, TRAIN_PRESETS, RunConfig, check_preset
from stitchnet.data.prepare_source import check_source_window, default_cache_dir, read_and_prepare
from stitchnet.data.splits import check_no_patient_leak, load_or_make_splits
from stitchnet.data.types import PreparedSet
from stitchnet.data.volume_dataset import LABELLED_LAYOUTS, detect_volume_layout, prepare_volumes
from stitchnet.evaluate import EvalResult, evaluate, write_evaluation
from stitchnet.evaluate_volumes import evaluate_volumes, write_volume_evaluation

# predict_folder lives with inference; it is imported here as part of the plain API.
from stitchnet.inference.predict import predict_folder  # noqa: F401
from stitchnet.models import model_class, model_config
from stitchnet.objectives import objective_class, objective_config
from stitchnet.outdir import check_output, open_output, staged_dir
from stitchnet.presets import GENERATIVE_TRAIN, UNLABELLED_PER_STEP
from stitchnet.scanner_aug import scanner_config
from stitchnet.train import TrainResult, train

SPLIT_SEED = 0  # the split is fixed across training seeds so seeds measure training noise only


def run_config(
    model: str,
    preset: str = "cpu-small",
    seed: int = 0,
    model_overrides: dict[str, Any] | None = None,
    objective: str = "none",
    objective_overrides: dict[str, Any] | None = None,
    **train_overrides: Any,
) -> RunConfig:
    """The full run config for a model under a preset and a semi-supervised objective
    ("none": supervised, or the ELBO alone for the generative models); overrides are validated
    field names."""
    check_preset(preset)
    mcfg = model_config(model, preset, **(model_overrides or {}))
    ocfg = objective_config(objective, dict(objective_overrides or {}))
    train_cfg = TRAIN_PRESETS[preset]
    if model_class(model).uses_unlabelled:
        train_cfg = dataclasses.replace(train_cfg, **GENERATIVE_TRAIN[preset])
    if uses_unlabelled(model, objective):
        train_cfg = dataclasses.replace(
            train_cfg, unlabelled_batch_size=UNLABELLED_PER_STEP[preset]
        )
    if train_overrides.get("scanner_aug") is not None:
        # Stored with every field, so the run config names the ranges it trained with.
        train_overrides["scanner_aug"] = scanner_config(train_overrides["scanner_aug"])
    train_cfg = dataclasses.replace(
        train_cfg, seed=seed, **{k: v for k, v in train_overrides.items() if v is not None}
    )
    return RunConfig(
        model=model,
        model_config=dataclasses.asdict(mcfg),
        data=DATA_PRESETS[preset],
        train=train_cfg,
        preset=preset,
        objective=objective,
        objective_config=dataclasses.asdict(ocfg),
    )


def uses_unlabelled(model: str, objective: str = "none") -> bool:
    """Whether a run learns from unlabelled slices: a generative model's ELBO, or a
    semi-supervised objective's consistency term."""
    return model_class(model).uses_unlabelled or objective_class(objective).semi_supervised


def prepare_folder(
    path: str | Path,
    data_cfg: Any,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    require_masks: bool = False,
    source_window: tuple[float, float] | None = None,
    label_map: str | None = None,
) -> PreparedSet:
    """Read any supported source (folder, NIfTI, DICOM series, CC-CCII, a volume dataset or a
    folder of scans: data.volume_dataset) and pre-process it. `source_window`: the HU window of
    8-bit slices that carry no recorded one (read_folder). `label_map`: --label-map, how mask
    values become our classes (data.label_maps; default: dataset.json's labels, else ours)."""
    source_window = check_source_window(source_window)
    if detect_volume_layout(path) is not None:
        # Volumes go through the slice cache: a second run reads no volume.
        cache = default_cache_dir() if cache_dir is None else Path(cache_dir)
        labelled = True if require_masks else None
        return prepare_volumes(path, data_cfg, cache, progress, labelled, label_map)
    return read_and_prepare(
        path, data_cfg, cache_dir, progress, require_masks, source_window, label_map
    )[1]


def split_parts(
    data: PreparedSet, splits_path: Path, seed: int = SPLIT_SEED
) -> tuple[dict, dict[str, PreparedSet]]:
    """Load or make the seeded 60/20/20 split (by patient where ids exist) and cut the set."""
    splits = load_or_make_splits(splits_path, data.ids, data.patient_ids, seed=seed)
    check_no_patient_leak(splits, dict(zip(data.ids, data.patient_ids, strict=True)))
    index = {sid: i for i, sid in enumerate(data.ids)}
    parts = {
        part: data.subset([index[s] for s in splits[part]], name=f"{data.name}:{part}")
        for part in ("train", "val", "test")
    }
    return splits, parts


@dataclass
class FitResult:
    train: TrainResult
    test: EvalResult | None
    splits: dict
    out_dir: Path


def fit(
    model: str,
    labelled: str | Path,
    out_dir: str | Path,
    preset: str = "cpu-small",
    unlabelled: str | Path | None = None,
    seed: int = 0,
    splits_path: str | Path | None = None,
    model_overrides: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    objective: str = "none",
    objective_overrides: dict[str, Any] | None = None,
    source_window: tuple[float, float] | None = None,
    label_map: str | None = None,
    **train_overrides: Any,
) -> FitResult:
    """Train `model` on a labelled folder (and an unlabelled one), then score it on the test part.

    The split is written to `splits_path` (default `out_dir/splits.json`) and reused on every
    later run; the test metrics go to `out_dir/test/`. `source_window` is the HU window of 8-bit
    slices, in either folder, that carry no recorded one (read_folder).
    """
    source_window = check_source_window(source_window)
    out = check_output(out_dir, "train", inputs=(labelled, unlabelled))
    cfg = run_config(
        model, preset, seed, model_overrides, objective, objective_overrides, **train_overrides
    )
    labelled_set = prepare_folder(
        labelled, cfg.data, cache_dir, progress, True, source_window, label_map
    )
    open_output(out, "train")  # before the split, the first file written into it
    splits, parts = split_parts(labelled_set, Path(splits_path or out / "splits.json"))
    unlabelled_set = None
    if unlabelled is not None and uses_unlabelled(model, objective):
        pool = prepare_folder(
            unlabelled, cfg.data, cache_dir, progress, source_window=source_window
        )
        # The pool is split by patient too; only its training part is trained on.
        _, pool_parts = split_parts(pool, out / "unlabelled_splits.json")
        unlabelled_set = pool_parts["train"]
    if cfg.train.max_labelled is not None and cfg.train.steps_per_epoch is None:
        # Fewer labelled slices, same budget: as many steps per epoch as the full training part.
        steps = math.ceil(len(parts["train"]) / cfg.train.batch_size)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps_per_epoch=steps))
    result = train(
        cfg,
        parts["train"],
        parts["val"],
        out,
        unlabelled=unlabelled_set,
        progress=progress,
    )
    test = evaluate(result.model, parts["test"])
    # Under torchrun every rank holds the same best model; only rank 0 writes.
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        write_evaluation(test, out / "test")
    return FitResult(train=result, test=test, splits=splits, out_dir=out)


def evaluate_folder(
    run_or_checkpoint: str | Path,
    folder: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    source_window: tuple[float, float] | None = None,
    label_map: str | None = None,
) -> EvalResult:
    """Score a trained model on any labelled folder, with the preprocessing it was trained with.
    `out_dir` gets metrics.json and per_image.csv, replacing an earlier evaluation there; a
    labelled volume dataset also volumes.csv and volumes.json, per case in 3-D
    (evaluate_volumes.py). `source_window`: the HU window of 8-bit slices that carry no
    recorded one (read_folder). `label_map`: --label-map (data.label_maps)."""
    source_window = check_source_window(source_window)
    check_output(out_dir, "evaluate", inputs=(run_or_checkpoint, folder))
    model, ckpt = model_from_checkpoint(run_or_checkpoint)
    cfg = RunConfig.from_dict(ckpt["run_config"])
    data = prepare_folder(folder, cfg.data, cache_dir, progress, True, source_window, label_map)
    result = evaluate(model, data)
    cases = None
    if detect_volume_layout(folder) in LABELLED_LAYOUTS:
        cases = evaluate_volumes(model, cfg.data, folder, label_map, progress)
    with staged_dir(out_dir, "evaluate") as tmp:
        write_evaluation(result, tmp)
        if cases is not None:
            write_volume_evaluation(cases, tmp)
    return result

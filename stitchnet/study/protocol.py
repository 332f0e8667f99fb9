"""What the study compares: the variants, the "with"/"without" pairs, how much each preset runs,
the paper's Table 1, where each run lives in a `reproduce` folder, and the machine it ran on.

Plain data and two small functions, read by `stitchnet.study.run` (which trains) and
`stitchnet.study.report` (which reads the runs back); neither imports the other's code.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stitchnet.version import __version__


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    model: str
    unlabelled: bool = False
    encoder_weights: str | None = None
    objective: str = (
        "none"  # semi-supervised objective (stitchnet.objectives), "none": supervised/ELBO
    )
    # objective config overrides as (field, value) pairs (a dict would not be hashable)
    objective_overrides: tuple[tuple[str, Any], ...] = ()
    candidate: bool = False  # may become the recommended model (chosen on validation, never test)
    model_overrides: tuple[tuple[str, Any], ...] = ()  # model config fields, as (field, value)


# The paper's comparison (presets paper, cpu-small, debug).
PAPER_VARIANTS = (
    Variant("stitchnet_ssl", "StitchNet (labelled + unlabelled)", "stitchnet", unlabelled=True),
    Variant("stitchnet_sup", "StitchNet (labelled only)", "stitchnet"),
    Variant(
        "ladder_ssl", "Ladder VAE, unshared (labelled + unlabelled)", "ladder", unlabelled=True
    ),
    Variant("unet", "U-Net (MobileNetV2, from scratch)", "unet"),
    Variant(
        "unet_imagenet", "U-Net (MobileNetV2, ImageNet encoder)", "unet", encoder_weights="imagenet"
    ),
    Variant("segnet", "SegNet (VGG16)", "segnet"),
)


def _ssl(key: str, label: str, model: str, objective: str, candidate: bool = True, **over: Any):
    return Variant(
        key,
        label,
        model,
        unlabelled=True,
        objective=objective,
        objective_overrides=tuple(sorted(over.items())),
        candidate=candidate,
    )


# The semi-supervised comparison (preset cpu): the supervised U-Net, the U-Net with every
# consistency method, faithful StitchNet with and without the pool, the skip variant without the
# pool, with the pool through its ELBO alone, with consistency + ELBO, and with consistency alone
# (the ELBO on labelled rows only): the last pair asks whether the generative term adds anything.
SSL_VARIANTS = (
    Variant("unet", "U-Net (supervised)", "unet"),
    Variant(
        "unet_cedice",
        "U-Net (supervised, CE + Dice)",
        "unet",
        model_overrides=(("loss", "ce+dice"),),
    ),
    _ssl("unet_mt", "U-Net + Mean Teacher", "unet", "mean_teacher"),
    _ssl("unet_fixmatch", "U-Net + FixMatch", "unet", "fixmatch"),
    _ssl("unet_unimatch", "U-Net + UniMatch", "unet", "unimatch"),
    _ssl("unet_bcp", "U-Net + BCP copy-paste", "unet", "bcp"),
    Variant("stitchnet_ssl", "StitchNet (labelled + unlabelled)", "stitchnet", unlabelled=True),
    Variant("stitchnet_sup", "StitchNet (labelled only)", "stitchnet"),
    Variant("skip_sup", "StitchNet-skip (labelled only)", "stitchnet-skip"),
    Variant(
        "skip_elbo", "StitchNet-skip + unlabelled (ELBO only)", "stitchnet-skip", unlabelled=True
    ),
    _ssl("skip_unimatch", "StitchNet-skip + UniMatch + ELBO", "stitchnet-skip", "unimatch"),
    _ssl(
        "skip_unimatch_noelbo",
        "StitchNet-skip + UniMatch, no ELBO on unlabelled",
        "stitchnet-skip",
        "unimatch",
        elbo_unlabelled=False,
    ),
    # The comparison's step-cost target: one student pass a step (objectives/one_pass.py), and
    # with it labelled lesions pasted into unlabelled slices for the few-label regime.
    _ssl("skip_onepass", "StitchNet-skip + one-pass FixMatch + ELBO", "stitchnet-skip", "one_pass"),
    _ssl(
        "skip_onepass_paste",
        "StitchNet-skip + one-pass FixMatch + lesion paste + ELBO",
        "stitchnet-skip",
        "one_pass",
        lesion_paste=0.5,
    ),
)
# "with" -> "without" pairs whose per-seed gain the report prints: the unlabelled pool, and
# (first) the class-balanced label term.
PAIRS = (
    ("unet_cedice", "unet"),
    ("unet_mt", "unet"),
    ("unet_fixmatch", "unet"),
    ("unet_unimatch", "unet"),
    ("unet_bcp", "unet"),
    ("stitchnet_ssl", "stitchnet_sup"),
    ("skip_elbo", "skip_sup"),
    ("skip_unimatch", "skip_sup"),
    ("skip_unimatch_noelbo", "skip_sup"),
    ("skip_unimatch", "skip_unimatch_noelbo"),
    ("skip_onepass", "skip_sup"),
    ("skip_onepass_paste", "skip_sup"),
    ("skip_onepass_paste", "skip_onepass"),
)


@dataclass(frozen=True)
class Protocol:
    """How much of the comparison a preset runs; all of it, unless the preset says otherwise."""

    seeds: int
    label_counts: tuple[int, ...]
    efficiency_seeds: int
    note: str = ""
    variants: tuple[Variant, ...] = PAPER_VARIANTS
    # Variant keys of the label-efficiency panel; RECOMMENDED stands for the candidate chosen on
    # validation after the main runs.
    efficiency: tuple[str, ...] = ("unet", "stitchnet_sup", "stitchnet_ssl")


RECOMMENDED = "recommended"
PROTOCOLS = {
    "paper": Protocol(seeds=3, label_counts=(5, 10, 20), efficiency_seeds=3),
    "cpu-small": Protocol(
        seeds=2,
        label_counts=(10,),
        efficiency_seeds=1,
        note="cpu-small runs 2 seeds for the main comparison (not 3) and the label-efficiency "
        "curve at 10 labelled slices (plus the full training part from the main runs) with 1 "
        "seed, to stay under 30 minutes on 2 CPU cores: StitchNet needs ~100-125 steps to "
        "leave its 'no lesion' plateau, so every model trains 144 steps (36 epochs), and 3 "
        "seeds at that budget would not fit. The semi-supervised comparison (objectives, "
        "stitchnet-skip, the recommended model) is preset cpu's, not part of this demo.",
    ),
    "cpu": Protocol(
        seeds=3,
        label_counts=(5, 15),
        efficiency_seeds=4,
        variants=SSL_VARIANTS,
        efficiency=("unet", RECOMMENDED, "skip_unimatch", "skip_onepass", "skip_onepass_paste"),
        note="cpu: every variant at 128 px, 3 seeds; the recommended model is the candidate with "
        "the best mean validation lesion Dice over seeds (never the test split); the label-"
        "efficiency panel trains it, the supervised U-Net and the StitchNet-skip recipes "
        "(UniMatch, one-pass FixMatch with and without lesion paste) on 5 and 15 labelled "
        "slices, 4 seeds.",
    ),
    "debug": Protocol(seeds=1, label_counts=(5,), efficiency_seeds=1, note="debug: 1 seed."),
}

# The paper's Table 1 (test set, CC-CCII), for reference beside ours.
PAPER_TABLE1 = {
    "GGO": {
        "U-Net": ("0.391 ± 0.280", "0.499 ± 0.32", "0.608 ± 0.358", "0.47 ± 0.326"),
        "SegNet": ("0.004 ± 0.027", "0.007 ± 0.044", "0.012 ± 0.087", "0.009 ± 0.071"),
        "StitchNet": ("0.358 ± 0.257", "0.471 ± 0.303", "0.517 ± 0.331", "0.489 ± 0.328"),
    },
    "CON": {
        "U-Net": ("0.404 ± 0.331", "0.49 ± 0.368", "0.616 ± 0.378", "0.485 ± 0.38"),
        "SegNet": ("0.021 ± 0.113", "0.027 ± 0.137", "0.057 ± 0.227", "0.021 ± 0.114"),
        "StitchNet": ("0.318 ± 0.315", "0.397 ± 0.361", "0.539 ± 0.411", "0.387 ± 0.369"),
    },
    "Background": {
        "U-Net": ("0.983 ± 0.023", "0.992 ± 0.012", "0.987 ± 0.02", "0.996 ± 0.006"),
        "SegNet": ("0.97 ± 0.044", "0.984 ± 0.024", "0.999 ± 0.009", "0.971 ± 0.043"),
        "StitchNet": ("0.985 ± 0.021", "0.992 ± 0.011", "0.992 ± 0.011", "0.993 ± 0.014"),
    },
    "Overall": {
        "U-Net": ("0.593", "0.66", "0.737", "0.65"),
        "SegNet": ("0.332", "0.339", "0.356", "0.334"),
        "StitchNet": ("0.554", "0.62", "0.683", "0.623"),
    },
}


def run_path(out: Path, key: str, seed: int, count: int | None = None) -> Path:
    """Where a run lives in a `reproduce` folder: runs/KEY/seedS on the whole training part,
    efficiency/KEY/nCOUNT/seedS on its first COUNT labelled slices."""
    if count is None:
        return out / "runs" / key / f"seed{seed}"
    return out / "efficiency" / key / f"n{count}" / f"seed{seed}"


def environment() -> dict:
    """The software and machine a run or a report was made with."""
    import torch

    return {
        "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "stitchnet": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }

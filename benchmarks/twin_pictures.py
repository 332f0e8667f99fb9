"""Pictures of the two healthy twins side by side: scan | level twin | style twin (lung window).

python benchmarks/twin_pictures.py [--out docs/viewer] [--slices 0 7]

A 16-slice synthetic scan is built from the bundled slices as `segment_speed.py` builds its
benchmark scan (HU, soft tissue, air, -3024 HU outside the field of view), segmented twice with
the shipped default model (`segment_scan(twin_mode="level")` and `"style"`), and each picked
slice is written as twin_level_style_zNNN.png in --out. It also prints, per slice, the mean HU
inside the lesion labels in the scan and in each twin, and the mean aerated healthy-labelled HU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_speed import WINDOW, synthetic_scan  # noqa: E402

from stitchnet.inference.scan import segment_scan  # noqa: E402


def _gray(hu: np.ndarray) -> np.ndarray:
    """HU through the lung window to uint8, turned to display orientation (nibabel L, P order)."""
    return np.rot90(
        (np.clip((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 255).astype(np.uint8)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/viewer")
    p.add_argument("--slices", type=int, nargs="+", default=[0, 7])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nib.save(
            nib.Nifti1Image(synthetic_scan(16, 512), np.diag([-0.7, -0.7, 1.0, 1.0])),
            str(tmp / "scan.nii"),
        )
        twins = {}
        for mode in ("level", "style"):
            segment_scan(tmp / "scan.nii", tmp / mode, twin_mode=mode, report=False, progress=False)
            twins[mode] = np.asarray(nib.load(str(tmp / mode / "healthy_twin.nii.gz")).dataobj)
        scan = np.asarray(nib.load(str(tmp / "scan.nii")).dataobj).astype(np.float32)
        labels = np.asarray(nib.load(str(tmp / "level" / "labels.nii.gz")).dataobj)
    for z in args.slices:
        lesion = labels[..., z] >= 2
        healthy = (labels[..., z] == 1) & (scan[..., z] < -500)
        means = {k: float(v[..., z][lesion].mean()) for k, v in [("scan", scan), *twins.items()]}
        print(
            f"z{z:03d}: {lesion.sum()} lesion voxels, mean HU scan {means['scan']:.0f}, level "
            f"twin {means['level']:.0f}, style twin {means['style']:.0f}; aerated healthy "
            f"{scan[..., z][healthy].mean():.0f}"
        )
        row = np.concatenate([_gray(a[..., z]) for a in (scan, twins["level"], twins["style"])], 1)
        Image.fromarray(row).save(Path(args.out) / f"twin_level_style_z{z:03d}.png")


if __name__ == "__main__":
    main()

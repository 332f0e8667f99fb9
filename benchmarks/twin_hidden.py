"""The two healthy twins against a truth: healthy lung hidden under a lesion's shape.

python benchmarks/twin_hidden.py [--model RUN_DIR]

On the 50 bundled labelled slices (data/medseg_covid19_train50; windowed gray back to HU through
the model's lung window, pixels taken as 1 mm), with the shipped default model unless --model:

  hidden healthy lung  slice i gets the lesion shape of slice (i + 7) mod 50, kept where slice i
                       is healthy lung at least 3 px from its edge, and labelled GGO. The truth
                       under it is the scan itself. Both twins (twin.healthy_twin_slice, the
                       level twin; and the style twin: twin.style_inputs -> healthy_style ->
                       style_to_hu -> style_twin_slice, what `segment --twin style` runs) replace
                       it; the error is the mean |smoothed twin - smoothed truth| over the region
                       (Gaussian sigma 4 px, normalised over the region, so the vessel detail
                       that no twin can know does not count), per slice, then the mean and
                       median over slices with > 200 px of region; the bias is the mean of
                       twin - truth over the region, averaged over slices.
  real lesions         slices with > 200 px of GGO + consolidation: the mean HU of GGO and of
                       consolidation in the scan and in each twin, and the mean HU of the
                       slice's healthy reference (twin.reference_mask), averaged over slices.

Crop boxes are the ground truth's lung box (the run config's margin), as training cropped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from stitchnet.data.images import hu_window, read_image_file, read_label_file
from stitchnet.data.preprocess import resize_image
from stitchnet.inference.defaults import load_segmentation_model
from stitchnet.inference.fast import inference_copy
from stitchnet.inference.twin import (
    healthy_style,
    healthy_twin_slice,
    reference_mask,
    style_inputs,
    style_to_hu,
    style_twin_slice,
)
from stitchnet.lungfield.net import lung_box

LABELLED = Path(__file__).resolve().parents[1] / "data" / "medseg_covid19_train50"
SHIFT = 7  # slice i borrows the lesion shape of slice i + SHIFT
ERODE_PX = 3  # the hidden region stays this far inside the healthy lung
MIN_PX = 200  # slices with fewer region pixels are left out
SMOOTH_PX = 4.0  # the error compares smoothed levels, not the vessels


def style_twin(model, cfg, hu: np.ndarray, labels: np.ndarray, box) -> np.ndarray:
    """The style twin of one slice, through the package's functions."""
    window = cfg.data.lung_window
    x = resize_image(hu_window(hu, window)[box[0] : box[1], box[2] : box[3]], cfg.data.image_size)
    hide, fill = style_inputs(hu, labels, box, cfg.data.image_size, window)
    style = healthy_style(model, x[None], hide[None], np.array([fill]))[0]  # (S, S)
    return style_twin_slice(hu, labels, style_to_hu(style, box, hu.shape, window))


def region_mean(a: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Gaussian mean of `a` over `region` (normalised convolution), (H, W)."""
    num = ndimage.gaussian_filter(np.where(region, a, 0.0), SMOOTH_PX)
    return num / np.maximum(ndimage.gaussian_filter(region.astype(np.float64), SMOOTH_PX), 1e-6)


def class_means(img: np.ndarray, labels: np.ndarray) -> list[float]:
    """Mean of `img` over GGO (2) and consolidation (3); NaN where the slice has none."""
    return [float(img[labels == c].mean()) if (labels == c).any() else np.nan for c in (2, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run folder or checkpoint (default: shipped)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net, cfg, info = load_segmentation_model(args.model)
    model = inference_copy(net)
    lo, hi = cfg.data.lung_window
    print(f"model {info['model_name']} ({info['path']}), {cfg.data.image_size} px, window {lo, hi}")
    files = sorted((LABELLED / "images").iterdir())
    slices = []
    for f in files:
        gray = read_image_file(f)
        hu = (lo + (hi - lo) * gray).astype(np.float32)
        slices.append((hu, read_label_file(LABELLED / "masks" / f.name).astype(np.uint8)))
    start = time.perf_counter()
    hidden = {"level": [], "style": []}  # per slice (error, bias)
    real = {"scan": [], "level": [], "style": []}  # per slice (GGO, consolidation) mean HU
    reference = []
    for i, (hu, m) in enumerate(slices):
        h, w = m.shape
        if cfg.data.crop_to_lung:
            box = lung_box((m >= 1).astype(np.uint8), cfg.data.crop_margin)
        else:
            box = (0, h, 0, w)
        other = torch.from_numpy((slices[(i + SHIFT) % len(slices)][1] >= 2).astype(np.float32))
        shape = F.interpolate(other[None, None], size=(h, w), mode="nearest")[0, 0].numpy() > 0
        region = shape & ndimage.binary_erosion(m == 1, iterations=ERODE_PX)
        if region.sum() > MIN_PX:
            lab = m.copy()
            lab[region] = 2
            truth = region_mean(hu, region)[region]
            for name, tw in (
                ("level", healthy_twin_slice(hu, lab)),
                ("style", style_twin(model, cfg, hu, lab, box)),
            ):
                err = np.abs(region_mean(tw, region)[region] - truth).mean()
                hidden[name].append((err, float((tw - hu)[region].mean())))
        if (m >= 2).sum() > MIN_PX:
            real["scan"].append(class_means(hu, m))
            real["level"].append(class_means(healthy_twin_slice(hu, m), m))
            real["style"].append(class_means(style_twin(model, cfg, hu, m, box), m))
            reference.append(float(hu[reference_mask(hu, m)].mean()))
    print(f"{len(slices)} slices in {time.perf_counter() - start:.1f} s")
    print("hidden healthy lung (HU): error of the smoothed twin vs the truth")
    for name, rows in hidden.items():
        a = np.array(rows)
        print(
            f"  {name:6s} n={len(a)} mean {a[:, 0].mean():.1f}  median "
            f"{np.median(a[:, 0]):.1f}  bias {a[:, 1].mean():+.1f}"
        )
    print(
        f"real lesions (HU), n={len(reference)} slices; healthy reference {np.mean(reference):.1f}"
    )
    for name, rows in real.items():
        ggo, cons = np.nanmean(np.array(rows), axis=0)
        print(f"  {name:6s} GGO {ggo:.1f}  consolidation {cons:.1f}")


if __name__ == "__main__":
    main()

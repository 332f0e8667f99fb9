"""`stitchnet segment` speed: a synthetic 300-slice 512x512 scan end to end, and model slices/s.

python benchmarks/segment_speed.py [--slices 300] [--size 512] [--threads 2] [--skip-end-to-end]
                                  [--preset cpu]

The scan is built in memory from the bundled labelled slices: each slice's windowed gray back to
HU through the data's lung window, inside soft tissue, with air around the body and -3024 HU
padding outside the circular field of view; written once as an uncompressed NIfTI in a temp
folder. Then:
  1. `segment_scan` on it with the shipped default model (read, lung fields, model, 3-D clean-up,
     NIfTI/JSON/CSV/overlay writing), wall time; the target is under 60 s on 2 cores.
  2. model forward only, each model built from `--preset` (default cpu: the shipped default
     model's preset, 128 px), batch 32, inference mode, the fastest of 3 interleaved rounds:
     slices/s for the U-Net, the faithful StitchNet and stitchnet-skip (the recommended model,
     which the default ships), as built, with batch norm folded (inference/fast.py), and folded
     with channels-last weights (what `segment` runs); then each StitchNet model's time per
     slice over the U-Net's, mode by mode and each at its fastest (target <= 1.5x), all
     measured in this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from stitchnet.inference.fast import inference_copy
from stitchnet.models import MODEL_NAMES, build_model, model_config

LABELLED = Path(__file__).resolve().parents[1] / "data" / "medseg_covid19_train50"
WINDOW = (-1250.0, 250.0)


def synthetic_scan(n: int, size: int) -> np.ndarray:
    """(size, size, n) int16 HU in nibabel (L, P, S)-like order, cycling the bundled slices."""
    paths = sorted((LABELLED / "images").glob("*.png"))
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    base = np.where(r <= 0.47 * size, 40.0, -1000.0)  # soft tissue inside air
    base[r > size / 2 - 1] = -3024.0  # padding outside the field of view
    inner = int(size * 0.66)
    slices = []
    for p in paths:
        gray = np.asarray(Image.open(p).convert("L").resize((inner, inner)), np.float32) / 255
        hu = base.copy()
        o = (size - inner) // 2
        hu[o : o + inner, o : o + inner] = WINDOW[0] + (WINDOW[1] - WINDOW[0]) * gray
        slices.append(hu)
    vol = np.stack([slices[k % len(slices)] for k in range(n)], axis=-1)  # (Y, X, Z)
    return np.round(vol).astype(np.int16)


MODES = ("as built", "BN folded", "folded + channels-last")  # the last is what segment runs


def time_models(
    preset: str, size: int, batch: int, repeats: int, rounds: int = 3
) -> dict[str, float]:
    """Seconds per slice of each model's forward at `size` px, built from its `preset`, in each of
    MODES: the fastest of `rounds` rounds, the models taking turns within each round, so that a
    burst of load from another process on a shared machine falls on one round rather than on
    one model."""
    names = [n for n in ("unet", "stitchnet", "stitchnet-skip") if n in MODEL_NAMES]
    nets = {}
    for name in names:
        model = build_model(name, model_config(name, preset)).eval()
        nets[f"{name} ({MODES[0]})"] = model
        nets[f"{name} ({MODES[1]})"] = inference_copy(model)
        nets[f"{name} ({MODES[2]})"] = inference_copy(model, channels_last=True)
    x = torch.rand(batch, 1, size, size)
    out = dict.fromkeys(nets, float("inf"))
    with torch.inference_mode():
        for net in nets.values():
            net(x)  # warm-up
        for _ in range(rounds):
            for key, net in nets.items():
                t0 = time.perf_counter()
                for _ in range(repeats):
                    net(x)
                out[key] = min(out[key], (time.perf_counter() - t0) / (repeats * batch))
    return out


def print_ratios(times: dict[str, float]) -> None:
    """Each StitchNet model's time per slice over the U-Net's: mode by mode, and each at its
    fastest mode against the U-Net at its fastest (target <= 1.5x)."""
    fastest = {}
    for key, s in times.items():
        name = key.split(" (")[0]
        fastest[name] = min(fastest.get(name, float("inf")), s)
    for name in ("stitchnet", "stitchnet-skip"):
        if name not in fastest:
            continue
        per_mode = ", ".join(
            f"{mode} {times[f'{name} ({mode})'] / times[f'unet ({mode})']:.2f}x" for mode in MODES
        )
        print(f"  {name} / unet per slice: {per_mode}")
        print(
            f"  {name} / unet, each at its fastest: {fastest[name] / fastest['unet']:.2f}x "
            f"(target <= 1.5x)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument(
        "--preset",
        default="cpu",
        help="model and data preset of the forward timings (default cpu: the shipped default "
        "model's, 128 px; cpu-small for 64 px)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from stitchnet.config import DATA_PRESETS

    image_size = DATA_PRESETS[args.preset].image_size
    if not args.skip_end_to_end:
        from stitchnet.inference.scan import segment_scan

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "scan.nii"
            affine = np.diag([-0.7, -0.7, 1.0, 1.0])  # RAS: voxels along L, P, S
            nib.save(nib.Nifti1Image(synthetic_scan(args.slices, args.size), affine), str(path))
            t0 = time.perf_counter()
            burden = segment_scan(path, Path(tmp) / "out", batch_size=args.batch)
            wall = time.perf_counter() - t0
        lung = burden["regions"]["total"]["lung_ml"]
        print(
            f"segment_scan, default model, {args.slices} x {args.size}^2, {args.threads} "
            f"threads: {wall:.1f} s ({args.slices / wall:.1f} slices/s; lung {lung:.0f} mL)"
        )
    times = time_models(args.preset, image_size, args.batch, args.repeats)
    print(
        f"model forward, preset {args.preset}, {image_size} px, batch {args.batch}, "
        f"{args.threads} threads:"
    )
    for name, s in times.items():
        print(f"  {name:38s} {1 / s:8.1f} slices/s  {1000 * s:6.2f} ms/slice")
    print_ratios(times)


if __name__ == "__main__":
    main()

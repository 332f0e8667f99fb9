"""How long does the slice cache take to build, how large is it, and how fast is its reuse?

N synthetic scans of S slices (default 100 scans of 300 slices, 512 px) are written as NIfTI in
HU: a chest of one real bundled slice (data/medseg_covid19_train50, its gray back to HU through
the window recorded for it, in a disk of soft tissue) over the middle 60 % of the slices, so its
lungs join in 3-D as a real scan's do, with 20 % abdomen below and 20 % neck above (soft tissue
and fat, no air). Writing them is not timed. Then `prepare_volumes` builds the cache of the
folder as unlabelled scans (read, lung field, crop, resize at the debug preset's 64 px or
--image-size), and a second call reuses it. Printed: build seconds in all and per scan, slices
kept per scan, the cache's size on disk in all and per scan, and the reuse time.

    python benchmarks/slice_cache.py                        # 100 x 300 slices at 512 px
    python benchmarks/slice_cache.py --scans 4 --size 256   # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from stitchnet.config import DataConfig
from stitchnet.data.hu_scale import gray_to_hu, recorded_windows
from stitchnet.data.volume_dataset import prepare_volumes

LABELLED = Path(__file__).resolve().parents[1] / "data" / "medseg_covid19_train50"
PAD, AIR, FAT, TISSUE = -2048.0, -1000.0, -100.0, 40.0  # HU
FOV_MM, SLICE_MM = 350.0, 1.0  # a chest field of view; 1 mm slices (300 slices: 30 cm)


def chest_slice(name: str, size: int) -> np.ndarray:
    """(size, size) HU: a bundled slice in HU, centred in a disk of soft tissue (a chest wall)
    inside a circular field of view. The bundled slices are cropped to the lungs, which touch
    their edges; in air those lungs would open onto the air around the patient and the body
    mask (lungfield.body) would leave most of them out."""
    im = Image.open(LABELLED / "images" / f"{name}.png")
    inner = int(size * 0.6)
    scale = inner / max(im.size)
    wh = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    gray = np.asarray(im.resize(wh, Image.BILINEAR), dtype=np.float32) / 255.0
    hu = disk(size, 0.45, TISSUE)
    y0, x0 = (size - wh[1]) // 2, (size - wh[0]) // 2
    window = recorded_windows(LABELLED)[f"{name}.png"]  # the HU window the PNG was saved with
    hu[y0 : y0 + wh[1], x0 : x0 + wh[0]] = gray_to_hu(gray, window)
    return _fov(hu)


def soft_slice(size: int) -> np.ndarray:
    """(size, size) HU: a body of soft tissue with a fat rim and no air (abdomen or neck)."""
    hu = disk(size, 0.33, FAT)
    hu[disk(size, 0.28, TISSUE) == TISSUE] = TISSUE
    return _fov(hu)


def disk(size: int, radius: float, value: float) -> np.ndarray:
    """(size, size) HU: `value` inside a centred disk of radius `radius` x size, air outside."""
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2
    return np.where(r2 <= (radius * size) ** 2, value, AIR).astype(np.float32)


def _fov(hu: np.ndarray) -> np.ndarray:
    size = hu.shape[0]
    yy, xx = np.mgrid[:size, :size]
    outside = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 > (size / 2 - 1) ** 2
    hu[outside] = PAD
    return hu


def write_scans(folder: Path, n: int, slices: int, size: int) -> list[Path]:
    names = sorted(p.stem for p in (LABELLED / "images").glob("*.png"))
    below, above = int(0.2 * slices), int(0.2 * slices)
    paths = []
    for k in range(n):
        chest = chest_slice(names[k % len(names)], size)
        stack = [soft_slice(size)] * below + [chest] * (slices - below - above)
        stack += [soft_slice(size)] * above
        voxels = np.stack(stack, axis=-1).astype(np.int16)  # (X, Y, Z), axial slices along k
        pixel = FOV_MM / size
        affine = np.diag([pixel, pixel, SLICE_MM, 1.0])  # RAS voxels
        path = folder / f"scan{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(voxels, affine), str(path))
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scans", type=int, default=100)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512, help="in-plane pixels of each scan")
    ap.add_argument("--image-size", type=int, default=64, help="the model's input size")
    ap.add_argument("--work", default=None, help="folder for scans and cache (default: temp)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        scans, cache = work / "scans", work / "cache"
        scans.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        write_scans(scans, args.scans, args.slices, args.size)
        print(
            f"wrote {args.scans} scans of {args.slices} x {args.size}^2 in "
            f"{time.perf_counter() - t:.1f} s (not timed below)"
        )
        cfg = DataConfig(image_size=args.image_size)
        t = time.perf_counter()
        data = prepare_volumes(scans, cfg, cache, progress=False, labelled=False)
        build = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in (cache / "scans").iterdir()) / 2**20
        t = time.perf_counter()
        prepare_volumes(scans, cfg, cache, progress=False, labelled=False)
        reuse = time.perf_counter() - t
        kept = [s["slices"] for s in data.meta["scans"]]
        print(f"build: {build:.1f} s, {build / args.scans:.1f} s per scan")
        print(f"slices kept per scan: {min(kept)}..{max(kept)} of {args.slices}")
        print(f"cache: {size_mb:.1f} MiB, {size_mb / args.scans:.2f} MiB per scan")
        print(f"reuse: {reuse:.2f} s for {args.scans} scans ({len(data)} slices)")


if __name__ == "__main__":
    main()

"""How well does `estimate_window` recover a slice's window? Real HU scans, random windows.

Each axial slice of the four real CT scans in data/realct_nonlesion_dev (HU) is windowed with
random windows (lo in [-1400, -1000], hi in [0, 400], seeded), quantised to 8 bits, either whole
or cropped to the lungs as the bundled Inf-Net slices are, and every other trial goes through a
JPEG round trip at quality 90. The estimated window maps the true gray of -850 HU (healthy lung)
and of -100 HU (fat) back to HU; the table prints every trial's error there, then the medians.

    python benchmarks/hu_scale_check.py            # every trial, then the summary
    python benchmarks/hu_scale_check.py --trials 4 --summary-only
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from stitchnet.data.errors import DataError
from stitchnet.data.hu_scale import estimate_window
from stitchnet.data.volumes import VolumeError, read_volume

DEV = Path(__file__).resolve().parents[1] / "data" / "realct_nonlesion_dev"
CHECK_HU = (-850.0, -100.0)  # healthy lung, fat
LOW_RES = "cip_testinput64"  # 64x64 at 5.3 mm a pixel; the bundled slices have 0.6-0.8 mm
SCANS = ("cip_copdgene_crop2", "cip_copdgene_abdomen2", "cip_testinput64", "lidc_lungmask_slice")


def real_slices() -> list[tuple[str, np.ndarray]]:
    """(name, HU slice) for every distinct axial slice of the dev scans, in display order."""
    out = []
    for name in (
        "cip_copdgene_crop2/crop_ct_2slices.nii.gz",
        "cip_copdgene_abdomen2",
        "cip_testinput64/TestInput.nii.gz",
    ):
        vol = read_volume(DEV / name)
        scan = name.split("/")[0]
        for k in range(vol.hu.shape[0]):
            hu = np.where(vol.body[k], vol.hu[k], -2048.0)  # padding as scanners store it
            if scan == "cip_testinput64" and (k % 4 or (hu < -500).mean() < 0.4):
                continue  # every 4th slice with lung in view: 9 of the 50, so it does not swamp
            out.append((f"{scan}[{k}]", hu))
    out.append(("lidc_lungmask_slice[0]", _lidc()))  # its two files hold the same pixels
    return out


def _lidc() -> np.ndarray:
    """The LIDC slice lacks a Modality tag, which read_volume refuses; pydicom reads it."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        return read_volume(DEV / "lidc_lungmask_slice").hu[0]
    except VolumeError:
        ds = pydicom.dcmread(DEV / "lidc_lungmask_slice" / "0.dcm")
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32).T


def lung_crop(hu: np.ndarray, rng: random.Random) -> np.ndarray:
    """The slice cut to its lungs' bounding box give or take a few pixels (Inf-Net's crops are
    a little tighter than the lungs); the body's box where no lung is in view."""
    air = (hu < -500) & (hu > -1500)
    labels, _ = ndi.label(air)
    edge = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    lungs = np.isin(labels, [k for k in range(1, labels.max() + 1) if k not in edge])
    if lungs.sum() < 0.02 * hu.size:
        lungs = hu > -500  # no lung: the body
    ys, xs = np.nonzero(lungs)
    m = [rng.randint(-4, 4) for _ in range(4)]
    y0, y1 = max(ys.min() - m[0], 0), min(ys.max() + 1 + m[1], hu.shape[0])
    x0, x1 = max(xs.min() - m[2], 0), min(xs.max() + 1 + m[3], hu.shape[1])
    return hu[y0:y1, x0:x1]


def windowed(hu: np.ndarray, window: tuple[float, float], jpeg: bool) -> np.ndarray:
    lo, hi = window
    gray = np.round(np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    if not jpeg:
        return gray
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def run(trials: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for name, hu in real_slices():
        for t in range(trials):
            window = (rng.uniform(-1400, -1000), rng.uniform(0, 400))
            for crop in (False, True):
                jpeg = t % 2 == 1
                part = lung_crop(hu, rng) if crop else hu
                gray = windowed(part, window, jpeg)
                row = {"slice": name, "crop": crop, "jpeg": jpeg, "true": window}
                try:
                    est = estimate_window(gray, name)
                except DataError as e:
                    row["refused"] = str(e).split(": ", 1)[1][:60]
                    rows.append(row)
                    continue
                lo, hi = window
                elo, ehi = est.window
                row["est"] = est.window
                row["err"] = [elo + (ehi - elo) * (x - lo) / (hi - lo) - x for x in CHECK_HU]
                row["how"] = f"{est.names} {est.quality} {','.join(est.flags)}".strip()
                row["resid"] = est.residual_hu
                rows.append(row)
    return rows


def summary(rows: list[dict]) -> str:
    lines = [
        "| set | trials | refused | med abs err -850 | p90 | max | med abs err -100 | p90 | max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, keep in (
        ("all", lambda r: True),
        ("full resolution (not the 64x64)", lambda r: not r["slice"].startswith(LOW_RES)),
        ("whole slice", lambda r: not r["crop"]),
        ("lung crop", lambda r: r["crop"]),
        ("8-bit PNG", lambda r: not r["jpeg"]),
        ("JPEG q90", lambda r: r["jpeg"]),
        *((scan, lambda r, scan=scan: r["slice"].startswith(scan)) for scan in SCANS),
    ):
        sel = [r for r in rows if keep(r)]
        done = [r for r in sel if "err" in r]
        cells = [label, str(len(sel)), str(len(sel) - len(done))]
        for i in range(len(CHECK_HU)):
            e = np.abs([r["err"][i] for r in done]) if done else np.array([np.nan])
            cells += [f"{np.median(e):.0f}", f"{np.percentile(e, 90):.0f}", f"{e.max():.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=12, help="random windows per slice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    rows = run(args.trials, args.seed)
    if not args.summary_only:
        print(
            "slice                         crop jpeg  true (lo, hi)   est (lo, hi)    "
            "err@-850 err@-100 resid  landmarks"
        )
        for r in rows:
            head = (
                f"{r['slice']:<29} {'y' if r['crop'] else 'n':>4} {'y' if r['jpeg'] else 'n':>4}"
                f"  ({r['true'][0]:6.0f},{r['true'][1]:4.0f})"
            )
            if "refused" in r:
                print(f"{head}  refused: {r['refused']}")
                continue
            print(
                f"{head}  ({r['est'][0]:6.0f},{r['est'][1]:5.0f})  {r['err'][0]:7.0f} "
                f"{r['err'][1]:8.0f} {r['resid']:5.0f}  {r['how']}"
            )
    print(summary(rows))


if __name__ == "__main__":
    main()

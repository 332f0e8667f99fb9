"""A labelled slice folder: the bundled labelled slices plus lesion-free slices of real CT.

The lesion-free slices come from the scans of `data/realct_nonlesion_dev` except the one held
out: each lung-containing slice of a scan (every `--every`-th), with the lung field that
`stitchnet segment` finds labelled healthy lung and everything else background. The split keeps
the labelled slices where the project's split puts them (so the test part is the same 10 slices)
and puts every lesion-free slice in the training part.

    python experiments/realct_negatives/build.py --hold-out lidc_lungmask_slice \
        --out runs/realct_negatives/data_lidc
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from stitchnet.data.splits import make_splits
from stitchnet.data.volume_slices import volume_records
from stitchnet.inference.scan import segment_scan

LABELLED = Path("data/medseg_covid19_train50")
SCANS = {
    "lidc_lungmask_slice": Path("data/realct_nonlesion_dev/lidc_lungmask_slice"),
    "cip_copdgene_crop2": Path(
        "data/realct_nonlesion_dev/cip_copdgene_crop2/crop_ct_2slices.nii.gz"
    ),
    "cip_testinput64": Path("data/realct_nonlesion_dev/cip_testinput64/TestInput.nii.gz"),
}
WINDOW = (-1250.0, 250.0)  # the model's lung window: the PNGs are saved in it and say so


def negatives(
    name: str, scan: Path, every: int, work: Path
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, gray in WINDOW, 0/1 lung) for every `every`-th slice holding lung."""
    seg = work / name
    segment_scan(scan, seg, twin=False, overlays=False, report=False, progress=False)
    lung_img = nib.load(seg / "lung.nii.gz")
    healthy = nib.Nifti1Image(
        (np.asanyarray(lung_img.dataobj) > 0).astype(np.uint8), lung_img.affine
    )
    nib.save(healthy, work / f"{name}_healthy.nii.gz")
    records = volume_records(scan, window=WINDOW, label_path=work / f"{name}_healthy.nii.gz")
    with_lung = [r for r in records if r.mask is not None and r.mask.sum() > 0]
    # Identical slices (the LIDC pair) are one slice.
    unique, seen = [], set()
    for r in with_lung:
        key = r.image.tobytes()
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return [(f"neg_{name}_{i:03d}", r.image, r.mask) for i, r in enumerate(unique[::every])]


def build(hold_out: str, out: Path, every: int) -> None:
    if out.exists():
        shutil.rmtree(out)
    for sub in ("images", "masks", "lung"):
        shutil.copytree(LABELLED / sub, out / sub)
    with (LABELLED / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0])
    # The project's split of the labelled slices (seed 0, as `train` makes it).
    ids = sorted(f.stem for f in (LABELLED / "images").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "split by slice": said in the study's README
        splits = make_splits(ids, [None] * len(ids), seed=0, val_fraction=0.2, test_fraction=0.2)
    added: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scan in SCANS.items():
            if name == hold_out:
                continue
            found = negatives(name, scan, every, Path(tmp))
            added[name] = len(found)
            for sid, gray, lung in found:
                Image.fromarray(np.round(gray * 255).astype(np.uint8)).save(
                    out / "images" / f"{sid}.png"
                )
                Image.fromarray(lung.astype(np.uint8)).save(out / "masks" / f"{sid}.png")
                Image.fromarray(lung.astype(np.uint8)).save(out / "lung" / f"{sid}.png")
                row = {c: "" for c in columns}
                row.update(
                    file=f"{sid}.png",
                    hu_lo=str(WINDOW[0]),
                    hu_hi=str(WINDOW[1]),
                    hu_fit="known",
                    hu_landmarks="",
                    hu_residual="0",
                )
                rows.append(row)
                splits["train"].append(sid)
    with (out / "index.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    (out / "splits.json").write_text(json.dumps(splits, indent=1))
    print(f"{out}: {len(rows)} slices; lesion-free slices added: {added} (held out: {hold_out})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hold-out", required=True, choices=sorted(SCANS) + ["none"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--every", type=int, default=3)
    a = p.parse_args()
    build(a.hold_out, a.out, a.every)

"""The README's picture: `stitchnet segment` (shipped model) on a scan made from a test slice.

No scan with lesions in HU is bundled, so the scan is built from the test slice of the bundled
labelled set with the most lesion pixels (z025; never trained on by the shipped model): brought
to HU through the window recorded for it, set in a chest wall inside a circular field of view,
repeated over 5 slices of 1 mm. Left the model's overlay, right the radiologist's mask of the
slice in the same colours (healthy lung left uncoloured in both).

    python experiments/readme_picture/make.py [--out docs/images/segment_test_slice.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from slice_cache import FOV_MM, LABELLED, chest_slice  # noqa: E402  (the benchmark's chest wall)

from stitchnet.data.images import hu_window  # noqa: E402
from stitchnet.figures import overlay  # noqa: E402
from stitchnet.inference.orient import mark_orientation, radiological  # noqa: E402
from stitchnet.inference.scan import segment_scan  # noqa: E402

SLICE, SIZE, SLICES = "z025", 512, 5


WINDOW = (-1250.0, 250.0)  # the overlays' window (the model's lung window)


def reference_mask() -> np.ndarray:
    """The radiologist's mask of SLICE placed where chest_slice places the slice."""
    mask = Image.open(LABELLED / "masks" / f"{SLICE}.png")
    scale = int(SIZE * 0.6) / max(mask.size)
    wh = (max(1, round(mask.width * scale)), max(1, round(mask.height * scale)))
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    y0, x0 = (SIZE - wh[1]) // 2, (SIZE - wh[0]) // 2
    canvas[y0 : y0 + wh[1], x0 : x0 + wh[0]] = np.asarray(mask.resize(wh, Image.NEAREST))
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs/images/segment_test_slice.png")
    a = p.parse_args()
    hu = chest_slice(SLICE, SIZE)
    step = FOV_MM / SIZE
    # The bundled slices are stored in the display axes (stitchnet.data.volumes.DISPLAY_AXCODES:
    # rows run from the patient's right to left, columns from anterior to posterior), so the
    # voxels (z, row, column) map to RAS as z -> superior, row -> left, column -> posterior.
    vol = np.stack([hu] * SLICES)  # (Z, Y, X)
    affine = np.array(
        [[0, -step, 0, 0], [0, 0, -step, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "scan.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.int16), affine), scan)
        burden = segment_scan(scan, Path(tmp) / "seg", twin=False, progress=False)
        model = Image.open(Path(tmp) / "seg" / "overlays" / f"slice_{SLICES // 2:04d}.png")
        model = np.asarray(model.convert("RGB"))
    reference = mark_orientation(radiological(overlay(hu_window(hu, WINDOW), reference_mask())))
    gap = np.full((model.shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([model, gap, reference], axis=1)).save(a.out)
    total = burden["regions"]["total"]
    print(
        f"wrote {a.out}: lung {total['lung_ml']:.0f} mL, GGO {total['ggo_pct']:.1f} %, "
        f"consolidation {total['consolidation_pct']:.1f} % of lung"
    )


if __name__ == "__main__":
    main()

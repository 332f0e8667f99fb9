"""Run 3 of the comparison on one GPU: the one-pass variants at preset cpu, side by side.

    python experiments/ssl_comparison/onepass.py RUNS_DIR JOBS [EPOCHS]

RUNS_DIR is a `reproduce --preset cpu` folder (its splits.json at least). Trains, `JOBS` at a
time: StitchNet-skip + one-pass FixMatch + ELBO, with and without lesion paste, 3 seeds each on
the full training part and 2 seeds each on 5 and 15 labelled slices; then runs `reproduce` on the
folder (finished runs are skipped; the recommended model is chosen again on validation; the
calibration and the report are written). EPOCHS shortens every run (a smoke test). Called by
onepass.sh, which also packs the results.
"""

import sys
import time
from pathlib import Path

from stitchnet import pipeline
from stitchnet.study import protocol as P
from stitchnet.study import run as R

KEYS = ("skip_onepass", "skip_onepass_paste")
L, U = "data/medseg_covid19_train50", "data/covid19_ct_seg_20cases_unlabelled"


def main(out: Path, jobs: int, epochs: int | None) -> None:
    t0 = time.time()
    cfg = pipeline.run_config("unet", "cpu")
    pipeline.prepare_folder(L, cfg.data, None, False, True)
    pipeline.prepare_folder(U, cfg.data, None, False)
    print(f"prepared in {time.time() - t0:.0f} s", flush=True)
    by = {v.key: v for v in P.SSL_VARIANTS}
    common = (L, U, out / "splits.json", None, False)
    todo = [
        (by[k], R.run_path(out, k, s), "cpu", s, *common, None, epochs)
        for s in range(3)
        for k in KEYS
    ]
    todo += [
        (by[k], R.run_path(out, k, s, n), "cpu", s, *common, n, epochs)
        for n in (5, 15)
        for s in range(2)
        for k in KEYS
    ]
    R._run_all(todo, jobs)
    print(f"runs done in {time.time() - t0:.0f} s", flush=True)
    R.reproduce("cpu", out, L, U, jobs=jobs, progress=False, epochs=epochs)
    print(f"reproduce done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)

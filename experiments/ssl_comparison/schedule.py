"""Run 5 of the comparison on one GPU, the cpu-preset trainings: what might close the 5-slice gap.

    python experiments/ssl_comparison/schedule.py RUNS_DIR JOBS [EPOCHS_SCALE]

RUNS_DIR holds the `reproduce --preset cpu` split (splits.json) of runs 1-4, so every
run here pairs by seed with the runs of that folder (the same labelled subsets). Trains, `JOBS`
side by side, the recommended model (StitchNet-skip + one-pass FixMatch + lesion paste 0.5 +
ELBO) changed one way at a time, and the supervised U-Net under the longer schedule:
  - `long`: 120 epochs instead of the preset's 60 (480 steps), 5 and 30 labelled slices;
  - `unet_long`: the U-Net with the same 120 epochs (is a longer schedule fair to both?);
  - `paste1`: lesion paste with probability 1 instead of 0.5, 5 slices;
  - `ema`: pseudo-labels from an EMA teacher (decay 0.99, Mean Teacher's) instead of the
    student, 5 slices;
  - last, if the time limit allows: `long` and `unet_long` on 15 slices.
Seeds 0-3 at 5 and 15 slices, 0-2 at 30 (the protocol's counts). EPOCHS_SCALE divides every
run's epochs (a smoke test on a CPU). Called by schedule.sh.
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

from stitchnet import pipeline
from stitchnet.study import protocol as P
from stitchnet.study import run as R

L, U = "data/medseg_covid19_train50", "data/covid19_ct_seg_20cases_unlabelled"


def variants() -> dict[str, tuple[R.Variant, int]]:
    """key -> (variant, epochs)."""
    by = {v.key: v for v in P.SSL_VARIANTS}
    rec, unet = by["skip_onepass_paste"], by["unet"]

    def rec_with(key: str, label: str, **changes) -> R.Variant:
        over = {**dict(rec.objective_overrides), **changes}
        return P._ssl(key, f"{rec.label}, {label}", rec.model, rec.objective, **over)

    return {
        "long": (replace(rec, key="long", label=f"{rec.label}, 120 epochs"), 120),
        "unet_long": (replace(unet, key="unet_long", label=f"{unet.label}, 120 epochs"), 120),
        "paste1": (rec_with("paste1", "paste p=1", lesion_paste=1.0), 60),
        "ema": (rec_with("ema", "EMA teacher 0.99", teacher_ema=0.99), 60),
    }


def main(out: Path, jobs: int, scale: int) -> None:
    t0 = time.time()
    cfg = pipeline.run_config("unet", "cpu")
    pipeline.prepare_folder(L, cfg.data, None, False, True)
    pipeline.prepare_folder(U, cfg.data, None, False)
    print(f"prepared in {time.time() - t0:.0f} s", flush=True)
    vs = variants()
    common = (L, U, out / "splits.json", None, False)

    def job(key: str, n: int | None, seed: int) -> tuple:
        v, epochs = vs[key]
        return (v, R.run_path(out, key, seed, n), "cpu", seed, *common, n, max(1, epochs // scale))

    # Longest first, the optional 15-slice runs last.
    todo = [job("long", 5, s) for s in range(4)] + [job("long", None, s) for s in range(3)]
    todo += [job(k, 5, s) for k in ("paste1", "ema") for s in range(4)]
    todo += [job("unet_long", 5, s) for s in range(4)]
    todo += [job("unet_long", None, s) for s in range(3)]
    todo += [job(k, 15, s) for k in ("long", "unet_long") for s in range(4)]
    R._run_all(todo, jobs)
    print(f"runs done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1)

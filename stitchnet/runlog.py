"""What the training loop logs: log.csv, running means of the loss terms, validation columns,
and TensorBoard when it is installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from stitchnet.evaluate import EvalResult
from stitchnet.outdir import atomic_write

VAL_GROUPS = ("ggo", "consolidation", "background", "overall")
VAL_COLUMNS = ("val_lesion_dice", *(f"val_{g}_{m}" for g in VAL_GROUPS for m in ("f1", "iou")))
LOG_FIXED = ("epoch", "step", "skipped_steps", "seconds")


class CsvLog:
    """log.csv: columns fixed by the first line written (fixed fields, the loss terms, the
    validation metrics); a resume drops lines of unfinished epochs so the log reads like that of
    an uninterrupted run."""

    def __init__(self, path: Path, keep_epochs: int, enabled: bool) -> None:
        self.path, self.enabled, self.columns = path, enabled, None
        if not enabled:
            return
        if keep_epochs == 0 or not path.exists():
            path.unlink(missing_ok=True)
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.columns = reader.fieldnames
            rows = [r for r in reader if int(r["epoch"]) <= keep_epochs]

        def rewrite(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

        atomic_write(path, rewrite, binary=False)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = self.columns is None
        if new:
            terms = [k for k in row if k not in LOG_FIXED and k not in VAL_COLUMNS]
            self.columns = ["epoch", "step", *terms, *VAL_COLUMNS, "skipped_steps", "seconds"]
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(
                f, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore"
            )
            if new:
                writer.writeheader()
            writer.writerow(row)


def val_metrics(res: EvalResult) -> dict[str, float]:
    """The validation numbers logged each epoch (NaN where undefined)."""
    out = {"val_lesion_dice": res.lesion_dice}
    for group in VAL_GROUPS:
        for metric in ("f1", "iou"):
            mean = res.summary["groups"][group][metric].mean
            out[f"val_{group}_{metric}"] = math.nan if mean is None else mean
    return out


def tensorboard(out_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; log.csv always holds the same numbers
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


class Mean:
    """Running mean of the loss terms over the steps that updated the weights."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, terms: dict[str, float], skipped: bool) -> None:
        for k, v in terms.items():
            # A skipped step still names its terms (so the log has their columns) but adds 0.
            self.sums[k] = self.sums.get(k, 0.0) + (0.0 if skipped else v)
        self.n += not skipped

    def means(self) -> dict[str, float]:
        return {k: (v / self.n if self.n else math.nan) for k, v in self.sums.items()}

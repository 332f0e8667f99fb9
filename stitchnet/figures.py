"""Figures people would rather look at than read: overlays, the paper's Fig. 2 and Fig. 6, curves.

Colours follow the paper's Fig. 2: GGO green, consolidation blue; healthy lung is left uncoloured.
Slices come in the model's display orientation and are drawn as radiological pictures (anterior
up, the patient's right on the image's left) by `stitchnet.inference.orient.radiological`;
`overlay` and `label_image` work pixel by pixel and keep whatever orientation they are given.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stitchnet.inference.orient import radiological  # noqa: E402

LESION_COLOURS = {2: (0.0, 0.85, 0.0), 3: (0.1, 0.3, 1.0)}  # GGO green, consolidation blue


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W) image in [0, 1] and (H, W) class ids -> (H, W, 3) uint8 RGB with lesions tinted."""
    if image.shape != mask.shape:
        raise ValueError(f"overlay: image shape {image.shape} differs from mask shape {mask.shape}")
    rgb = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=-1)  # (H, W, 3)
    for cls, colour in LESION_COLOURS.items():
        sel = mask == cls
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(colour)
    return (rgb * 255).round().astype(np.uint8)


def label_image(mask: np.ndarray) -> np.ndarray:
    """Class ids -> RGB as in the paper's Fig. 6: healthy black, GGO green, consolidation blue,
    background grey (so the lung outline stays visible)."""
    rgb = np.zeros((*mask.shape, 3), dtype=np.float32)
    rgb[mask == 0] = 0.35
    for cls, colour in LESION_COLOURS.items():
        rgb[mask == cls] = colour
    return (rgb * 255).astype(np.uint8)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def comparison_figure(
    images: np.ndarray,
    truths: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | Path,
    ids: Sequence[str] | None = None,
) -> Path:
    """The paper's Fig. 2: rows are slices; columns CT, ground truth, then each model.

    images (N, H, W) in [0, 1]; truths (N, H, W); predictions: model name -> (N, H, W); all in
    display orientation.
    """
    n = images.shape[0]
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n), squeeze=False)
    for r in range(n):
        panels = [("CT", images[r], None), ("Ground truth", images[r], truths[r])]
        panels += [(name, images[r], pred[r]) for name, pred in predictions.items()]
        for c, (title, img, mask) in enumerate(panels):
            ax = axes[r, c]
            picture = img if mask is None else overlay(img, mask)
            ax.imshow(radiological(picture), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(textwrap.fill(title, 20), fontsize=8)
        if ids is not None:
            axes[r, 0].set_ylabel(ids[r], fontsize=8)
    fig.suptitle("Green: GGO, blue: consolidation", fontsize=9)
    return _save(fig, Path(path))


def styles_figure(
    images: np.ndarray,
    segmentations: np.ndarray,
    styles: np.ndarray,
    reconstructions: np.ndarray,
    path: str | Path,
) -> Path:
    """The paper's Fig. 6: x, its segmentation, the four styles b, h, g, c and the stitched x.

    images (N, H, W); segmentations (N, H, W) class ids; styles (N, 4, H, W);
    reconstructions (N, H, W); all in display orientation.
    """
    titles = ["x", "y (predicted)", "b: background", "h: healthy", "g: GGO", "c: consolidation"]
    titles.append("stitched x")
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(titles), figsize=(2.0 * len(titles), 2.1 * n), squeeze=False)
    for r in range(n):
        panels = [images[r], label_image(segmentations[r]), *styles[r], reconstructions[r]]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(radiological(panel), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    return _save(fig, Path(path))


def samples_figure(
    images: np.ndarray,
    segmentations: np.ndarray | None,
    path: str | Path,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Images generated from the prior, with their segmentations beneath when given.

    `images` is (N, H, W) for one row of samples, or (R, N, H, W) for R rows (say, one per sampling
    temperature), labelled by `row_labels`; `segmentations` has the same leading shape. Both in
    display orientation, as the model draws them.
    """
    if images.ndim == 3:
        images = images[None]
        segmentations = None if segmentations is None else segmentations[None]
    groups, n = images.shape[:2]
    labels = list(row_labels) if row_labels is not None else ["sample"] * groups
    if len(labels) != groups:
        raise ValueError(f"row_labels: expected {groups} labels, got {len(labels)}")
    per = 1 if segmentations is None else 2
    fig, axes = plt.subplots(groups * per, n, figsize=(2.0 * n, 2.1 * groups * per), squeeze=False)
    for g in range(groups):
        for i in range(n):
            axes[g * per, i].imshow(radiological(images[g, i]), cmap="gray", vmin=0, vmax=1)
            if segmentations is not None:
                axes[g * per + 1, i].imshow(radiological(label_image(segmentations[g, i])))
        axes[g * per, 0].set_ylabel(labels[g], fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, Path(path))


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a training log.csv as floats (empty cells become NaN)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append(
                {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
            )
    return rows


def curves_figure(logs: Mapping[str, str | Path], path: str | Path) -> Path:
    """Training loss and validation lesion Dice per epoch, one line per model."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, log_path in logs.items():
        rows = [r for r in read_log(log_path) if not np.isnan(r.get("epoch", np.nan))]
        if not rows:
            continue
        epochs = np.array([r["epoch"] for r in rows])
        if "loss" in rows[0]:
            ax_loss.plot(epochs, [r["loss"] for r in rows], label=name)
        if "val_lesion_dice" in rows[0]:
            ax_dice.plot(epochs, [r["val_lesion_dice"] for r in rows], label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (model's own scale)")
    ax_loss.set_yscale("symlog")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation lesion Dice")
    ax_dice.legend(fontsize=8)
    return _save(fig, Path(path))


def label_efficiency_figure(
    results: Mapping[str, Mapping[int, Sequence[float]]], path: str | Path
) -> Path:
    """Lesion Dice against the number of labelled training slices; error bars over seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, by_count in results.items():
        counts = sorted(by_count)
        means = [float(np.mean(by_count[c])) for c in counts]
        stds = [float(np.std(by_count[c])) for c in counts]
        ax.errorbar(counts, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xlabel("labelled training slices")
    ax.set_ylabel("test lesion Dice (mean of GGO, CON F1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))

"""The report's figures from the runs' checkpoints: Fig. 2 on the same test slices for every model,
Fig. 6 (styles) and samples from the prior for StitchNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stitchnet import figures
from stitchnet.checkpoint import BEST_NAME, model_from_checkpoint

SAMPLE_TEMPERATURES = (1.0, 0.7, 0.4, 0.0)  # rows of the samples figure


def report_figures(runs: dict, test, fig_dir: Path) -> list[tuple[str, Path]]:
    """Fig. 2 on the same test slices for every model, Fig. 6 styles and SVAE samples."""
    made: list[tuple[str, Path]] = []
    # Per variant its lowest seed whose weights are here (run folders copied back from another
    # machine without checkpoints still get every table; only their pictures are left out).
    seed0 = {}
    for k, v in runs.items():
        with_weights = [s for s in sorted(v) if (v[s]["dir"] / BEST_NAME).is_file()]
        if with_weights:
            seed0[k] = v[with_weights[0]]
    if not seed0:
        return made
    # The 4 test slices with the most lesion, so that the figure shows lesions at all.
    lesion_px = (test.masks >= 2).flatten(1).sum(1)
    pick = torch.argsort(lesion_px, descending=True)[:4].tolist()
    x = test.images[pick]
    preds = {}
    for key, run in seed0.items():
        model, _ = model_from_checkpoint(run["dir"])
        model.eval()
        with torch.no_grad():
            preds[run["info"]["label"]] = model(x).argmax(1).numpy()
        if key in ("stitchnet_ssl", "stitchnet_sup") and hasattr(model, "outputs"):
            with torch.no_grad():
                o = model.outputs(x)
            path = figures.styles_figure(
                x[:, 0].numpy(),
                o["logits"].argmax(1).numpy(),
                o["styles"].numpy(),
                o["reconstruction"][:, 0].numpy(),
                fig_dir / f"fig6_styles_{key}.png",
            )
            made.append((f"Fig. 6: styles of {run['info']['label']}", path))
            # The same draws at falling temperatures (1: the learnt prior; 0: its means).
            images, masks = [], []
            for temperature in SAMPLE_TEMPERATURES:
                s = model.sample(6, torch.Generator().manual_seed(0), temperature=temperature)
                images.append(s["image"][:, 0].numpy())
                masks.append(s["mask"].numpy())
            path = figures.samples_figure(
                np.stack(images),
                np.stack(masks),
                fig_dir / f"samples_{key}.png",
                row_labels=[f"temperature {t:g}" for t in SAMPLE_TEMPERATURES],
            )
            made.append((f"Samples from the prior, {run['info']['label']}", path))
    path = figures.comparison_figure(
        x[:, 0].numpy(),
        test.masks[pick].numpy(),
        preds,
        fig_dir / "fig2_comparison.png",
        ids=[test.ids[i] for i in pick],
    )
    made.insert(0, ("Fig. 2: the same test slices for every model", path))
    return made

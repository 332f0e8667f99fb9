"""Training the lung-field segmenter (`stitchnet.lungfield.net`), and the command that rebuilds the
shipped weights: `python -m stitchnet.lungfield.train`.

Nothing that segments imports this module: the optimiser, the augmentation and the held-out Dice
are for the one command that rewrites `stitchnet/assets/lungfield.pt`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stitchnet.data.errors import DataError
from stitchnet.data.types import SliceRecord
from stitchnet.lungfield.net import (
    ASSET_PATH,
    LungSegmenter,
    build_net,
    lung_fields,
    resize_to,
    weights_digest,
)
from stitchnet.metrics import confusion_matrix, f1, group_counts


def lung_target(record: SliceRecord) -> np.ndarray | None:
    """The lung field to learn: mask classes 1-3 merged, else the shipped lung mask, else None."""
    if record.mask is not None:
        return (record.mask > 0).astype(np.uint8)
    if record.lung is not None:
        return (record.lung > 0).astype(np.uint8)
    return None


def _stack(records: list[SliceRecord], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([resize_to(r.image, size) for r in records])  # (N, 1, s, s)
    targets = []
    for r in records:
        t = torch.from_numpy(lung_target(r).astype(np.float32))[None, None]
        targets.append(F.interpolate(t, size=(size, size), mode="nearest-exact"))
    return images, torch.cat(targets)[:, 0].long()  # (N, 1, s, s), (N, s, s)


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """Random left-right flip, zoom (0.75-1.15) and shift, then a random window and gamma.

    Zooming out pads with zeros (air is dark in the lung window), so the segmenter also sees lungs
    that fill less of the frame than in the tightly cropped training slices. The random gain
    (0.4-1.1) and offset mimic other display windows: the bundled coronacases.org slices show the
    mediastinum mid-grey rather than white, and a segmenter trained without this took almost the
    whole of those slices for lung.
    """
    b = x.shape[0]
    scale = 0.75 + 0.4 * torch.rand(b, generator=gen)  # > 1 zooms out
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()
    gain = 0.4 + 0.7 * torch.rand(b, 1, 1, 1, generator=gen)
    offset = -0.05 + 0.2 * torch.rand(b, 1, 1, 1, generator=gen)
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.6)
    return (x * gain + offset).clamp(0, 1).pow(gamma), y


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """2|P∩T| / (|P| + |T|) of two lung fields (anything > 0 is lung): `metrics.f1` with
    absent="one", so 1.0 when both are empty. The held-out check scores every slice, and a slice
    without lung that the segmenter leaves empty is right (nothing to find, nothing found)."""
    p = torch.from_numpy((np.asarray(pred) > 0).astype(np.int64)).reshape(1, 1, -1)  # (1, 1, P)
    t = torch.from_numpy((np.asarray(target) > 0).astype(np.int64)).reshape(1, 1, -1)
    counts = group_counts(confusion_matrix(p, t, 2), [1])  # (1, 3) tp, fp, fn of the lung
    return float(f1(counts, absent="one")[0])


def train_lung_segmenter(
    records: list[SliceRecord],
    size: int = 128,
    epochs: int = 40,
    seed: int = 0,
    batch_size: int = 4,
    lr: float = 3e-3,
    val_records: list[SliceRecord] | None = None,
    morph_radius: int = 3,
    log: bool = False,
) -> LungSegmenter:
    """Train the lung-field U-Net on `records` (each needs a mask or a lung field).

    Args:
        records: training slices; the target is mask > 0 (classes 1-3 merged).
        size: square input size the net works at (a multiple of 32).
        epochs: passes over the training slices.
        seed: seeds the weights, the batch order and the augmentation.
        val_records: held-out slices; their Dice (after post-processing, at full size) goes in meta.
        log: print the loss once per epoch.
    """
    usable = [r for r in records if lung_target(r) is not None]
    if not usable:
        raise DataError("train_lung_segmenter: no slice has a mask or a lung field; expected some")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if size % 32 != 0:
        raise ValueError(f"size must be a multiple of 32 (five stride-2 levels), got {size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_net()
    net.train()
    images, targets = _stack(usable, size)  # (N, 1, s, s), (N, s, s)
    steps_per_epoch = math.ceil(len(usable) / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    from stitchnet.models.losses import segmentation_loss

    t0 = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(usable), generator=gen)
        total = 0.0
        for start in range(0, len(usable), batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:
                continue  # batch norm needs more than one sample per batch
            x, y = _augment(images[idx], targets[idx], gen)
            loss = segmentation_loss(net(x), y, net.config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        if log:
            mean_loss = total / len(usable)
            print(f"epoch {epoch + 1}/{epochs} loss {mean_loss:.4f} ({time.time() - t0:.0f}s)")
    net.eval()
    meta: dict[str, Any] = {
        "train_ids": [r.slice_id for r in usable],
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.time() - t0, 1),
    }
    seg = LungSegmenter(net, size, f"lungfield-{weights_digest(net)}", meta)
    if val_records:
        val = [r for r in val_records if lung_target(r) is not None]
        preds = lung_fields(seg, [r.image for r in val], morph_radius)
        dices = [dice_score(p, lung_target(r)) for p, r in zip(preds, val, strict=True)]
        meta["val_ids"] = [r.slice_id for r in val]
        meta["val_dice"] = [round(d, 4) for d in dices]
        meta["val_dice_mean"] = round(float(np.mean(dices)), 4)
    return seg


def main(argv: list[str] | None = None) -> None:
    """Retrain the shipped segmenter on the bundled labelled slices and rewrite its weights."""
    from stitchnet.data.slice_folder import read_folder
    from stitchnet.data.sources import load_bundled

    parser = argparse.ArgumentParser(
        prog="python -m stitchnet.lungfield.train", description=main.__doc__
    )
    parser.add_argument("--data", default=None, help="labelled folder (default: the bundled set)")
    parser.add_argument("--out", default=str(ASSET_PATH), help="where to write the weights")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-count", type=int, default=10, help="slices held out for the Dice")
    # One thread: on a small, busy CPU, OpenMP threads spin against other work; measured here a
    # training step cost ~15x the CPU time with two threads on two shared cores.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    records = read_folder(args.data or load_bundled("labelled"))
    order = np.random.default_rng(args.seed).permutation(len(records))
    val = [records[i] for i in sorted(order[: args.val_count])]
    train = [records[i] for i in sorted(order[args.val_count :])]
    seg = train_lung_segmenter(
        train,
        size=args.size,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        val_records=val,
        log=True,
    )
    seg.save(args.out)
    size_kb = Path(args.out).stat().st_size / 1024
    print(
        f"wrote {args.out} ({size_kb:.0f} KiB, version {seg.version}); "
        f"held-out Dice {seg.meta.get('val_dice_mean')} on {len(val)} slices"
    )


if __name__ == "__main__":
    main()

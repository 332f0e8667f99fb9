"""The paper's lung-field segmenter: a small U-Net that finds the lungs so slices can be cropped.

The paper segments the lung field with a U-Net, cleans the mask with a morphological opening and
closing, and crops every slice to the lung field. Here the U-Net is the registry's `unet` at its
`debug` preset with two classes (outside / inside the lung field), trained on the labelled
slices' masks with classes 1-3 merged (mask > 0). The shipped weights lie in
`stitchnet/assets/lungfield.pt`; `python -m stitchnet.data.lungfield` retrains them from the
bundled slices and rewrites that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import disk
from torch import nn

from stitchnet.data.body import drop_outside_air
from stitchnet.data.sources import DataError
from stitchnet.data.types import SliceRecord

ASSET_PATH = Path(__file__).resolve().parent.parent / "assets" / "lungfield.pt"
CHECKPOINT_FORMAT = 1
MIN_LUNG_FRACTION = 0.005  # a lung field smaller than this share of the slice counts as not found


@dataclass(frozen=True)
class LungSegmenter:
    """A trained lung-field U-Net with the input size it was trained at and a version for caches."""

    net: nn.Module  # (B, 1, size, size) -> logits (B, 2, size, size)
    size: int
    version: str  # digest of the weights: a retrained segmenter invalidates prepared-data caches
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write a self-describing checkpoint; floats in half precision keep the file under 5 MB."""
        state = {
            k: v.half() if v.is_floating_point() else v for k, v in self.net.state_dict().items()
        }
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": "unet",
            "config": dataclasses.asdict(self.net.config),
            "size": self.size,
            "version": self.version,
            "state_dict": state,
            **{k: v for k, v in self.meta.items() if k not in ("config", "state_dict")},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(path)


def _build_net(config: dict[str, Any] | None = None) -> nn.Module:
    from stitchnet.models import build_model, model_config

    if config is not None:
        return build_model("unet", config)
    # Lung vs not-lung is roughly balanced, but the Dice term sharpens thin lung borders.
    config = model_config("unet", "debug", num_classes=2, encoder_weights=None, loss="ce+dice")
    return build_model("unet", config)


def _weights_digest(net: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(
            tensor.detach().cpu().half().numpy().tobytes() if tensor.is_floating_point() else b""
        )
    return h.hexdigest()[:12]


def load_lung_segmenter(path: str | Path | None = None) -> LungSegmenter:
    """Load the shipped segmenter (or the checkpoint at `path`), in eval mode on the CPU."""
    path = ASSET_PATH if path is None else Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: lung segmenter weights not found; expected the shipped file. "
            f"Rebuild it with `python -m stitchnet.data.lungfield`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read the lung segmenter checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(
            f"{path}: lung segmenter checkpoint format {found!r}; expected {CHECKPOINT_FORMAT}"
        )
    net = _build_net(ckpt["config"])
    net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    )
    net.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "config", "size", "version")}
    return LungSegmenter(net, int(ckpt["size"]), str(ckpt["version"]), meta)


# ---------------------------------------------------------------------------------------------
# Inference and post-processing


def _resize(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) float -> (1, 1, size, size), area-aware bilinear (antialias when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def lung_probabilities(
    seg: LungSegmenter, images: list[np.ndarray], batch_size: int = 32, input_size: bool = True
) -> list[np.ndarray]:
    """Probability of lung for each (H, W) image: (H, W) float32 arrays, or (size, size) ones at
    the segmenter's working size when `input_size` is False."""
    device = next(seg.net.parameters()).device
    was_training = seg.net.training
    seg.net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.cat([_resize(im, seg.size) for im in chunk]).to(device)  # (b, 1, s, s)
        probs = seg.net(x).softmax(dim=1)[:, 1:2].float().cpu()  # (b, 1, s, s)
        for p, im in zip(probs, chunk, strict=True):
            if input_size:
                p = F.interpolate(p[None], size=im.shape, mode="bilinear", align_corners=False)[0]
            out.append(p[0].numpy())  # (H, W) or (s, s)
    seg.net.train(was_training)
    return out


def morph_radius_px(morph_radius: int, shape: tuple[int, int]) -> int:
    """The disk radius in pixels: `morph_radius` is given at 256 px and scales with the slice."""
    return max(1, int(round(morph_radius * max(shape) / 256)))


def clean_lung_mask(mask: np.ndarray, radius: int, extra_fraction: float = 0.05) -> np.ndarray:
    """Opening then closing with a disk of `radius` px, then keep the lungs' components.

    The two largest components are kept (two lungs), and so is any other component holding at
    least `extra_fraction` of the cleaned area: a lung can come in pieces (a thin sliver cut off
    by dense consolidation, as in bundled slice z054), and dropping a piece would crop real lung
    away, while the specks that survive the opening hold well under 5 % of the area.

    The mask is edge-padded first: the bundled slices are cropped tight, so lungs touch the border,
    and a zero border would let the closing's erosion eat them there.
    """
    if radius > 0:
        footprint = disk(radius).astype(bool)
        padded = np.pad(mask > 0, radius + 1, mode="edge")  # (H + 2r + 2, W + 2r + 2)
        padded = ndimage.binary_opening(padded, footprint)
        padded = ndimage.binary_closing(padded, footprint)
        mask = padded[radius + 1 : -(radius + 1), radius + 1 : -(radius + 1)]  # back to (H, W)
    labels, n = ndimage.label(mask > 0)
    if n <= 2:
        return (labels > 0).astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]  # (n,) pixels per component, label k at index k - 1
    keep = set((np.argsort(sizes)[::-1][:2] + 1).tolist())
    keep |= set((np.nonzero(sizes >= extra_fraction * sizes.sum())[0] + 1).tolist())
    return np.isin(labels, sorted(keep)).astype(np.uint8)


def lung_fields(
    seg: LungSegmenter,
    images: list[np.ndarray],
    morph_radius: int = 3,
    batch_size: int = 32,
    drop_air_around: bool = True,
) -> list[np.ndarray]:
    """Cleaned (H, W) uint8 0/1 lung fields for a list of (H, W) images in [0, 1].

    The opening, closing, component selection and (`drop_air_around`) the removal of field
    parts in the air around the patient (`stitchnet.data.body.drop_outside_air`, for slices
    without HU) run at the segmenter's working size, where all of the mask's detail lies (at
    full size they cost 5x more for the same result); the cleaned mask is then resized to each
    image bilinearly and thresholded, which keeps its edges smooth.
    """
    probs = lung_probabilities(seg, images, batch_size, input_size=False)  # each (s, s)
    radius = morph_radius_px(morph_radius, (seg.size, seg.size))
    fields = []
    for p, image in zip(probs, images, strict=True):
        small = clean_lung_mask(p > 0.5, radius)  # (s, s)
        if drop_air_around:  # air around the patient looks like lung on a windowed slice
            small = drop_outside_air(small, _resize(image, seg.size)[0, 0].numpy())
        small = torch.from_numpy(small.astype(np.float32))
        full = F.interpolate(
            small[None, None], size=image.shape, mode="bilinear", align_corners=False
        )
        fields.append((full[0, 0] > 0.5).numpy().astype(np.uint8))  # (s, s) -> (H, W)
    return fields


def lung_field(seg: LungSegmenter, image: np.ndarray, morph_radius: int = 3) -> np.ndarray:
    """The cleaned lung field (H, W) uint8 0/1 of one (H, W) image in [0, 1]."""
    return lung_fields(seg, [image], morph_radius)[0]


def lung_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1), ends exclusive, of the lung field with a margin.

    The margin is a fraction of the box's own side, added on each side and clipped to the image.
    When the field is empty or smaller than MIN_LUNG_FRACTION of the slice, the segmenter has not
    found the lungs and the whole image is returned, so nothing is cut away on a guess.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if ys.size < MIN_LUNG_FRACTION * h * w:
        return (0, h, 0, w)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad_y, pad_x = int(round(margin * (y1 - y0))), int(round(margin * (x1 - x0)))
    return (max(0, y0 - pad_y), min(h, y1 + pad_y), max(0, x0 - pad_x), min(w, x1 + pad_x))


# ---------------------------------------------------------------------------------------------
# Training


def lung_target(record: SliceRecord) -> np.ndarray | None:
    """The lung field to learn: mask classes 1-3 merged, else the shipped lung mask, else None."""
    if record.mask is not None:
        return (record.mask > 0).astype(np.uint8)
    if record.lung is not None:
        return (record.lung > 0).astype(np.uint8)
    return None


def _stack(records: list[SliceRecord], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([_resize(r.image, size) for r in records])  # (N, 1, s, s)
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
    """2|P∩T| / (|P| + |T|); 1.0 when both are empty (nothing to find, nothing found)."""
    p, t = pred > 0, target > 0
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


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
    net = _build_net()
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
    seg = LungSegmenter(net, size, f"lungfield-{_weights_digest(net)}", meta)
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
    from stitchnet.data.sources import load_bundled, read_folder

    parser = argparse.ArgumentParser(
        prog="python -m stitchnet.data.lungfield", description=main.__doc__
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

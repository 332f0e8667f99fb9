"""PNG bytes from uint8 arrays, fast enough for the hundreds of slices `segment` writes.

Pillow's encoder holds Python's global interpreter lock while it compresses into memory, so the
report's 600 slice images (viewer.py) could only be encoded one after the other. Here the image
rows go to `zlib.compress`, which releases the lock, so a thread pool (`map_threads`) encodes as
many slices at once as there are cores. Rows are stored unfiltered (PNG filter type 0): on
windowed CT, whose flat air, padding and label channels zlib already compresses well, files came
out as small as with Pillow's adaptive row filters at the same zlib level, in about half the time.
Any PNG reader decodes the result; the pixels are exactly the array's.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type: 0 grey, 2 RGB
WORKERS = min(8, os.cpu_count() or 1)  # threads of `map_threads`: one per core

T = TypeVar("T")
R = TypeVar("R")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray, level: int = 3) -> bytes:
    """(H, W) grey or (H, W, 3) RGB uint8 -> the bytes of a PNG file, zlib at `level` (0-9)."""
    image = np.asarray(image)
    channels = 1 if image.ndim == 2 else image.shape[-1]
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or channels not in COLOUR_TYPES:
        raise ValueError(
            f"encode_png: got a {image.dtype} array of shape {image.shape}; expected uint8 "
            f"(H, W) grey or (H, W, 3) RGB"
        )
    h, w = image.shape[:2]
    rows = np.zeros((h, 1 + w * channels), dtype=np.uint8)  # column 0: filter type 0 (none)
    rows[:, 1:] = image.reshape(h, w * channels)
    header = struct.pack(">IIBBBBB", w, h, 8, COLOUR_TYPES[channels], 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | Path, image: np.ndarray, level: int = 1) -> None:
    """`encode_png` into a file."""
    Path(path).write_bytes(encode_png(image, level))


def map_threads(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """`map(fn, items)` over WORKERS threads, in order: for work that releases the lock (zlib,
    numpy on large arrays), so it runs on all cores."""
    if WORKERS == 1:
        return map(fn, items)
    with ThreadPoolExecutor(WORKERS) as pool:
        return iter(list(pool.map(fn, items)))

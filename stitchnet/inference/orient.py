"""Pictures of CT slices in the radiological convention, with R / L / A / P at the edges.

The model sees slices in the display orientation of the training data (stitchnet.data.volumes:
rows patient right -> left, columns anterior -> posterior), which puts the spine and the table on
the image's right. Radiologists read an axial slice with anterior up and the patient's right on
the image's LEFT, as if looking up from the patient's feet; every clinical viewer shows it so.
`radiological` turns a display slice into that picture (a transpose for the display orientation
of today) and is the one place pictures for people are oriented: the viewer, segment's and
predict's overlays and the figures call it. Arrays, label volumes and mask files never go
through it; they keep the input's voxel order.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as ornt_

from stitchnet.data.volumes import DISPLAY_AXCODES

# The picture's (rows, cols) in nibabel axis codes: rows grow posterior (anterior at the top),
# columns grow towards the patient's left (the patient's right on the image's left).
PICTURE_AXCODES = ("P", "L")
# The patient direction each edge of the picture faces.
EDGE_LETTERS = {"top": "A", "bottom": "P", "left": "R", "right": "L"}
# display (Y, X) -> picture (rows, cols): a nibabel orientation transform, so the picture stays
# radiological whatever DISPLAY_AXCODES says.
_TO_PICTURE = ornt_.ornt_transform(
    ornt_.axcodes2ornt(DISPLAY_AXCODES[1:]), ornt_.axcodes2ornt(PICTURE_AXCODES)
)

# 5 x 7 bitmaps of the four letters ('#' is ink), drawn at an integer scale.
_GLYPHS = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
}
INK, OUTLINE = 255, 0  # white letters in a one-pixel black outline: legible on any grey or tint
MIN_MARKED_PX = 32  # below this the letters would cover too much of the picture: none drawn


def radiological(display: np.ndarray) -> np.ndarray:
    """(Y, X, ...) display slice -> (rows A->P, cols patient R->L, ...) picture, any dtype.

    Trailing axes (colour channels) ride along. Returns a view where numpy can.
    """
    display = np.asarray(display)
    if display.ndim < 2:
        raise ValueError(
            f"radiological: got an array of shape {display.shape}; expected (Y, X, ...)"
        )
    return ornt_.apply_orientation(display, _TO_PICTURE)


def glyph(letter: str, scale: int = 1) -> np.ndarray:
    """The (7 scale, 5 scale) bool bitmap of one of A, P, R, L."""
    bits = np.array([[c == "#" for c in row] for row in _GLYPHS[letter]])
    return np.kron(bits, np.ones((scale, scale), dtype=bool))


def letter_scale(height: int, width: int) -> int:
    """Pixels per glyph dot: 1 up to 255 px, 2 at 256, 4 at 512 (letters ~5 % of the side)."""
    return max(1, min(height, width) // 128)


def letter_boxes(height: int, width: int) -> dict[str, tuple[int, int]]:
    """Top-left corner (row, col) of each edge letter's glyph on a (height, width) picture:
    centred on its edge, one dot plus the outline in from it."""
    s = letter_scale(height, width)
    gh, gw = 7 * s, 5 * s
    inset = s + 1
    return {
        EDGE_LETTERS["top"]: (inset, (width - gw) // 2),
        EDGE_LETTERS["bottom"]: (height - inset - gh, (width - gw) // 2),
        EDGE_LETTERS["left"]: ((height - gh) // 2, inset),
        EDGE_LETTERS["right"]: ((height - gh) // 2, width - inset - gw),
    }


def mark_orientation(picture: np.ndarray) -> np.ndarray:
    """A copy of a radiological (H, W, 3) uint8 picture with A, P, R, L at the middle of the top,
    bottom, left and right edges; pictures under MIN_MARKED_PX a side come back unmarked."""
    out = np.array(picture, dtype=np.uint8, copy=True)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"mark_orientation: got shape {out.shape}; expected (H, W, 3) RGB")
    h, w = out.shape[:2]
    if min(h, w) < MIN_MARKED_PX:
        return out
    s = letter_scale(h, w)
    for letter, (r, c) in letter_boxes(h, w).items():
        ink = glyph(letter, s)  # (7 s, 5 s)
        padded = np.pad(ink, 1)  # room for the outline around the glyph
        outline = np.zeros_like(padded)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                outline |= np.roll(np.roll(padded, dr, axis=0), dc, axis=1)
        out[r - 1 : r + ink.shape[0] + 1, c - 1 : c + ink.shape[1] + 1][outline] = OUTLINE
        out[r : r + ink.shape[0], c : c + ink.shape[1]][ink] = INK
    return out

"""png.py: the PNG bytes decode to exactly the array, grey and RGB, at every zlib level."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stitchnet.inference.png import encode_png, map_threads


@pytest.mark.parametrize("shape", [(7, 5), (6, 9, 3)])
@pytest.mark.parametrize("level", [0, 1, 6])
def test_png_decodes_to_the_same_pixels(shape, level):
    image = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(image, level)))
    assert decoded.mode == ("L" if len(shape) == 2 else "RGB")
    assert np.array_equal(np.asarray(decoded), image)


def test_png_refuses_other_dtypes_and_channel_counts():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        encode_png(np.zeros((4, 4, 4), dtype=np.uint8))


def test_map_threads_keeps_the_order():
    assert list(map_threads(lambda k: k * k, range(20))) == [k * k for k in range(20)]

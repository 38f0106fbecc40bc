"""Tests of aucgan.nets.detail_encoder: the reference conv encoder, DECA's ResNet E_detail and no encoder."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from aucgan.nets.detail_encoder import ConvDetailEncoder, NoDetailCode, ResNetDetailEncoder

# The reference encoder: 3 input channels, then the eight conv widths of SPEC §2.
REFERENCE_CHANNELS = (3, 64, 128, 256, 512, 1024, 512, 256, 128)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_forward(net: ConvDetailEncoder, images: torch.Tensor) -> torch.Tensor:
    """Plain re-statement of the reference: conv1 → ReLU; conv2..7 → IN → LReLU(0.2); conv8 → LReLU(0.2)."""
    x = images
    for index, conv in enumerate(net.convs):
        x = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
        if index == 0:
            x = torch.where(x > 0, x, torch.zeros_like(x))
            continue
        if index < 7:
            mean = x.mean(dim=(2, 3), keepdim=True)
            variance = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)  # biased, as instance norm uses
            x = (x - mean) / torch.sqrt(variance + 1e-5)
        x = torch.where(x > 0, x, 0.2 * x)
    return x.reshape(x.shape[0], -1)


@pytest.fixture(scope="module")
def conv_encoder() -> ConvDetailEncoder:
    torch.manual_seed(0)
    return ConvDetailEncoder().eval()


def test_conv_encoder_parameter_count_and_keys(conv_encoder):
    # Each conv: 3*3*cin*cout weights + cout biases; instance norms have no parameters.
    expected = sum(9 * cin * cout + cout for cin, cout in itertools.pairwise(REFERENCE_CHANNELS))
    assert count(conv_encoder) == expected
    assert set(conv_encoder.state_dict()) == {f"convs.{i}.{p}" for i in range(8) for p in ("weight", "bias")}
    for index, conv in enumerate(conv_encoder.convs):
        assert conv.weight.shape == (REFERENCE_CHANNELS[index + 1], REFERENCE_CHANNELS[index], 3, 3)
        assert conv.stride == (2, 2) and conv.padding == (1, 1)


def test_conv_encoder_matches_plain_reference_and_halves_size_eight_times(conv_encoder):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 256, 256)
    sizes: list[tuple[int, ...]] = []
    hooks = [
        conv.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape)))
        for conv in conv_encoder.convs
    ]
    try:
        with torch.no_grad():
            detail_code = conv_encoder(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert detail_code.shape == (2, 128)
    assert sizes == [(2, c, 256 >> (k + 1), 256 >> (k + 1)) for k, c in enumerate(REFERENCE_CHANNELS[1:])]
    with torch.no_grad():
        torch.testing.assert_close(detail_code, reference_forward(conv_encoder, images), rtol=1e-4, atol=1e-5)
        # Instance norm: every sample is encoded on its own, whatever else is in the batch.
        torch.testing.assert_close(detail_code[1:], conv_encoder(images[1:]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_conv_encoder_resizes_other_sizes_to_256(mode):
    torch.manual_seed(2)
    net = ConvDetailEncoder(n_detail=16, resize_mode=mode).eval()
    images = torch.rand(1, 3, 64, 96)
    corners = False if mode == "bilinear" else None
    resized = F.interpolate(images, size=(256, 256), mode=mode, align_corners=corners)
    with torch.no_grad():
        detail_code = net(images)
        torch.testing.assert_close(detail_code, net(resized), rtol=0, atol=0)
    assert detail_code.shape == (1, 16)


def test_conv_encoder_backward_and_float64():
    torch.manual_seed(3)
    net = ConvDetailEncoder(n_detail=8).double()
    detail_code = net(torch.rand(1, 3, 64, 64, dtype=torch.float64))
    assert detail_code.dtype == torch.float64 and detail_code.shape == (1, 8)
    detail_code.square().sum().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_resnet_detail_encoder_is_deca_e_detail():
    torch.manual_seed(4)
    net = ResNetDetailEncoder(n_detail=128)
    # Trunk = torchvision resnet50 (25,557,032) minus its Linear(2048, 1000); head 2048→1024→128.
    trunk = 25_557_032 - (2048 * 1000 + 1000)
    assert count(net) == trunk + (2048 * 1024 + 1024) + (1024 * 128 + 128)
    assert count(net.encoder) == trunk
    keys = net.state_dict()
    assert keys["layers.2.weight"].shape == (128, 1024) and "encoder.layer4.2.bn3.weight" in keys
    with torch.no_grad():
        assert net.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 128)


def test_errors_quote_the_shape(conv_encoder):
    with pytest.raises(ValueError, match=r"\(2, 4, 64, 64\)"):
        conv_encoder(torch.rand(2, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(3, 64, 64\)"):
        conv_encoder(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="resize_mode"):
        ConvDetailEncoder(resize_mode="lanczos")
    with pytest.raises(ValueError, match="n_detail"):
        ConvDetailEncoder(n_detail=0)


def test_no_encoder_gives_a_zero_code_without_parameters():
    net = NoDetailCode(n_detail=16)
    assert list(net.parameters()) == [] and net.state_dict() == {}
    code = net(torch.rand(3, 3, 40, 40, dtype=torch.float64))
    assert code.shape == (3, 16) and code.dtype == torch.float64 and not code.any()
    with pytest.raises(ValueError, match=r"\(3, 40, 40\)"):
        net(torch.rand(3, 40, 40))
    with pytest.raises(ValueError, match="n_detail"):
        NoDetailCode(n_detail=0)

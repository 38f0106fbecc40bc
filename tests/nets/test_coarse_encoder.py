"""Tests of aucgan.nets.coarse_encoder: DECA's encoder layout, the code layout and typed codes."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from aucgan.nets.coarse_encoder import (
    CODE_NAMES,
    CoarseCodes,
    CoarseEncoder,
    CodeLayout,
    ExpressionEncoder,
    ResNetEncoder,
)

# The published DECA/EMOCA E_flame split, in output order.
DECA_SPLIT = (("shape", 100), ("albedo", 50), ("expression", 50), ("pose", 6), ("camera", 3), ("light", 27))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def resnet50_trunk_parameters() -> int:
    """Bias-free convolutions k*k*cin*cout and BatchNorms (weight + bias = 2c) of ResNet-50 [3, 4, 6, 3]."""
    total = 7 * 7 * 3 * 64 + 2 * 64
    cin = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True):
        for block in range(blocks):
            cout = 4 * width
            total += cin * width + 2 * width + 9 * width * width + 2 * width + width * cout + 2 * cout
            if block == 0:  # projection shortcut: channels change (and stride 2 from stage 2 on)
                total += cin * cout + 2 * cout
            cin = cout
    return total


@pytest.fixture(scope="module")
def coarse() -> CoarseEncoder:
    torch.manual_seed(0)
    return CoarseEncoder(CodeLayout.flame()).eval()


def test_parameter_counts_follow_deca():
    trunk = resnet50_trunk_parameters()
    # torchvision's resnet50 has 25,557,032 parameters, of which the classifier is Linear(2048, 1000).
    assert trunk == 25_557_032 - linear(2048, 1000) == 23_508_032
    # E_flame: trunk + Linear(2048, 1024) + Linear(1024, 100 + 50 + 50 + 6 + 3 + 27 = 236).
    layout = CodeLayout.flame()
    assert layout.total == sum(size for _, size in DECA_SPLIT) == 236
    assert count(CoarseEncoder(layout)) == trunk + linear(2048, 1024) + linear(1024, 236)
    # EMOCA's E_expression: same, regressing 50 expression coefficients.
    assert count(ExpressionEncoder(50)) == trunk + linear(2048, 1024) + linear(1024, 50)


def test_state_dict_keys_are_deca_resnet_encoder_layout(coarse):
    keys = coarse.network.state_dict()
    assert {key.split(".")[0] for key in keys} == {"encoder", "layers"}
    for key in ("encoder.conv1.weight", "encoder.bn1.running_var", "encoder.layer4.2.conv3.weight"):
        assert key in keys
    assert keys["layers.0.weight"].shape == (1024, 2048)
    assert keys["layers.2.weight"].shape == (236, 1024)
    assert keys["layers.2.bias"].shape == (236,)
    assert "layers.1.weight" not in keys  # layers.1 is the ReLU
    assert set(ExpressionEncoder().state_dict()) == set(keys)


def test_forward_is_pooled_trunk_then_two_layer_head(coarse):
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        flat = coarse.network(images)
        pooled = coarse.network.encoder(images).mean(dim=(2, 3))
        head = coarse.network.layers
        hidden = torch.clamp(pooled @ head[0].weight.T + head[0].bias, min=0.0)
        reference = hidden @ head[2].weight.T + head[2].bias
        codes = coarse(images)
    assert flat.shape == (2, 236)
    torch.testing.assert_close(flat, reference, rtol=1e-5, atol=1e-5)
    expected = CoarseCodes.from_flat(flat, coarse.layout)
    for field in dataclasses.fields(CoarseCodes):
        assert torch.equal(getattr(codes, field.name), getattr(expected, field.name))


def test_global_pool_equals_deca_7x7_average_at_224():
    torch.manual_seed(1)
    net = ResNetEncoder(8, backbone="resnet18").eval()
    images = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        feature_map = net.encoder(images)
        deca = net.layers(F.avg_pool2d(feature_map, 7).flatten(1))
        ours = net(images)
    assert feature_map.shape[2:] == (7, 7)
    torch.testing.assert_close(ours, deca, rtol=1e-5, atol=1e-6)


def test_codes_split_in_deca_order_and_light_is_reshaped_row_major():
    layout = CodeLayout.flame()
    flat = torch.arange(2 * 236, dtype=torch.float64).reshape(2, 236)
    codes = CoarseCodes.from_flat(flat, layout)
    offsets = dict(
        zip(
            (name for name, _ in DECA_SPLIT),
            itertools.accumulate((size for _, size in DECA_SPLIT), initial=0),
            strict=False,
        )
    )
    for name, size in DECA_SPLIT:
        part = codes.light.reshape(2, -1) if name == "light" else getattr(codes, name)
        assert torch.equal(part, flat[:, offsets[name] : offsets[name] + size]), name
    assert codes.light.shape == (2, 9, 3)
    for k, c in itertools.product(range(9), range(3)):  # light[b, k, c] = flat[b, 209 + 3k + c]
        assert torch.equal(codes.light[:, k, c], flat[:, offsets["light"] + 3 * k + c])
    assert torch.equal(codes.jaw_pose, flat[:, 203:206]) and torch.equal(codes.global_pose, flat[:, 200:203])
    assert torch.equal(codes.to_flat(layout), flat)


def test_code_layout_is_an_ordered_immutable_mapping():
    layout = CodeLayout.flame(n_shape=80, n_tex=40, n_exp=30)
    assert tuple(layout) == CODE_NAMES
    assert dict(layout) == {"shape": 80, "albedo": 40, "expression": 30, "pose": 6, "camera": 3, "light": 27}
    assert layout.total == 80 + 40 + 30 + 6 + 3 + 27
    assert layout.slice("expression") == slice(120, 150)
    assert layout == CodeLayout(dict(layout)) and hash(layout) == hash(CodeLayout(dict(layout)))
    with pytest.raises(AttributeError):
        layout.total = 3
    assert copy.deepcopy(layout) == layout and pickle.loads(pickle.dumps(layout)) == layout
    reordered = CodeLayout(
        [("camera", 3), ("pose", 6), ("light", 27), ("shape", 2), ("expression", 4), ("albedo", 0)]
    )
    flat = torch.randn(3, reordered.total)
    parts = reordered.split(flat)
    assert tuple(parts) == ("camera", "pose", "light", "shape", "expression", "albedo")
    assert torch.equal(parts["shape"], flat[:, 36:38]) and parts["albedo"].shape == (3, 0)
    assert torch.equal(reordered.join(parts), flat)


def test_layout_for_face_model_uses_its_sizes():
    builtin_like = SimpleNamespace(n_shape=12, n_expression=27, n_pose=6)  # the built-in model's sizes
    layout = CodeLayout.for_face_model(builtin_like, n_albedo=20)
    assert dict(layout) == {"shape": 12, "albedo": 20, "expression": 27, "pose": 6, "camera": 3, "light": 27}
    with pytest.raises(ValueError, match="6-d pose"):
        CodeLayout.for_face_model(SimpleNamespace(n_shape=12, n_expression=27, n_pose=15), n_albedo=20)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([("shape", 1), ("albedo", 1), ("expression", 1), ("pose", 6), ("camera", 3)], "exactly the codes"),
        ([*DECA_SPLIT, ("shape", 3)], "exactly the codes"),
        ([("shape", 1), ("albedo", 1), ("expression", 1), ("pose", 6), ("camera", 3), ("light", 9)], "light"),
        (
            [("shape", -1), ("albedo", 1), ("expression", 1), ("pose", 6), ("camera", 3), ("light", 27)],
            "non-neg",
        ),
    ],
)
def test_invalid_layouts_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message):
        CodeLayout(sizes)


def test_shape_errors_quote_the_shape(coarse):
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        coarse(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        coarse(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(2, 235\)"):
        CoarseCodes.from_flat(torch.zeros(2, 235), coarse.layout)
    parts = CodeLayout.flame().split(torch.zeros(2, 236))
    parts["pose"] = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"'pose' must be \(2, 6\), got \(2, 5\)"):
        CodeLayout.flame().join(parts)


def test_backward_reaches_every_parameter_and_float64_works():
    torch.manual_seed(2)
    net = CoarseEncoder(CodeLayout.flame(n_shape=4, n_tex=3, n_exp=5), backbone="resnet18").double()
    codes = net(torch.rand(2, 3, 64, 64, dtype=torch.float64))
    assert codes.light.dtype == torch.float64 and codes.expression.shape == (2, 5)
    loss = sum(getattr(codes, name).square().sum() for name in CODE_NAMES)
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert net.network.layers[2].weight.grad.abs().sum() > 0


def test_expression_encoder_output_shape():
    torch.manual_seed(3)
    net = ExpressionEncoder(n_exp=50).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 50) and torch.isfinite(out).all()

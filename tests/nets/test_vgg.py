import pytest
import torch
import torch.nn.functional as F

from aucgan.loaders.common import CheckpointError
from aucgan.nets.vgg import VGG19Features, load_vgg19

# torchvision's vgg19 (configuration "E"): channels of each 3x3 conv, "M" for a 2x2 max-pool. Written out
# here, independently of the module, as the oracle for names, indices and shapes.
CONFIG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"] + [512] * 4 + ["M"]


def torchvision_layers() -> list[tuple[str, int, int | None, int | None]]:
    """(name, index in ``features``, in channels, out channels) for every layer of the full trunk."""
    layers, index, block, conv, channels = [], 0, 1, 1, 3
    for entry in CONFIG_E:
        if entry == "M":
            layers.append((f"pool{block}", index, None, None))
            index, block, conv = index + 1, block + 1, 1
        else:
            layers.append((f"conv{block}_{conv}", index, channels, entry))
            layers.append((f"relu{block}_{conv}", index + 1, None, None))
            index, conv, channels = index + 2, conv + 1, entry
    return layers


def expected_keys(deepest: str) -> dict[str, tuple[int, ...]]:
    """torchvision's ``features.*`` keys and shapes of the trunk up to and including ``deepest``."""
    keys = {}
    for name, index, cin, cout in torchvision_layers():
        if cout is not None:
            keys[f"features.{index}.weight"] = (cout, cin, 3, 3)
            keys[f"features.{index}.bias"] = (cout,)
        if name == deepest:
            return keys
    raise AssertionError(deepest)


def full_torchvision_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every key of torchvision's vgg19 state dict: random trunk, classifier as cheap stride-0 tensors."""
    state = {
        key: torch.randn(shape, generator=generator)
        * (0.5 / (shape[1] * 9) ** 0.5 if len(shape) == 4 else 0.1)
        for key, shape in expected_keys("pool5").items()
    }
    for index, shape in ((0, (4096, 512 * 7 * 7)), (3, (4096, 4096)), (6, (1000, 4096))):
        state[f"classifier.{index}.weight"] = torch.zeros(1).expand(shape)
        state[f"classifier.{index}.bias"] = torch.zeros(shape[0])
    return state


@pytest.fixture(scope="module")
def full_state() -> dict[str, torch.Tensor]:
    return full_torchvision_state(torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, full_state):
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbfe4e9.pth"
    torch.save(full_state, path)
    return path


def reference_features(state, images, names):
    """Plain forward: ImageNet normalisation, then the configuration walked with functional ops."""
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=images.dtype).view(1, 3, 1, 1)
    x, out = (images - mean) / std, {}
    for name, index, _, cout in torchvision_layers():
        if cout is not None:
            weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
            x = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1)
        elif name.startswith("relu"):
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2)
        if name in names:
            out[name] = x
        if len(out) == len(names):
            return out
    raise AssertionError(names)


@pytest.mark.parametrize("deepest", ["relu1_2", "relu3_2", "relu4_2", "relu5_4", "pool5"])
def test_state_dict_keys_are_torchvisions(deepest):
    net = VGG19Features((deepest,))
    expected = expected_keys(deepest)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    assert net.deepest == deepest


def test_known_torchvision_anchors():
    keys = VGG19Features(("relu5_4",)).state_dict()
    assert tuple(keys["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(keys["features.34.weight"].shape) == (512, 512, 3, 3)
    assert "features.36.weight" not in keys
    # torchvision's vgg19 trunk has 20,024,384 parameters (143,667,240 with the classifier).
    assert sum(p.numel() for p in VGG19Features(("pool5",)).parameters()) == 20_024_384
    assert "features.21.weight" in VGG19Features(("relu4_2",)).state_dict()
    assert "features.23.weight" not in VGG19Features(("relu4_2",)).state_dict()


def test_normalisation_statistics_are_not_in_the_state_dict():
    net = VGG19Features()
    assert not [k for k in net.state_dict() if not k.startswith("features.")]
    assert {name for name, _ in net.named_buffers()} == {"mean", "std"}


def test_forward_matches_a_plain_reference(full_state):
    names = ("relu1_2", "relu2_2", "relu3_2", "pool3", "relu4_2")
    net = VGG19Features(names)
    net.load_state_dict({k: v for k, v in full_state.items() if k in net.state_dict()})
    images = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    features = net(images)
    reference = reference_features(full_state, images, names)
    assert list(features) == list(names)
    for name in names:
        torch.testing.assert_close(features[name], reference[name], rtol=1e-4, atol=1e-5)
    assert features["relu3_2"].shape == (2, 256, 8, 10)
    assert features["relu4_2"].shape == (2, 512, 4, 5)


def test_returned_features_are_not_clobbered_by_later_layers():
    net = VGG19Features(("conv3_2", "relu3_2")).freeze()
    features = net(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    assert features["conv3_2"].min() < 0
    torch.testing.assert_close(features["relu3_2"], features["conv3_2"].clamp(min=0))


def test_truncated_trunk_gives_the_features_of_the_deeper_one(vgg_file):
    shallow = load_vgg19(vgg_file, ("relu3_2", "relu4_2"))
    deep = load_vgg19(vgg_file, ("relu3_2", "relu4_2", "relu5_4"))
    assert len(shallow.features) == 23 and len(deep.features) == 36
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = shallow(images), deep(images)
    assert set(a) == {"relu3_2", "relu4_2"}
    for name in a:
        assert torch.equal(a[name], b[name])


def test_load_full_torchvision_file(vgg_file, full_state, tmp_path):
    net = load_vgg19(vgg_file)
    assert net.layers == ("relu3_2", "relu4_2")
    for key, value in net.state_dict().items():
        assert torch.equal(value, full_state[key])
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.parameters())
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": full_state}, wrapped)
    assert torch.equal(load_vgg19(wrapped).features[0].weight, full_state["features.0.weight"])
    trunk_only = tmp_path / "trunk.pth"
    torch.save({k: full_state[k] for k in expected_keys("relu4_2")}, trunk_only)
    assert torch.equal(load_vgg19(trunk_only).features[21].bias, full_state["features.21.bias"])


def test_loaded_network_is_frozen_but_passes_gradients_to_images(vgg_file):
    net = load_vgg19(vgg_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training and not any(m.training for m in net.modules())
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    net(images)["relu3_2"].square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    trainable = VGG19Features()
    trainable.train()
    assert trainable.training


def one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_vgg19(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, full_state):
    missing = dict(full_state)
    del missing["features.21.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    message = one_line_error(tmp_path / "missing.pth")
    assert "missing" in message and "features.21.weight" in message

    shaped = dict(full_state)
    shaped["features.12.weight"] = torch.zeros(256, 128, 3, 3)
    torch.save(shaped, tmp_path / "shape.pth")
    message = one_line_error(tmp_path / "shape.pth")
    assert "features.12.weight" in message and "(256, 128, 3, 3)" in message

    stray = dict(full_state)
    stray["features.3.weight"] = torch.zeros(1)
    torch.save(stray, tmp_path / "stray.pth")
    assert "unexpected: features.3.weight" in one_line_error(tmp_path / "stray.pth")

    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    assert "HTML" in one_line_error(tmp_path / "page.pth")
    assert "no such file" in one_line_error(tmp_path / "absent.pth")


def test_the_expected_extra_keys_are_ignored_however_shallow_the_trunk(vgg_file, full_state):
    net = load_vgg19(vgg_file, ("relu2_2",))
    assert len(net.features) == 9
    assert torch.equal(net.features[7].weight, full_state["features.7.weight"])


@pytest.mark.parametrize("layers", [(), ("relu6_1",), "relu3_2", ("relu3_2", "fc7")])
def test_invalid_layers_are_refused(layers):
    with pytest.raises(ValueError):
        VGG19Features(layers)


def test_input_shape_is_checked():
    net = VGG19Features(("relu1_2",))
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 8\)"):
        net(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        net(torch.zeros(3, 8, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype, full_state):
    net = VGG19Features(("relu2_2",)).to(dtype)
    net.load_state_dict({k: v for k, v in full_state.items() if k in net.state_dict()})
    images = torch.rand(1, 3, 8, 8, dtype=dtype)
    out = net(images)["relu2_2"]
    assert out.dtype == dtype
    reference = reference_features(full_state, images, ("relu2_2",))["relu2_2"]
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(full_state):
    net = VGG19Features(("relu3_2",))
    net.load_state_dict({k: v for k, v in full_state.items() if k in net.state_dict()})
    images = torch.rand(2, 3, 16, 16)
    expected = net(images)["relu3_2"]
    got = net.cuda()(images.cuda())["relu3_2"].cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)

import pytest
import torch

from aucgan.nets.resnet import build_resnet, resnet18, resnet50


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout  # bias-free convolutions throughout the trunk


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running statistics are buffers


def trunk_parameters(bottleneck: bool, layers: tuple[int, ...]) -> int:
    total = conv(7, 3, 64) + bn(64)
    cin = 64
    for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        for block in range(count):
            stride = 2 if index and block == 0 else 1
            cout = width * (4 if bottleneck else 1)
            if bottleneck:
                total += conv(1, cin, width) + bn(width) + conv(3, width, width) + bn(width)
                total += conv(1, width, cout) + bn(cout)
            else:
                total += conv(3, cin, width) + bn(width) + conv(3, width, width) + bn(width)
            if stride != 1 or cin != cout:
                total += conv(1, cin, cout) + bn(cout)
            cin = cout
    return total


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_torchvision():
    # torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters including the 1000-way
    # classifier (512*1000+1000 and 2048*1000+1000), which the trunk leaves out.
    assert count(resnet18()) == trunk_parameters(False, (2, 2, 2, 2)) == 11_689_512 - (512 * 1000 + 1000)
    assert count(resnet50()) == trunk_parameters(True, (3, 4, 6, 3)) == 25_557_032 - (2048 * 1000 + 1000)


def test_torchvision_parameter_names():
    keys = set(resnet50().state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight"):
        assert key in keys
    assert "layer1.0.conv3.weight" not in resnet18().state_dict()


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("resnet50", 2048)])
def test_feature_map_shape(name, channels):
    net = build_resnet(name).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, channels, 2, 2) and net.out_channels == channels


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="resnet18, resnet50"):
        build_resnet("resnet34")
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        resnet18()(torch.rand(2, 1, 64, 64))

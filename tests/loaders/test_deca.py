"""Tests of aucgan.loaders.deca: DECA and EMOCA files written in the published layouts load back exactly."""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import pytest
import torch

from aucgan.loaders.common import CheckpointError
from aucgan.loaders.deca import load_deca, load_emoca
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout, ExpressionEncoder, ResNetEncoder
from aucgan.nets.detail_encoder import ResNetDetailEncoder

DECODER_MISSING = "aucgan.nets.detail_decoder (DecaDetailDecoder) is not available yet; D_detail untested"


def decoder_class():
    try:
        from aucgan.nets.detail_decoder import DecaDetailDecoder
    except ImportError:
        return None
    return DecaDetailDecoder


class Payload:
    """Unpickling this runs ``touch marker``; a safe loader must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def randomise_batch_norm_statistics(module: torch.nn.Module) -> None:
    """Give every BatchNorm non-default running statistics, so that buffers must round-trip too."""
    for child in module.modules():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            child.running_mean.uniform_(-0.1, 0.1)
            child.running_var.uniform_(0.5, 1.5)
            child.num_batches_tracked.fill_(7)


@dataclasses.dataclass
class Originals:
    coarse: CoarseEncoder
    expression: ExpressionEncoder
    detail: ResNetDetailEncoder
    decoder: torch.nn.Module | None

    def decoder_state(self) -> dict:
        return {} if self.decoder is None else {"D_detail": self.decoder.state_dict()}


@pytest.fixture(scope="module")
def originals() -> Originals:
    torch.manual_seed(0)
    with torch.no_grad():
        modules = Originals(
            CoarseEncoder(CodeLayout.flame()),
            ExpressionEncoder(50),
            ResNetDetailEncoder(128),
            None if decoder_class() is None else decoder_class()(latent_dim=3 + 50 + 128),
        )
        for module in (modules.coarse, modules.expression, modules.detail, modules.decoder):
            if module is not None:
                randomise_batch_norm_statistics(module)
                module.eval()
    return modules


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=generator), torch.randn(2, 181, generator=generator)


def one_line(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def assert_same_outputs(original: torch.nn.Module, loaded: torch.nn.Module, x: torch.Tensor) -> None:
    """The loaded copy gives the original's outputs on ``x``, to float32 rounding.

    Not bit for bit: they are two module instances, and on some CPUs (AVX-512 FP16 ones) PyTorch's
    convolutions may run another oneDNN kernel for one of them (for parameters that need no gradients),
    summing in another order (~1e-7 relative). So rtol=1e-5, and an atol of 1e-5 of the output's largest
    magnitude for entries near zero after cancelling sums; a skipped or misplaced key moves them far more.
    """
    assert not loaded.training
    with torch.no_grad():
        expected, actual = original(x), loaded(x)
    if dataclasses.is_dataclass(expected):
        pairs = [
            (field.name, getattr(expected, field.name), getattr(actual, field.name))
            for field in dataclasses.fields(expected)
        ]
    else:
        pairs = [("output", expected, actual)]
    for name, want, got in pairs:
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")


def test_deca_layout_round_trip(tmp_path, originals, inputs, caplog):
    images, latent = inputs
    path = tmp_path / "deca_model.tar"
    optimiser = {"state": {}, "param_groups": [{"lr": 1e-4}]}
    torch.save(
        {
            "E_flame": originals.coarse.network.state_dict(),
            "E_detail": originals.detail.state_dict(),
            **originals.decoder_state(),
            "opt": optimiser,
        },
        path,
    )
    with caplog.at_level(logging.INFO, logger="aucgan.loaders.deca"):
        weights = load_deca(path)
    assert "ignoring 1 top-level entries: opt" in caplog.text
    assert all(report.clean for report in weights.reports.values())
    assert_same_outputs(originals.coarse, weights.coarse_encoder, images)
    assert_same_outputs(originals.detail, weights.detail_encoder, images)
    loaded_state = weights.coarse_encoder.network.state_dict()
    for key, tensor in originals.coarse.network.state_dict().items():
        assert torch.equal(loaded_state[key], tensor), key
    if originals.decoder is None:
        assert weights.detail_decoder is None
        pytest.skip(DECODER_MISSING)
    assert set(weights.reports) == {"E_flame", "E_detail", "D_detail"}
    assert_same_outputs(originals.decoder, weights.detail_decoder, latent)


def test_emoca_lightning_layout_round_trip(tmp_path, originals, inputs, caplog):
    images, latent = inputs
    parts = {
        "E_flame": originals.coarse.network,
        "E_expression": originals.expression,
        "E_detail": originals.detail,
    }
    if originals.decoder is not None:
        parts["D_detail"] = originals.decoder
    state = {
        f"deca.{part}.{key}": tensor
        for part, net in parts.items()
        for key, tensor in net.state_dict().items()
    }
    state["deca.flame.v_template"] = torch.zeros(5023, 3)  # face-model buffers and losses live beside them
    state["emonet_loss.backbone.weight"] = torch.zeros(4)
    path = tmp_path / "deca-epoch=03.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 12, "hyper_parameters": {"n_exp": 50}}, path)
    with caplog.at_level(logging.INFO, logger="aucgan.loaders.deca"):
        weights = load_emoca(path)
    assert "deca.flame" in caplog.text and "emonet_loss.backbone" in caplog.text
    assert all(report.clean for report in weights.reports.values())
    assert_same_outputs(originals.coarse, weights.coarse_encoder, images)
    assert_same_outputs(originals.expression, weights.expression_encoder, images)
    assert_same_outputs(originals.detail, weights.detail_encoder, images)
    if originals.decoder is None:
        pytest.skip(DECODER_MISSING)
    assert_same_outputs(originals.decoder, weights.detail_decoder, latent)


def test_emoca_plain_layout_without_detail_networks(tmp_path, originals, inputs):
    images, _ = inputs
    path = tmp_path / "emoca_coarse.pt"
    torch.save(
        {"E_flame": originals.coarse.network.state_dict(), "E_expression": originals.expression.state_dict()},
        path,
    )
    weights = load_emoca(path)
    assert weights.detail_encoder is None and weights.detail_decoder is None
    assert set(weights.reports) == {"E_flame", "E_expression"}
    assert_same_outputs(originals.expression, weights.expression_encoder, images)


def test_unreadable_files_give_one_line_errors(tmp_path):
    html = tmp_path / "deca_model.tar"
    html.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>log in</body></html>\n")
    for loader in (load_deca, load_emoca):
        with pytest.raises(CheckpointError) as error:
            loader(html)
        assert "HTML" in one_line(error, html)
    small = tmp_path / "small.tar"
    torch.save({"E_flame": {"layers.0.weight": torch.zeros(4096)}, "E_detail": {}}, small)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    with pytest.raises(CheckpointError) as error:
        load_deca(truncated)
    assert "truncated" in one_line(error, truncated)


def test_an_opengraphau_file_is_not_taken_for_deca_or_emoca(tmp_path):
    path = tmp_path / "OpenGprahAU-ResNet50_second_stage.pth"
    state = {
        "module.backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
        "module.head.main_sc": torch.zeros(27, 512),
    }
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as error:
        load_deca(path)
    assert "not a DECA checkpoint" in one_line(error, path) and "found: state_dict" in str(error.value)
    with pytest.raises(CheckpointError) as error:
        load_emoca(path)
    assert "unknown EMOCA checkpoint layout" in one_line(error, path)
    assert "top-level keys found: state_dict" in str(error.value)


def test_a_resnet18_e_flame_names_the_mismatching_keys(tmp_path):
    torch.manual_seed(2)
    path = tmp_path / "deca_resnet18.tar"
    torch.save(
        {
            "E_flame": ResNetEncoder(236, "resnet18").state_dict(),
            "E_detail": ResNetEncoder(128, "resnet18").state_dict(),
        },
        path,
    )
    with pytest.raises(CheckpointError) as error:
        load_deca(path)
    message = one_line(error, path)
    assert "[E_flame]" in message
    # ResNet-18 blocks have no third conv, and 3x3 convs where ResNet-50 has 1x1 ones.
    assert "missing: encoder.layer1.0.conv3.weight" in message
    assert "encoder.layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in message


def test_a_head_of_another_size_names_the_code_sizes(tmp_path, originals):
    state = dict(originals.coarse.network.state_dict())
    state["layers.2.weight"], state["layers.2.bias"] = torch.zeros(286, 1024), torch.zeros(286)
    path = tmp_path / "deca_exp100.tar"
    torch.save({"E_flame": state, "E_detail": originals.detail.state_dict()}, path)
    with pytest.raises(CheckpointError) as error:
        load_deca(path)
    message = one_line(error, path)
    assert "regresses 286 values, the model expects 236" in message
    assert "shape 100 + albedo 50 + expression 50 + pose 6 + camera 3 + light 27 = 236" in message


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker, control = tmp_path / "payload-ran", tmp_path / "control-ran"
    path = tmp_path / "deca_model.tar"
    torch.save({"E_flame": Payload(str(marker)), "E_detail": {}}, path)
    assert zipfile.is_zipfile(path)
    for loader in (load_deca, load_emoca):
        with pytest.raises(CheckpointError) as error:
            loader(path)
        assert "refused" in one_line(error, path)
    assert not marker.exists()
    # Control: the same kind of file does run its payload when unpickled without restrictions.
    live = tmp_path / "live.tar"
    torch.save({"E_flame": Payload(str(control))}, live)
    torch.load(live, weights_only=False)
    assert control.exists()


def test_lenient_loading_loads_matching_keys_and_reports_the_rest(tmp_path, originals, caplog):
    detail_state = dict(originals.detail.state_dict())
    removed = detail_state.pop("layers.2.bias")
    detail_state["extra.weight"] = torch.ones(3)
    path = tmp_path / "deca_model.tar"
    torch.save({"E_flame": originals.coarse.network.state_dict(), "E_detail": detail_state}, path)
    with pytest.raises(CheckpointError) as error:
        load_deca(path)
    message = one_line(error, path)
    assert "[E_detail]" in message and "layers.2.bias" in message and "extra.weight" in message
    with caplog.at_level(logging.WARNING, logger="aucgan.loaders.deca"):
        weights = load_deca(path, strict=False)
    report = weights.reports["E_detail"]
    assert report.missing == ("layers.2.bias",) and report.unexpected == ("extra.weight",)
    assert weights.reports["E_flame"].clean
    loaded = weights.detail_encoder.state_dict()
    assert torch.equal(loaded["layers.2.weight"], detail_state["layers.2.weight"])
    assert torch.equal(
        loaded["encoder.layer4.2.bn3.running_var"], detail_state["encoder.layer4.2.bn3.running_var"]
    )
    assert not torch.equal(loaded["layers.2.bias"], removed)  # left at its initial value, and reported
    assert "layers.2.bias" in caplog.text and "strict=False" in caplog.text


def test_emoca_without_expression_encoder_is_refused(tmp_path, originals):
    state = {f"deca.E_flame.{k}": v for k, v in originals.coarse.network.state_dict().items()}
    path = tmp_path / "deca_trained_with_emoca_code.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as error:
        load_emoca(path)
    assert "no E_expression" in one_line(error, path)

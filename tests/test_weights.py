"""Tests of aucgan's weights files: round trip, float16 storage, strict loading and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aucgan import __version__
from aucgan.loaders.common import CheckpointError
from aucgan.reconstruct import Reconstructor
from aucgan.weights import FORMAT, PARTS, read_weights, save_weights

PROVENANCE = "random weights, seed 0, built by the test suite"  # what conftest.random_weights writes


def _modules(reconstructor: Reconstructor) -> dict[str, torch.nn.Module]:
    return {"coarse": reconstructor.coarse, "detail": reconstructor.detail}


def _raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file, read without aucgan's reader."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_round_trip_keeps_states_config_and_provenance(random_reconstructor, random_weights):
    weights = read_weights(random_weights)

    assert weights.config == random_reconstructor.cfg
    assert weights.provenance == PROVENANCE
    assert weights.version == __version__
    assert set(weights.states) == set(PARTS)
    for part, module in _modules(random_reconstructor).items():
        state = module.state_dict()
        parameters = dict(module.named_parameters())
        assert set(weights.states[part]) == set(state)
        for name, original in state.items():
            stored = weights.states[part][name]
            if name in parameters and original.is_floating_point():
                assert stored.dtype == torch.float16, name
                assert torch.equal(stored, original.half()), name
            else:
                assert stored.dtype == original.dtype, name
                assert torch.equal(stored, original), name


def test_float16_file_is_about_half_the_float32_one(random_reconstructor, random_weights, tmp_path):
    full = save_weights(
        tmp_path / "w32.safetensors", _modules(random_reconstructor), random_reconstructor.cfg, half=False
    )
    parameter_bytes = buffer_bytes = 0
    for module in _modules(random_reconstructor).values():
        parameter_bytes += sum(p.numel() * p.element_size() for p in module.parameters())
        buffer_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
    header = 2_000_000  # the JSON header: names, shapes, offsets and the config
    half_size, full_size = random_weights.stat().st_size, full.stat().st_size

    assert parameter_bytes + buffer_bytes <= full_size <= parameter_bytes + buffer_bytes + header
    assert parameter_bytes / 2 + buffer_bytes <= half_size <= parameter_bytes / 2 + buffer_bytes + header
    assert 0.45 < half_size / full_size < 0.55
    tensors, _ = _raw(full)
    assert all(t.dtype != torch.float16 for t in tensors.values())


def test_loaded_reconstructor_matches_the_original(random_reconstructor, random_weights, images, tmp_path):
    original = random_reconstructor(images)
    from_half = Reconstructor.load(random_weights)(images)
    full = save_weights(
        tmp_path / "w32.safetensors", _modules(random_reconstructor), random_reconstructor.cfg, half=False
    )
    from_full = Reconstructor.load(full)(images)

    max_z = random_reconstructor.cfg.model.max_z
    scale = float(original.coarse.vertices.abs().max())
    # float16 parameters: a relative error of about 1e-3 per weight.
    torch.testing.assert_close(
        from_half.detail.uv_displacement, original.detail.uv_displacement, atol=0.02 * max_z, rtol=0
    )
    torch.testing.assert_close(
        from_half.detail.uv_detail_normals, original.detail.uv_detail_normals, atol=1e-2, rtol=0
    )
    torch.testing.assert_close(from_half.coarse.vertices, original.coarse.vertices, atol=1e-3 * scale, rtol=0)
    torch.testing.assert_close(from_half.au.scores, original.au.scores, atol=1e-2, rtol=0)
    # float32 parameters: the same weights, so the same outputs to float32 rounding. Not bit for bit: these
    # are other module instances, and on some CPUs (AVX-512 FP16 ones) PyTorch's convolutions pick another
    # oneDNN kernel for a module whose parameters need no gradients, summing in another order (~3e-6 of
    # max_z on the displacement, measured; a wrong or skipped weight moves it by orders of magnitude more).
    torch.testing.assert_close(
        from_full.detail.uv_displacement, original.detail.uv_displacement, rtol=1e-5, atol=1e-5 * max_z
    )
    torch.testing.assert_close(
        from_full.coarse.vertices, original.coarse.vertices, rtol=1e-5, atol=1e-6 * scale
    )
    torch.testing.assert_close(from_full.au.scores, original.au.scores, rtol=1e-5, atol=1e-6)


def _edited_copy(source: Path, target: Path, drop: str | None = None, add: str | None = None) -> Path:
    tensors, metadata = _raw(source)
    if drop is not None:
        del tensors[drop]
    if add is not None:
        tensors[add] = torch.zeros(3)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_load_refuses_a_missing_key_by_name(random_weights, tmp_path):
    tensors, _ = _raw(random_weights)
    missing = sorted(key for key in tensors if key.startswith("coarse.encoder."))[-1]
    path = _edited_copy(random_weights, tmp_path / "missing.safetensors", drop=missing)

    with pytest.raises(CheckpointError) as error:
        Reconstructor.load(path)
    _assert_one_line_naming(error, path)
    assert missing.removeprefix("coarse.") in str(error.value)
    assert "missing" in str(error.value)


def test_load_refuses_an_unexpected_key_by_name(random_weights, tmp_path):
    extra = "detail.decoder.surplus_gain"
    path = _edited_copy(random_weights, tmp_path / "extra.safetensors", add=extra)

    with pytest.raises(CheckpointError) as error:
        Reconstructor.load(path)
    _assert_one_line_naming(error, path)
    assert "surplus_gain" in str(error.value)
    assert "unexpected" in str(error.value)


def test_read_refuses_tensors_outside_the_parts(random_weights, tmp_path):
    path = _edited_copy(random_weights, tmp_path / "stray.safetensors", add="discriminator.weight")

    with pytest.raises(CheckpointError) as error:
        read_weights(path)
    _assert_one_line_naming(error, path)
    assert "discriminator.weight" in str(error.value)


def test_load_refuses_a_misshapen_tensor_by_name(random_weights, tmp_path):
    tensors, metadata = _raw(random_weights)
    name = next(key for key in sorted(tensors) if key.startswith("detail.") and tensors[key].ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1], dtype=torch.float16)
    path = tmp_path / "misshapen.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(CheckpointError) as error:
        Reconstructor.load(path)
    _assert_one_line_naming(error, path)
    assert name.removeprefix("detail.") in str(error.value)


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("truncated", "not a readable safetensors"),
        ("html", "an HTML page, not a weights file"),
        ("empty", "an empty file; give one written by `aucgan pack`"),
        ("foreign safetensors", "not aucgan weights"),
        ("bad config", "stored config does not load"),
        ("missing file", "no such weights file"),
    ],
)
def test_unusable_files_raise_one_line(random_weights, tmp_path, kind, says):
    path = tmp_path / "bad.safetensors"
    if kind == "truncated":
        data = random_weights.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "html":
        path.write_text("<!DOCTYPE html>\n<html><body>\n<h1>404 Not Found</h1>\n</body></html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign safetensors":
        save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    elif kind == "bad config":
        save_file({"coarse.x": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "config": "model: [1"})

    with pytest.raises(CheckpointError) as error:
        read_weights(path)
    _assert_one_line_naming(error, path)
    assert says in str(error.value)
    with pytest.raises(CheckpointError, match=says):
        Reconstructor.load(path)


def test_save_refuses_other_parts(random_reconstructor, tmp_path):
    with pytest.raises(ValueError, match="coarse"):
        save_weights(
            tmp_path / "w.safetensors", {"coarse": random_reconstructor.coarse}, random_reconstructor.cfg
        )
    assert not any(tmp_path.iterdir())

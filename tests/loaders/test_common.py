import os
import zipfile

import pytest
import torch

from aucgan.loaders.common import CheckpointError, compare_keys, load_strict, read_checkpoint, strip_prefix
from aucgan.train.checkpointing import AtomicCheckpointIO


class Payload:
    """Unpickling this would create a marker file; a safe loader must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def saved(tmp_path, obj, name="ckpt.tar"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_reads_plain_state_dicts(tmp_path):
    state = torch.nn.Linear(3, 2).state_dict()
    data = read_checkpoint(saved(tmp_path, {"net": state}))
    assert torch.equal(data["net"]["weight"], state["weight"])


def test_bad_files_give_one_line_errors(tmp_path):
    assert "no such file" in one_line_error(tmp_path / "missing.tar")
    (tmp_path / "empty.tar").write_bytes(b"")
    assert "empty" in one_line_error(tmp_path / "empty.tar")
    (tmp_path / "page.tar").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    assert "HTML" in one_line_error(tmp_path / "page.tar")
    good = saved(tmp_path, {"w": torch.zeros(1000)}).read_bytes()
    (tmp_path / "cut.tar").write_bytes(good[: len(good) // 2])
    assert "truncated" in one_line_error(tmp_path / "cut.tar")
    (tmp_path / "text.tar").write_text("weights\n")
    assert "not a PyTorch checkpoint" in one_line_error(tmp_path / "text.tar")
    assert "dict" in one_line_error(saved(tmp_path, [torch.zeros(1)], "list.tar"))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = saved(tmp_path, {"state_dict": Payload(str(marker))})
    assert zipfile.is_zipfile(path)
    assert "refused" in one_line_error(path)
    assert not marker.exists()


def test_load_strict_names_every_problem():
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    target = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5))
    state = {**source.state_dict(), "extra.weight": torch.zeros(1)}
    del state["0.bias"]
    report = compare_keys(target, state)
    assert report.missing == ("0.bias",) and report.unexpected == ("extra.weight",)
    assert [k for k, _, _ in report.mismatched] == ["2.weight", "2.bias"]
    expected = r"file.tar \[net\]: does not fit Sequential: .*1 missing: 0.bias"
    with pytest.raises(CheckpointError, match=expected):
        load_strict(target, state, "file.tar [net]")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_strict(target, state, "file.tar [net]", strict=False)


def test_load_strict_lenient_mode_loads_what_matches():
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    state = {"weight": source.weight.detach().clone(), "unused": torch.ones(1)}
    with pytest.raises(CheckpointError, match="pass strict=False"):
        load_strict(target, state, "f")
    report = load_strict(target, state, "f", strict=False)
    assert report.missing == ("bias",) and report.unexpected == ("unused",)
    assert torch.equal(target.weight, source.weight)


def test_strip_prefix():
    assert strip_prefix({"module.a": 1, "module.b.c": 2, "other": 3}, "module.") == {"a": 1, "b.c": 2}


def test_loaders_are_public_at_the_package_top_level():
    import aucgan
    from aucgan.loaders.deca import load_deca, load_emoca
    from aucgan.loaders.opengraphau import load_au_net

    assert (aucgan.load_deca, aucgan.load_emoca, aucgan.load_au_net) == (load_deca, load_emoca, load_au_net)
    with pytest.raises(AttributeError, match="no attribute 'load_smplx'"):
        aucgan.load_smplx  # noqa: B018


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """A file whose storages are tagged ``cuda:0`` (as ``torch.save`` writes them on a GPU) reads on the CPU:
    every load maps to the CPU, for model checkpoints and for resumed training runs alike."""
    path = tmp_path / "gpu.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"state_dict": {"w": torch.arange(3.0)}}, path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    for data in (read_checkpoint(path), AtomicCheckpointIO().load_checkpoint(path)):
        weight = data["state_dict"]["w"]
        assert weight.device.type == "cpu" and torch.equal(weight, torch.arange(3.0))

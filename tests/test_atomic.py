"""Tests of the atomic writers (:mod:`aucgan.atomic`) and of checkpoint saving killed at random points.

Each writer replaces the destination whole or leaves it alone (errors remove the temporary file). A process
(a fresh interpreter each time) that saves checkpoints in a loop with ``atomic_torch_save`` is killed with
SIGKILL at random moments, 24 times: the last checkpoint always loads and holds one whole save. The same
harness with a plain ``torch.save`` to the destination tears the file, which shows it can catch a
non-atomic writer. (Fresh interpreters, not ``os.fork``: a forked child of a process whose OpenMP threads
have run can hang in its first parallel torch call.)
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aucgan.atomic import atomic_open, atomic_path, atomic_write_bytes

PAYLOAD = 4_000_000
"""float32 elements per checkpoint (16 MB): a save takes long enough for kills to land inside it."""


def test_atomic_open_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_open(path, binary=False) as handle:
        handle.write("first\n")
    assert path.read_text() == "first\n"
    with atomic_open(path) as handle:
        handle.write(b"second")
        assert path.read_text() == "first\n"  # not visible before the block ends
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_keeps_the_suffix_for_writers_that_add_one(tmp_path):
    path = tmp_path / "arrays.npz"
    with atomic_path(path) as temporary:
        assert temporary.suffix == ".npz" and temporary.parent == tmp_path and temporary.name.startswith(".")
        np.savez_compressed(temporary, a=np.arange(3))
    with np.load(path) as data:
        assert data["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


SAVER = r"""
import os, sys
import torch
from aucgan.atomic import atomic_torch_save

torch.set_num_threads(1)
path, kind = sys.argv[1], sys.argv[2]
payloads = [torch.full((PAYLOAD,), float(parity)) for parity in (0, 1)]
counter = 0
while True:
    counter += 1
    state = {"counter": counter, "payload": payloads[counter % 2]}
    if kind == "atomic":
        atomic_torch_save(state, path)
    else:
        torch.save(state, path)
    if counter == 1:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
""".replace("PAYLOAD", str(PAYLOAD))


def kill_during_saves(kind: str, path: Path, trials: int, seed: int) -> list[str]:
    """Kill a process that saves checkpoints in a loop (``kind``: ``atomic`` or ``plain`` ``torch.save``)
    at a random moment, ``trials`` times, each a fresh interpreter; the problems found on reading back."""
    rng = random.Random(seed)
    problems = []
    for trial in range(trials):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path), kind],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        try:
            state = torch.load(path, weights_only=True)
        except Exception as error:  # any failure to load is what the harness counts
            problems.append(f"trial {trial}: {type(error).__name__}: {error}")
            continue
        if not (state["payload"] == state["counter"] % 2).all():
            problems.append(f"trial {trial}: checkpoint {state['counter']} mixes two saves")
    return problems


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_checkpoint_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    assert kill_during_saves("atomic", path, trials=24, seed=0) == []
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert all(name.startswith(".last.ckpt.") and name.endswith(".tmp.ckpt") for name in leftovers)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_kill_harness_catches_a_plain_save(tmp_path):
    problems = kill_during_saves("plain", tmp_path / "last.ckpt", trials=8, seed=1)
    assert problems, "a plain torch.save was never caught mid-write; the harness would miss torn files"


def test_atomic_save_npz_writes_the_arrays_or_leaves_the_old_file(tmp_path, monkeypatch):
    from aucgan.atomic import atomic_save_npz

    path = tmp_path / "codes.npz"
    assert atomic_save_npz(path, {"a": np.arange(3), "b": np.ones((2, 2), np.float16)}) == path
    with np.load(path) as data:
        np.testing.assert_array_equal(data["a"], np.arange(3))
        assert data["b"].dtype == np.float16
    before = path.read_bytes()

    def torn(handle, **arrays):
        handle.write(b"PK half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", torn)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_npz(path, {"a": np.zeros(5)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npz"]

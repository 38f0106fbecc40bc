"""Tests of the atomic writers (:mod:`aucgan.atomic`) and of checkpoint saving killed at random points.

Each writer replaces the destination whole or leaves it alone (errors remove the temporary file). A forked
process that saves checkpoints in a loop is killed with SIGKILL at random moments, 24 times: the last
checkpoint always loads and holds one whole save. The same harness with a plain ``torch.save`` to the
destination tears the file, which shows the harness can catch a non-atomic writer.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from aucgan.atomic import atomic_open, atomic_path, atomic_write_bytes
from aucgan.train.checkpointing import atomic_torch_save

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


def plain_torch_save(obj: object, path: Path) -> None:
    torch.save(obj, path)


def save_forever(save: Callable[[object, Path], None], path: Path, ready: int) -> None:
    """In a forked child: save checkpoints numbered 1, 2, … in a loop; signal after the first one."""
    try:
        counter = 0
        while True:
            counter += 1
            save({"counter": counter, "payload": torch.full((PAYLOAD,), float(counter))}, path)
            if counter == 1:
                os.write(ready, b"1")
    finally:
        os._exit(0)


def kill_during_saves(save: Callable[[object, Path], None], path: Path, trials: int, seed: int) -> list[str]:
    """Kill a saving child at a random moment ``trials`` times; the problems found on reading back."""
    rng = random.Random(seed)
    problems = []
    for trial in range(trials):
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            save_forever(save, path, write)
        os.close(write)
        assert os.read(read, 1) == b"1"
        os.close(read)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        try:
            state = torch.load(path, weights_only=True)
        except Exception as error:  # any failure to load is what the harness counts
            problems.append(f"trial {trial}: {type(error).__name__}: {error}")
            continue
        if not (state["payload"] == state["counter"]).all():
            problems.append(f"trial {trial}: checkpoint {state['counter']} mixes two saves")
    return problems


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_checkpoint_saves_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    assert kill_during_saves(atomic_torch_save, path, trials=24, seed=0) == []
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert all(name.startswith(".last.ckpt.") and name.endswith(".tmp.ckpt") for name in leftovers)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_kill_harness_catches_a_plain_save(tmp_path):
    problems = kill_during_saves(plain_torch_save, tmp_path / "last.ckpt", trials=8, seed=1)
    assert problems, "a plain torch.save was never caught mid-write; the harness would miss torn files"

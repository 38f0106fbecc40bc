"""Tests of checkpoint writing and RNG state (:mod:`aucgan.train.checkpointing`).

A save replaces the old file whole or not at all and leaves no temporary file, even when ``torch.save``
fails half way; the captured RNG state makes Python, NumPy and torch repeat their draws, and travels in a
checkpoint that loads with ``weights_only=True``.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aucgan.train.checkpointing import (
    LAST,
    AtomicCheckpointIO,
    PeriodicCheckpoint,
    atomic_torch_save,
    rng_state,
    set_rng_state,
)


def draws() -> tuple:
    """A few draws of each global generator, Gaussian ones included (they carry cached state)."""
    return (
        [random.random() for _ in range(3)],
        random.gauss(0.0, 1.0),
        np.random.rand(3).tolist(),
        np.random.standard_normal(3).tolist(),
        torch.rand(4).tolist(),
        torch.randn(3).tolist(),
    )


def test_save_writes_the_file_and_no_temporary(tmp_path):
    path = tmp_path / "deep" / "er" / "model.ckpt"
    payload = {"weights": torch.arange(6.0).view(2, 3), "steps": 3}
    atomic_torch_save(payload, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt"]
    loaded = torch.load(path, weights_only=True)
    assert loaded["steps"] == 3
    assert torch.equal(loaded["weights"], payload["weights"])


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.ckpt"
    atomic_torch_save({"value": torch.zeros(2)}, path)
    atomic_torch_save({"value": torch.ones(5)}, path)
    assert list(tmp_path.iterdir()) == [path]
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(5))


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"value": torch.arange(4)}, path)
    before = path.read_bytes()

    def torn_save(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(type(error)):
        atomic_torch_save({"value": torch.arange(100)}, path)
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == before


def test_rng_state_round_trip_repeats_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0.0, 1.0)
    np.random.standard_normal()
    state = rng_state()
    first = draws()
    draws()
    set_rng_state(state)
    assert draws() == first


def test_rng_state_does_not_move_the_generators():
    random.seed(4)
    np.random.seed(5)
    torch.manual_seed(6)
    expected = draws()
    random.seed(4)
    np.random.seed(5)
    torch.manual_seed(6)
    rng_state()
    assert draws() == expected


def test_checkpoint_with_rng_state_loads_weights_only(tmp_path):
    torch.manual_seed(7)
    np.random.standard_normal()
    checkpoint = {
        "state_dict": {"layer.weight": torch.randn(2, 2)},
        "aucgan": {"steps_done": 5, "rng": rng_state(), "config": {"optim": {"betas": (0.5, 0.999)}}},
    }
    first = draws()
    path = tmp_path / LAST
    atomic_torch_save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["aucgan"]["steps_done"] == 5
    assert loaded["aucgan"]["config"] == {"optim": {"betas": (0.5, 0.999)}}
    draws()
    set_rng_state(loaded["aucgan"]["rng"])
    assert draws() == first


class Opaque:
    """Not a plain container: loading it needs pickle code."""


def test_checkpoint_io_saves_atomically_and_loads_weights_only(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "step.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["step.ckpt"]
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, path, storage_options={"x": 1})
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"object": Opaque()}, unsafe)
    with pytest.raises(pickle.UnpicklingError, match=r"[Ww]eights only"):
        io.load_checkpoint(unsafe)


class RecordingTrainer:
    def __init__(self) -> None:
        self.saved: list[str] = []

    def save_checkpoint(self, path: Path) -> None:
        self.saved.append(Path(path).name)


@pytest.mark.parametrize(("steps", "every"), [(7, 3), (6, 3), (2, 5)])
def test_periodic_checkpoint_schedule(tmp_path, steps, every):
    trainer, module = RecordingTrainer(), SimpleNamespace(steps_done=0)
    callback = PeriodicCheckpoint(tmp_path, every)
    expected: list[str] = []
    for step in range(1, steps + 1):
        module.steps_done = step
        callback.on_train_batch_end(trainer, module, None, None, step - 1)
        if step % every == 0:
            expected += [f"step-{step:07d}.ckpt", LAST]
    callback.on_train_end(trainer, module)
    if steps % every:
        expected.append(LAST)
    assert trainer.saved == expected


@pytest.mark.parametrize(("stop", "every"), [(4, 3), (6, 3)])
def test_periodic_checkpoint_saves_last_at_the_stop_step_and_not_after_training(tmp_path, stop, every):
    """A run ended early by ``trainer.stop_after`` keeps ``last.ckpt`` from the end of its last step (a
    checkpoint saved after training ends would not resume)."""
    trainer, module = RecordingTrainer(), SimpleNamespace(steps_done=0)
    callback = PeriodicCheckpoint(tmp_path, every, stop_at=stop)
    for step in range(1, stop + 1):
        module.steps_done = step
        callback.on_train_batch_end(trainer, module, None, None, step - 1)
    saved_in_steps = list(trainer.saved)
    callback.on_train_end(trainer, module)
    assert trainer.saved == saved_in_steps
    assert saved_in_steps[-1] == LAST
    assert saved_in_steps.count(f"step-{stop:07d}.ckpt") == (stop % every == 0)


def test_stop_on_signal_notes_the_first_signal_interrupts_on_the_second_and_restores_the_handlers() -> None:
    import signal

    from aucgan.train.checkpointing import STOP_SIGNALS, StopOnSignal

    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    stop = StopOnSignal("unused", total_steps=10)
    with pytest.raises(KeyboardInterrupt), stop.listening():
        assert all(signal.getsignal(number) == stop._handle for number in STOP_SIGNALS)
        stop._handle(signal.SIGTERM, None)
        assert stop.received == signal.SIGTERM
        stop._handle(signal.SIGINT, None)
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before

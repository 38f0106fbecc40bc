"""Checkpoints: atomic writes, random-number-generator state, and what a run's ``last.ckpt`` holds.

A checkpoint is a ``torch.save`` dict of plain containers and tensors (Lightning's state dicts of the
modules, optimisers, schedulers and loops, plus ``"aucgan"``: the steps done, the RNG states and the
resolved config as a plain dict), so it loads with ``torch.load(weights_only=True)``: no pickle code runs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aucgan.atomic import atomic_torch_save

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic saves (:func:`atomic_torch_save`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CPU and, if present, CUDA)."""
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in _numpy_state().items()},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys, "position": position, "has_gauss": has_gauss, "cached": cached}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["name"], np.asarray(numpy["keys"], dtype=np.uint32), numpy["position"], numpy["has_gauss"],
         numpy["cached"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PeriodicCheckpoint(L.Callback):
    """Save ``step-NNNNNNN.ckpt`` and refresh ``last.ckpt`` every ``every`` training steps and at the end.

    Steps are training batches (not optimiser steps: the detail GAN makes two optimiser steps per batch).
    """

    def __init__(self, directory: str | os.PathLike[str], every: int) -> None:
        self.directory = Path(directory)
        self.every = every

    def _save(self, trainer: L.Trainer, steps: int, periodic: bool) -> None:
        if periodic:
            trainer.save_checkpoint(self.directory / f"step-{steps:07d}.ckpt")
        trainer.save_checkpoint(self.directory / LAST)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        steps = pl_module.steps_done
        if steps % self.every == 0:
            self._save(trainer, steps, periodic=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.steps_done % self.every != 0:
            self._save(trainer, pl_module.steps_done, periodic=False)


__all__ = [
    "LAST",
    "AtomicCheckpointIO",
    "CheckpointIO",
    "PeriodicCheckpoint",
    "atomic_torch_save",
    "rng_state",
    "set_rng_state",
]

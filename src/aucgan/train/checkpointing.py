"""Checkpoints: atomic writes, random-number-generator state, and what a run's ``last.ckpt`` holds.

A checkpoint is a ``torch.save`` dict of plain containers and tensors (Lightning's state dicts of the
modules, optimisers, schedulers and loops, plus ``"aucgan"``: the steps done, the RNG states and the
resolved config as a plain dict), so it loads with ``torch.load(weights_only=True)``: no pickle code runs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aucgan.atomic import atomic_torch_save
from aucgan.train import TrainingInterrupted, first_process

log = logging.getLogger(__name__)
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
    A run that ``stop_at`` ends early (``trainer.stop_after``) gets ``last.ckpt`` at the end of that step,
    as a periodic one: saved once training has ended, Lightning would record its one pass as finished and a
    resumed run would stop at once.
    """

    def __init__(self, directory: str | os.PathLike[str], every: int, stop_at: int = 0) -> None:
        self.directory = Path(directory)
        self.every = every
        self.stop_at = stop_at

    def _save(self, trainer: L.Trainer, steps: int, periodic: bool) -> None:
        if periodic:
            trainer.save_checkpoint(self.directory / f"step-{steps:07d}.ckpt")
        trainer.save_checkpoint(self.directory / LAST)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        steps = pl_module.steps_done
        if steps % self.every == 0 or steps == self.stop_at:
            self._save(trainer, steps, periodic=steps % self.every == 0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = pl_module.steps_done
        if steps % self.every != 0 and steps != self.stop_at:
            self._save(trainer, steps, periodic=False)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals :class:`StopOnSignal` turns into a clean stop: Ctrl-C, and what schedulers, ``timeout`` and
``kill`` send."""


class StopOnSignal(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM ends a run cleanly instead of losing the steps since the last checkpoint.

    While :meth:`listening` (and, for SIGTERM, in place of Lightning's own handler from the start of
    training), the first signal is only noted, with one line on stderr. At the end of the next training step
    (a validation under way finishes first) ``last.ckpt`` is saved at that step, exactly as a periodic
    checkpoint would be (``resume=true`` continues it exactly); the run then ends with
    :class:`TrainingInterrupted` and one line, before the next step or validation starts, so the step's
    logged metrics are kept. A second signal interrupts at once (Lightning's own shutdown): the last
    checkpoint saved stays. Under DDP a signal on any rank stops every rank after the same step.
    """

    def __init__(self, directory: str | os.PathLike[str], total_steps: int) -> None:
        self.directory = Path(directory)
        self.total_steps = total_steps
        self.received: int | None = None
        self._pending: TrainingInterrupted | None = None
        self._listening = False

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Handle :data:`STOP_SIGNALS` inside the block (only the main thread can; elsewhere the block runs
        without), restoring the handlers found on entry after it, however it ends."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)
        self._listening = True
        try:
            yield
        finally:
            self._listening = False
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number
        if first_process():
            log.warning(
                "%s: stopping after the training step under way, with a checkpoint at it (again to stop at "
                "once, without one)",
                signal.Signals(number).name,
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take SIGTERM back from the handler Lightning installed when ``fit`` began (it would stop the run
        at its own points, without a checkpoint); a SIGTERM it already noted counts as received."""
        if not self._listening:
            return
        connector = getattr(trainer, "_signal_connector", None)
        if getattr(connector, "received_sigterm", False):
            connector.received_sigterm = False
            if self.received is None:
                self.received = signal.SIGTERM
        signal.signal(signal.SIGTERM, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._pending is not None:
            return
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        steps = pl_module.steps_done
        last = self.directory / LAST
        trainer.save_checkpoint(last)
        name = signal.Signals(self.received).name if self.received is not None else "a signal to another rank"
        if steps >= self.total_steps:
            message = (
                f"stopped by {name} after the last step ({steps}); {last} holds the trained run (its closing "
                "validation did not run)"
            )
        else:
            message = (
                f"stopped by {name} after step {steps} of {self.total_steps}; {last} holds that step: "
                "continue with the same command and resume=true"
            )
        self._pending = TrainingInterrupted(message, self.received or signal.SIGTERM)

    def _stop_if_pending(self) -> None:
        if self._pending is not None:
            raise self._pending

    def on_train_batch_start(self, *args: Any) -> None:
        self._stop_if_pending()

    def on_validation_start(self, *args: Any) -> None:
        self._stop_if_pending()

    def on_train_end(self, *args: Any) -> None:
        self._stop_if_pending()


__all__ = [
    "LAST",
    "STOP_SIGNALS",
    "AtomicCheckpointIO",
    "CheckpointIO",
    "PeriodicCheckpoint",
    "StopOnSignal",
    "atomic_torch_save",
    "rng_state",
    "set_rng_state",
]

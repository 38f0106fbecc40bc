"""What every stage's LightningModule shares: steps done, per-step seeding, RNG state, optimisers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import nn

from aucgan.config import Config
from aucgan.data.synthetic import stable_seed
from aucgan.train.checkpointing import rng_state, set_rng_state


class StageModule(L.LightningModule):
    """Base of the three training modules.

    * ``steps_done``: training batches finished; saved in checkpoints; the data module resumes from it.
    * Every random draw inside a training step (augmentation, dropout) comes from the global generators
      seeded by :meth:`step_randomness` with ``(seed, step, rank)``: a step's randomness does not depend
      on what ran before it, so a resumed run repeats the uninterrupted run exactly. The global RNG state is
      also saved and restored.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.steps_done = 0
        self._pending_rng: dict[str, Any] | None = None

    @contextmanager
    def step_randomness(self, purpose: str = "train") -> Iterator[None]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(
                stable_seed("aucgan-step", purpose, self.cfg.seed, self.steps_done, self.global_rank)
            )
            yield

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["aucgan"] = {
            "steps_done": self.steps_done,
            "rng": rng_state(),
            "config": dataclasses.asdict(self.cfg),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("aucgan", {})
        self.steps_done = int(state.get("steps_done", 0))
        self._pending_rng = state.get("rng")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            datamodule.start_step = self.steps_done

    def on_train_start(self) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def finish_step(self) -> None:
        self.steps_done += 1

    def optimizer(self, parameters: Iterable[nn.Parameter], lr: float) -> dict[str, Any]:
        """Adam(W) on ``parameters`` with the configured schedule, stepped every training step."""
        optim = self.cfg.optim
        optimizer = torch.optim.AdamW(parameters, lr=lr, betas=optim.betas, weight_decay=optim.weight_decay)
        total, warmup, cosine = self.cfg.trainer.steps, optim.warmup_steps, optim.schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

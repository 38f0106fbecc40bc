"""What every stage's LightningModule shares: steps done, per-step seeding, RNG state, optimisers, and
the guard that skips a step whose loss or gradients are not finite."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from aucgan.config import Config
from aucgan.data.synthetic import stable_seed
from aucgan.train import TrainingStopped
from aucgan.train.checkpointing import rng_state, set_rng_state


class StageModule(L.LightningModule):
    """Base of the three training modules (manual optimisation; every optimiser step goes through
    :meth:`optimise`).

    * ``steps_done``: training batches finished; saved in checkpoints; the data module resumes from it.
    * Every random draw inside a training step (augmentation, dropout) comes from the global generators
      seeded by :meth:`step_randomness` with ``(seed, step, rank)``: a step's randomness does not depend
      on what ran before it, so a resumed run repeats the uninterrupted run exactly. The global RNG state is
      also saved and restored.
    * Non-finite guard: an optimiser step whose losses or gradients hold NaN/inf is not applied;
      ``bad_steps`` counts the training steps that had one (logged as ``train/bad_steps``), and
      ``trainer.max_bad_steps`` of them in a row raise :class:`TrainingStopped`. Under DDP every rank
      skips together (the verdict is all-reduced), so parameters never diverge between ranks.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.steps_done = 0
        self.bad_steps = 0
        self.bad_in_row = 0
        self._bad_now: list[str] = []
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
            "bad_steps": self.bad_steps,
            "rng": rng_state(),
            "config": dataclasses.asdict(self.cfg),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("aucgan", {})
        self.steps_done = int(state.get("steps_done", 0))
        self.bad_steps = int(state.get("bad_steps", 0))
        self._pending_rng = state.get("rng")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            datamodule.start_step = self.steps_done

    def on_train_start(self) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def optimise(self, optimizer: Any, losses: dict[str, torch.Tensor], name: str = "") -> bool:
        """Zero the gradients, back-propagate the sum of ``losses`` and step ``optimizer`` — unless a loss
        or a gradient is NaN/inf, in which case the gradients are dropped and this optimiser's update is not
        applied. ``name`` (``"generator"``, ``"discriminator"``) prefixes what is reported. Returns whether
        the step was applied."""
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(total)
        # Every check stays on the device; one host sync (bad.item()) per optimiser step.
        loss_finite = [torch.isfinite(value.detach()).all() for value in losses.values()]
        groups = getattr(optimizer, "optimizer", optimizer).param_groups
        gradients = [p.grad for group in groups for p in group["params"] if p.grad is not None]
        gradients_finite = torch.stack([g.isfinite().all() for g in gradients]).all() if gradients else None
        flags = [*loss_finite, *([] if gradients_finite is None else [gradients_finite])]
        bad = (~torch.stack([f.to(self.device) for f in flags])).any().float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            problems = [key for key, finite in zip(losses, loss_finite, strict=True) if not finite]
            if gradients_finite is not None and not gradients_finite:
                problems.append("gradients")
            optimizer.zero_grad(set_to_none=True)
            prefix = f"{name} " if name else ""
            self._bad_now.extend(
                f"{prefix}{p}" for p in problems or ["another process's losses or gradients"]
            )
            return False
        optimizer.step()
        return True

    def finish_step(self) -> None:
        """Close a training step: count it, and count (log, and if too many in a row stop on) a bad one."""
        self.steps_done += 1
        if self._bad_now:
            self.bad_steps += 1
            self.bad_in_row += 1
            problems, self._bad_now = sorted(set(self._bad_now)), []
            limit = self.cfg.trainer.max_bad_steps
            if self.global_rank == 0:
                rank_zero_warn(
                    f"step {self.steps_done}: non-finite {', '.join(problems)}; step skipped "
                    f"({self.bad_in_row} in a row, {self.bad_steps} in all, stop at {limit} in a row)"
                )
            if self.bad_in_row >= limit:
                raise TrainingStopped(
                    f"stopped at step {self.steps_done}: {self.bad_in_row} steps in a row had non-finite "
                    f"{', '.join(problems)} (those updates were not applied; the last checkpoint holds the "
                    "last good weights); check the data, or lower optim.lr (optim.lr_discriminator for the "
                    "discriminator) in a new run (trainer.out_dir=NEW): resume=true would repeat these steps"
                )
        else:
            self.bad_in_row = 0
        if self._trainer is not None:
            self.log("train/bad_steps", float(self.bad_steps))

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

"""Callbacks: image grids of a stage's visuals every N steps (PNG + TensorBoard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from aucgan.export import write_image

GRID_ROWS = 4


def image_grid(columns: list[torch.Tensor], rows: int = GRID_ROWS) -> torch.Tensor:
    """``(3, rows * H, len(columns) * W)``: sample i in row i, one column per ``(B, 3, H, W)`` picture."""
    rows = min(rows, columns[0].shape[0])
    return torch.cat(
        [torch.cat([column[i].clamp(0, 1) for column in columns], dim=-1) for i in range(rows)], dim=-2
    )


class ImageGrid(L.Callback):
    """Every ``every`` training steps, the module's :meth:`visuals` of the current batch as a grid:
    ``DIR/images/step-NNNNNNN.png`` and a TensorBoard image (rank 0 only)."""

    def __init__(self, directory: str | Path, every: int) -> None:
        self.directory = Path(directory)
        self.every = every

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.every or pl_module.steps_done % self.every or not trainer.is_global_zero:
            return
        if not hasattr(pl_module, "visuals"):
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            grid = image_grid(pl_module.visuals(batch)).float().cpu()
        pl_module.train(was_training)
        write_image(self.directory / f"step-{pl_module.steps_done:07d}.png", grid)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("visuals", grid, pl_module.steps_done)


class StopAfter(L.Callback):
    """End the run after ``steps`` training steps (``trainer.stop_after``), before its schedule's end.

    Lightning validates at the step it stops on and then ends training; ``last.ckpt`` at that step is
    :class:`~aucgan.train.checkpointing.PeriodicCheckpoint`'s (its ``stop_at``), resumable like an
    interrupted run's.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.stopped_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.steps_done >= self.steps:
            self.stopped_at = pl_module.steps_done
            trainer.should_stop = True

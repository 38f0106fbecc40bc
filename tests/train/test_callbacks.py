"""Tests of the training callbacks (:mod:`aucgan.train.callbacks`): the image grid and its schedule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aucgan.train.callbacks import GRID_ROWS, ImageGrid, image_grid


@pytest.mark.parametrize(("batch", "n_columns", "rows"), [(6, 3, GRID_ROWS), (2, 5, GRID_ROWS), (3, 1, 2)])
def test_image_grid_shape_and_placement(batch, n_columns, rows):
    height, width = 5, 7
    generator = torch.Generator().manual_seed(batch)
    columns = [torch.rand(batch, 3, height, width, generator=generator) * 1.4 - 0.2 for _ in range(n_columns)]
    grid = image_grid(columns, rows)
    shown = min(rows, batch)
    assert grid.shape == (3, shown * height, n_columns * width)
    for i in range(shown):
        for j, column in enumerate(columns):
            tile = grid[:, i * height : (i + 1) * height, j * width : (j + 1) * width]
            assert torch.equal(tile, column[i].clamp(0, 1))
    assert grid.min() >= 0 and grid.max() <= 1


def test_image_grid_keeps_dtype():
    columns = [torch.rand(2, 3, 4, 4, dtype=torch.float64)]
    assert image_grid(columns).dtype == torch.float64


class Visuals(nn.Module):
    """A stage module stand-in: ``visuals`` of a batch, in eval mode only."""

    def __init__(self) -> None:
        super().__init__()
        self.steps_done = 0
        self.modes: list[bool] = []

    def visuals(self, batch: torch.Tensor) -> list[torch.Tensor]:
        self.modes.append(self.training)
        return [batch, 1 - batch]


def test_image_grid_callback_writes_every_n_steps(tmp_path):
    callback = ImageGrid(tmp_path / "images", every=3)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[])
    module = Visuals().train()
    batch = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for step in range(1, 8):
        module.steps_done = step
        callback.on_train_batch_end(trainer, module, None, batch, step - 1)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["step-0000003.png", "step-0000006.png"]
    assert module.modes == [False, False] and module.training
    written = np.asarray(Image.open(tmp_path / "images/step-0000003.png"))
    assert written.shape == (GRID_ROWS * 8, 2 * 8, 3)
    expected = image_grid([batch, 1 - batch]).permute(1, 2, 0).numpy() * 255
    assert np.abs(written.astype(np.float64) - expected).max() <= 1


def test_image_grid_callback_only_on_rank_zero(tmp_path):
    callback = ImageGrid(tmp_path / "images", every=1)
    module = Visuals()
    module.steps_done = 1
    callback.on_train_batch_end(SimpleNamespace(is_global_zero=False, loggers=[]), module, None, None, 0)
    assert not (tmp_path / "images").exists() and module.modes == []

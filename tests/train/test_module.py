"""Tests of what the three training modules share (:mod:`aucgan.train.module`).

The learning-rate schedule (linear warm-up, then cosine to 10 % at the last step, or constant), the
per-step randomness that does not depend on what ran before, and the steps and RNG state a checkpoint
carries. The non-finite guard: a toy stage (one linear layer, manual optimisation through
:meth:`StageModule.optimise`) is trained by a real Lightning trainer with NaN/inf planted in the loss or only
in the gradient at chosen steps: those steps change no parameter, are counted and logged, and too many in a
row stop the run with one line; under gloo DDP a NaN on one rank skips the step on both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from aucgan.config import Config, load_config, preset_path
from aucgan.train import TrainingStopped
from aucgan.train.checkpointing import atomic_torch_save
from aucgan.train.module import StageModule

TINY = preset_path("synthetic-tiny")


def module_for(*overrides: str) -> StageModule:
    return StageModule(load_config(Config, TINY, list(overrides)))


def lr_factors(module: StageModule, lr: float = 0.5) -> list[float]:
    """The learning rate of steps ``0 … steps`` (after ``steps`` scheduler steps) over ``lr``."""
    parameter = nn.Parameter(torch.zeros(3))
    built = module.optimizer([parameter], lr)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]
    assert schedule["interval"] == "step"
    factors = []
    for _ in range(module.cfg.trainer.steps):
        factors.append(optimizer.param_groups[0]["lr"] / lr)
        optimizer.step()
        schedule["scheduler"].step()
    factors.append(optimizer.param_groups[0]["lr"] / lr)
    return factors


def reference_factor(step: int, steps: int, warmup: int, cosine: bool) -> float:
    """Linear warm-up over ``warmup`` steps to 1, then half a cosine from 1 to 0.1 (or 1 throughout)."""
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


@pytest.mark.parametrize(("steps", "warmup"), [(20, 4), (10, 0), (9, 1)])
def test_warmup_then_cosine_to_a_tenth(steps, warmup):
    module = module_for(f"trainer.steps={steps}", f"optim.warmup_steps={warmup}", "optim.schedule=cosine")
    factors = lr_factors(module)
    expected = [reference_factor(s, steps, warmup, cosine=True) for s in range(steps + 1)]
    assert factors == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if warmup:
        assert factors[0] == pytest.approx(1 / warmup)
        assert np.diff(factors[:warmup]) == pytest.approx([1 / warmup] * (warmup - 1))
    assert factors[warmup] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    if (steps - warmup) % 2 == 0:
        assert factors[warmup + (steps - warmup) // 2] == pytest.approx(0.55)


@pytest.mark.parametrize("warmup", [0, 3])
def test_constant_schedule_is_constant_after_warmup(warmup):
    module = module_for("trainer.steps=8", f"optim.warmup_steps={warmup}", "optim.schedule=constant")
    factors = lr_factors(module)
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup:] == [1.0] * (9 - warmup)


def test_optimizer_is_adamw_with_configured_settings():
    module = module_for("optim.betas=[0.3,0.9]", "optim.weight_decay=0.01")
    optimizer = module.optimizer([nn.Parameter(torch.zeros(2))], 0.25)["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.3, 0.9)
    assert optimizer.defaults["weight_decay"] == 0.01
    assert optimizer.param_groups[0]["initial_lr"] == 0.25


def randomness_draws(module: StageModule, steps_done: int, purpose: str = "train") -> torch.Tensor:
    module.steps_done = steps_done
    with module.step_randomness(purpose):
        return torch.rand(6)


def test_step_randomness_is_a_function_of_the_step():
    module = module_for()
    torch.manual_seed(0)
    first = randomness_draws(module, 3)
    torch.rand(1000)
    torch.manual_seed(99)
    assert torch.equal(randomness_draws(module, 3), first)
    assert torch.equal(randomness_draws(module_for(), 3), first)
    assert not torch.equal(randomness_draws(module, 4), first)
    assert not torch.equal(randomness_draws(module, 3, "val"), first)
    assert not torch.equal(randomness_draws(module_for("seed=1"), 3), first)


def test_step_randomness_leaves_the_global_generator_alone():
    module = module_for()
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    randomness_draws(module, 7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(4), expected)


def test_checkpoint_hooks_carry_steps_rng_and_config(tmp_path):
    module = module_for()
    module.steps_done, module.bad_steps = 11, 2
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    expected = (torch.rand(3), random.random(), np.random.rand())
    path = tmp_path / "last.ckpt"
    atomic_torch_save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["aucgan"]["config"] == dataclasses.asdict(module.cfg)

    resumed = module_for()
    resumed.on_load_checkpoint(loaded)
    assert (resumed.steps_done, resumed.bad_steps) == (11, 2)
    torch.rand(10)
    random.random()
    np.random.rand()
    resumed.on_train_start()
    draws = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], expected[0])
    assert draws[1:] == expected[1:]


def test_finish_step_counts_steps():
    module = module_for()
    for _ in range(3):
        module.finish_step()
    assert module.steps_done == 3


# Non-finite guard ------------------------------------------------------------------------------------


class ToyStage(StageModule):
    """Fits a linear map; ``plant[step]`` is ``"loss-nan"``, ``"loss-inf"``, ``"grad-nan"`` or absent."""

    def __init__(self, cfg: Config, plant: dict[int, str]) -> None:
        super().__init__(cfg)
        self.layer = nn.Linear(3, 1)
        self.plant = plant
        self.history: list[torch.Tensor] = [self.snapshot()]
        self.applied: list[bool] = []

    def snapshot(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in self.layer.parameters()])

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = (self.layer(batch) - batch.sum(1, keepdim=True)).pow(2).mean()
        kind = self.plant.get(self.steps_done)
        if kind == "loss-nan":
            loss = loss * math.nan
        elif kind == "loss-inf":
            loss = loss + math.inf
        elif kind == "grad-nan":
            loss = loss + (self.layer.weight.sum() * 0).sqrt()  # value 0, gradient NaN
        self.applied.append(self.optimise(self.optimizers(), {"fit": loss}))
        self.finish_step()
        self.history.append(self.snapshot())

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.05)


def fit(module: ToyStage, steps: int, root: Path) -> L.Trainer:
    data = DataLoader(torch.randn(steps, 3, generator=torch.Generator().manual_seed(0)), batch_size=1)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=CSVLogger(root, name="logs"), log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    return trainer


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY)


def with_limit(cfg: Config, limit: int) -> Config:
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_bad_steps=limit))


@pytest.mark.parametrize("kind", ["loss-nan", "loss-inf", "grad-nan"])
def test_a_non_finite_step_changes_nothing_and_is_counted(cfg, tmp_path, kind):
    module = ToyStage(cfg, {2: kind, 5: kind})
    with pytest.warns(UserWarning, match=r"step 3: non-finite .*step skipped \(1 in a row, 1 in all"):
        fit(module, 8, tmp_path)
    assert module.applied == [True, True, False, True, True, False, True, True]
    for step, applied in enumerate(module.applied):
        moved = not torch.equal(module.history[step], module.history[step + 1])
        assert moved == applied, step
    assert all(torch.isfinite(h).all() for h in module.history)
    assert module.steps_done == 8 and module.bad_steps == 2 and module.bad_in_row == 0
    logged = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/bad_steps" in logged


def test_the_warning_names_what_was_not_finite(cfg, tmp_path):
    with pytest.warns(UserWarning, match=r"non-finite fit, gradients; step skipped"):
        fit(ToyStage(cfg, {0: "loss-nan"}), 2, tmp_path)
    with pytest.warns(UserWarning, match=r"non-finite gradients; step skipped"):
        fit(ToyStage(cfg, {0: "grad-nan"}), 2, tmp_path / "grad")


def test_too_many_bad_steps_in_a_row_stop_with_one_line(cfg, tmp_path):
    module = ToyStage(
        with_limit(cfg, 3), {1: "loss-nan", 2: "loss-nan", 4: "loss-nan", 5: "loss-nan", 6: "loss-nan"}
    )
    with pytest.warns(UserWarning), pytest.raises(TrainingStopped) as info:
        fit(module, 10, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("stopped at step 7: 3 steps in a row had non-finite")
    assert "resume=true" in message and "optim.lr" in message
    assert module.bad_steps == 5
    assert torch.equal(module.history[-1], module.history[4])
    assert torch.isfinite(module.history[-1]).all()


DDP_CHILD = r"""
import json, math, os, sys
import torch
from torch import nn
from aucgan.config import Config, load_config, preset_path
from aucgan.train.module import StageModule

torch.distributed.init_process_group("gloo", rank=int(sys.argv[1]), world_size=2)
module = StageModule(load_config(Config, sys.argv[2]))
module.layer = nn.Linear(3, 1)
torch.nn.init.constant_(module.layer.weight, 0.5)
module.manual_backward = lambda loss: loss.backward()  # no Trainer here: the guard's verdict is the subject
optimizer = torch.optim.SGD(module.layer.parameters(), lr=0.1)
loss = module.layer(torch.ones(1, 3)).sum()
if torch.distributed.get_rank() == 1:
    loss = loss * math.nan
applied = module.optimise(optimizer, {"fit": loss})
print(json.dumps({"applied": applied, "weight": module.layer.weight.tolist(), "bad": module._bad_now}))
torch.distributed.destroy_process_group()
"""


def test_under_ddp_one_rank_s_nan_skips_the_step_on_every_rank(tmp_path):
    environment = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_CHILD, str(rank), str(TINY)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["applied"] for r in results] == [False, False]
    assert results[0]["weight"] == results[1]["weight"] == [[0.5, 0.5, 0.5]]
    assert results[0]["bad"] == ["another process's losses or gradients"]
    assert results[1]["bad"] == ["fit", "gradients"]

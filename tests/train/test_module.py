"""Tests of what the three training modules share (:mod:`aucgan.train.module`).

The learning-rate schedule (linear warm-up, then cosine to 10 % at the last step, or constant), the
per-step randomness that does not depend on what ran before, and the steps and RNG state a checkpoint
carries.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aucgan.config import Config, load_config
from aucgan.train.checkpointing import atomic_torch_save
from aucgan.train.module import StageModule

TINY = Path(__file__).parents[2] / "configs/synthetic-tiny.yaml"


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
    module.steps_done = 11
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
    assert resumed.steps_done == 11
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

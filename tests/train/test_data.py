"""Tests of the training data order and loaders (:mod:`aucgan.train.data`).

The batch of a step is a pure function of ``(seed, step, rank)``: whole identity groups, the same batches
whatever was asked before, a resumed run continuing with the tail of the uninterrupted run, DDP ranks on
disjoint identities, and every group once per pass. The data module builds its loaders on that sampler,
for generated samples and for a dataset folder written by ``aucgan synth``. The AU net's balanced sampler
draws items by the rarity of their AUs, with the same guarantees per step.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from aucgan.build import world_parameters
from aucgan.config import Config, load_config, preset_path
from aucgan.data.shards import split_index, write_dataset
from aucgan.data.synthetic import drawn_expressions
from aucgan.train import data as train_data
from aucgan.train.data import (
    BalancedStepSampler,
    DataSettings,
    FaceDataModule,
    StepBatchSampler,
    au_balance_weights,
    train_au_occurrence,
)

TINY = preset_path("synthetic-tiny")
SHARD_TRAIN, SHARD_VAL = 8, 4


def groups_of(batch: list[int], group_size: int) -> list[int]:
    """The identity group of each run of ``group_size`` items; fails unless the batch is whole groups."""
    assert len(batch) % group_size == 0, batch
    groups = []
    for start in range(0, len(batch), group_size):
        chunk = batch[start : start + group_size]
        group = chunk[0] // group_size
        assert chunk == list(range(group * group_size, (group + 1) * group_size)), chunk
        groups.append(group)
    return groups


def samplers(n_groups: int, group_size: int, per_batch: int, world: int, **kwargs) -> list[StepBatchSampler]:
    return [
        StepBatchSampler(n_groups * group_size, group_size, per_batch, rank=rank, world_size=world, **kwargs)
        for rank in range(world)
    ]


# StepBatchSampler -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("group_size", "per_batch"), [(1, 3), (2, 2), (4, 3)])
def test_batches_are_whole_identity_groups(group_size, per_batch):
    n_groups = 12
    (sampler,) = samplers(n_groups, group_size, per_batch, 1, seed=3, steps=20)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    for batch in batches:
        assert len(batch) == per_batch * group_size
        groups = groups_of(batch, group_size)
        assert all(0 <= g < n_groups for g in groups)
        assert len(set(groups)) == per_batch


def test_items_outside_whole_groups_are_never_drawn():
    sampler = StepBatchSampler(n_items=11, group_size=3, groups_per_batch=1, seed=0, steps=12)
    drawn = {item for batch in sampler for item in batch}
    assert drawn == set(range(9))


def test_order_is_a_function_of_seed_and_step_only():
    kwargs = dict(n_items=40, group_size=2, groups_per_batch=2, seed=7, steps=30)
    forward = [StepBatchSampler(**kwargs).batch(step) for step in range(30)]
    shuffled_steps = torch.randperm(30, generator=torch.Generator().manual_seed(1)).tolist()
    reused = StepBatchSampler(**kwargs)
    backward = {step: reused.batch(step) for step in shuffled_steps}
    assert forward == [backward[step] for step in range(30)]
    assert list(StepBatchSampler(**kwargs)) == forward
    torch.manual_seed(123)
    assert list(StepBatchSampler(**kwargs)) == forward
    assert list(StepBatchSampler(**{**kwargs, "seed": 8})) != forward


def test_passes_are_reshuffled():
    (sampler,) = samplers(16, 2, 2, 1, seed=0, steps=16)
    first = [g for step in range(8) for g in groups_of(sampler.batch(step), 2)]
    second = [g for step in range(8, 16) for g in groups_of(sampler.batch(step), 2)]
    assert sorted(first) == sorted(second) == list(range(16))
    assert first != second


@pytest.mark.parametrize("start", [0, 1, 5, 11, 12])
def test_start_yields_the_tail_of_the_full_run(start):
    kwargs = dict(n_items=30, group_size=3, groups_per_batch=2, seed=4, steps=12)
    full = list(StepBatchSampler(**kwargs))
    resumed = StepBatchSampler(**kwargs, start=start)
    assert list(resumed) == full[start:]
    assert len(resumed) == 12


@pytest.mark.parametrize(("n_groups", "per_batch"), [(8, 2), (12, 3), (16, 1)])
def test_two_ranks_draw_disjoint_batches(n_groups, per_batch):
    rank0, rank1 = samplers(n_groups, 2, per_batch, 2, seed=2, steps=3 * n_groups)
    for step in range(3 * n_groups):
        a, b = set(rank0.batch(step)), set(rank1.batch(step))
        assert not a & b, (step, a, b)


@pytest.mark.parametrize(("n_groups", "per_batch", "world"), [(8, 2, 1), (8, 2, 2), (12, 3, 2), (6, 1, 3)])
def test_one_pass_draws_every_group_once(n_groups, per_batch, world):
    steps_per_pass = n_groups // (per_batch * world)
    ranks = samplers(n_groups, 2, per_batch, world, seed=9, steps=3 * steps_per_pass)
    for first_step in range(0, 3 * steps_per_pass, steps_per_pass):
        drawn = [
            g
            for sampler in ranks
            for step in range(first_step, first_step + steps_per_pass)
            for g in groups_of(sampler.batch(step), 2)
        ]
        assert sorted(drawn) == list(range(n_groups)), first_step


@pytest.mark.parametrize(("n_groups", "per_batch", "world"), [(5, 2, 1), (5, 2, 2), (7, 3, 1)])
def test_groups_within_a_step_are_distinct_for_any_group_count(n_groups, per_batch, world):
    for seed in range(3):
        ranks = samplers(n_groups, 2, per_batch, world, seed=seed, steps=40)
        for step in range(40):
            drawn = [g for sampler in ranks for g in groups_of(sampler.batch(step), 2)]
            assert len(set(drawn)) == len(drawn), (seed, step, drawn)


def test_too_few_groups_names_the_fix():
    with pytest.raises(ValueError, match=r"data\.n_train.*data\.identities_per_batch") as info:
        StepBatchSampler(n_items=7, group_size=2, groups_per_batch=4, seed=0, steps=1)
    assert "3 identity groups" in str(info.value)
    StepBatchSampler(n_items=8, group_size=2, groups_per_batch=2, seed=0, steps=1, world_size=2)
    with pytest.raises(ValueError, match=r"data\.n_train"):
        StepBatchSampler(n_items=8, group_size=2, groups_per_batch=2, seed=0, steps=1, world_size=3)


# AU-balanced sampling -------------------------------------------------------------------------------


def test_au_balance_weights_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    occurrence = torch.rand(200, 5, generator=generator) < torch.tensor([0.5, 0.3, 0.1, 0.05, 0.0])
    for power in (0.0, 0.5, 1.0):
        weights = au_balance_weights(occurrence, power)
        frequency = [max(float(occurrence[:, k].float().mean()), 1 / 200) for k in range(5)]
        for i in range(200):
            present = [(1 / frequency[k]) ** power for k in range(5) if occurrence[i, k]]
            expected = max(present) if present else min((1 / f) ** power for f in frequency)
            assert float(weights[i]) == pytest.approx(expected, rel=1e-6), (power, i)
    assert torch.equal(au_balance_weights(occurrence, 0.0), torch.ones(200))


def test_balancing_raises_the_rarest_au_of_the_synthetic_prior():
    occurrence = drawn_expressions(0, range(4000)) > 0
    weights = au_balance_weights(occurrence, 1.0)
    plain = occurrence.float().mean(0)
    balanced = (weights[:, None] * occurrence).sum(0) / weights.sum()
    assert plain.min() < 0.07 and balanced.min() > 1.5 * plain.min()
    assert balanced.max() / balanced.min() < 0.6 * plain.max() / plain.min()


def test_balanced_batches_follow_weights_and_steps():
    weights = torch.tensor([0.0, 1.0, 1.0, 8.0, 1.0, 1.0, 1.0, 1.0])
    kwargs = dict(weights=weights, batch_size=3, seed=5, steps=400)
    sampler = BalancedStepSampler(**kwargs)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 400
    assert all(len(set(b)) == 3 and 0 not in b for b in batches)
    counts = torch.bincount(torch.tensor(batches).flatten(), minlength=8)
    assert counts[3] > 2 * counts[1:3].float().mean()
    assert [BalancedStepSampler(**kwargs).batch(s) for s in (7, 2)] == [batches[7], batches[2]]
    assert list(BalancedStepSampler(**kwargs, start=390)) == batches[390:]
    assert list(BalancedStepSampler(**{**kwargs, "seed": 6})) != batches
    ranks = [BalancedStepSampler(**kwargs, rank=r, world_size=2) for r in range(2)]
    for step in range(50):
        assert not set(ranks[0].batch(step)) & set(ranks[1].batch(step))
    with pytest.raises(ValueError, match=r"7 samples.*needs 8.*data\.n_train"):
        BalancedStepSampler(weights, 4, 0, 1, world_size=2)


# FaceDataModule -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY)


def settings(cfg: Config, **changes) -> DataSettings:
    values = dict(
        world=world_parameters(cfg),
        source=cfg.data.source,
        n_train=cfg.data.n_train,
        n_val=cfg.data.n_val,
        identities_per_batch=cfg.data.identities_per_batch,
        workers=0,
        seed=cfg.seed,
        steps=cfg.trainer.steps,
    )
    values.update(changes)
    return DataSettings(**values)


@pytest.fixture(scope="module")
def shards(cfg, tmp_path_factory) -> Path:
    """A dataset folder of the tiny config's world."""
    root = tmp_path_factory.mktemp("tiny-dataset")
    write_dataset(
        root, world_parameters(cfg), {"train": SHARD_TRAIN, "val": SHARD_VAL}, shard_size=3, workers=0
    )
    return root


def test_generated_source_loaders_follow_the_config(cfg):
    module = FaceDataModule(settings(cfg))
    batch_size = cfg.data.identities_per_batch * cfg.synth.images_per_identity
    train = module.train_dataloader()
    assert len(train.dataset) == cfg.data.n_train
    assert isinstance(train.batch_sampler, StepBatchSampler)
    assert len(train) == cfg.trainer.steps
    for batch in train.batch_sampler:
        assert len(batch) == batch_size
        groups_of(batch, cfg.synth.images_per_identity)
    val = module.val_dataloader()
    assert len(val.dataset) == cfg.data.n_val
    assert val.batch_size == batch_size


def test_train_loader_yields_whole_identities_from_shards(cfg, shards):
    k = cfg.synth.images_per_identity
    module = FaceDataModule(settings(cfg, source=str(shards), n_train=0, steps=2))
    batches = list(module.train_dataloader())
    assert len(batches) == 2
    sampler = StepBatchSampler(SHARD_TRAIN, k, cfg.data.identities_per_batch, cfg.seed, 2)
    for step, batch in enumerate(batches):
        assert batch.image.shape == (cfg.data.identities_per_batch * k, 3, *(2 * [cfg.render.image_size]))
        expected = [split_index("train", item, k) for item in sampler.batch(step)]
        assert batch.index.tolist() == expected
        identities = batch.identity.view(-1, k)
        assert (identities == identities[:, :1]).all()
        assert identities[:, 0].unique().numel() == cfg.data.identities_per_batch


def test_start_step_is_honoured(cfg, shards):
    k = cfg.synth.images_per_identity
    module = FaceDataModule(settings(cfg, source=str(shards), n_train=0, steps=3))
    module.start_step = 2
    batches = list(module.train_dataloader())
    assert len(batches) == 1
    full = StepBatchSampler(SHARD_TRAIN, k, cfg.data.identities_per_batch, cfg.seed, 3)
    assert batches[0].index.tolist() == [split_index("train", item, k) for item in full.batch(2)]


def test_shard_source_is_cut_to_n_train_and_val_split_read(cfg, shards):
    k = cfg.synth.images_per_identity
    module = FaceDataModule(settings(cfg, source=str(shards), n_train=2 * k, identities_per_batch=1))
    assert len(module.train_dataloader().dataset) == 2 * k
    val = list(module.val_dataloader())
    assert [len(b.index) for b in val] == [k] * (SHARD_VAL // k)
    assert torch.cat([b.index for b in val]).tolist() == [split_index("val", i, k) for i in range(SHARD_VAL)]


def test_shard_source_with_another_k_is_refused(cfg, shards):
    other = dataclasses.replace(world_parameters(cfg), images_per_identity=3)
    module = FaceDataModule(settings(cfg, source=str(shards), world=other))
    with pytest.raises(ValueError, match=r"K=2.*synth\.images_per_identity=3"):
        module.train_dataloader()
    with pytest.raises(ValueError, match=r"synth\.images_per_identity"):
        module.val_dataloader()


def test_ranks_of_the_data_module(cfg, monkeypatch):
    module = FaceDataModule(settings(cfg))
    loaders = {}
    for rank in range(2):
        monkeypatch.setattr(train_data, "_rank", lambda rank=rank: (rank, 2))
        loaders[rank] = (module.train_dataloader(), module.val_dataloader())
    for step in range(cfg.trainer.steps):
        a, b = (set(loaders[rank][0].batch_sampler.batch(step)) for rank in range(2))
        assert not a & b
    val_items = [list(loaders[rank][1].dataset.indices) for rank in range(2)]
    assert sorted(val_items[0] + val_items[1]) == list(range(cfg.data.n_val))
    assert not set(val_items[0]) & set(val_items[1])


def test_au_balance_draws_labelled_items_from_the_prior(cfg, shards):
    module = FaceDataModule(settings(cfg, source=str(shards), n_train=0, steps=3, au_balance=1.0))
    loader = module.train_dataloader()
    assert isinstance(loader.batch_sampler, BalancedStepSampler)
    labels = train_au_occurrence(loader.dataset)
    assert labels.shape == (SHARD_TRAIN, 27)
    for batch in loader:
        assert len(batch.index) == cfg.data.identities_per_batch * cfg.synth.images_per_identity
        k = cfg.synth.images_per_identity
        items = [[split_index("train", i, k) for i in range(SHARD_TRAIN)].index(int(x)) for x in batch.index]
        assert torch.equal(batch.au_occurrence, labels[items])


def test_shard_cache_is_the_readers_and_a_smaller_one_than_the_split_warns(cfg, shards, caplog):
    shard_count = -(-SHARD_TRAIN // 3)
    with caplog.at_level(logging.WARNING, logger="aucgan.train.data"):
        roomy = FaceDataModule(settings(cfg, source=str(shards), n_train=0, shard_cache=shard_count))
        assert roomy.dataset("train", 0).cache_shards == shard_count
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="aucgan.train.data"):
        tight = FaceDataModule(settings(cfg, source=str(shards), n_train=0, shard_cache=1))
        tight.dataset("train", 0)
    assert f"has {shard_count} shards and each reader keeps 1 decoded" in caplog.text
    assert f"data.shard_cache={shard_count}" in caplog.text

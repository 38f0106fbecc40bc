"""Training data: synthetic samples in identity groups, in an order that is a function of the step.

(The AU net with ``data.au_balance > 0`` draws ``identities_per_batch × K`` single images by AU rarity
instead: :class:`BalancedStepSampler`.)

A batch holds ``identities_per_batch`` identities × their K images (DECA's K, for the detail-consistency
loss). Which identities make up the batch of step ``s`` on rank ``r`` is a pure function of
``(seed, s, r)``: groups are drawn from a seeded permutation of the split per pass over it, so a resumed
run continues with exactly the batches the uninterrupted run would have seen, and DDP ranks never share a
batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, Sampler

from aucgan.data.real import RealFaces, RealSettings
from aucgan.data.shards import (
    ShardedFaces,
    SyntheticFaces,
    WorldParameters,
    split_index,
    worker_ignores_stop_signals,
)
from aucgan.data.synthetic import collate, drawn_expressions, stable_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSettings:
    """What the data module needs (built from the config's ``data`` and ``synth`` sections)."""

    world: WorldParameters
    source: str
    n_train: int
    n_val: int
    identities_per_batch: int
    workers: int
    seed: int
    steps: int
    au_balance: float = 0.0
    real: RealSettings | None = None
    shard_cache: int = 64


class _StepSampler(Sampler[list[int]]):
    """The batches of steps ``start … steps - 1`` of one rank; subclasses say what :meth:`batch` holds."""

    start: int
    steps: int

    def batch(self, step: int) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.steps


class StepBatchSampler(_StepSampler):
    """Batches of whole identity groups for steps ``start … steps - 1`` of one rank.

    Args:
        n_items: items in the split, identity-major (item ``i`` is image ``i % K`` of group ``i // K``).
        group_size: K.
        groups_per_batch: identities per batch on each rank.
        seed: the run's seed.
        steps: length of the run in steps (``len(self)``).
        start: first step to yield (the steps already done, when resuming).
        rank, world_size: this process among the DDP processes.
    """

    def __init__(
        self,
        n_items: int,
        group_size: int,
        groups_per_batch: int,
        seed: int,
        steps: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_groups = n_items // group_size
        if self.n_groups < groups_per_batch * world_size:
            raise ValueError(
                f"{n_items} samples make {self.n_groups} identity groups of {group_size}; a step needs "
                f"{groups_per_batch * world_size}: raise data.n_train or lower data.identities_per_batch"
            )
        self.group_size, self.groups_per_batch = group_size, groups_per_batch
        self.seed, self.steps, self.start = seed, steps, start
        self.rank, self.world_size = rank, world_size
        self._permutation: tuple[int, torch.Tensor] | None = None

    def _permutation_of(self, epoch: int) -> torch.Tensor:
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(stable_seed("aucgan-batches", self.seed, epoch))
            self._permutation = (epoch, torch.randperm(self.n_groups, generator=generator))
        return self._permutation[1]

    def batch(self, step: int) -> list[int]:
        """Item indices of the batch of ``step`` on this rank.

        A pass over the split serves ``n_groups // (groups_per_batch * world_size)`` steps from one
        permutation (the remainder waits for the next pass), so no identity appears twice in a step,
        within a rank or across ranks.
        """
        per_step = self.groups_per_batch * self.world_size
        epoch, index = divmod(step, self.n_groups // per_step)
        permutation = self._permutation_of(epoch)
        first = index * per_step + self.rank * self.groups_per_batch
        items = []
        for group in permutation[first : first + self.groups_per_batch].tolist():
            items.extend(range(group * self.group_size, (group + 1) * self.group_size))
        return items


def au_balance_weights(occurrence: torch.Tensor, power: float) -> torch.Tensor:
    """``(N,)`` sampling weight of each item from its AU occurrence ``(N, 27)``:
    ``w_i = max_{k: y_ik} (1 / f_k)^power`` with ``f_k`` the AU's frequency among the items (an item with no
    AU weighs as one with the most frequent AU). ``power = 0`` gives equal weights; ``power = 1`` lets every
    AU occur roughly as often as the others (the rarest AUs of the synthetic prior go from ~1.5 % to ~6 % of
    the items, each of their images seen about 4 times as often)."""
    occurrence = occurrence.bool()
    frequency = occurrence.float().mean(0).clamp(min=1.0 / max(1, len(occurrence)))
    inverse = frequency.reciprocal() ** power
    per_au = torch.where(occurrence, inverse, torch.zeros_like(inverse))
    return torch.where(occurrence.any(1), per_au.amax(1), inverse.min())


class BalancedStepSampler(_StepSampler):
    """Batches of ``batch_size`` items drawn by weight, without replacement within a step, for steps
    ``start … steps - 1`` of one rank. The items of step ``s`` are a pure function of ``(seed, s)``: all
    ranks' items are drawn together and each rank takes its slice, so a resumed run sees the same batches
    and ranks never share an item. For the AU net, which needs no identity groups."""

    def __init__(
        self,
        weights: torch.Tensor,
        batch_size: int,
        seed: int,
        steps: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if int((weights > 0).sum()) < batch_size * world_size:
            raise ValueError(
                f"{int((weights > 0).sum())} samples to draw from; a step needs {batch_size * world_size}: "
                "raise data.n_train or lower data.identities_per_batch"
            )
        self.weights = weights.double()
        self.batch_size, self.seed, self.steps, self.start = batch_size, seed, steps, start
        self.rank, self.world_size = rank, world_size

    def batch(self, step: int) -> list[int]:
        generator = torch.Generator().manual_seed(stable_seed("aucgan-balanced-batches", self.seed, step))
        drawn = torch.multinomial(self.weights, self.batch_size * self.world_size, False, generator=generator)
        return drawn[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


def train_au_occurrence(dataset: Dataset) -> torch.Tensor:
    """``(len(dataset), 27)`` AU occurrence of a training split's items (generated, written, or the first
    ``n`` of either), from its world's prior: the same draws the samples were rendered with; nothing is
    rendered or read."""
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    world = base.parameters
    indices = [split_index("train", item, world.images_per_identity) for item in range(len(dataset))]
    return drawn_expressions(world.seed, indices) > 0


def _init_worker(worker_id: int, rank: int) -> None:
    """Each data worker ignores Ctrl-C and SIGTERM (the main process stops cleanly on them,
    :class:`~aucgan.train.checkpointing.StopOnSignal`) and is seeded as Lightning seeds workers when
    ``seed_everything(workers=True)`` asked it to (a ``worker_init_fn`` of our own replaces Lightning's)."""
    worker_ignores_stop_signals(worker_id)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


def _rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class FaceDataModule(L.LightningDataModule):
    """Train and validation loaders of synthetic faces (generated on the fly or read from shards).

    ``start_step`` is set by the training module when it resumes, before Lightning asks for the loaders.
    """

    def __init__(self, settings: DataSettings) -> None:
        super().__init__()
        self.settings = settings
        self.start_step = 0

    def dataset(self, split: str, count: int) -> Dataset:
        source = self.settings.source
        if self.settings.real is not None:
            faces = RealFaces(self.settings.real.cache, split, self.settings.world.images_per_identity)
            return torch.utils.data.Subset(faces, range(count)) if 0 < count < len(faces) else faces
        if source:
            faces = ShardedFaces(source, split, cache_shards=self.settings.shard_cache)
            if len(faces.shards) > faces.cache_shards and split == "train":
                rank_zero_only(log.warning)(
                    f"{source}: the {split} split has {len(faces.shards)} shards and each reader keeps "
                    f"{faces.cache_shards} decoded, so shards are decoded again and again (slow); set "
                    f"data.shard_cache={len(faces.shards)} if memory allows (about 80 MB per shard at 128 px)"
                )
            if faces.parameters.images_per_identity != self.settings.world.images_per_identity:
                raise ValueError(
                    f"{source}: written with K={faces.parameters.images_per_identity} images per identity, "
                    f"the config asks for synth.images_per_identity={self.settings.world.images_per_identity}"
                )
            if count and count < len(faces):
                return torch.utils.data.Subset(faces, range(count))
            return faces
        return SyntheticFaces(self.settings.world, split, count)

    def _loader(self, dataset: Dataset, batch_sampler: Sampler | None, batch_size: int | None) -> DataLoader:
        workers = self.settings.workers
        batching = (
            {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
        )
        return DataLoader(
            dataset,
            **batching,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.settings.seed),
            worker_init_fn=partial(_init_worker, rank=_rank()[0]) if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train", self.settings.n_train)
        rank, world_size = _rank()
        k = self.settings.world.images_per_identity
        sampler: Sampler[list[int]]
        if self.settings.au_balance > 0:
            labels = train_au_occurrence(dataset)
            sampler = BalancedStepSampler(
                au_balance_weights(labels, self.settings.au_balance), self.settings.identities_per_batch * k,
                self.settings.seed, self.settings.steps, self.start_step, rank, world_size,
            )  # fmt: skip
        else:
            sampler = StepBatchSampler(
                len(dataset), k, self.settings.identities_per_batch,
                self.settings.seed, self.settings.steps, self.start_step, rank, world_size,
            )  # fmt: skip
        return self._loader(dataset, sampler, None)

    def val_dataloader(self) -> DataLoader:
        dataset = self.dataset("val", self.settings.n_val)
        rank, world_size = _rank()
        if world_size > 1:
            dataset = torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size))
        batch = self.settings.identities_per_batch * self.settings.world.images_per_identity
        return self._loader(dataset, None, batch)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return type(batch)(**{name: value.to(device) for name, value in batch.to_dict().items()})

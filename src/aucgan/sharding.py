"""Splitting a batch job over processes and machines: which share of the inputs one process takes.

``aucgan reconstruct --shard K/N`` reconstructs part K of N (K counted from 1): the inputs whose name hashes
to it (:func:`shard_of`). The name is the input's output folder name (a video frame's includes its frame
number, so one long video spreads over all shards), and the hash depends on nothing else: adding or removing
inputs never moves another input to another shard, so shards of the same job run at different times, or on
inputs that grew in between, still never write the same folder. Each shard is resumable on its own, because
finished faces are skipped by their folder.

Without ``--shard`` the shard comes from the scheduler's environment (:func:`shard_from_environment`): a
SLURM job array (``SLURM_ARRAY_TASK_ID`` …) or ``torchrun`` (``RANK`` / ``WORLD_SIZE``), both together when
torchrun runs inside an array task.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

SLURM_VARIABLES = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
)
"""The environment variables of a SLURM job array that :func:`shard_from_environment` reads."""

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE")
"""The environment variables of ``torchrun`` that :func:`shard_from_environment` reads."""


class ShardError(ValueError):
    """A shard that cannot be taken (bad ``--shard``, inconsistent environment); one line saying the fix."""


def shard_of(name: str, count: int) -> int:
    """The 0-based shard (of ``count``) that owns the input named ``name``: a stable hash of the name (the
    same in every process, Python version and machine), so an input's shard never depends on the others.

    Raises:
        ValueError: ``count`` < 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    digest = hashlib.blake2b(name.encode("utf-8", errors="surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """Part ``index + 1`` of ``count``: the inputs :func:`shard_of` gives to ``index``.

    Attributes:
        index: 0-based shard index, ``0 <= index < count``.
        count: number of shards (>= 1).
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard index {self.index} of {self.count}: need 0 <= index < count, count >= 1")

    def owns(self, name: str) -> bool:
        """Whether the input named ``name`` belongs to this shard."""
        return shard_of(name, self.count) == self.index

    def __str__(self) -> str:
        """``K/N``, K counted from 1 (as ``--shard`` takes it)."""
        return f"{self.index + 1}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (part K of N, K from 1 to N) → :class:`Shard`.

    Raises:
        ShardError: not two whole numbers K/N with 1 <= K <= N (one line with an example).
    """
    part, sep, total = text.partition("/")
    try:
        if not sep:
            raise ValueError
        k, n = int(part), int(total)
    except ValueError:
        raise ShardError(
            f"--shard {text!r} is not K/N (part K of N, counted from 1), e.g. --shard 1/4 … --shard 4/4"
        ) from None
    if n < 1 or not 1 <= k <= n:
        raise ShardError(
            f"--shard {text}: K must be from 1 to N (parts are counted from 1), e.g. --shard 1/{max(n, 1)} … "
            f"--shard {max(n, 1)}/{max(n, 1)}"
        )
    return Shard(k - 1, n)


def _integer(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name, "")
    if value == "" and default is not None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ShardError(
            f"{name}={value!r} is not a whole number; fix the environment or give --shard K/N"
        ) from None


def _slurm_shard(environ: Mapping[str, str]) -> tuple[Shard, str]:
    task = _integer(environ, "SLURM_ARRAY_TASK_ID")
    lowest = _integer(environ, "SLURM_ARRAY_TASK_MIN", 0)
    step = max(1, _integer(environ, "SLURM_ARRAY_TASK_STEP", 1))
    if "SLURM_ARRAY_TASK_COUNT" in environ:
        count = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
    else:  # SLURM before 17.11 sets no count: the array spans MIN..MAX
        count = (_integer(environ, "SLURM_ARRAY_TASK_MAX") - lowest) // step + 1
    offset = task - lowest
    if count < 1 or offset < 0 or offset % step or offset // step >= count:
        raise ShardError(
            f"SLURM_ARRAY_TASK_ID={task} is not one of {count} evenly spaced tasks from "
            f"SLURM_ARRAY_TASK_MIN={lowest} (step {step}); with an array like --array=1,5,7 give "
            "--shard K/N explicitly"
        )
    reason = f"SLURM_ARRAY_TASK_ID={task} of {count} array tasks from SLURM_ARRAY_TASK_MIN={lowest}"
    if step != 1:
        reason += f" step {step}"
    return Shard(offset // step, count), reason


def _torchrun_shard(environ: Mapping[str, str]) -> tuple[Shard, str]:
    rank, world = _integer(environ, "RANK"), _integer(environ, "WORLD_SIZE")
    if world < 1 or not 0 <= rank < world:
        raise ShardError(
            f"RANK={rank} is not below WORLD_SIZE={world}; fix the environment or give --shard K/N"
        )
    return Shard(rank, world), f"torchrun's RANK={rank} of WORLD_SIZE={world}"


def shard_from_environment(environ: Mapping[str, str]) -> tuple[Shard, str] | None:
    """The shard a job scheduler gives this process, and a few words saying which variables gave it.

    * a SLURM array task (``SLURM_ARRAY_TASK_ID`` set): task ``(ID - MIN) / STEP`` of
      ``SLURM_ARRAY_TASK_COUNT``, so ``--array=0-9`` and ``--array=1-10`` both make shards 1/10 … 10/10;
    * ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set, ``WORLD_SIZE`` > 1): shard ``RANK`` of ``WORLD_SIZE``;
    * both (torchrun inside each array task): shard ``task * WORLD_SIZE + RANK`` of ``COUNT * WORLD_SIZE``.

    Args:
        environ: the environment, e.g. ``os.environ``.

    Returns:
        ``(shard, reason)``, or ``None`` when the environment splits nothing (no array, one process).

    Raises:
        ShardError: the variables contradict each other or are not numbers (one line).
    """
    array = _slurm_shard(environ) if environ.get("SLURM_ARRAY_TASK_ID", "") != "" else None
    ranks = None
    if all(environ.get(name, "") != "" for name in TORCHRUN_VARIABLES):
        ranks = _torchrun_shard(environ)
        if ranks[0].count == 1:
            ranks = None
    if array is not None and ranks is not None:
        (task, task_reason), (rank, rank_reason) = array, ranks
        shard = Shard(task.index * rank.count + rank.index, task.count * rank.count)
        return shard, f"{task_reason}, {rank_reason}"
    found = array or ranks
    if found is None or found[0].count == 1:
        return None
    return found


__all__ = [
    "SLURM_VARIABLES",
    "TORCHRUN_VARIABLES",
    "Shard",
    "ShardError",
    "parse_shard",
    "shard_from_environment",
    "shard_of",
]

"""The synthetic dataset as a torch ``Dataset``: generated on the fly, or read back from written shards.

Both sources return the same :class:`~aucgan.data.synthetic.SyntheticSample` bit for bit: images and
albedo are 8-bit in either case, detail normals float16-precise, everything else float32.

Layout written by :func:`write_dataset` (``aucgan synth``)::

    DIR/manifest.json           format, version, world parameters, per split: count and shard list
    DIR/train-00000.npz ...     numpy archives (no pickles) of up to ``shard_size`` samples
    DIR/in_progress.json        while writing only: what is being written (an interrupted write continues)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from aucgan.atomic import atomic_path, atomic_write_bytes
from aucgan.data.synthetic import SPLITS, SyntheticSample, SyntheticWorld, collate, identity_in_split

log = logging.getLogger(__name__)

FORMAT = "aucgan-synthetic"
VERSION = 1

# How each field is stored: numpy dtype and the scale that maps it to the stored integers.
_STORAGE: dict[str, tuple[str, float]] = {
    "index": ("int64", 1.0),
    "identity": ("int64", 1.0),
    "image": ("uint8", 255.0),
    "mask": ("uint8", 1.0),
    "landmarks": ("float32", 1.0),
    "shape": ("float32", 1.0),
    "expression": ("float32", 1.0),
    "au_occurrence": ("bool", 1.0),
    "pose": ("float32", 1.0),
    "camera": ("float32", 1.0),
    "light": ("float32", 1.0),
    "uv_displacement": ("float32", 1.0),
    "uv_detail_normals": ("float16", 1.0),
    "uv_albedo": ("uint8", 255.0),
    "uv_visibility": ("uint8", 1.0),
    "background": ("uint8", 255.0),
}


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class WorldParameters:
    """Everything that fixes the samples of a synthetic world."""

    seed: int = 0
    image_size: int = 224
    uv_size: int = 256
    images_per_identity: int = 4
    n_identity: int = 12

    def world(self) -> SyntheticWorld:
        return SyntheticWorld(**asdict(self))


def split_index(split: str, item: int, images_per_identity: int) -> int:
    """Global sample index of item ``item`` of ``split``."""
    identity = identity_in_split(split, item // images_per_identity)
    return identity * images_per_identity + item % images_per_identity


class SyntheticFaces(Dataset):
    """``n`` samples of one split, generated on the fly from a world's parameters.

    Args:
        parameters: the world.
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint identities).
        n: number of samples.
    """

    def __init__(self, parameters: WorldParameters, split: str, n: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.parameters = parameters
        self.split = split
        self.n = n
        self._world: SyntheticWorld | None = None

    @property
    def world(self) -> SyntheticWorld:
        if self._world is None:
            self._world = self.parameters.world()
        return self._world

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int) -> SyntheticSample:
        if not 0 <= item < self.n:
            raise IndexError(f"sample {item} out of range for {self.n} samples")
        return self.world.sample(split_index(self.split, item, self.parameters.images_per_identity))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_world": None}


def _to_storage(batch: SyntheticSample) -> dict[str, np.ndarray]:
    arrays = {}
    for name, (dtype, scale) in _STORAGE.items():
        value = getattr(batch, name)
        if scale != 1.0:
            value = torch.round(value * scale)
        arrays[name] = value.numpy().astype(dtype)
    return arrays


def _from_storage(arrays: dict[str, np.ndarray], row: int) -> SyntheticSample:
    values = {}
    for name, (dtype, scale) in _STORAGE.items():
        value = torch.from_numpy(np.array(arrays[name][row]))
        if dtype in ("uint8", "float16") or scale != 1.0:
            value = value.float()
        if scale != 1.0:
            value = value / scale
        values[name] = value
    return SyntheticSample(**values)


def worker_ignores_stop_signals(worker_id: int = 0) -> None:
    """A ``DataLoader`` ``worker_init_fn``: the worker ignores Ctrl-C and SIGTERM, which a terminal,
    ``timeout`` or a job scheduler send to the whole process group. The main process handles them and stops
    cleanly; a worker killed by them would instead abort the main process mid-step. Workers still end with
    their main process (the loader shuts them down, and they exit when it is gone).

    The worker also stays quiet when the main process goes away in the middle of taking a batch
    (:func:`quiet_when_main_is_gone`), so a stopped run ends on its one line, without a worker's traceback.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    sys.excepthook = quiet_when_main_is_gone


def quiet_when_main_is_gone(kind: type[BaseException], error: BaseException, traceback: object) -> None:
    """A data worker's ``sys.excepthook``: silent for ``EOFError`` and ``ConnectionError``, else Python's.

    A batch's tensors reach the main process through file descriptors the worker hands over on a local
    connection, served by a thread of the worker that reports its errors through ``sys.excepthook``. When
    the main process stops (Ctrl-C, SIGTERM) in the middle of a handover, that connection ends early and the
    thread would print an ``EOFError`` traceback after the run's own one-line message. The main process is
    gone or going, so there is nothing to report; any other error is printed as usual."""
    if issubclass(kind, (EOFError, ConnectionError)):
        return
    sys.__excepthook__(kind, error, traceback)


IN_PROGRESS = "in_progress.json"
"""What :func:`write_dataset` is writing, kept in the folder until its manifest is written."""


def write_dataset(
    out: str | os.PathLike[str],
    parameters: WorldParameters,
    counts: dict[str, int],
    shard_size: int = 256,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Generate and write ``counts[split]`` samples of each split; returns the manifest path.

    Shards are written atomically and the manifest last, so a folder with a manifest is complete.
    ``progress(k)`` is called after every ``k`` samples written (and once with the samples an earlier,
    interrupted call left).

    An interrupted write continues: while writing, ``in_progress.json`` records the world, the counts and
    the shard size, and a later call with the same three keeps the shards already written (each is complete:
    they are written atomically, and a sample is a function of the world and its index) and generates only
    the rest. With anything else, the folder's shards are removed first and every shard is written afresh.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A manifest left by an earlier run would vouch for shards while they are being replaced.
    (out / "manifest.json").unlink(missing_ok=True)
    plan = {
        "format": FORMAT,
        "version": VERSION,
        "world": asdict(parameters),
        "counts": dict(counts),
        "shard_size": shard_size,
    }
    plan_path = out / IN_PROGRESS
    try:
        resuming = json.loads(plan_path.read_text()) == json.loads(json.dumps(plan))
    except (OSError, ValueError):
        resuming = False
    if not resuming:
        # Shards of another dataset (a finished one, or another interrupted write) must not be taken for
        # this one's if this write is interrupted in turn.
        for split in SPLITS:
            for stale in out.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].npz"):
                stale.unlink()
        atomic_write_bytes(plan_path, (json.dumps(plan, indent=2) + "\n").encode())
    manifest: dict = {"format": FORMAT, "version": VERSION, "world": asdict(parameters), "splits": {}}
    for split, count in counts.items():
        shards = _written_shards(out, split, count, shard_size) if resuming else []
        done = sum(shard["count"] for shard in shards)
        if done:
            log.info("%s: %d of %d %s samples kept from an interrupted write", out, done, count, split)
            if progress is not None:
                progress(done)
        if done < count:
            shards += _write_split(
                out, parameters, split, count, done, shard_size, workers, progress, len(shards)
            )
        manifest["splits"][split] = {"count": count, "shards": shards}
    path = out / "manifest.json"
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    plan_path.unlink(missing_ok=True)
    return path


def _shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.npz"


def _written_shards(out: Path, split: str, count: int, shard_size: int) -> list[dict]:
    """The shards of ``split`` an interrupted :func:`write_dataset` completed, in order (each holds
    ``shard_size`` samples but the split's last)."""
    shards: list[dict] = []
    while len(shards) * shard_size < count and (out / _shard_name(split, len(shards))).is_file():
        shards.append(
            {
                "file": _shard_name(split, len(shards)),
                "count": min(shard_size, count - len(shards) * shard_size),
            }
        )
    return shards


def _write_split(
    out: Path,
    parameters: WorldParameters,
    split: str,
    count: int,
    start: int,
    shard_size: int,
    workers: int,
    progress: Callable[[int], None] | None,
    first_shard: int,
) -> list[dict]:
    """Generate samples ``start`` to ``count`` of ``split`` and write them as shards numbered from
    ``first_shard``; returns their manifest entries."""
    # Small batches cross from the workers; shards are cut here from arrays in their storage types.
    dataset = Subset(SyntheticFaces(parameters, split, count), range(start, count))
    loader = DataLoader(
        dataset,
        batch_size=8,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=worker_ignores_stop_signals if workers else None,
    )
    shards: list[dict] = []
    pending: dict[str, np.ndarray] = {}
    for number, batch in enumerate(loader):
        part = _to_storage(batch)
        pending = part if number == 0 else {k: np.concatenate([pending[k], part[k]]) for k in _STORAGE}
        final = number == len(loader) - 1
        while len(pending["index"]) >= shard_size or (final and len(pending["index"])):
            arrays = {k: v[:shard_size] for k, v in pending.items()}
            pending = {k: v[shard_size:] for k, v in pending.items()}
            name = _shard_name(split, first_shard + len(shards))
            with atomic_path(out / name) as temporary:
                np.savez_compressed(temporary, **arrays)
            shards.append({"file": name, "count": len(arrays["index"])})
        if progress is not None:
            progress(int(batch.index.shape[0]))
    return shards


class ShardedFaces(Dataset):
    """One split of a dataset folder written by :func:`write_dataset` (``aucgan synth``).

    Args:
        root: the folder holding ``manifest.json``.
        split: which split.
        cache_shards: decoded shards kept in memory (least recently used dropped first); a shuffled
            reader wants them all (about 80 MB per 256 samples at 128²).
    """

    def __init__(self, root: str | os.PathLike[str], split: str, cache_shards: int = 1) -> None:
        if cache_shards < 1:
            raise ValueError(f"cache_shards must be >= 1, got {cache_shards}")
        self.cache_shards = cache_shards
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            if (self.root / IN_PROGRESS).is_file():
                raise DatasetError(
                    f"{manifest_path}: no manifest: the `aucgan synth` writing {root} was interrupted; run "
                    "the same command again to finish it"
                ) from None
            raise DatasetError(
                f"{manifest_path}: no manifest; write the dataset with `aucgan synth --out {root}`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(
                f"{manifest_path}: not a valid manifest ({error}); rewrite it with `aucgan synth`"
            ) from None
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != FORMAT
            or manifest.get("version") != VERSION
        ):
            raise DatasetError(
                f"{manifest_path}: not an {FORMAT} v{VERSION} manifest; rewrite it with `aucgan synth`"
            )
        if split not in manifest.get("splits", {}):
            have = ", ".join(manifest.get("splits", {})) or "none"
            raise DatasetError(f"{manifest_path}: no split {split!r} (has {have})")
        try:
            self.parameters = WorldParameters(**manifest["world"])
            self.shards = [
                (self.root / s["file"], int(s["count"])) for s in manifest["splits"][split]["shards"]
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(
                f"{manifest_path}: malformed manifest ({type(error).__name__}: {error}); "
                "rewrite it with `aucgan synth`"
            ) from None
        self.split = split
        for path, _ in self.shards:
            if not path.is_file():
                raise DatasetError(
                    f"{path}: shard listed in {manifest_path} is missing; rewrite with `aucgan synth`"
                )
        self.offsets = np.cumsum([0] + [count for _, count in self.shards])
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, number: int) -> dict[str, np.ndarray]:
        if number in self._cache:
            self._cache.move_to_end(number)
        else:
            path = self.shards[number][0]
            try:
                with np.load(path, allow_pickle=False) as archive:
                    arrays = {name: archive[name] for name in _STORAGE}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise DatasetError(
                    f"{path}: unreadable shard ({error}); rewrite with `aucgan synth`"
                ) from None
            count = self.shards[number][1]
            rows = {len(array) for array in arrays.values()}
            if rows != {count}:
                raise DatasetError(
                    f"{path}: holds {sorted(rows)} samples per field, the manifest says {count}; "
                    "rewrite with `aucgan synth`"
                )
            self._cache[number] = arrays
            while len(self._cache) > self.cache_shards:
                self._cache.popitem(last=False)
        return self._cache[number]

    def __getitem__(self, item: int) -> SyntheticSample:
        if not 0 <= item < len(self):
            raise IndexError(f"sample {item} out of range for {len(self)} samples")
        number = int(np.searchsorted(self.offsets, item, side="right") - 1)
        return _from_storage(self._shard(number), item - int(self.offsets[number]))

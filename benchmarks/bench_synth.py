"""Throughput of the synthetic AU-wrinkle face world on CPU.

Generates samples of :class:`~aucgan.data.shards.SyntheticFaces` through a ``torch.utils.data.DataLoader``
(``collate_fn=collate``) with each number of worker processes and reports samples per second after a
warm-up (the first batches of every worker build its world and first identities). "transfer only" rows
pass one precomputed sample through the same loader: the ceiling set by moving samples between processes.
Workers run one torch thread each; the main process uses ``--threads`` when it generates itself (0 workers)
and one thread when it only collates. Then, in this process, the per-sample time split into identity
creation (shape, albedo, wrinkle basis: once per K samples) and sample generation (expression, pose, light,
displacement, render), and optionally a cProfile of the per-sample path.

    python benchmarks/bench_synth.py --image-size 224 --uv-size 256 --workers 0 1 2 --batch 8
    python benchmarks/bench_synth.py --workers 2 --shuffle --profile 48
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from aucgan.data.shards import SyntheticFaces, WorldParameters
from aucgan.data.synthetic import SyntheticSample, collate


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


class _Repeated(Dataset):
    """One precomputed sample, ``n`` times: what the DataLoader costs without any generation."""

    def __init__(self, sample: SyntheticSample, n: int) -> None:
        self.sample, self.n = sample, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int) -> SyntheticSample:
        return self.sample


def loader_throughput(
    dataset: Dataset, workers: int, batch: int, batches: int, main_threads: int, shuffle: bool = False
) -> tuple[float, int]:
    """Samples per second through a DataLoader over ``dataset`` (at least ``(2 * max(1, workers) + batches)
    * batch`` items), timed after ``2 * max(1, workers)`` warm-up batches.

    Returns:
        (samples per second, samples timed).
    """
    warmup = 2 * max(1, workers)
    if len(dataset) < (warmup + batches) * batch:
        raise ValueError(f"dataset has {len(dataset)} items, need {(warmup + batches) * batch}")
    previous = torch.get_num_threads()
    torch.set_num_threads(main_threads if workers == 0 else 1)
    try:
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=_one_thread if workers else None,
            generator=torch.Generator().manual_seed(0),
        )
        timed = 0
        start = 0.0
        for number, samples in enumerate(loader):
            if number == warmup - 1:
                start = time.perf_counter()
            elif number >= warmup:
                timed += int(samples.index.shape[0])
            if number == warmup + batches - 1:
                break
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return timed / elapsed, timed


def breakdown(parameters: WorldParameters, identities: int, threads: int) -> dict[str, float]:
    """Median milliseconds of world creation, identity creation and sample generation in this process."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    world = parameters.world()
    world_ms = 1e3 * (time.perf_counter() - start)
    k = parameters.images_per_identity
    world.identity(10_000)  # warm-up
    world.sample(10_000 * k)
    identity_ms, sample_ms = [], []
    for identity in range(identities):
        start = time.perf_counter()
        world.identity(identity)
        identity_ms.append(1e3 * (time.perf_counter() - start))
        for index in range(identity * k, (identity + 1) * k):
            start = time.perf_counter()
            world.sample(index)  # its identity is cached now
            sample_ms.append(1e3 * (time.perf_counter() - start))
    identity = statistics.median(identity_ms)
    sample = statistics.median(sample_ms)
    return {
        "world": world_ms,
        "identity": identity,
        "sample": sample,
        "amortised": sample + identity / k,
    }


def profile(parameters: WorldParameters, count: int, threads: int, top: int) -> str:
    """cProfile of generating ``count`` samples (identities included) in this process, by cumulative time."""
    torch.set_num_threads(threads)
    world = parameters.world()
    world.sample(10_000 * parameters.images_per_identity)
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(count):
        world.sample(index)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--uv-size", type=int, default=256)
    parser.add_argument("--images-per-identity", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24, help="timed batches per setting")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads of a generating main process"
    )
    parser.add_argument("--identities", type=int, default=12, help="identities timed in the breakdown")
    parser.add_argument(
        "--shuffle", action="store_true", help="also time a shuffled loader (identity cache misses)"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile N samples")
    parser.add_argument("--top", type=int, default=30, help="profile lines to show")
    args = parser.parse_args()

    parameters = WorldParameters(
        image_size=args.image_size, uv_size=args.uv_size, images_per_identity=args.images_per_identity
    )
    print(
        f"synthetic world: image {args.image_size}², UV {args.uv_size}², K={args.images_per_identity}, "
        f"batch {args.batch}, torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    needed = (2 * max([*args.workers, 1]) + args.batches) * args.batch
    generated = SyntheticFaces(parameters, "train", needed)
    repeated = _Repeated(generated[0], needed)
    rows = [("generate", generated, False), ("transfer only", repeated, False)]
    if args.shuffle:
        rows.insert(1, ("generate, shuffled", generated, True))
    print(f"{'what':>18} {'workers':>8} {'main threads':>13} {'samples':>8} {'samples/s':>10}")
    for what, dataset, shuffle in rows:
        for workers in args.workers:
            rate, timed = loader_throughput(dataset, workers, args.batch, args.batches, args.threads, shuffle)
            main_threads = args.threads if workers == 0 else 1
            print(f"{what:>18} {workers:>8} {main_threads:>13} {timed:>8} {rate:>10.1f}")

    times = breakdown(parameters, args.identities, 1)
    print(f"\nper-sample breakdown, one process, 1 thread (median ms, {args.identities} identities):")
    print(f"{'world creation (once)':>34} {times['world']:>8.1f}")
    print(f"{'identity creation (once per K)':>34} {times['identity']:>8.1f}")
    print(f"{'sample generation':>34} {times['sample']:>8.1f}")
    print(f"{'per sample, amortised':>34} {times['amortised']:>8.1f}  ({1e3 / times['amortised']:.1f}/s)")
    if args.profile:
        print(f"\ncProfile of {args.profile} samples, 1 thread:")
        print(profile(parameters, args.profile, 1, args.top))


if __name__ == "__main__":
    main()

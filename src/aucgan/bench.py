"""``aucgan bench``: how fast reconstruction and detail training are, against the reference design.

Two designs are measured in the same run, on the same config sizes and device, with random weights (speed
does not depend on the values):

* **ours** — the config's ``model.*`` (by default the token-attention decoder and the projection
  discriminator);
* **reference** — the reference AUCGAN: its 8-conv detail encoder, ``concat-1x1`` decoder and
  ``reference-3x9`` discriminator, with the AU-net passes it makes (one per input at inference; one on the
  input and one on the rendering per training step, as ours).

Per design and batch size (1 and 8): median latency of each inference stage (coarse, AU net, detail,
render) and end to end (the four, as ``aucgan reconstruct`` runs them, files aside), throughput, and the
process's peak resident memory, and on CUDA the peak allocated GPU memory (each design and batch runs in
a fresh process, so peaks do not mix);
the detail GAN's training step (D step + G step, batch of ``identities_per_batch × K`` images); FLOPs per
image counted by :class:`torch.utils.flop_counter.FlopCounterMode` and the achieved FLOP/s as a fraction
of a matmul peak measured in the same run (float32 on the CPU, bfloat16 on CUDA). Nothing here asserts a
time: it measures and reports.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import queue as queue_module
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aucgan.config import Config, config_from_yaml, config_to_yaml

REFERENCE_MODEL = {"detail_encoder": "conv", "detail_decoder": "concat-1x1", "discriminator": "reference-3x9"}
DESIGNS = ("ours", "reference")
STAGES = ("coarse", "au net", "detail", "render", "end to end")


class BenchError(RuntimeError):
    """A measurement that could not be made; the message is one line."""


def design_config(cfg: Config, design: str) -> Config:
    """``cfg`` for ``design``: as given (``"ours"``) or with the reference AUCGAN's networks."""
    if design == "ours":
        return cfg
    if design != "reference":
        raise ValueError(f"unknown design {design!r}; valid: {', '.join(DESIGNS)}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **REFERENCE_MODEL))


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square matmul (float32 on the CPU, bfloat16 on CUDA): the roofline of this run."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, device, repeats)
    return 2 * size**3 / seconds


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _reconstructor(cfg: Config, device: torch.device):
    from aucgan.build import coarse_stage, detail_stage, new_au_net
    from aucgan.reconstruct import Reconstructor

    torch.manual_seed(0)
    coarse = coarse_stage(cfg)
    au = new_au_net(cfg)
    detail = detail_stage(cfg, coarse.uv_space, au, coarse.face_model.n_expression)
    return Reconstructor(coarse.to(device).eval(), detail.to(device).eval(), cfg, "random (bench)")


def inference(cfg: Config, design: str, batch: int, repeats: int, device_name: str) -> dict[str, Any]:
    """Stage and end-to-end times of ``design`` at ``batch`` (run in a fresh process: see :func:`run`)."""
    from aucgan.stages.detail import au_condition, read_photo

    device = torch.device(device_name)
    rec = _reconstructor(design_config(cfg, design), device)
    images = torch.rand(batch, 3, rec.image_size, rec.image_size, device=device)
    calls = {"au": 0}
    rec.detail.au_net.register_forward_hook(
        lambda _module, inputs, _output: calls.__setitem__("au", calls["au"] + inputs[0].shape[0])
    )
    with torch.inference_mode(), _autocast(device):
        coarse = rec.coarse(images)
        aus = rec.detail.read_aus(images)
        condition = au_condition(aus)
        full = rec(images)
        stages = {
            "coarse": lambda: rec.coarse(images),
            "au net": lambda: rec.detail.read_aus(images),
            "detail": lambda: rec.detail.decode(
                coarse,
                rec.detail.encoder(images),
                condition,
                read_photo(rec.coarse, images, coarse)[0] if rec.detail.reads_photo else None,
            ),
            "render": lambda: rec.render_views(full),
            "end to end": lambda: rec.render_views(rec(images)),
        }
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = {name: median_seconds(run, device, repeats) for name, run in stages.items()}
        peak_rss = _peak_rss_mb()  # before the FLOP counter and the profiler add their own
        peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        calls["au"] = 0
        rec(images)
        au_passes = calls["au"]
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            rec.render_views(rec(images))
        profile = operator_profile(lambda: rec.render_views(rec(images)), device)
    return {
        "design": design,
        "batch": batch,
        "seconds": seconds,
        "throughput": batch / seconds["end to end"],
        "flops_per_image": counter.get_total_flops() / batch,
        "au_passes_per_image": au_passes / batch,
        "peak_rss_mb": peak_rss,
        "peak_gpu_mb": peak_gpu,
        "parameters": sum(p.numel() for p in [*rec.coarse.parameters(), *rec.detail.parameters()]),
        "profile": profile,
    }


def operator_profile(run: Callable[[], object], device: torch.device, top: int = 8) -> list[dict[str, Any]]:
    """The ``top`` operators of one ``run()`` by self time (``torch.profiler``): name, ms, share."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as recorded:
        run()
        _synchronise(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in recorded.key_averages() if getattr(e, key) > 0]
    total = sum(getattr(e, key) for e in events)
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {"operator": e.key, "ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total, "calls": e.count}
        for e in events[:top]
    ]


def training_step(cfg: Config, design: str, repeats: int, device_name: str) -> dict[str, Any]:
    """Median time (and peak memory) of the detail GAN's training step of ``design`` (run in a fresh
    process)."""
    with tempfile.TemporaryDirectory(prefix="aucgan-bench-") as folder:
        return _training_step(cfg, design, repeats, device_name, Path(folder) / "au.pth")


def _training_step(cfg: Config, design: str, repeats: int, device_name: str, au_net: Path) -> dict[str, Any]:
    import lightning as L
    from torch.utils.data import DataLoader

    from aucgan.build import new_au_net
    from aucgan.data.synthetic import SyntheticWorld, collate
    from aucgan.loaders.opengraphau import save_au_net
    from aucgan.train.data import FaceDataModule
    from aucgan.train.detail import DetailTraining

    cfg = design_config(cfg, design)
    # a fresh AU net: speed does not depend on the weights
    save_au_net(new_au_net(cfg), au_net)
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, coarse_source="ground-truth"),
        assets=dataclasses.replace(type(cfg.assets)(), au_net=str(au_net)),
    )
    k = cfg.synth.images_per_identity
    world = SyntheticWorld(seed=cfg.seed, image_size=cfg.render.image_size, uv_size=cfg.render.uv_size,
                           images_per_identity=k, n_identity=cfg.face_model.n_identity)  # fmt: skip
    batch = collate([world.sample(i) for i in range(cfg.data.identities_per_batch * k)])
    times: list[float] = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            _synchronise(torch.device(device_name))
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            _synchronise(torch.device(device_name))
            times.append(time.perf_counter() - self.start)

    module = DetailTraining(cfg)
    trainer = L.Trainer(
        accelerator="gpu" if device_name.startswith("cuda") else "cpu", devices=1, max_epochs=1,
        precision="bf16-mixed" if device_name.startswith("cuda") else "32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Timer()],
    )  # fmt: skip

    class FixedBatches(L.LightningDataModule):
        transfer_batch_to_device = FaceDataModule.transfer_batch_to_device

        def train_dataloader(self) -> DataLoader:
            return DataLoader([batch] * (repeats + 1), batch_size=None, collate_fn=lambda item: item)

    if device_name.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=FixedBatches())
    return {
        "design": design,
        "batch": len(batch.image),
        "seconds": statistics.median(times[1:]),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device_name.startswith("cuda") else None,
    }


def _child(job: str, cfg_yaml: str, args: tuple, queue: Any) -> None:
    try:
        torch.set_num_threads(int(os.environ.get("AUCGAN_BENCH_THREADS", torch.get_num_threads())))
        cfg = config_from_yaml(Config, cfg_yaml, "the bench's config")
        result = (inference if job == "inference" else training_step)(cfg, *args)
        queue.put(("ok", result))
    except BaseException as error:  # reported by the parent as one line
        queue.put(("error", f"{type(error).__name__}: {error}"))


def run_isolated(job: str, cfg: Config, *args: Any) -> dict[str, Any]:
    """Run :func:`inference` or :func:`training_step` in a fresh (spawned) process; its result."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(job, config_to_yaml(cfg), args, queue))
    process.start()
    while True:
        try:
            status, result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not process.is_alive():
                try:  # it may have reported just before exiting
                    status, result = queue.get(timeout=1.0)
                except queue_module.Empty:
                    status, result = "error", f"the process died (exit code {process.exitcode})"
                break
    process.join()
    if status != "ok":
        first = str(result).strip().splitlines()[0] if str(result).strip() else "failed"
        raise BenchError(f"bench {job} of {args[0]} (batch/steps {args[1]}): {first}")
    return result


def bench(
    cfg: Config,
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 5,
    train_repeats: int = 3,
    progress: Callable[[str], object] = lambda _: None,
) -> dict[str, Any]:
    """Everything the module docstring lists, as a JSON-ready dict."""
    threads = torch.get_num_threads()
    os.environ["AUCGAN_BENCH_THREADS"] = str(threads)
    peak = matmul_peak(torch.device(device))
    results: dict[str, Any] = {
        "device": device if device != "cpu" else f"cpu ({threads} threads)",
        "torch": torch.__version__,
        "image_size": cfg.render.image_size,
        "uv_size": cfg.render.uv_size,
        "matmul_peak_flops": peak,
        "inference": [],
        "training": [],
    }
    for design in DESIGNS:
        for batch in batches:
            progress(f"inference: {design}, batch {batch}")
            row = run_isolated("inference", cfg, design, batch, repeats, device)
            row["roofline_fraction"] = row["flops_per_image"] * row["throughput"] / peak
            results["inference"].append(row)
        progress(f"training step: {design}")
        results["training"].append(run_isolated("training", cfg, design, train_repeats, device))
    return results


def _ratio(
    rows: list[dict], design: str, key: Callable[[dict], float], match: Callable[[dict], bool]
) -> float:
    ours = next(r for r in rows if r["design"] == "ours" and match(r))
    other = next(r for r in rows if r["design"] == design and match(r))
    return key(ours) / key(other)


def markdown(results: dict[str, Any]) -> str:
    """The bench as Markdown tables (times in ms; ratios are ours ÷ reference, > 1 = ours faster)."""
    lines = [
        f"Device: {results['device']}, torch {results['torch']}, images {results['image_size']}², "
        f"UV {results['uv_size']}²; matmul peak {results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s.",
        "",
        "| design | batch | " + " | ".join(f"{s} (ms)" for s in STAGES)
        + " | images/s | speed-up vs reference | GFLOP/image | % of matmul peak | AU passes/image "
        "| peak RSS (MB) |",
        "|" + "---|" * (len(STAGES) + 8),
    ]  # fmt: skip
    rows = results["inference"]
    for row in rows:
        speedup = _ratio(
            rows, "reference", lambda r: r["throughput"], lambda r, b=row["batch"]: r["batch"] == b
        )
        lines.append(
            f"| {row['design']} | {row['batch']} | "
            + " | ".join(f"{row['seconds'][s] * 1e3:.1f}" for s in STAGES)
            + f" | {row['throughput']:.1f} | {speedup if row['design'] == 'ours' else 1.0:.2f}× "
            f"| {row['flops_per_image'] / 1e9:.2f} | {100 * row['roofline_fraction']:.1f} % "
            f"| {row['au_passes_per_image']:.0f} | {row['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| design | training step, batch | time (ms) | speed-up vs reference |",
        "|---|---|---|---|",
    ]
    train = results["training"]
    for row in train:
        speedup = _ratio(train, "reference", lambda r: 1 / r["seconds"], lambda r: True)
        lines.append(
            f"| {row['design']} | {row['batch']} | {row['seconds'] * 1e3:.0f} "
            f"| {speedup if row['design'] == 'ours' else 1.0:.2f}× |"
        )
    ours = [row for row in rows if row["design"] == "ours"]
    if ours and ours[-1].get("profile"):
        row = ours[-1]
        title = f"Where the time goes (ours, batch {row['batch']}, one end-to-end pass, self time):"
        lines += ["", title, "", "| operator | ms | share | calls |", "|---|---|---|---|"]
        lines += [
            f"| `{op['operator']}` | {op['ms']:.1f} | {100 * op['share']:.0f} % | {op['calls']} |"
            for op in row["profile"]
        ]
    return "\n".join(lines)


def write_results_section(path: str | os.PathLike[str], marker: str, body: str) -> None:
    """Replace the text between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path`` with ``body``
    (appended, with the markers, when absent; the file is created when missing)."""
    from aucgan.atomic import atomic_write_bytes

    path = Path(path)
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def save(
    results: dict[str, Any],
    out: str | os.PathLike[str],
    markdown_path: str | os.PathLike[str] | None,
    invocation: str,
) -> None:
    """Write ``results`` as JSON to ``out``; with ``markdown_path``, rewrite its speed section too
    (:func:`write_results_section`), ending with the ``invocation`` that reproduces it."""
    from aucgan.atomic import atomic_write_bytes

    atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    if markdown_path is not None:
        body = "\n".join(["## Speed", "", markdown(results), "", f"Reproduce: `{invocation}`"])
        write_results_section(markdown_path, "bench", body)


__all__ = [
    "DESIGNS",
    "BenchError",
    "bench",
    "design_config",
    "markdown",
    "matmul_peak",
    "save",
    "write_results_section",
]

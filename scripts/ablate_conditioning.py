"""Ablation of the detail stage's design: DECA (none), the reference AUCGAN, token attention, the UV U-Net
and the U-Net with one of its paths switched off or without its detail encoder; ≥ 3 seeds, the same budget
and objective for every one.

    python scripts/ablate_conditioning.py --data data/synthetic \
        --au-net package://pretrained/synthetic.safetensors --steps 300 --seeds 0 1 2 --out runs/ablation

Every run is the plain ``aucgan train detail`` command printed in the results, on the same written
dataset, AU net, budget and settings; only the variant's keys and the seed differ. The coarse fit is the
synthetic ground truth (``model.coarse_source=ground-truth``), so the comparison measures the detail stage
alone. With ``--truth`` > 0 the generator is also supervised by the world's true displacement (an L2 and
its slopes, ``loss.displacement_truth`` / ``displacement_gradient``) and on edit pairs
(``loss.edit_truth``), which the synthetic world allows and real photos do not. After training, each run is
validated on held-out identities (``data.n_val``): detail-normal error over the wrinkle regions of the AUs
active in each face (the headline), over all wrinkle regions and over the skin, and displacement error,
each beside the flat prediction.
Finished runs are skipped, so an interrupted ablation continues where it stopped. Writes
``OUT/results.json``, ``docs/ablation.png`` and the ablation section of ``docs/RESULTS.md`` (between its
``<!-- ablation -->`` markers).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from matplotlib.figure import Figure

from aucgan.bench import write_results_section

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "deca": (
        "none (DECA: unconditioned decoder, no discriminator, no AU losses)",
        [
            "model.detail_decoder=none",
            "model.detail_encoder=conv",
            "loss.adversarial=0",
            "loss.au_score=0",
            "loss.au_feature=0",
        ],
    ),
    "reference": (
        "concat-1x1 + reference-3x9 (the reference AUCGAN)",
        ["model.detail_decoder=concat-1x1", "model.detail_encoder=conv", "model.discriminator=reference-3x9"],
    ),
    "token": (
        "token-attention + projection",
        [
            "model.detail_decoder=token-attention",
            "model.detail_encoder=conv",
            "model.discriminator=projection",
        ],
    ),
    "uv-unet": (
        "uv-unet + uv-projection (AU maps and the photo in UV; the reference's detail encoder)",
        ["model.detail_decoder=uv-unet", "model.detail_encoder=conv", "model.discriminator=uv-projection"],
    ),
    "uv-nocode": (
        "uv-unet without a detail encoder (a zero detail code)",
        [
            "model.detail_decoder=uv-unet",
            "model.detail_encoder=none",
            "model.discriminator=uv-projection",
        ],
    ),
    "uv-photo": (
        "uv-unet, photo and latent paths only (no AU maps)",
        [
            "model.detail_decoder=uv-unet",
            "model.detail_encoder=conv",
            "model.detail_paths=[photo,latent]",
            "model.discriminator=uv-projection",
        ],
    ),
    "uv-au": (
        "uv-unet, AU maps and latent only (no photo)",
        [
            "model.detail_decoder=uv-unet",
            "model.detail_encoder=conv",
            "model.detail_paths=[au,latent]",
            "model.discriminator=uv-projection",
        ],
    ),
}

METRICS = {
    "val/normal_error_active_deg": ("active-region normal error (°)", "val/normal_error_active_flat_deg"),
    "val/normal_error_wrinkle_deg": ("wrinkle-region normal error (°)", "val/normal_error_wrinkle_flat_deg"),
    "val/normal_error_deg": ("skin normal error (°)", "val/normal_error_flat_deg"),
    "val/displacement_mae": ("displacement MAE (µm)", "val/displacement_mae_flat"),
}
MICRONS_PER_UNIT = 1e4  # the built-in face's units are centimetres


def command(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    out = args.out / variant / f"seed-{seed}"
    common = [
        f"data.source={args.data}", f"assets.au_net={args.au_net}", "model.coarse_source=ground-truth",
        f"data.identities_per_batch={args.identities_per_batch}", f"data.n_val={args.n_val}",
        f"trainer.steps={args.steps}", f"trainer.val_every={args.steps}",
        f"trainer.checkpoint_every={args.steps}",
        "trainer.image_every=0", "trainer.progress=false", f"optim.warmup_steps={args.warmup}",
        f"optim.lr={args.lr}", f"loss.z_reg={args.z_reg}", f"loss.displacement_truth={args.truth}",
        f"loss.displacement_gradient={args.truth * args.gradient}", f"loss.edit_truth={args.edit_truth}",
        f"loss.au_score={args.au_score}", f"loss.au_feature={args.au_score / 10}",
        f"seed={seed}", *args.set, *VARIANTS[variant][1], f"trainer.out_dir={out}",
    ]  # fmt: skip
    merged: dict[str, str] = {}
    for item in common:  # a later setting of a key (the variant's) replaces an earlier one
        key = item.partition("=")[0]
        merged.pop(key, None)
        merged[key] = item
    return ["aucgan", "train", "detail", "synthetic", *merged.values()]


def final_metrics(run: Path) -> dict[str, float] | None:
    """The last validation row of a finished run, or ``None``."""
    path = run / "logs" / "version_0" / "metrics.csv"
    if not (run / "checkpoints" / "last.ckpt").is_file() or not path.is_file():
        return None
    with open(path, newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("val/normal_error_active_deg")]
    return (
        {name: float(value) for name, value in rows[-1].items() if name.startswith("val/")} if rows else None
    )


def run_all(args: argparse.Namespace) -> dict[str, dict[int, dict[str, float]]]:
    jobs = [
        (v, s) for v in args.variants for s in args.seeds if final_metrics(args.out / v / f"seed-{s}") is None
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: list[tuple[str, int, subprocess.Popen]] = []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            variant, seed = jobs.pop(0)
            run = args.out / variant / f"seed-{seed}"
            if run.exists():  # an interrupted run: start it again from scratch
                subprocess.run(["rm", "-rf", str(run)], check=True)
            run.mkdir(parents=True)
            log = open(run.parent / f"seed-{seed}.log", "w")  # noqa: SIM115 - closed with the process
            print(f"start {variant} seed {seed}", flush=True)
            argv = [sys.executable, "-m", "aucgan", *command(args, variant, seed)[1:]]
            running.append(
                (variant, seed, subprocess.Popen(argv, cwd=REPO, env=environment, stdout=log, stderr=log))
            )
        variant, seed, process = running.pop(0)
        if process.wait() != 0:
            raise SystemExit(f"{variant} seed {seed} failed; see {args.out / variant / f'seed-{seed}.log'}")
        print(f"done  {variant} seed {seed}", flush=True)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            metrics = final_metrics(args.out / variant / f"seed-{seed}")
            assert metrics is not None
            results.setdefault(variant, {})[seed] = metrics
    return results


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


HEADLINE = next(iter(METRICS))


def separations(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """Which variant has the lowest headline error, and by how many standard deviations (the larger of the
    two variants' spreads over seeds) it leads each other variant."""
    stats = {v: summary([seeds[s][HEADLINE] for s in seeds]) for v, seeds in results.items()}
    best = min(stats, key=lambda v: stats[v][0])
    parts = []
    for variant, (mean, std) in stats.items():
        if variant == best:
            continue
        spread = max(std, stats[best][1])
        sigmas = f"{(mean - stats[best][0]) / spread:.1f} σ" if spread > 0 else "one seed: no spread"
        parts.append(f"{variant} by {mean - stats[best][0]:.3f}° ({sigmas})")
    return f"Lowest {METRICS[HEADLINE][0]}: **{best}**, ahead of " + ", ".join(parts) + "."


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    header = "| variant | " + " | ".join(label for label, _ in METRICS.values()) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    flat_row = {}
    for variant, seeds in results.items():
        cells = []
        for metric, (_, flat) in METRICS.items():
            scale = MICRONS_PER_UNIT if "displacement" in metric else 1.0
            mean, std = summary([seeds[s][metric] * scale for s in seeds])
            cells.append(f"{mean:.4f} ± {std:.4f}")
            flat_row[metric] = statistics.mean(seeds[s][flat] * scale for s in seeds)
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    lines.append("| flat prediction (zero displacement), for scale | "
                 + " | ".join(f"{flat_row[m]:.4f}" for m in METRICS) + " |")  # fmt: skip
    return "\n".join(lines)


def plot(results: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    figure = Figure(figsize=(4 * len(METRICS), 3.4))
    axes = figure.subplots(1, len(METRICS))
    for ax, (metric, (label, flat)) in zip(axes, METRICS.items(), strict=True):
        scale = MICRONS_PER_UNIT if "displacement" in metric else 1.0
        names = list(results)
        stats = [summary([results[v][s][metric] * scale for s in results[v]]) for v in names]
        ax.bar(
            range(len(names)), [m for m, _ in stats], yerr=[e for _, e in stats], capsize=4, color="#4c72b0"
        )
        first = results[names[0]]
        ax.axhline(
            statistics.mean(first[s][flat] * scale for s in first), color="#c44e52", ls="--", label="flat"
        )
        ax.set_xticks(range(len(names)), names)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder written by `aucgan synth`")
    parser.add_argument(
        "--au-net", required=True, help="the AU net the detail stage reads (a path or package://)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--z-reg", type=float, default=0.005)
    parser.add_argument(
        "--truth", type=float, default=1.0, help="loss.displacement_truth, an L2 (0 = DECA's objective)"
    )
    parser.add_argument("--gradient", type=float, default=1.0, help="loss.displacement_gradient / --truth")
    parser.add_argument("--edit-truth", type=float, default=1.0, help="loss.edit_truth (edit pairs)")
    parser.add_argument("--au-score", type=float, default=1.0, help="loss.au_score (au_feature: a tenth)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--identities-per-batch", type=int, default=1)
    parser.add_argument("--n-val", type=int, default=256)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if not args.au_net.startswith("package://"):
        args.au_net = str(Path(args.au_net).resolve())

    results = run_all(args)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.results.parent / "ablation.png")
    example = " ".join(shlex.quote(part) for part in command(args, args.variants[-1], args.seeds[0]))
    invocation = " ".join(shlex.quote(part) for part in sys.argv)
    body = "\n".join([
        "## Ablation: AU conditioning of the detail GAN",
        "",
        f"Mean ± standard deviation over seeds {', '.join(map(str, args.seeds))}; {args.steps} steps of "
        f"{args.identities_per_batch * 4} images each, validated on {args.n_val} images of held-out "
        "identities. Lower is better.",
        "",
        table(results),
        "",
        separations(results),
        "",
        "![ablation](ablation.png)",
        "",
        f"Reproduce: `python {invocation}`. Each run is, for example (variant keys differ):",
        "",
        f"```\n{example}\n```",
    ])  # fmt: skip
    write_results_section(args.results, "ablation", body)
    print(table(results))
    print(separations(results))


if __name__ == "__main__":
    main()

"""Per-AU F1 of an AU net on one split of a written synthetic dataset, as a table and a bar chart.

    python scripts/evaluate_au_net.py runs/synthetic/au/checkpoints/last.ckpt data/synthetic \
        --split test --out docs/au_net_f1.png

The checkpoint may be one of ``aucgan train au`` or an OpenGraphAU file; scores above ``--threshold`` count
as occurrences. The mean F1 is over the AUs that occur in the split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from aucgan.au import MAIN_AUS
from aucgan.data.shards import ShardedFaces
from aucgan.data.synthetic import collate
from aucgan.loaders.opengraphau import load_au_net
from aucgan.train.au import f1_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", help="folder written by `aucgan synth`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("au_net_f1.png"))
    args = parser.parse_args()

    net = load_au_net(args.checkpoint)
    faces = ShardedFaces(args.data, args.split)
    scores, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(faces), args.batch):
            batch = collate([faces[i] for i in range(start, min(len(faces), start + args.batch))])
            scores.append(net(batch.image).main_scores)
            labels.append(batch.au_occurrence)
    scores, labels = torch.cat(scores), torch.cat(labels)
    f1 = f1_scores(scores > args.threshold, labels)
    support = labels.sum(0)
    present = support > 0
    mean = float(f1[present].nanmean())

    print(f"| AU | F1 | positives of {len(faces)} |\n|---|---|---|")
    for name, value, count in zip(MAIN_AUS, f1.tolist(), support.tolist(), strict=True):
        shown = f"{value:.3f}" if count else "n/a"
        print(f"| {name} | {shown} | {int(count)} |")
    print(f"| **mean over {int(present.sum())} AUs present** | **{mean:.3f}** | |")

    fig = Figure(figsize=(11, 3.6))
    ax = fig.subplots()
    positions = torch.arange(len(MAIN_AUS))
    ax.bar(positions[present], f1[present].nan_to_num(0.0), color="#4477aa")
    ax.axhline(mean, color="#cc6677", linestyle="--", label=f"mean F1 {mean:.3f}")
    ax.set_xticks(positions.tolist(), MAIN_AUS, rotation=60, fontsize=8)
    for x, count, value in zip(
        positions.tolist(), support.tolist(), f1.nan_to_num(0.0).tolist(), strict=True
    ):
        ax.text(x, 0.02, str(int(count)), ha="center", fontsize=6, color="white" if value > 0.05 else "black")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        f"AU net on held-out identities ({args.split} split, {len(faces)} images; bar labels: positives)"
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

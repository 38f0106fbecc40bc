"""Per-AU F1 of an AU net on one split of a written synthetic dataset, as a table and a bar chart.

    python scripts/evaluate_au_net.py runs/synthetic/au/checkpoints/last.ckpt data/synthetic \
        --split test --out docs/au_net_f1.png

The checkpoint may be one of ``aucgan train au`` or an OpenGraphAU file; scores above ``--threshold`` count
as occurrences. The mean F1 is over the AUs that occur in the split. With ``--calibrate val`` each AU also
gets the threshold that maximises its F1 on that other held-out split, and the table adds the F1 on
``--split`` at those thresholds (the bars stay at ``--threshold``). AUC is each AU's ranking quality, which
no threshold changes.
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
from aucgan.train.au import f1_scores, f1_thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", help="folder written by `aucgan synth`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calibrate", default="", help="split to choose per-AU thresholds on, e.g. val")
    parser.add_argument("--out", type=Path, default=Path("au_net_f1.png"))
    args = parser.parse_args()

    net = load_au_net(args.checkpoint)
    faces = ShardedFaces(args.data, args.split)
    scores, labels = scores_and_labels(net, faces, args.batch)
    f1 = f1_scores(scores > args.threshold, labels)
    support = labels.sum(0)
    present = support > 0
    mean = float(f1[present].nanmean())
    area = auc(scores, labels)
    calibrated = None
    if args.calibrate:
        thresholds = f1_thresholds(
            *scores_and_labels(net, ShardedFaces(args.data, args.calibrate), args.batch)
        )
        calibrated = f1_scores(scores > thresholds, labels)

    extra = f" | F1 at {args.calibrate}'s thresholds (threshold)" if calibrated is not None else ""
    print(f"| AU | F1 at {args.threshold} | AUC | positives of {len(faces)}{extra} |")
    print("|---" * (5 if calibrated is not None else 4) + "|")
    for k, (name, count) in enumerate(zip(MAIN_AUS, support.tolist(), strict=True)):
        row = (
            f"| {name} | {f1[k]:.3f} | {area[k]:.3f} | {int(count)}" if count else f"| {name} | n/a | n/a | 0"
        )
        if calibrated is not None:
            row += f" | {calibrated[k]:.3f} ({thresholds[k]:.2f})" if count else " | n/a"
        print(row + " |")
    summary = (
        f"| **mean over {int(present.sum())} AUs present** | **{mean:.3f}** | {area[present].mean():.3f} |"
    )
    if calibrated is not None:
        summary += f" | **{calibrated[present].nanmean():.3f}**"
    print(summary + " |")

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


def scores_and_labels(net, faces: ShardedFaces, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    scores, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(faces), batch_size):
            batch = collate([faces[i] for i in range(start, min(len(faces), start + batch_size))])
            scores.append(net(batch.image).main_scores)
            labels.append(batch.au_occurrence)
    return torch.cat(scores), torch.cat(labels).bool()


def auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(K,)`` the probability that a positive outscores a negative (ties count half); NaN without both."""
    values = []
    for k in range(scores.shape[1]):
        positive, negative = scores[labels[:, k], k], scores[~labels[:, k], k]
        if len(positive) == 0 or len(negative) == 0:
            values.append(float("nan"))
            continue
        greater = (positive[:, None] > negative[None]).float() + 0.5 * (
            positive[:, None] == negative[None]
        ).float()
        values.append(float(greater.mean()))
    return torch.tensor(values)


if __name__ == "__main__":
    main()

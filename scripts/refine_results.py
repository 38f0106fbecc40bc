"""The "Refinement inside aucgan evaluate" section of docs/RESULTS.md from `aucgan evaluate --refine` runs.

    aucgan evaluate --n 128 --out runs/eval/au-gt128 --refine --ground-truth-coarse refine.steps=0
    aucgan evaluate --n 128 --out runs/eval/full-gt128 --refine --ground-truth-coarse
    aucgan evaluate --n 256 --out runs/eval/cf-au-net256 --refine refine.steps=0
    aucgan evaluate --n 64 --out runs/eval/cf-full-net64 --refine
    python scripts/refine_results.py runs/eval/{au-gt128,full-gt128,cf-au-net256,cf-full-net64}/metrics.json

Writes the table between the ``<!-- refine-evaluate -->`` markers of ``docs/RESULTS.md`` (``--results``): each
run's detail-normal error over the active wrinkle regions and the skin, flat, network and refined, with the
refinement's steps (the coarse fit's, ``refine.coarse_steps``, the AU fit's, ``refine.au_steps``, and the
displacement's, ``refine.steps``) and a flat detail's error on the refitted coarse surface. What the
table says is written under the markers, by whoever ran it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aucgan.bench import write_results_section

REPO = Path(__file__).resolve().parents[1]


def section(runs: list[tuple[dict, str]], title: str = "Refinement inside `aucgan evaluate`") -> str:
    lines = [
        f"## {title}",
        "",
        "The shipped weights (160 px, UV 160) on the synthetic test split, each face's detail-normal "
        "error over the wrinkle regions of its active AUs and over the whole skin; the refinement on top "
        "of the network's prediction and from flat (the other `refine.*` settings at their defaults), "
        "against the photo at the network's input size or, where the photo column says so, the same faces "
        "rendered larger (`--photo-size`, as the refinement reads a photo's full-resolution crop):",
        "",
        "| coarse | faces | photo (px) | refinement: coarse fit + AU fit + displacement steps | flat | "
        "network | flat on the refitted coarse | refined on the network | refined from flat | "
        "skin: flat / network / refined |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for metrics, _ in runs:
        n, r = metrics["normal_error_deg"], metrics["normal_error_deg"]["refined"]
        coarse, settings = metrics["config"]["coarse"], metrics["config"]["refine"]
        # runs made before the coarse fit (or with the true coarse fit, never refitted) have none
        coarse_steps = settings.get("coarse_steps", 0) if coarse != "ground truth" else 0
        # runs made before refine.au_start started every AU fit from the AU net
        au_start = "expression" if settings.get("au_start") == "expression" else "AU net"
        au = f"{settings.get('au_steps', 0)} (from {au_start}"
        au += f", step {settings['au_lr']:g})" if "au_lr" in settings else ")"
        steps = f"{coarse_steps} + {au} + {settings['steps']}"
        if settings["steps"]:
            steps += f" (pull {settings['magnitude']:g})"
        refitted = f"{r['coarse_flat_active']:.2f}°" if coarse_steps and "coarse_flat_active" in r else "—"
        # runs made before --photo-size compared with the network's input
        photo = metrics["config"].get("refine_photo_size", metrics["config"]["image_size"])
        lines.append(
            f"| {coarse} | {metrics['n_faces']} | {photo} | {steps} | {n['active_flat']:.2f}° | "
            f"{n['active']:.2f}° | "
            f"{refitted} | {r['active']:.2f}° (± {r['active_vs_network_se']:.2f}) | "
            f"{r['from_flat_active']:.2f}° ({r['from_flat_active'] / n['active_flat']:.2f} × flat) | "
            f"{n['flat']:.2f}° / {n['face']:.2f}° / {r['face']:.2f}° |"
        )
    lines += [
        "",
        '(± is the standard error over faces of refined minus network; "flat on the refitted coarse": a '
        "flat detail on the surface the coarse fit (`refine.coarse_steps`) gives, before the AU and "
        "displacement fits; the AU fit starts from the AU net's intensities or the coarse fit's expression, "
        "`refine.au_start`; the pull is `refine.magnitude`, the displacement fit's pull towards where it "
        "started.)",
        "",
    ]
    lines += [f"    {command}" for _, command in runs]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", nargs="+", help="metrics.json of aucgan evaluate --refine runs")
    parser.add_argument("--command", action="append", default=[], help="the command of each run, in order")
    parser.add_argument("--results", default=str(REPO / "docs" / "RESULTS.md"))
    parser.add_argument(
        "--marker", default="refine-evaluate", help="the section's marker in --results (default %(default)s)"
    )
    parser.add_argument(
        "--title", default="Refinement inside `aucgan evaluate`", help="the section's heading"
    )
    args = parser.parse_args()
    runs = []
    for index, path in enumerate(args.metrics):
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
        if "refined" not in metrics["normal_error_deg"]:
            parser.error(f"{path}: has no refined rows; run aucgan evaluate with --refine")
        command = args.command[index] if index < len(args.command) else f"(the run of {path})"
        runs.append((metrics, command))
    text = section(runs, args.title)
    write_results_section(args.results, args.marker, text)
    print(text)


if __name__ == "__main__":
    main()

"""The "Refinement inside aucgan evaluate" section of docs/RESULTS.md from `aucgan evaluate --refine` runs.

    aucgan evaluate --n 128 --out runs/eval/refine-gt128 --refine --ground-truth-coarse
    aucgan evaluate --n 64 --out runs/eval/refine-net64 --refine
    python scripts/refine_results.py runs/eval/refine-gt128/metrics.json runs/eval/refine-net64/metrics.json

Writes the table between the ``<!-- refine-evaluate -->`` markers of ``docs/RESULTS.md`` (``--results``): each
run's detail-normal error over the active wrinkle regions and the skin, flat, network and refined.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aucgan.bench import write_results_section

REPO = Path(__file__).resolve().parents[1]

READING = (
    "What it says: the refinement is only as good as the coarse fit it reads the photo through. With the "
    "true fits it lowers the network's active-region error by about 30 % (and removes about a third of "
    "flat's at this 160 px size; half at 224 px / UV 256, above), but it roughly doubles the small skin-"
    "wide error: it draws fine texture where the world has none (the albedo's fine blotches, 8-bit "
    "noise). Through the coarse network, whose own normal error dominates here, it makes the detail "
    "worse: the photo's shading, read through a misplaced surface, becomes displacement. This is why "
    "`refine.mode=auto` refines only what the MediaPipe landmark fit reads (real photos, median landmark "
    "distance about 1 % of the face box), never the coarse network's fits; how good that fit is on real "
    "skin cannot be measured without ground truth."
)


def section(runs: list[tuple[dict, str]]) -> str:
    lines = [
        "## Refinement inside `aucgan evaluate`",
        "",
        "The shipped weights (160 px, UV 160) on the synthetic test split, each face's detail-normal "
        "error over the wrinkle regions of its active AUs and over the whole skin; the refinement on top "
        "of the network's displacement and from flat (`refine.*` defaults):",
        "",
        "| coarse | faces | flat | network | refined on the network | refined from flat | "
        "skin: flat / network / refined |",
        "|---|---|---|---|---|---|---|",
    ]
    for metrics, _ in runs:
        n, r = metrics["normal_error_deg"], metrics["normal_error_deg"]["refined"]
        coarse = metrics["config"]["coarse"]
        lines.append(
            f"| {coarse} | {metrics['n_faces']} | {n['active_flat']:.2f}° | {n['active']:.2f}° | "
            f"{r['active']:.2f}° (± {r['active_vs_network_se']:.2f}) | {r['from_flat_active']:.2f}° | "
            f"{n['flat']:.2f}° / {n['face']:.2f}° / {r['face']:.2f}° |"
        )
    lines += ["", "(± is the standard error over faces of refined minus network.)", ""]
    lines += [f"    {command}" for _, command in runs]
    lines += ["", READING]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", nargs="+", help="metrics.json of aucgan evaluate --refine runs")
    parser.add_argument("--command", action="append", default=[], help="the command of each run, in order")
    parser.add_argument("--results", default=str(REPO / "docs" / "RESULTS.md"))
    args = parser.parse_args()
    runs = []
    for index, path in enumerate(args.metrics):
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
        if "refined" not in metrics["normal_error_deg"]:
            parser.error(f"{path}: has no refined rows; run aucgan evaluate with --refine")
        command = args.command[index] if index < len(args.command) else f"(the run of {path})"
        runs.append((metrics, command))
    text = section(runs)
    write_results_section(args.results, "refine-evaluate", text)
    print(text)


if __name__ == "__main__":
    main()

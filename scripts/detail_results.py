"""The detail section of docs/RESULTS.md from `aucgan evaluate` runs (their metrics.json), one per world seed.

    aucgan evaluate --n 256 --out runs/eval-seed0
    aucgan evaluate --n 256 --out runs/eval-seed1 seed=1
    python scripts/detail_results.py runs/eval-seed0/metrics.json runs/eval-seed1/metrics.json \
        --command "aucgan evaluate --n 256 --out runs/eval-seed0" --command "... seed=1"

Writes the table between the ``<!-- detail -->`` markers of ``docs/RESULTS.md`` (``--results``) and prints
it: the errors over the wrinkle regions of each face's active AUs against a flat prediction, the
half-resolution truth and the true detail laid on the coarse fit; the skin-wide errors; every wrinkle AU's
edit (locality, monotonic, gain, agreement), each line with the target it is held to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aucgan.bench import write_results_section

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"normal": 0.5, "displacement": 0.6, "locality": 0.8, "gain": 0.5}


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def error_rows(runs: list[tuple[str, dict]]) -> list[str]:
    rows = [
        "| world | faces | active normal error (°): model / flat / half-res truth / true detail on the "
        "coarse fit | model ÷ flat | "
        "active displacement MAE (µm): model / flat / half-res | model ÷ flat | skin normal error (°): "
        "model / flat | skin MAE (µm): model / flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in runs:
        n, d = m["normal_error_deg"], m["displacement_mae"]
        um = 1000.0  # metrics.json is in mm
        # the world's displacement on the reconstruction's coarse surface (runs before it was measured: —)
        true_detail = "—" if n.get("active_true_detail") is None else f"{n['active_true_detail']:.3f}"
        rows.append(
            f"| {name} | {m['n_faces']} | {n['active']:.3f} / {n['active_flat']:.3f} / "
            f"{n['active_half_res']:.3f} / {true_detail} | {n['active'] / n['active_flat']:.3f} | "
            f"{d['active'] * um:.1f} / {d['active_flat'] * um:.1f} / {d['active_half_res'] * um:.1f} | "
            f"{d['active'] / d['active_flat']:.3f} | {n['face']:.3f} / {n['flat']:.3f} | "
            f"{d['face'] * um:.2f} / {d['flat'] * um:.2f} |"
        )
    return rows


def checks(runs: list[tuple[str, dict]]) -> list[str]:
    lines = []
    for name, m in runs:
        n, d = m["normal_error_deg"], m["displacement_mae"]
        lines.append(
            f"- {name}: active-region normal error ≤ {TARGETS['normal']} × flat: "
            f"{mark(n['active'] <= TARGETS['normal'] * n['active_flat'])} "
            f"({n['active'] / n['active_flat']:.3f}); "
            f"active MAE ≤ {TARGETS['displacement']} × flat: "
            f"{mark(d['active'] <= TARGETS['displacement'] * d['active_flat'])} "
            f"({d['active'] / d['active_flat']:.3f}); skin-wide no worse than flat: "
            f"{mark(n['face'] <= n['flat'] and d['face'] <= d['flat'])}."
        )
    return lines


def ceiling_lines(runs: list[tuple[str, dict]]) -> list[str]:
    """How far any detail stage can go on each run's coarse fit: the world's own detail laid on it."""
    lines = []
    for name, m in runs:
        n = m["normal_error_deg"]
        if n.get("active_true_detail") is None:
            continue
        ratio = n["active_true_detail"] / n["active_flat"]
        lines.append(
            f"- {name}: the true detail on the coarse fit is {ratio:.2f} × flat's active-region normal error "
            f"({n['active_true_detail']:.3f}° against {n['active_flat']:.3f}°), the lowest a detail stage "
            f"reaches there without correcting the coarse fit."
        )
    return lines


def edit_rows(name: str, m: dict) -> list[str]:
    per_au = m["edit"]["per_au"]
    rows = [
        f"Edits on {name}: each wrinkle AU raised 0 → 1 on the neutralised faces.",
        "",
        "| AU | locality | monotonic | gain | agreement |",
        "|---|---|---|---|---|",
    ]
    passed = 0
    for au, r in per_au.items():
        ok = r["locality"] >= TARGETS["locality"] and r["monotonic"] and r.get("gain", 0) >= TARGETS["gain"]
        passed += ok
        rows.append(
            f"| {au} | {r['locality']:.2f} | {'yes' if r['monotonic'] else '**no**'} | "
            f"{r.get('gain', float('nan')):.2f} | {r.get('agreement', float('nan')):.2f} |"
        )
    rows += [
        "",
        f"{passed} of {len(per_au)} AUs meet locality ≥ {TARGETS['locality']}, monotonic and gain ≥ "
        f"{TARGETS['gain']}.",
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "metrics", nargs="+", type=Path, help="metrics.json of aucgan evaluate, one per world"
    )
    parser.add_argument("--command", action="append", default=[], help="the command that wrote each file")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--intro", default="", help="a paragraph before the tables (what was evaluated)")
    args = parser.parse_args()
    runs = []
    for path in args.metrics:
        data = json.loads(path.read_text())
        coarse = data["config"].get("coarse", "the coarse stage")
        runs.append((f"world seed {data['config']['world_seed']}, coarse fit: {coarse}", data))
    body = [
        "## Detail on held-out faces",
        "",
        *([args.intro, ""] if args.intro else []),
        *error_rows(runs),
        "",
        *checks(runs),
        "",
        *ceiling_lines(runs),
        "",
        *edit_rows(runs[0][0], runs[0][1]),
        "",
        "Reproduce:",
        "",
        "```",
        *args.command,
        " ".join(["python scripts/detail_results.py", *map(str, args.metrics)]),
        "```",
    ]
    text = "\n".join(body)
    write_results_section(args.results, "detail", text)
    print(text)


if __name__ == "__main__":
    main()

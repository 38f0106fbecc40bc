"""The measured scores of the shipped weights, kept beside them in ``pretrained/synthetic.metrics.json``.

The file is generated, never typed: :data:`SCORES_COMMAND` (``python scripts/measure_shipped_weights.py``)
evaluates the shipped weights on held-out synthetic faces with the functions ``aucgan evaluate`` uses and
writes :func:`summarise`'s summary — the command, the date, the weights' SHA-256, the number of faces and
the world's seed, and the headline scores: displacement MAE and normal error against flat, the AU net's F1
against the synthetic labels, AU consistency, edit locality (mean and per AU) and how many AUs' edits are
monotonic. ``aucgan doctor`` prints a few lines from it (:func:`describe_shipped`), and says when it was
measured on other weights than the ones shipped (the SHA-256 differs): then rerun the command.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aucgan.reconstruct import SHIPPED_WEIGHTS

SCORES_FILE = SHIPPED_WEIGHTS.with_name("synthetic.metrics.json")
"""The shipped weights' measured scores (package data beside the weights)."""

README_FILE = SHIPPED_WEIGHTS.with_name("README.md")
"""How the shipped weights were made."""

SCORES_COMMAND = "python scripts/measure_shipped_weights.py"
"""The command (from the repository root) that writes :data:`SCORES_FILE`."""

FORMAT = "aucgan-shipped-scores/1"

DEFAULT_FACES = 32
"""Held-out faces measured (as ``aucgan demo``)."""

DEFAULT_EDIT_FACES = 8
"""Faces the AU edits are measured on (as ``aucgan evaluate``)."""

DEFAULT_BATCH_SIZE = 16

_SIGNIFICANT_DIGITS = 4


def weights_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rounded(value: Any) -> Any:
    """Floats to :data:`_SIGNIFICANT_DIGITS` significant digits (None for NaN/inf), containers alike."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")
    if isinstance(value, Mapping):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    raise TypeError(f"cannot summarise a {type(value).__name__}")


def summarise(
    metrics: Mapping[str, Any],
    command: str,
    weights: str | os.PathLike[str],
    world_seed: int,
    edit_faces: int,
    created: str | None = None,
) -> dict[str, Any]:
    """The scores file's content from an evaluation's ``metrics`` (the report's schema, lengths in mm).

    Args:
        metrics: at least ``n_faces``, ``displacement_mae``, ``normal_error_deg``, ``au_consistency`` and
            ``edit`` as :func:`aucgan.evaluate.run.evaluate` measures them.
        command: the command line that measured them.
        weights: the weights file measured (its name and SHA-256 are kept).
        world_seed: the synthetic world's seed (``seed`` of the weights' config): with ``n_faces`` it fixes
            the test faces.
        edit_faces: how many of the faces the AU edits were measured on.
        created: the date (default: now, UTC).
    """
    from aucgan.evaluate.report import compare_to_flat

    def scaled(value: float | None, scale: float) -> float | None:
        return None if value is None else value * scale

    def compared(section: Mapping[str, Any], key: str, flat_key: str, scale: float) -> dict[str, Any]:
        spread = section.get(f"{key}_vs_flat_se")
        comparison = compare_to_flat(section[key], section[flat_key], spread)
        return {
            "model": scaled(section[key], scale),
            "flat": scaled(section[flat_key], scale),
            "vs_flat_se": scaled(spread, scale),
            "verdict": comparison.verdict,
            "vs_flat": comparison.text,
        }

    def error(section: Mapping[str, Any], scale: float) -> dict[str, Any]:
        """The whole face's error against flat, then each further error of the section (e.g. ``active``,
        over the wrinkle regions of each face's active AUs) against its ``<key>_flat`` where there is one."""
        entry = compared(section, "face", "flat", scale)
        for key, value in section.items():
            if key in ("face", "flat") or key.endswith(("_se", "_flat")) or isinstance(value, Mapping):
                continue
            if f"{key}_flat" in section:
                entry[key] = compared(section, key, f"{key}_flat", scale)
            else:
                entry[key] = {"model": scaled(value, scale)}
        return entry

    consistency = metrics["au_consistency"]
    per_au = metrics["edit"]["per_au"]
    localities = {au: entry["locality"] for au, entry in per_au.items()}
    finite = [value for value in localities.values() if value is not None and math.isfinite(value)]
    monotonic = [au for au, entry in per_au.items() if entry.get("monotonic") is True]
    summary = {
        "format": FORMAT,
        "command": command,
        "created": created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "weights": {"file": Path(weights).name, "sha256": weights_digest(weights)},
        "faces": {
            "split": "test",
            "n_faces": int(metrics["n_faces"]),
            "edit_faces": int(edit_faces),
            "world_seed": int(world_seed),
        },
        "units": {"displacement_mae": "µm", "normal_error": "degrees"},
        "displacement_mae": error(metrics["displacement_mae"], 1000.0),
        "normal_error_deg": error(metrics["normal_error_deg"], 1.0),
        "au_net_f1_vs_truth": consistency["input_vs_truth_f1"],
        "au_consistency_f1": consistency["f1_mean"],
        "edit": {
            "locality_mean": sum(finite) / len(finite) if finite else None,
            "locality": localities,
            "monotonic": len(monotonic),
            "of": len(per_au),
            "monotonic_aus": monotonic,
        },
    }
    return _rounded(summary)


def measure(
    weights: str | os.PathLike[str] | None = None,
    n_faces: int = DEFAULT_FACES,
    edit_faces: int = DEFAULT_EDIT_FACES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    command: str = SCORES_COMMAND,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Evaluate ``weights`` (default: the shipped ones) on ``n_faces`` held-out synthetic faces, with the
    metric functions of ``aucgan evaluate`` (no report written), and return :func:`summarise`'s summary."""
    from aucgan.evaluate.metrics import detail_errors, edit_metrics
    from aucgan.evaluate.run import first_faces, test_batches
    from aucgan.face_model.regions import AU_WRINKLE_REGIONS
    from aucgan.reconstruct import Reconstructor

    if n_faces < 1 or edit_faces < 1:
        raise ValueError(f"n_faces and edit_faces must be at least 1, got {n_faces} and {edit_faces}")
    path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
    reconstructor = Reconstructor.load(path)
    batches = list(test_batches(reconstructor, n_faces, batch_size))
    sections, consistency, reconstructions = detail_errors(reconstructor, batches, progress)
    edits = edit_metrics(reconstructor, first_faces(reconstructions, edit_faces), tuple(AU_WRINKLE_REGIONS))
    metrics = {"n_faces": n_faces, **sections, "au_consistency": consistency, "edit": edits}
    return summarise(metrics, command, path, reconstructor.cfg.seed, min(edit_faces, n_faces))


def write_scores(summary: Mapping[str, Any], path: str | os.PathLike[str] = SCORES_FILE) -> Path:
    """Write ``summary`` as indented JSON (atomically)."""
    from aucgan.atomic import atomic_write_bytes

    text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)


def read_scores(path: str | os.PathLike[str] = SCORES_FILE) -> dict[str, Any] | None:
    """The scores file, or None when it is missing.

    Raises:
        ValueError: not JSON, or not a scores file of this format (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON scores file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an aucgan scores file (no format {FORMAT!r}); rerun {SCORES_COMMAND}")
    return data


def _number(value: Any) -> str:
    from aucgan.evaluate.report import _format_number

    return _format_number(value)


def trained_on(config: Any) -> list[str]:
    """Two short lines on what weights with ``config`` (their stored :class:`~aucgan.config.Config`) were
    trained on and as what, from the settings the weights file records."""
    world = (
        "aucgan's synthetic face world" if config.face_model.kind == "procedural" else config.face_model.kind
    )
    truth = (
        f", displacement_truth={config.loss.displacement_truth:g}" if config.loss.displacement_truth else ""
    )
    return [
        f"trained on {world} ({config.render.image_size} px renders, world seed {config.seed})",
        f"detail {config.model.detail_decoder}, {config.trainer.steps} steps{truth}; "
        f"AU net {config.model.au_backbone}",
    ]


def score_lines(scores: Mapping[str, Any]) -> list[str]:
    """Five short lines of the headline scores of a scores file."""
    faces = scores.get("faces", {})
    displacement, normal = scores.get("displacement_mae", {}), scores.get("normal_error_deg", {})
    edit = scores.get("edit", {})
    locality = edit.get("locality", {})
    au12 = f", AU12 {_number(locality['AU12'])}" if "AU12" in locality else ""
    model, flat = _number(displacement.get("model")), _number(displacement.get("flat"))
    angle, flat_angle = _number(normal.get("model")), _number(normal.get("flat"))
    f1, consistency = _number(scores.get("au_net_f1_vs_truth")), _number(scores.get("au_consistency_f1"))
    return [
        f"measured {str(scores.get('created', '?'))[:10]} on {faces.get('n_faces', '?')} held-out faces "
        f"(world seed {faces.get('world_seed', '?')}):",
        f"displacement MAE {model} µm, flat {flat}: {displacement.get('vs_flat', '?')}",
        f"normal error {angle}°, flat {flat_angle}°: {normal.get('vs_flat', '?')}",
        f"AU net F1 {f1}, AU consistency {consistency}, {edit.get('monotonic', '?')} of "
        f"{edit.get('of', '?')} AU edits monotonic",
        f"edit locality mean {_number(edit.get('locality_mean'))}{au12}",
    ]


def describe_shipped(
    weights: str | os.PathLike[str] = SHIPPED_WEIGHTS, scores_file: str | os.PathLike[str] = SCORES_FILE
) -> list[str]:
    """``aucgan doctor``'s lines on the shipped weights (at most 8): what they were trained on (from their
    stored config), their measured scores (from the scores file, or why there are none) and where to read
    more.

    Raises:
        CheckpointError: the weights file cannot be read.
    """
    from aucgan.weights import read_weights

    packed = read_weights(weights)
    lines = trained_on(packed.config)
    scores_file = Path(scores_file)
    try:
        scores = read_scores(scores_file)
    except ValueError as error:
        lines.append(str(error))
    else:
        if scores is None:
            lines.append(f"no measured scores ({scores_file.name} is missing): run {SCORES_COMMAND}")
        elif scores.get("weights", {}).get("sha256") != weights_digest(weights):
            lines.append(
                f"{scores_file.name} measured other weights (SHA-256 differs): rerun {SCORES_COMMAND}"
            )
        else:
            lines += score_lines(scores)
    lines.append(f"details: {scores_file.name}, {README_FILE.name} beside the weights")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python scripts/measure_shipped_weights.py``: measure the weights, write the scores file."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=SCORES_COMMAND, description="Measure the shipped weights and write their scores file."
    )
    parser.add_argument("--n", type=int, default=DEFAULT_FACES, help="held-out faces (default %(default)s)")
    parser.add_argument(
        "--edit-faces",
        type=int,
        default=DEFAULT_EDIT_FACES,
        help="faces the AU edits use (default %(default)s)",
    )
    parser.add_argument("--weights", type=Path, help="a weights file (default: the shipped weights)")
    parser.add_argument(
        "--out", type=Path, default=SCORES_FILE, help="the scores file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    command = f"{SCORES_COMMAND} --n {args.n} --edit-faces {args.edit_faces}"
    if args.weights is not None:
        command += f" --weights {args.weights}"
    summary = measure(args.weights, args.n, args.edit_faces, command=command)
    path = write_scores(summary, args.out)
    print(f"wrote {path}")
    for line in score_lines(summary):
        print(line)
    return 0

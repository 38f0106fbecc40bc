"""The evaluation report: ``metrics.json``, matplotlib plots and a self-contained ``report.html``.

The input is a metrics mapping (what ``aucgan evaluate`` measures)::

    {
      "title": str, "created": str, "n_faces": int,
      "config": {name: value}, "weights": {name: str},
      "units": {"displacement": "mm", "normal_error": "degrees"},
      "displacement_mae": {"face": float, "flat": float, "face_vs_flat_se": float,
                           "regions": {region: float}, "regions_flat": {region: float}},
      "normal_error_deg": {...the same keys...},
      "au_consistency": {"f1_mean": float, "per_au": {au: float},
                         "input_vs_truth_f1": float, "render_vs_truth_f1": float},
      "edit": {"intensities": [K floats],
               "per_au": {au: {"locality": float, "monotonic": bool,
                               "region_energy": [K floats], "outside_energy": [K floats]}}},
      "timings": {"faces_per_second": float, "seconds": float},
    }

Every section may be missing; the report shows what is there. ``"flat"`` is the error of a displacement of
zero everywhere (no wrinkles), the baseline a detail model has to beat; ``"face_vs_flat_se"`` the standard
error over faces of the per-face difference between the two. The two error sections may hold further
numbers, shown as rows of the errors table: ``"<name>"`` is compared with ``"<name>_flat"`` when that exists
(with ``"<name>_vs_flat_se"`` as its spread), ``"<name>_flat"`` alone is a baseline row. An edit entry may
hold further numbers or flags, shown as further columns. A change is called better or worse than flat only
beyond :data:`NEGLIGIBLE_CHANGE` (see :func:`compare_to_flat`).

Lengths are stored in the units ``"units"`` names (millimetres) and shown in the unit that puts the numbers
of a table between about 0.1 and 1000 (micrometres for wrinkles; :func:`display_unit`). A NaN or infinite
number is written to ``metrics.json`` as ``null`` and shown as "n/a". The HTML needs no network: plain CSS
in a ``<style>`` block, no scripts, images referenced by paths relative to the report folder.
"""

from __future__ import annotations

import html
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aucgan import __version__
from aucgan.atomic import atomic_write_bytes
from aucgan.au import AU_NAMES

# One sentence per metric, shown beside the numbers. ``{unit}`` is the displacement unit.
METRIC_DESCRIPTIONS: dict[str, str] = {
    "displacement_mae": (
        "Mean absolute difference between the predicted and the true UV displacement over the face, "
        "in {unit}; lower is better."
    ),
    "normal_error_deg": (
        "Mean angle between the predicted and the true detail normals over the face, in degrees; "
        "lower is better."
    ),
    "flat": (
        "The flat baseline is the same error for a displacement of zero everywhere (no wrinkles at all): "
        "the number a detail model has to beat."
    ),
    "versus_flat": (
        "vs flat: how much higher (+) or lower (−) the error is than flat's. Green only when it is lower "
        "by {margin} or more (or, where the spread over faces is known, by more than {k:g} standard "
        "errors); red when higher by as much; grey otherwise: a model within {margin} of flat has not "
        "shown that it recovers wrinkles."
    ),
    "f1_mean": (
        "Agreement (F1) between the AU net's detections on the rendered detail images and on the input "
        "images, averaged over AUs; 1 means identical, higher is better."
    ),
    "truth_f1": (
        "F1 of the AU net's detections against the synthetic AU labels, on the inputs and on the renders: "
        "how well the AU net itself reads these faces."
    ),
    "locality": (
        "Share of the displacement energy added by raising one AU that lies inside that AU's wrinkle "
        "regions; 1 means every change is where FACS puts the folds."
    ),
    "monotonic": "Monotonic: the energy inside the AU's regions never falls as its intensity rises.",
}

FOOTER_TEXT = (
    "Ground truth is synthetic: every test face comes from aucgan's procedural face world, rendered from a "
    "known identity, known AU intensities and the wrinkle displacement those AUs produce, so the errors "
    "above are measured against the geometry that made each image, not against another method's "
    "estimate. Numbers on real photographs are not measured here and may differ."
)

# Paul Tol's colour-blind-safe "bright" palette.
_PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_MODEL_COLOUR = "#4477AA"
_BASELINE_COLOUR = "#888888"
_MEAN_COLOUR = "#EE6677"
_PLOT_DPI = 160
_PLOT_WIDTH_INCHES = 10.0
_EDIT_PLOT_COLUMNS = 6
"""Panels per row of the edit curves (one per AU)."""
_TICK_FONT = 8.5
_LABEL_FONT = 9.0

_NO_IMAGES: Mapping[str, Path] = MappingProxyType({})

_TIMING_UNITS = {"seconds": "s", "faces_per_second": "faces/s"}

NEGLIGIBLE_CHANGE = 0.05
"""The smallest change of an error, as a fraction of the flat baseline's error, that the report calls
better or worse than flat.

A detail error within 5 % of the error of a zero displacement does not show that the model recovers
wrinkles (a nearly flat prediction gets there), so the report shows such a change neutrally ("within 5 % of
flat"), never as a win, and calls a change worse only beyond the same margin. Where the metrics carry the
standard error of the per-face difference to flat, the margin is the larger of this fraction and
:data:`NOISE_STANDARD_ERRORS` standard errors (a change inside the noise of the test faces is no change)."""

NOISE_STANDARD_ERRORS = 2.0
"""How many standard errors of the per-face difference to flat a change must exceed (about a 95 %
interval) to count, where a standard error is known."""

BETTER, SAME, WORSE, UNKNOWN = "better", "same", "worse", "unknown"
"""Verdicts of :func:`compare_to_flat`; also the CSS classes of the report's badges."""


@dataclass(frozen=True)
class FlatComparison:
    """How an error compares with the flat baseline's.

    Attributes:
        verdict: ``"better"`` (lower by more than the margin), ``"same"`` (within it), ``"worse"`` (higher by
            more than it) or ``"unknown"`` (a number is missing, or the baseline is not positive).
        change: ``1 - error / flat``: the fraction by which the error is lower than flat's (negative:
            higher); None when unknown.
        margin: the fraction of flat's error within which a change is no change (:data:`NEGLIGIBLE_CHANGE`
            or, when larger, :data:`NOISE_STANDARD_ERRORS` standard errors); None when unknown.
        noise_limited: whether the standard error, not :data:`NEGLIGIBLE_CHANGE`, set the margin.
    """

    verdict: str
    change: float | None = None
    margin: float | None = None
    noise_limited: bool = False

    @property
    def text(self) -> str:
        """A short phrase: ``"12 % lower than flat"``, ``"within 5 % of flat (1.0 % lower)"``, ..."""
        if self.verdict == UNKNOWN or self.change is None or self.margin is None:
            return "no comparison with flat"
        if self.change == 0.0:
            direction = "equal"
        else:
            direction = f"{_percent(abs(self.change))} {'lower' if self.change > 0 else 'higher'}"
        if self.verdict == BETTER:
            return f"{direction} than flat"
        if self.verdict == WORSE:
            return f"{direction} than flat"
        if self.noise_limited:
            noise = f"{NOISE_STANDARD_ERRORS:g} SE = {_percent(self.margin)}"
            return f"within noise of flat ({direction}; {noise})"
        return f"within {_percent(self.margin)} of flat ({direction})"


def _percent(fraction: float) -> str:
    """``0.049`` → ``"4.9 %"``, ``0.05`` → ``"5 %"``, ``0.123`` → ``"12 %"``, ``0.0003`` → ``"<0.1 %"``."""
    value = fraction * 100
    if 0 < value < 0.05:
        return "<0.1 %"
    text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    return f"{text.removesuffix('.0')} %"


def compare_to_flat(
    error: float | None, flat: float | None, standard_error: float | None = None
) -> FlatComparison:
    """Compare a detail error with the flat baseline's (lower is better for both).

    Args:
        error: the model's error (e.g. displacement MAE over the face).
        flat: the same error of a zero displacement.
        standard_error: optional, in the units of ``error``: the standard error over the test faces of the
            per-face difference ``error - flat``; widens the margin to :data:`NOISE_STANDARD_ERRORS` of it.

    Returns:
        ``"better"`` only when the error is lower than flat's by at least the margin
        (:data:`NEGLIGIBLE_CHANGE` of flat, or the noise when larger), ``"worse"`` when higher by at least
        it, else ``"same"``; ``"unknown"`` when a number is missing or ``flat`` is not positive.
    """
    if error is None or flat is None or not math.isfinite(error) or not math.isfinite(flat) or flat <= 0:
        return FlatComparison(UNKNOWN)
    change = 1.0 - error / flat
    margin, noise_limited = NEGLIGIBLE_CHANGE, False
    if standard_error is not None and math.isfinite(standard_error):
        noise = NOISE_STANDARD_ERRORS * abs(standard_error) / flat
        if noise > margin:
            margin, noise_limited = noise, True
    verdict = SAME if abs(change) < margin else (BETTER if change > 0 else WORSE)
    return FlatComparison(verdict, change, margin, noise_limited)


_LENGTHS_IN_METRES = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "µm": 1e-6, "μm": 1e-6, "um": 1e-6, "nm": 1e-9}
_DISPLAY_LENGTHS = (("m", 1.0), ("mm", 1e-3), ("µm", 1e-6), ("nm", 1e-9))
_POWERS = {"": 1, "²": 2, "^2": 2, "2": 2}
_TARGET_MAGNITUDE = math.log10(30.0)
"""Display units are chosen to bring the largest number of a table nearest 30 (on a log scale): between
about 1 and 1000 for lengths, 0.1 and 10⁵ for areas."""


def _length_power(unit: str) -> tuple[str, int]:
    """``unit`` as a length and its power (``"mm²"`` → ``("mm", 2)``); ``(unit, 1)`` for anything else."""
    for suffix, exponent in _POWERS.items():
        if suffix and unit.endswith(suffix) and unit[: -len(suffix)] in _LENGTHS_IN_METRES:
            return unit[: -len(suffix)], exponent
    return unit, 1


def display_unit(unit: str, values: Iterable[float | None]) -> tuple[str, float]:
    """The unit to show ``values`` (measured in ``unit``) in, and the factor that converts them to it.

    Lengths (``"m"``, ``"cm"``, ``"mm"``, ``"µm"``, ``"nm"``) and squared lengths (``"mm²"``) are shown in
    the one of m, mm, µm, nm (m², mm², µm², nm²) that brings the largest value nearest 30, so a wrinkle
    displacement of 0.011 mm reads 11.0 µm and an energy of 5.5e-7 mm² reads 0.55 µm². Other units, and
    values that are all missing or zero, are kept as they are (factor 1).
    """
    text = str(unit).strip()
    base, power = _length_power(text)
    if base not in _LENGTHS_IN_METRES:
        return text, 1.0
    magnitudes = [abs(value) for value in values if value is not None and math.isfinite(value) and value != 0]
    if not magnitudes:
        return text, 1.0
    in_metres = _LENGTHS_IN_METRES[base] ** power
    largest = max(magnitudes) * in_metres
    name, size = min(
        _DISPLAY_LENGTHS, key=lambda item: abs(math.log10(largest / item[1] ** power) - _TARGET_MAGNITUDE)
    )
    return name + ("²" if power == 2 else ""), in_metres / size**power


def format_quantity(value: float | None, unit: str) -> str:
    """``value`` (in ``unit``) as text in its display unit (:func:`display_unit`): ``0.011, "mm"`` →
    ``"11.0 µm"``; ``"n/a"`` for a missing or non-finite value."""
    shown, factor = display_unit(unit, [value])
    return _with_unit(None if value is None else value * factor, _unit_text({"unit": shown}, "unit", shown))


def error_summary(metrics: Mapping[str, Any], separator: str = "; ") -> str:
    """The detail errors of ``metrics`` (the report's schema) against flat, in the report's units and words,
    e.g. ``"displacement MAE 11.0 µm vs flat 11.1 µm: within 5 % of flat (0.9 % lower); normal error 5.49°
    vs flat 5.49°: ..."`` (one part per error, joined by ``separator``); ``""`` when there is neither."""
    data = _json_safe(metrics)
    _validate(data)
    parts = []
    for metric in _error_metrics(data):
        face, flat = metric.shown(metric.section.get("face")), metric.shown(metric.section.get("flat"))
        parts.append(
            f"{metric.label} {_with_unit(face, metric.unit)} vs flat {_with_unit(flat, metric.unit)}: "
            f"{_comparison(metric, 'face').text}"
        )
        if metric.section.get("active") is not None:
            active = metric.shown(metric.section.get("active"))
            active_flat = metric.shown(metric.section.get("active_flat"))
            half = metric.section.get("active_half_res")
            true_detail = metric.section.get("active_true_detail")
            ceiling = (
                ""
                if half is None
                else f", half-resolution truth {_with_unit(metric.shown(half), metric.unit)}"
            )
            if true_detail is not None:
                shown = _with_unit(metric.shown(true_detail), metric.unit)
                ceiling += f", true detail on this coarse fit {shown}"
            parts.append(
                f"{metric.label} in the active wrinkle regions {_with_unit(active, metric.unit)} vs flat "
                f"{_with_unit(active_flat, metric.unit)}{ceiling}: {_comparison(metric, 'active').text}"
            )
        refined = metric.section.get("refined")
        if isinstance(refined, Mapping) and refined.get("active") is not None:
            shown = {key: _with_unit(metric.shown(refined.get(key)), metric.unit) for key in refined}
            parts.append(
                f"{metric.label} in the active wrinkle regions after photometric refinement "
                f"{shown['active']} (from flat {shown['from_flat_active']}; skin-wide {shown['face']})"
            )
    return separator.join(parts)


@dataclass(frozen=True)
class GalleryItem:
    """One picture in the report's gallery.

    Attributes:
        title: a short name, e.g. ``"test face 3"`` or ``"grace_hopper"``.
        image: a PNG (e.g. a face folder's ``vis.png``); the HTML refers to it relative to the report folder.
        caption: an optional line under the title.
    """

    title: str
    image: Path
    caption: str = ""


def write_plots(metrics: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Draw the report's plots as PNGs under ``out/plots/``.

    Plots made, each only when its section has data: ``"region_errors"`` (horizontal bars of displacement
    MAE and normal error per region, with the whole-face value and the flat baseline as lines),
    ``"au_consistency"`` (F1 per AU, with the mean as a line), ``"edit_curves"`` (energy inside the AU's
    regions against intensity, one panel per AU, the energy outside dashed). Uses matplotlib's object API
    with the Agg canvas, so pyplot's global state and the chosen backend are never touched.

    Args:
        metrics: the metrics mapping described in this module's docstring.
        out: the report folder.

    Returns:
        Plot name -> path of the PNG written, in the order above.
    """
    data = _json_safe(metrics)
    _validate(data)
    figures = {
        "region_errors": _region_errors_figure(data),
        "au_consistency": _au_consistency_figure(data),
        "edit_curves": _edit_curves_figure(data),
    }
    written: dict[str, Path] = {}
    for name, figure in figures.items():
        if figure is None:
            continue
        buffer = io.BytesIO()
        FigureCanvasAgg(figure)  # draw with Agg whatever backend pyplot may have chosen
        figure.savefig(buffer, format="png", dpi=_PLOT_DPI, facecolor="white")
        path = Path(out) / "plots" / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written[name] = path
    return written


def write_report(
    out: Path,
    metrics: Mapping[str, Any],
    gallery: Sequence[GalleryItem] = (),
    extra_images: Mapping[str, Path] = _NO_IMAGES,
) -> Path:
    """Write ``out/metrics.json``, the plots (:func:`write_plots`) and ``out/report.html``.

    ``metrics.json`` holds ``metrics`` as given (key order kept, indent 2) with NaN and infinities as
    ``null``; Paths become strings and numpy/torch numbers and arrays plain JSON numbers and lists. Every
    file is written atomically (a temporary file beside it, then renamed), ``report.html`` last.

    Args:
        out: the report folder (created if missing).
        metrics: the metrics mapping described in this module's docstring.
        gallery: pictures shown in a grid near the top, e.g. reconstructed test faces.
        extra_images: further figures, title -> PNG path, shown in their own section.

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: when ``metrics`` does not follow the schema (the message names the offending key).
        FileNotFoundError: when a gallery or extra image does not exist.
    """
    out = Path(out)
    data = _json_safe(metrics)
    _validate(data)
    pictures = [(item.title, Path(item.image), item.caption) for item in gallery]
    pictures_extra = [(title, Path(image), "") for title, image in extra_images.items()]
    for title, image, _ in pictures + pictures_extra:
        if not image.is_file():
            raise FileNotFoundError(f"report image {title!r} not found: {image}")

    text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(out / "metrics.json", text.encode("utf-8"))
    plots = write_plots(data, out)
    page = _render_page(data, out, plots, pictures, pictures_extra)
    report = out / "report.html"
    atomic_write_bytes(report, page.encode("utf-8"))
    return report


# ---------------------------------------------------------------------------------------------------------
# Input checking


def _json_safe(value: Any, where: str = "metrics") -> Any:
    """A copy of ``value`` made of dict, list, str, int, float, bool and None, NaN/inf as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist(), where)
    raise ValueError(f"{where} is a {type(value).__name__}, which metrics.json cannot hold")


def _section(data: Mapping[str, Any], key: str, where: str = "metrics") -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}[{key!r}] must be a mapping, got {type(value).__name__}")
    return value


def _number(value: Any, where: str) -> float | None:
    """A finite float, or None for a missing / NaN / infinite value (already None after _json_safe)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where} must be a number, got {value!r}")
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(value: Any, where: str) -> list[float | None]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of numbers, got {type(value).__name__}")
    return [_number(item, f"{where}[{index}]") for index, item in enumerate(value)]


def _validate(data: Mapping[str, Any]) -> None:
    """Check the sections the report reads; raise ValueError naming the first offending key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"metrics must be a mapping, got {type(data).__name__}")
    for key in ("config", "weights", "units", "timings", "au_consistency", "edit"):
        _section(data, key)
    for key in ("displacement_mae", "normal_error_deg"):
        section = _section(data, key)
        if section is None:
            continue
        for field, value in section.items():
            if isinstance(value, Mapping):
                for name, item in value.items():
                    _number(item, f"metrics[{key!r}][{field!r}][{name!r}]")
            else:
                _number(value, f"metrics[{key!r}][{field!r}]")
    consistency = _section(data, "au_consistency")
    if consistency is not None:
        for field in ("f1_mean", "input_vs_truth_f1", "render_vs_truth_f1"):
            _number(consistency.get(field), f"metrics['au_consistency'][{field!r}]")
        per_au = _section(consistency, "per_au", "metrics['au_consistency']") or {}
        for au, value in per_au.items():
            _number(value, f"metrics['au_consistency']['per_au'][{au!r}]")
    edit = _section(data, "edit")
    if edit is not None:
        intensities = _numbers(edit.get("intensities", []), "metrics['edit']['intensities']")
        per_au = _section(edit, "per_au", "metrics['edit']") or {}
        for au, entry in per_au.items():
            where = f"metrics['edit']['per_au'][{au!r}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where} must be a mapping, got {type(entry).__name__}")
            _number(entry.get("locality"), f"{where}['locality']")
            monotonic = entry.get("monotonic")
            if monotonic is not None and not isinstance(monotonic, bool):
                raise ValueError(f"{where}['monotonic'] must be true or false, got {monotonic!r}")
            for field, value in entry.items():
                if isinstance(value, list):
                    values = _numbers(value, f"{where}[{field!r}]")
                    if len(values) != len(intensities):
                        raise ValueError(
                            f"{where}[{field!r}] has {len(values)} values but metrics['edit']['intensities'] "
                            f"has {len(intensities)}"
                        )
                elif not isinstance(value, bool):
                    _number(value, f"{where}[{field!r}]")


# ---------------------------------------------------------------------------------------------------------
# Formatting


def _format_number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (trailing zeros kept); "n/a" for None/NaN/inf."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else ("yes" if value else "no")
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    number = float(value)
    if not math.isfinite(number):
        return "n/a"
    if number == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    decimals = min(max(digits - 1 - magnitude, 0), 8)
    return f"{number:,.{decimals}f}"


def _format_value(value: Any) -> str:
    """Any JSON value as short text: numbers via :func:`_format_number`, containers as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, numbers.Real)):
        return _format_number(value)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _humanise(key: str) -> str:
    return key.replace("_", " ")


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [value for value in values if value is not None]
    return sum(finite) / len(finite) if finite else None


def _unit_text(units: Mapping[str, Any], key: str, default: str) -> str:
    unit = str(units.get(key, default))
    return "°" if unit.lower() in ("degrees", "degree", "deg") else unit


def _with_unit(value: float | None, unit: str) -> str:
    text = _format_number(value)
    if text == "n/a" or not unit:
        return text
    return f"{text}{unit}" if unit == "°" else f"{text} {unit}"


def _au_cell(au: str) -> str:
    """HTML: the AU's code followed by its FACS name in small print when known."""
    name = AU_NAMES.get(au)
    return f"{_e(au)}<small>{_e(name)}</small>" if name else _e(au)


@dataclass(frozen=True)
class _ErrorMetric:
    """One error section as the report shows it: its values times ``factor`` are in ``unit``."""

    key: str
    label: str
    section: Mapping[str, Any]
    unit: str
    factor: float

    def shown(self, value: float | None) -> float | None:
        return None if value is None else value * self.factor

    @property
    def heading(self) -> str:
        """HTML: the label and, in a span kept out of the headings' capitals, the unit."""
        return (
            f'{_e(self.label)} <span class="unit">({_e(self.unit)})</span>' if self.unit else _e(self.label)
        )


_ERROR_SECTIONS = (
    ("displacement_mae", "displacement", "mm", "displacement MAE"),
    ("normal_error_deg", "normal_error", "degrees", "normal error"),
)


def _error_metrics(data: Mapping[str, Any]) -> list[_ErrorMetric]:
    """The displacement and normal error sections present, each with the unit its numbers are shown in."""
    units = _section(data, "units") or {}
    metrics = []
    for key, unit_key, default, label in _ERROR_SECTIONS:
        section = _section(data, key)
        if section is None:
            continue
        values: list[float | None] = []
        for field, value in section.items():
            if isinstance(value, Mapping):
                values.extend(value.values())
            elif not field.endswith("_se"):
                values.append(value)
        unit, factor = display_unit(_unit_text(units, unit_key, default), values)
        metrics.append(_ErrorMetric(key, label, section, unit, factor))
    return metrics


def _is_baseline(key: str) -> bool:
    return key == "flat" or key.endswith("_flat")


def _baseline_of(key: str) -> str:
    """The key of ``key``'s flat baseline: ``"face"`` → ``"flat"``, ``"active"`` → ``"active_flat"``."""
    return "flat" if key == "face" else f"{key}_flat"


def _spread_of(key: str) -> str:
    """The key of the standard error of ``key``'s per-face difference to flat."""
    return f"{key}_vs_flat_se"


def _scalar_keys(sections: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys of the error sections' numbers to show as rows, in order: each measured error (``face``
    first) and then each baseline that no measured error is compared with; spreads are left out."""
    keys: list[str] = []
    for section in sections:
        keys.extend(
            key for key, value in section.items()
            if not isinstance(value, Mapping) and not key.endswith("_se") and key not in keys
        )  # fmt: skip
    measured = [key for key in keys if not _is_baseline(key)]
    measured.sort(key=lambda key: key != "face")
    paired = {_baseline_of(key) for key in measured}
    return measured + [key for key in keys if _is_baseline(key) and key not in paired]


def _comparison(metric: _ErrorMetric, key: str, flat_key: str | None = None) -> FlatComparison:
    section = metric.section
    flat = section.get(flat_key or _baseline_of(key))
    return compare_to_flat(section.get(key), flat, section.get(_spread_of(key)))


def _verdict_badge(comparison: FlatComparison, short: bool = False) -> str:
    """HTML: a badge coloured by the verdict (green only for ``"better"``); ``short`` shows the signed
    relative change of the error, e.g. ``−1.0 %``, with the full phrase as a tooltip."""
    if comparison.verdict == UNKNOWN or comparison.change is None:
        return "" if short else f'<span class="badge {UNKNOWN}">{_e(comparison.text)}</span>'
    if short:
        relative = -comparison.change
        sign = "+" if relative > 0 else "−"
        label = "≈0 %" if abs(relative) < 0.0005 else f"{sign}{_percent(abs(relative))}"
    else:
        label = comparison.text
    return f'<span class="badge {comparison.verdict}" title="{_e(comparison.text)}">{_e(label)}</span>'


def _root_unit(unit: str) -> str:
    """The length whose square ``unit`` is (``"mm²"`` → ``"mm"``); ``""`` for anything else."""
    base, power = _length_power(unit.strip())
    return base if power == 2 else ""


def _energy_unit(data: Mapping[str, Any]) -> tuple[str, float]:
    """The display unit and factor of the edit section's energies (one for the whole section)."""
    units = _section(data, "units") or {}
    edit = _section(data, "edit") or {}
    values = [
        value
        for entry in (edit.get("per_au") or {}).values()
        for field in ("region_energy", "outside_energy")
        for value in entry.get(field) or []
    ]
    return display_unit(str(units.get("energy", "")), values)


# ---------------------------------------------------------------------------------------------------------
# Plots


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _style_axes(ax: Any, grid_axis: str = "both") -> None:
    ax.tick_params(labelsize=_TICK_FONT)
    ax.grid(axis=grid_axis, color="#e6e6e6", linewidth=0.7)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def _region_errors_figure(data: Mapping[str, Any]) -> Figure | None:
    panels = [metric for metric in _error_metrics(data) if metric.section.get("regions")]
    names: list[str] = []
    for metric in panels:
        names.extend(name for name in metric.section["regions"] if name not in names)
    if not names:
        return None

    height = max(2.6, 0.3 * len(names) + 1.2)
    figure = Figure(figsize=(_PLOT_WIDTH_INCHES, height), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = [float(index) for index in range(len(names))]
    for ax, metric in zip(axes, panels, strict=True):
        regions = metric.section.get("regions") or {}
        regions_flat = metric.section.get("regions_flat") or {}
        values = [_nan(metric.shown(regions.get(name))) for name in names]
        if regions_flat:
            flat_values = [_nan(metric.shown(regions_flat.get(name))) for name in names]
            below = [position + 0.2 for position in positions]
            above = [position - 0.2 for position in positions]
            ax.barh(below, flat_values, color=_BASELINE_COLOUR, height=0.4, label="flat, per region")
            ax.barh(above, values, color=_MODEL_COLOUR, height=0.4, label="model, per region")
        else:
            ax.barh(positions, values, color=_MODEL_COLOUR, height=0.65, label="model, per region")
        face, flat = metric.shown(metric.section.get("face")), metric.shown(metric.section.get("flat"))
        if face is not None:
            ax.axvline(face, color=_MEAN_COLOUR, linewidth=1.4, linestyle=":", label="model, whole face")
        if flat is not None:
            ax.axvline(flat, color=_BASELINE_COLOUR, linewidth=1.6, linestyle="--", label="flat, whole face")
        ax.set_xlabel(
            f"{metric.label} ({metric.unit})" if metric.unit else metric.label, fontsize=_LABEL_FONT
        )
        _style_axes(ax, "x")
        ax.tick_params(axis="y", length=0)
    axes[0].set_yticks(positions, [_humanise(name) for name in names])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside upper center", ncols=4, fontsize=_LABEL_FONT, frameon=False)
    return figure


def _au_consistency_figure(data: Mapping[str, Any]) -> Figure | None:
    consistency = _section(data, "au_consistency") or {}
    per_au = consistency.get("per_au") or {}
    if not per_au:
        return None
    names = list(per_au)
    values = [per_au[name] for name in names]
    figure = Figure(figsize=(_PLOT_WIDTH_INCHES, 2.9), layout="constrained")
    ax = figure.subplots()
    ax.bar(range(len(names)), [_nan(value) for value in values], color=_MODEL_COLOUR, width=0.7)
    for position, value in enumerate(values):
        if value is None:
            ax.text(position, 0.02, "n/a", ha="center", va="bottom", fontsize=_TICK_FONT, color="#666666",
                    rotation=90)  # fmt: skip
    mean = consistency.get("f1_mean")
    if mean is not None:
        ax.axhline(mean, color=_MEAN_COLOUR, linestyle="--", linewidth=1.4, label=f"mean F1 {mean:.3f}")
        figure.legend(loc="outside upper right", fontsize=_LABEL_FONT, frameon=False)
    ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 16 else 0)
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel("F1, render vs input", fontsize=_LABEL_FONT)
    _style_axes(ax, "y")
    return figure


def _edit_curves_figure(data: Mapping[str, Any]) -> Figure | None:
    edit = _section(data, "edit")
    if edit is None:
        return None
    intensities = [_nan(value) for value in edit.get("intensities") or []]
    per_au = {
        au: entry
        for au, entry in (edit.get("per_au") or {}).items()
        if "region_energy" in entry or "outside_energy" in entry
    }
    if not intensities or not per_au:
        return None
    energy_unit, factor = _energy_unit(data)
    columns = min(len(per_au), _EDIT_PLOT_COLUMNS)
    rows = math.ceil(len(per_au) / columns)
    figure = Figure(figsize=(_PLOT_WIDTH_INCHES, 1.9 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, (au, entry) in enumerate(per_au.items()):
        ax = axes[index // columns][index % columns]
        colour = _PALETTE[index % (len(_PALETTE) - 1)]
        if "region_energy" in entry:
            inside = [_nan(value) * factor for value in entry["region_energy"]]
            ax.plot(intensities, inside, color=colour, marker="o", markersize=3.5, linewidth=1.8)
        if "outside_energy" in entry:
            outside = [_nan(value) * factor for value in entry["outside_energy"]]
            ax.plot(intensities, outside, color=colour, linestyle="--", linewidth=1.4)
        mark = {True: " ✓", False: " ✗"}.get(entry.get("monotonic"), "")
        ax.set_title(f"{au}{mark}\nlocality {_format_number(entry.get('locality'))}", fontsize=_LABEL_FONT)
        _style_axes(ax)
        if index % columns == 0:
            ax.set_ylabel(f"energy ({energy_unit})" if energy_unit else "energy", fontsize=_LABEL_FONT)
        if index + columns >= len(per_au):
            ax.set_xlabel("AU intensity", fontsize=_LABEL_FONT)
    for index in range(len(per_au), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    handles = [
        Line2D([], [], color="#333333", marker="o", markersize=3.5, label="inside the AU's regions"),
        Line2D([], [], color="#333333", linestyle="--", label="outside them"),
    ]
    figure.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=_LABEL_FONT, frameon=False)
    return figure


# ---------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { --ink: #1c2330; --muted: #5d6677; --line: #e4e7ed; --bg: #f3f4f7; --accent: #4477aa;
        --good: #1e7b32; --bad: #b4283c; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 0 32px; }
header.top { background: linear-gradient(135deg, #1d2842 0%, #2f4e7e 100%); color: #fff;
             padding: 34px 0 38px; }
.eyebrow { margin: 0 0 4px; font-size: 12px; letter-spacing: .14em; text-transform: uppercase; opacity: .75; }
h1 { margin: 0 0 6px; font-size: 30px; font-weight: 650; line-height: 1.2; }
.meta { margin: 0 0 24px; opacity: .85; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 16px; }
.card { background: #fff; color: var(--ink); border-radius: 14px; padding: 18px 20px 16px;
        box-shadow: 0 8px 22px rgba(8, 18, 40, .22); }
.card-label { font-size: 12.5px; font-weight: 650; letter-spacing: .06em; text-transform: uppercase;
              color: var(--muted); }
.card-value { margin: 4px 0 2px; font-size: 38px; font-weight: 700; line-height: 1.15;
              font-variant-numeric: tabular-nums; }
.card-value .unit { margin-left: 3px; font-size: 18px; font-weight: 500; color: var(--muted); }
.card-sub { font-size: 14px; }
.card-sub .badge { margin: 4px 0 0; }
.card-note { margin-top: 8px; font-size: 12.5px; color: var(--muted); }
.badge { display: inline-block; margin-left: 4px; padding: 0 8px; border-radius: 999px; font-size: 12px;
         font-weight: 650; white-space: nowrap; }
.badge.better { background: #e2f2e5; color: var(--good); }
.badge.worse { background: #fae3e6; color: var(--bad); }
.badge.same, .badge.unknown { background: #eceef2; color: var(--muted); }
main section { margin: 24px 0; padding: 24px 28px; background: #fff; border-radius: 14px;
               box-shadow: 0 1px 3px rgba(8, 18, 40, .08); }
h2 { margin: 0 0 4px; font-size: 20px; }
h3 { margin: 0 0 8px; font-size: 15px; }
.lead { margin: 0 0 18px; max-width: 90ch; color: var(--muted); }
.lead p { margin: 0 0 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; }
.gallery figure { margin: 0; overflow: hidden; background: #fafbfc; border: 1px solid var(--line);
                  border-radius: 10px; }
.gallery img { display: block; width: 100%; height: auto; background: #20242c; }
.gallery.wide { grid-template-columns: minmax(0, 1fr); }
.gallery.wide figure { justify-self: start; max-width: 100%; }
.gallery.wide img { width: auto; max-width: 100%; background: #fff; }
figcaption { padding: 8px 12px; font-size: 13.5px; }
figcaption strong { display: block; }
figcaption span { color: var(--muted); }
.table-scroll { max-width: 100%; overflow-x: auto; margin: 0 0 20px; }
.table-scroll table { min-width: 100%; width: max-content; }
.table-scroll table.compact { min-width: 0; }
.plot { margin: 0 0 20px; }
th .unit { text-transform: none; letter-spacing: 0; }
.plot img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
            border-radius: 8px; }
table { width: 100%; border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line);
         overflow-wrap: break-word; }
th { font-size: 12px; font-weight: 650; letter-spacing: .04em; text-transform: uppercase;
     color: var(--muted); white-space: nowrap; }
th.group { text-align: center; border-bottom: 2px solid var(--line); }
.num { text-align: right; }
td.num { white-space: nowrap; }
td small { margin-left: 8px; color: var(--muted); font-size: 12px; }
tr.face td { font-weight: 650; background: #f5f7fb; }
tr.baseline td { color: var(--muted); font-style: italic; }
td.flat { color: var(--muted); }
.yes { color: var(--good); font-weight: 650; }
.no { color: var(--bad); font-weight: 650; }
.kv { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 28px; }
.kv td:first-child { width: 42%; color: var(--muted); }
.kv td { overflow-wrap: anywhere; }
footer { padding: 4px 32px 40px; font-size: 13px; color: var(--muted); }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _image_src(image: Path, folder: Path) -> str:
    """``image`` as a URL relative to ``folder`` (percent-encoded, forward slashes)."""
    target = image.resolve()
    try:
        relative = os.path.relpath(target, folder.resolve())
    except ValueError:
        return target.as_uri()
    return quote(Path(relative).as_posix())


def _card(label: str, value: str, unit: str, sub: str, note: str) -> str:
    unit_html = f'<span class="unit">{_e(unit)}</span>' if unit and value != "n/a" else ""
    return (
        '<div class="card">'
        f'<div class="card-label">{_e(label)}</div>'
        f'<div class="card-value">{_e(value)}{unit_html}</div>'
        f'<div class="card-sub">{sub}</div>'
        f'<div class="card-note">{_e(note)}</div>'
        "</div>"
    )


def _versus_flat(metric: _ErrorMetric) -> str:
    """HTML: the flat baseline and a badge saying whether the model's error is better, the same or worse."""
    flat = metric.shown(metric.section.get("flat"))
    if flat is None:
        return "flat baseline n/a"
    text = f"flat baseline {_e(_with_unit(flat, metric.unit))}"
    return f"{text}<br>{_verdict_badge(_comparison(metric, 'face'))}"


def _summary_cards(data: Mapping[str, Any]) -> str:
    cards = []
    notes = {
        "displacement_mae": (
            "Displacement error",
            "Mean absolute error of the wrinkle displacement over the face.",
        ),
        "normal_error_deg": ("Normal error", "Mean angle between predicted and true detail normals."),
    }
    for metric in _error_metrics(data):
        label, note = notes[metric.key]
        face = metric.shown(metric.section.get("face"))
        cards.append(_card(label, _format_number(face), metric.unit, _versus_flat(metric), note))
    consistency = _section(data, "au_consistency")
    if consistency is not None:
        render = consistency.get("render_vs_truth_f1")
        source = consistency.get("input_vs_truth_f1")
        sub = f"vs truth: input {_e(_format_number(source))} · render {_e(_format_number(render))}"
        cards.append(
            _card(
                "AU consistency F1",
                _format_number(consistency.get("f1_mean")),
                "",
                sub,
                "Do the renders show the same AUs as the inputs? 1 = identical.",
            )
        )
    edit = _section(data, "edit")
    per_au = (edit or {}).get("per_au") or {}
    if per_au:
        localities = [entry.get("locality") for entry in per_au.values()]
        monotonic = sum(entry.get("monotonic") is True for entry in per_au.values())
        cards.append(
            _card(
                "Edit locality",
                _format_number(_mean(localities)),
                "",
                f"{monotonic} of {len(per_au)} AUs monotonic",
                "Share of an AU edit's wrinkle change inside that AU's regions, mean over AUs.",
            )
        )
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def _figure_html(title: str, src: str, caption: str) -> str:
    caption_html = f"<span>{_e(caption)}</span>" if caption else ""
    return (
        f'<figure><img src="{_e(src)}" alt="{_e(title)}" loading="lazy">'
        f"<figcaption><strong>{_e(title)}</strong>{caption_html}</figcaption></figure>"
    )


def _gallery_section(
    section_id: str,
    heading: str,
    lead: str,
    pictures: Sequence[tuple[str, Path, str]],
    folder: Path,
    wide: bool = False,
) -> str:
    """HTML: the pictures in a grid of small tiles, or (``wide``) one per row at up to the page's width, for
    figures whose labels and colour bars must stay readable."""
    if not pictures:
        return ""
    figures = "".join(
        _figure_html(title, _image_src(image, folder), caption) for title, image, caption in pictures
    )
    lead_html = f'<div class="lead"><p>{_e(lead)}</p></div>' if lead else ""
    return (
        f'<section id="{section_id}"><h2>{_e(heading)}</h2>{lead_html}'
        f'<div class="gallery{" wide" if wide else ""}">{figures}</div></section>'
    )


def _plot_html(plots: Mapping[str, Path], name: str, alt: str, folder: Path) -> str:
    if name not in plots:
        return ""
    return f'<figure class="plot"><img src="{_e(_image_src(plots[name], folder))}" alt="{_e(alt)}"></figure>'


def _table(head: str, rows: Sequence[str], css: str = "") -> str:
    """HTML: a table in a wrapper that scrolls sideways when the table is wider than the page."""
    css_attr = f' class="{css}"' if css else ""
    return (
        f'<div class="table-scroll"><table{css_attr}><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _lead(*sentences: str) -> str:
    return '<div class="lead">' + "".join(f"<p>{_e(sentence)}</p>" for sentence in sentences) + "</div>"


def _errors_section(data: Mapping[str, Any], plots: Mapping[str, Path], folder: Path) -> str:
    metrics = _error_metrics(data)
    if not metrics:
        return ""

    def cells(metric: _ErrorMetric, value: Any, flat: Any, comparison: FlatComparison | None) -> str:
        badge = _verdict_badge(comparison, short=True) if comparison is not None else ""
        return (
            f'<td class="num">{_e(_format_number(metric.shown(value)))}</td>'
            f'<td class="num flat">{_e(_format_number(metric.shown(flat))) if flat is not None else ""}</td>'
            f'<td class="num">{badge}</td>'
        )

    rows = []
    for key in _scalar_keys([metric.section for metric in metrics]):
        measured = not _is_baseline(key)
        label = "whole face" if key == "face" else _humanise(key)
        row_cells = []
        for metric in metrics:
            flat = metric.section.get(_baseline_of(key)) if measured else None
            comparison = _comparison(metric, key) if measured else None
            row_cells.append(cells(metric, metric.section.get(key), flat, comparison))
        css = "face" if key == "face" else ("baseline" if not measured else "")
        rows.append(f'<tr class="{css}"><td>{_e(label)}</td>{"".join(row_cells)}</tr>')
    names: list[str] = []
    for metric in metrics:
        names.extend(name for name in (metric.section.get("regions") or {}) if name not in names)
    for name in names:
        row_cells = []
        for metric in metrics:
            value = (metric.section.get("regions") or {}).get(name)
            flat = (metric.section.get("regions_flat") or {}).get(name)
            row_cells.append(cells(metric, value, flat, compare_to_flat(value, flat)))
        rows.append(f"<tr><td>{_e(_humanise(name))}</td>{''.join(row_cells)}</tr>")
    groups = "".join(f'<th class="group" colspan="3">{metric.heading}</th>' for metric in metrics)
    columns = '<th class="num">model</th><th class="num">flat</th><th class="num">vs flat</th>' * len(metrics)
    head = f"<tr><th></th>{groups}</tr><tr><th>region</th>{columns}</tr>"
    displacement_unit = next((m.unit for m in metrics if m.key == "displacement_mae"), "mm")
    lead = _lead(
        METRIC_DESCRIPTIONS["displacement_mae"].format(unit=displacement_unit),
        METRIC_DESCRIPTIONS["normal_error_deg"],
        METRIC_DESCRIPTIONS["flat"],
        METRIC_DESCRIPTIONS["versus_flat"].format(
            margin=_percent(NEGLIGIBLE_CHANGE), k=NOISE_STANDARD_ERRORS
        ),
    )
    plot = _plot_html(plots, "region_errors", "errors per face region", folder)
    return (
        f'<section id="detail-errors"><h2>Detail accuracy per region</h2>{lead}'
        f"{_table(head, rows)}{plot}</section>"
    )


def _consistency_section(data: Mapping[str, Any], plots: Mapping[str, Path], folder: Path) -> str:
    consistency = _section(data, "au_consistency")
    if consistency is None:
        return ""
    summary = [
        ("mean F1, render vs input", consistency.get("f1_mean")),
        ("F1, input vs truth", consistency.get("input_vs_truth_f1")),
        ("F1, render vs truth", consistency.get("render_vs_truth_f1")),
    ]
    rows = [
        f'<tr class="face"><td>{_e(label)}</td><td class="num">{_e(_format_number(value))}</td></tr>'
        for label, value in summary
        if value is not None or label.startswith("mean")
    ]
    per_au = consistency.get("per_au") or {}
    rows += [
        f'<tr><td>{_au_cell(au)}</td><td class="num">{_e(_format_number(value))}</td></tr>'
        for au, value in per_au.items()
    ]
    head = '<tr><th>AU</th><th class="num">F1</th></tr>'
    lead = _lead(METRIC_DESCRIPTIONS["f1_mean"], METRIC_DESCRIPTIONS["truth_f1"])
    plot = _plot_html(plots, "au_consistency", "AU consistency F1 per AU", folder)
    return (
        f'<section id="au-consistency"><h2>AU consistency</h2>{lead}'
        f"{plot}{_table(head, rows, 'compact')}</section>"
    )


_EDIT_KNOWN = ("locality", "monotonic", "region_energy", "outside_energy")


def _edit_section(data: Mapping[str, Any], plots: Mapping[str, Path], folder: Path) -> str:
    edit = _section(data, "edit")
    if edit is None:
        return ""
    intensities = edit.get("intensities") or []
    top = f"{intensities[-1]:g}" if intensities and intensities[-1] is not None else "the top"
    per_au = edit.get("per_au") or {}
    length_unit = _root_unit(str((_section(data, "units") or {}).get("energy", "")))
    extra: list[str] = []
    for entry in per_au.values():
        extra.extend(key for key in entry if key not in _EDIT_KNOWN and key not in extra)

    def rms(energy: Any) -> str:
        """The root of a mean squared displacement, each cell in its own unit (5.2 µm beside 1.04 mm)."""
        if energy is None or not math.isfinite(float(energy)) or energy < 0:
            return "n/a"
        return _e(format_quantity(math.sqrt(float(energy)), length_unit))

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return f'<span class="{"yes" if value else "no"}">{"yes" if value else "no"}</span>'
        if isinstance(value, list):
            value = value[-1] if value else None
        return _e(_format_number(value))

    rows = []
    for au, entry in per_au.items():
        inside = (entry.get("region_energy") or [None])[-1]
        outside = (entry.get("outside_energy") or [None])[-1]
        monotonic = entry.get("monotonic")
        cells = [
            _format_number(entry.get("locality")),
            "n/a" if monotonic is None else cell(monotonic),
            rms(inside),
            rms(outside),
            *(cell(entry.get(key)) for key in extra),
        ]
        rows.append(f"<tr><td>{_au_cell(au)}</td>{''.join(f'<td class=num>{c}</td>' for c in cells)}</tr>")
    listed = {key for entry in per_au.values() for key, value in entry.items() if isinstance(value, list)}
    headings = [
        "locality",
        "monotonic",
        f"RMS inside at {_e(top)}",
        f"RMS outside at {_e(top)}",
        *(_e(_humanise(key) + (f" at {top}" if key in listed else "")) for key in extra),
    ]
    head = "<tr><th>AU</th>" + "".join(f'<th class="num">{text}</th>' for text in headings) + "</tr>"
    levels = ", ".join("n/a" if value is None else f"{value:g}" for value in intensities)
    lead = _lead(
        f"Each AU is raised alone through the intensities {levels}; the curves show the mean squared "
        "displacement inside the AU's wrinkle regions (solid) and outside them (dashed), the RMS columns "
        "its root at the top intensity.",
        METRIC_DESCRIPTIONS["locality"],
        METRIC_DESCRIPTIONS["monotonic"],
    )
    plot = _plot_html(plots, "edit_curves", "edit energy against AU intensity", folder)
    return f'<section id="edit"><h2>AU edits</h2>{lead}{_table(head, rows)}{plot}</section>'


def _key_value_table(heading: str, section: Mapping[str, Any], units: Mapping[str, str]) -> str:
    rows = []
    for key, value in section.items():
        text = _format_value(value)
        unit = units.get(key, "")
        if unit and value is not None and not isinstance(value, (str, bool)):
            text = f"{text} {unit}"
        rows.append(f"<tr><td>{_e(_humanise(key))}</td><td>{_e(text)}</td></tr>")
    body = "".join(rows) or '<tr><td colspan="2">none recorded</td></tr>'
    return f"<div><h3>{_e(heading)}</h3><table><tbody>{body}</tbody></table></div>"


def _run_section(data: Mapping[str, Any]) -> str:
    tables = []
    for key, heading, units in (
        ("config", "Configuration", {}),
        ("weights", "Weights", {}),
        ("timings", "Timings", _TIMING_UNITS),
    ):
        section = _section(data, key)
        if section is not None:
            tables.append(_key_value_table(heading, section, units))
    if not tables:
        return ""
    return f'<section id="run"><h2>Run</h2><div class="kv">{"".join(tables)}</div></section>'


def _render_page(
    data: Mapping[str, Any],
    folder: Path,
    plots: Mapping[str, Path],
    gallery: Sequence[tuple[str, Path, str]],
    extra: Sequence[tuple[str, Path, str]],
) -> str:
    title = str(data.get("title") or "aucgan evaluation")
    meta = [str(data["created"])] if data.get("created") else []
    if data.get("n_faces") is not None:
        meta.append(f"{_format_value(data['n_faces'])} test faces")
    meta.append(f"aucgan {__version__}")
    body = "".join(
        (
            _gallery_section("gallery", "Gallery", "", gallery, folder),
            _errors_section(data, plots, folder),
            _consistency_section(data, plots, folder),
            _edit_section(data, plots, folder),
            _gallery_section("figures", "More figures", "", extra, folder, wide=True),
            _run_section(data),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        '<header class="top"><div class="wrap">'
        '<p class="eyebrow">aucgan evaluation report</p>'
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">{_e(" · ".join(meta))}</p>'
        f"{_summary_cards(data)}"
        "</div></header>\n"
        f'<main class="wrap">{body}</main>\n'
        f'<footer class="wrap"><p>{_e(FOOTER_TEXT)}</p></footer>\n'
        "</body>\n</html>\n"
    )

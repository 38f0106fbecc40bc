import copy
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from aucgan.evaluate.report import (
    NEGLIGIBLE_CHANGE,
    NOISE_STANDARD_ERRORS,
    GalleryItem,
    compare_to_flat,
    display_unit,
    error_summary,
    format_quantity,
    write_plots,
    write_report,
)

INTENSITIES = [0.0, 0.25, 0.5, 0.75, 1.0]


def sample_metrics() -> dict:
    """A metrics mapping in the schema ``aucgan evaluate`` writes, with one NaN and one infinity."""
    return {
        "title": "aucgan evaluation — synthetic test split",
        "created": "2026-11-25 05:00 UTC",
        "config": {
            "detail_decoder": "token-attention",
            "discriminator": "projection",
            "image_size": 128,
            "losses": {"photo_detail": 2.0, "z_reg": 0.005},
        },
        "weights": {
            "au_net": "runs/au/au_net.safetensors",
            "coarse": "ground truth",
            "detail": "runs/detail",
        },
        "n_faces": 64,
        "units": {"displacement": "mm", "normal_error": "degrees"},
        "displacement_mae": {
            "face": 0.12,
            "flat": 0.31,
            "regions": {
                "forehead_centre": 0.2,
                "glabella": 0.17,
                "crows_feet_right": float("nan"),
                "chin": 0.09,
            },
        },
        "normal_error_deg": {
            "face": 4.1,
            "flat": 7.9,
            "regions": {"forehead_centre": 5.5, "glabella": 4.9, "crows_feet_right": 6.2, "chin": 3.0},
        },
        "au_consistency": {
            "f1_mean": 0.7,
            "per_au": {"AU1": 0.8, "AU4": 0.65, "AU6": 0.72, "AU12": 0.9, "AU17": float("inf")},
            "input_vs_truth_f1": 0.5,
            "render_vs_truth_f1": 0.4,
        },
        "edit": {
            "intensities": list(INTENSITIES),
            "per_au": {
                "AU12": {
                    "locality": 0.83,
                    "monotonic": True,
                    "region_energy": [0.0, 0.1, 0.25, 0.4, 0.6],
                    "outside_energy": [0.0, 0.02, 0.04, 0.07, 0.1],
                },
                "AU1": {
                    "locality": 0.61,
                    "monotonic": False,
                    "region_energy": [0.0, 0.2, 0.15, 0.3, 0.45],
                    "outside_energy": [0.0, 0.05, 0.1, 0.15, 0.2],
                },
                "AU4": {
                    "locality": 0.9,
                    "monotonic": True,
                    "region_energy": [0.0, 0.05, 0.12, 0.2, 0.3],
                    "outside_energy": [0.0, 0.0, 0.01, 0.02, 0.03],
                },
                "AU6": {
                    "locality": float("nan"),
                    "monotonic": True,
                    "region_energy": [0.0, 0.0, 0.0, 0.0, 0.0],
                    "outside_energy": [0.0, 0.0, 0.0, 0.0, 0.0],
                },
            },
        },
        "timings": {"faces_per_second": 12.3, "seconds": 40.1},
    }


def write_sample_images(folder: Path, count: int = 2) -> list[GalleryItem]:
    """Small PNGs (a colour gradient each) in nested folders outside the report folder."""
    items = []
    for index in range(count):
        y, x = np.mgrid[0:48, 0:64]
        pixels = np.stack([x * 4, y * 5, np.full_like(x, 60 * index)], axis=-1).astype(np.uint8)
        path = folder / f"face {index}" / "vis.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(pixels).save(path)
        items.append(GalleryItem(title=f"test face {index}", image=path, caption=f"identity {index}"))
    return items


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def _image_sources(text: str) -> list[str]:
    return [attrs["src"] for tag, attrs in _tags(text) if tag == "img"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """One report with every section (plots are the slow part: draw them once for the module)."""
    root = tmp_path_factory.mktemp("report")
    gallery = write_sample_images(root / "faces")
    extra = {"loss curve": write_sample_images(root / "extra", count=1)[0].image}
    metrics = sample_metrics()
    path = write_report(root / "out", metrics, gallery, extra)
    return root, path, metrics


def test_report_files_exist_and_every_image_resolves(full_report):
    root, path, _ = full_report
    out = root / "out"
    assert path == out / "report.html"
    assert (out / "metrics.json").is_file()
    text = path.read_text(encoding="utf-8")
    sources = _image_sources(text)
    assert len(sources) == 2 + 1 + 3  # gallery, extra image, plots
    for source in sources:
        assert urlparse(source).scheme == "", source
        assert (out / unquote(source)).resolve().is_file(), source
    expected = [item.resolve() for item in (root / "faces").rglob("*.png")] + [
        item.resolve() for item in (out / "plots").glob("*.png")
    ]
    assert set(expected) <= {(out / unquote(source)).resolve() for source in sources}
    assert _leftovers(root) == []


def test_report_is_self_contained(full_report):
    _, path, _ = full_report
    text = path.read_text(encoding="utf-8")
    tags = _tags(text)
    assert not [tag for tag, _ in tags if tag in ("script", "link", "iframe")]
    assert [tag for tag, _ in tags].count("style") == 1
    assert "http://" not in text and "https://" not in text
    assert "<style>" in text and "@import" not in text and "url(" not in text


def test_metrics_json_round_trips_with_nan_as_null(full_report):
    root, _, metrics = full_report
    text = (root / "out" / "metrics.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded == _nan_to_none(copy.deepcopy(metrics))
    assert loaded["displacement_mae"]["regions"]["crows_feet_right"] is None
    assert loaded["au_consistency"]["per_au"]["AU17"] is None
    assert list(loaded) == list(metrics)
    assert list(loaded["displacement_mae"]["regions"]) == list(metrics["displacement_mae"]["regions"])
    assert text.startswith('{\n  "title"')


def test_report_shows_numbers_and_na(full_report):
    _, path, metrics = full_report
    text = path.read_text(encoding="utf-8")
    per_au = metrics["edit"]["per_au"].values()
    localities = [entry["locality"] for entry in per_au if math.isfinite(entry["locality"])]
    assert len(localities) < len(per_au)
    assert f"{sum(localities) / len(localities):.3f}" in text
    monotonic = sum(entry["monotonic"] for entry in metrics["edit"]["per_au"].values())
    assert f"{monotonic} of {len(per_au)} AUs monotonic" in text
    reduction = 1 - metrics["displacement_mae"]["face"] / metrics["displacement_mae"]["flat"]
    assert f"{reduction * 100:.0f} % lower than flat" in text
    assert '<span class="badge better"' in text
    row = text[text.index("crows feet right") :]
    row = row[: row.index("</tr>")]
    assert "n/a" in row and f"{metrics['normal_error_deg']['regions']['crows_feet_right']:.2f}" in row
    assert metrics["created"] in text and "64 test faces" in text
    for section in ("gallery", "detail-errors", "au-consistency", "edit", "figures", "run"):
        assert f'id="{section}"' in text
    for value in metrics["weights"].values():
        assert value in text


def test_plots_are_valid_images(full_report):
    root, _, metrics = full_report
    plots = write_plots(metrics, root / "again")
    assert list(plots) == ["region_errors", "au_consistency", "edit_curves"]
    for name, path in plots.items():
        assert path == root / "again" / "plots" / f"{name}.png"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert pixels.std() > 5.0, name


def test_missing_optional_sections_render(tmp_path):
    metrics = sample_metrics()
    for key in ("au_consistency", "edit", "timings", "weights"):
        del metrics[key]
    path = write_report(tmp_path, metrics)
    text = path.read_text(encoding="utf-8")
    for section in ("au-consistency", "edit", "gallery", "figures"):
        assert f'id="{section}"' not in text
    assert 'id="detail-errors"' in text and 'id="run"' in text
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["region_errors.png"]
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")).keys() == metrics.keys()
    for source in _image_sources(text):
        assert (tmp_path / unquote(source)).is_file()


def test_title_only_metrics_render(tmp_path):
    path = write_report(tmp_path, {"title": "nothing measured"})
    text = path.read_text(encoding="utf-8")
    assert "nothing measured" in text and _image_sources(text) == []
    assert not (tmp_path / "plots").exists()


def test_text_is_html_escaped(tmp_path):
    metrics = sample_metrics()
    metrics["title"] = '<script>alert("x")</script> & co'
    metrics["displacement_mae"]["regions"]["<b>cheek</b>"] = 0.1
    metrics["config"]["note"] = "<img src=x onerror=alert(1)>"
    image = write_sample_images(tmp_path / "faces", count=1)[0].image
    gallery = [GalleryItem(title="<i>face</i>", image=image, caption='"quoted" & <em>')]
    text = write_report(tmp_path / "out", metrics, gallery).read_text(encoding="utf-8")
    assert "<script>" not in text and "<b>cheek" not in text and "<i>face" not in text and "<em>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert "&lt;b&gt;cheek&lt;/b&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert [tag for tag, _ in _tags(text)].count("img") == 1 + 3


def test_numpy_values_and_paths_become_json(tmp_path):
    metrics = sample_metrics()
    metrics["n_faces"] = np.int64(64)
    metrics["displacement_mae"]["face"] = np.float32(0.125)
    metrics["edit"]["intensities"] = np.asarray(INTENSITIES)
    metrics["weights"]["detail"] = tmp_path / "detail.safetensors"
    write_report(tmp_path, metrics)
    loaded = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert loaded["n_faces"] == 64 and loaded["displacement_mae"]["face"] == 0.125
    assert loaded["edit"]["intensities"] == INTENSITIES
    assert loaded["weights"]["detail"] == str(tmp_path / "detail.safetensors")


def test_bad_metrics_raise_value_error_naming_the_key(tmp_path):
    metrics = sample_metrics()
    metrics["edit"]["per_au"]["AU12"]["region_energy"] = [0.0, 0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match=r"'AU12'.*'region_energy'.*4 values.*has 5"):
        write_report(tmp_path, metrics)
    metrics = sample_metrics()
    metrics["au_consistency"] = [0.7]
    with pytest.raises(ValueError, match=r"metrics\['au_consistency'\] must be a mapping, got list"):
        write_report(tmp_path, metrics)
    metrics = sample_metrics()
    metrics["normal_error_deg"]["regions"]["chin"] = "small"
    with pytest.raises(ValueError, match=r"'chin'.*must be a number"):
        write_plots(metrics, tmp_path)
    metrics = sample_metrics()
    metrics["config"]["callback"] = object()
    with pytest.raises(ValueError, match=r"metrics\['config'\]\['callback'\] is a object"):
        write_report(tmp_path, metrics)
    with pytest.raises(ValueError, match="metrics must be a mapping, got list"):
        write_report(tmp_path, [sample_metrics()])
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "metrics.json").exists()


def test_missing_gallery_image_raises(tmp_path):
    gallery = [GalleryItem(title="gone", image=tmp_path / "missing.png")]
    with pytest.raises(FileNotFoundError, match="gone"):
        write_report(tmp_path / "out", sample_metrics(), gallery)
    assert not (tmp_path / "out").exists()


# Comparison with flat, units, generic keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reduction", "verdict"),
    [(0.01, "same"), (0.049, "same"), (0.06, "better"), (-0.10, "worse"), (-0.03, "same"), (0.0, "same")],
)
def test_compare_to_flat_calls_a_change_only_beyond_the_margin(reduction, verdict):
    flat = 2.0
    comparison = compare_to_flat(flat * (1 - reduction), flat)
    assert comparison.verdict == verdict
    assert comparison.change == pytest.approx(reduction)
    assert comparison.margin == NEGLIGIBLE_CHANGE
    if verdict == "same":
        assert comparison.text.startswith("within 5 % of flat")
    elif verdict == "better":
        assert comparison.text == "6 % lower than flat"
    else:
        assert comparison.text == "10 % higher than flat"


def test_compare_to_flat_widens_the_margin_to_the_noise():
    # 8 % lower, but two standard errors of the per-face difference are 10 % of flat: no change.
    noisy = compare_to_flat(0.92, 1.0, standard_error=0.05)
    assert noisy.verdict == "same" and noisy.noise_limited
    assert noisy.margin == pytest.approx(NOISE_STANDARD_ERRORS * 0.05)
    assert "within noise" in noisy.text
    # A small spread never narrows the margin below NEGLIGIBLE_CHANGE.
    quiet = compare_to_flat(0.97, 1.0, standard_error=1e-4)
    assert quiet.verdict == "same" and not quiet.noise_limited and quiet.margin == NEGLIGIBLE_CHANGE
    assert compare_to_flat(0.8, 1.0, standard_error=0.01).verdict == "better"


@pytest.mark.parametrize(("error", "flat"), [(None, 1.0), (1.0, None), (1.0, 0.0), (float("nan"), 1.0)])
def test_compare_to_flat_without_numbers_is_unknown(error, flat):
    assert compare_to_flat(error, flat).verdict == "unknown"


def test_display_unit_brings_wrinkle_numbers_into_range():
    assert display_unit("mm", [0.011, 0.11]) == ("µm", pytest.approx(1000.0))
    unit, factor = display_unit("mm²", [5.5e-7, 1.8e-4])
    assert unit == "µm²" and factor == pytest.approx(1e6)
    assert display_unit("mm", [3.0, 1.2]) == ("mm", 1.0)
    assert display_unit("cm", [0.0011]) == ("µm", pytest.approx(1e4))
    assert display_unit("°", [5.49]) == ("°", 1.0)
    assert display_unit("mm", [None, 0.0]) == ("mm", 1.0)
    assert format_quantity(0.0110, "mm") == "11.0 µm"
    assert format_quantity(5.5e-7, "mm²") == "0.550 µm²"
    assert format_quantity(None, "mm") == "n/a"


def _badge_classes(text: str) -> list[str]:
    return [
        attrs["class"] for tag, attrs in _tags(text) if tag == "span" and "badge" in attrs.get("class", "")
    ]


def test_an_error_equal_to_flat_is_never_shown_as_a_win(tmp_path):
    metrics = {
        "units": {"displacement": "mm", "normal_error": "degrees"},
        "displacement_mae": {
            "face": 0.0111,
            "flat": 0.0111,
            "face_vs_flat_se": 0.0001,
            "regions": {"chin": 0.0268, "glabella": 0.0141},
            "regions_flat": {"chin": 0.0268, "glabella": 0.0141},
        },
        "normal_error_deg": {
            "face": 5.49,
            "flat": 5.49,
            "regions": {"chin": 4.72},
            "regions_flat": {"chin": 4.72},
        },
    }
    text = write_report(tmp_path, metrics).read_text(encoding="utf-8")
    classes = _badge_classes(text)
    assert classes and all(css == "badge same" for css in classes)
    assert "better" not in " ".join(css for _, attrs in _tags(text) for css in [attrs.get("class", "")])
    assert "within 5 % of flat" in text and "lower than flat" not in text
    # the same numbers 1 % apart: still neutral
    metrics["displacement_mae"]["face"] = 0.0111 * 0.99
    text = write_report(tmp_path / "again", metrics).read_text(encoding="utf-8")
    assert "badge better" not in text and "badge same" in text


def test_errors_are_shown_in_micrometres(full_report):
    _, path, metrics = full_report
    text = path.read_text(encoding="utf-8")
    assert "µm" in text
    face_um = metrics["displacement_mae"]["face"] * 1000
    assert f'class="card-value">{face_um:.0f}<span class="unit">µm</span>' in text


def test_extra_keys_of_the_error_and_edit_sections_are_shown(tmp_path):
    metrics = sample_metrics()
    metrics["units"]["energy"] = "mm²"
    metrics["displacement_mae"].update({"active": 0.040, "active_flat": 0.052, "active_half_res": 0.021})
    metrics["normal_error_deg"].update({"active": 6.0, "active_flat": 6.1})
    for entry in metrics["edit"]["per_au"].values():
        entry["gain"] = 0.75
        for field in ("region_energy", "outside_energy"):
            entry[field] = [value * 1e-4 for value in entry[field]]  # mm², wrinkle-sized
    text = write_report(tmp_path, metrics).read_text(encoding="utf-8")
    errors = text[text.index('id="detail-errors"') : text.index('id="au-consistency"')]
    active = errors[errors.index("<td>active</td>") :]
    active = active[: active.index("</tr>")]
    assert ">40.0<" in active and ">52.0<" in active and "badge better" in active  # 23 % lower
    assert "badge same" in active  # normal error: 1.6 % lower
    assert "<td>active half res</td>" in errors and ">21.0<" in errors
    edit = text[text.index('id="edit"') :]
    assert ">gain</th>" in edit and edit.count(">0.750<") == len(metrics["edit"]["per_au"])
    assert ">RMS inside at 1</th>" in edit
    au12 = edit[edit.index("AU12<small>") :]
    assert ">7.75 µm<" in au12[: au12.index("</tr>")]  # the root of 0.6e-4 mm² at intensity 1


def test_tables_are_not_beside_the_plots(full_report):
    _, path, _ = full_report
    text = path.read_text(encoding="utf-8")
    assert 'class="panel"' not in text and "sticky" not in text
    for section in ("detail-errors", "au-consistency", "edit"):
        body = text[text.index(f'id="{section}"') :]
        body = body[: body.index("</section>")]
        assert body.count('<div class="table-scroll">') == 1, section


def test_error_summary_speaks_in_micrometres_and_verdicts():
    metrics = sample_metrics()
    metrics["displacement_mae"].update({"face": 0.0110, "flat": 0.0111, "regions": {"chin": 0.11}})
    line = error_summary(metrics)
    assert line.startswith("displacement MAE 11.0 µm vs flat 11.1 µm: within 5 % of flat (0.9 % lower)")
    assert "; normal error 4.10° vs flat 7.90°: 48 % lower than flat" in line
    metrics["normal_error_deg"].update(
        {"active": 6.0, "active_flat": 8.0, "active_half_res": 7.5, "active_true_detail": 7.0}
    )
    line = error_summary(metrics)
    assert (
        "normal error in the active wrinkle regions 6.00° vs flat 8.00°, half-resolution truth 7.50°, "
        "true detail on this coarse fit 7.00°: 25 % lower than flat" in line
    )
    assert error_summary({"title": "nothing"}) == ""

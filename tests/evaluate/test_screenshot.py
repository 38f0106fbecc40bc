import os
import stat
import time

import numpy as np
import pytest
from PIL import Image

from aucgan.evaluate.report import GalleryItem, write_report
from aucgan.evaluate.screenshot import CHROMIUM_ENV, find_chromium, main, screenshot, trim_bottom


def _small_report(folder):
    """A report with summary cards and one gallery image (no region tables, so no plots to draw)."""
    y, x = np.mgrid[0:40, 0:60]
    image = folder / "faces" / "vis.png"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.stack([x * 4, y * 6, 255 - x * 4], axis=-1).astype(np.uint8)).save(image)
    metrics = {
        "title": "screenshot test",
        "created": "2026-11-25 05:00 UTC",
        "n_faces": 2,
        "displacement_mae": {"face": 0.12, "flat": 0.31},
        "normal_error_deg": {"face": 4.1, "flat": 7.9},
        "au_consistency": {"f1_mean": 0.7, "input_vs_truth_f1": 0.5, "render_vs_truth_f1": 0.4},
    }
    return write_report(folder / "out", metrics, [GalleryItem(title="test face 0", image=image)])


def _fake_chromium(folder, body: str):
    """An executable shell script standing in for Chromium."""
    path = folder / "fake-chromium"
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium on this machine")
def test_screenshot_of_the_report_has_the_requested_size_and_content(tmp_path):
    report = _small_report(tmp_path)
    png = screenshot(report, tmp_path / "shots" / "report.png", width=900, height=700, timeout=60)
    assert png == tmp_path / "shots" / "report.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (900, 700)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10.0
    # The page's dark header band sits above its light background.
    assert pixels[:60].mean() < pixels[-60:].mean() - 50
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["report.png"]


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium on this machine")
def test_main_writes_the_screenshot(tmp_path, capsys):
    report = _small_report(tmp_path)
    code = main([str(report), str(tmp_path / "shot.png"), "--width", "640", "--height", "480"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "shot.png")
    with Image.open(tmp_path / "shot.png") as image:
        assert image.size == (640, 480)


def test_find_chromium_prefers_the_environment_variable(tmp_path, monkeypatch):
    fake = _fake_chromium(tmp_path, "exit 0")
    monkeypatch.setenv(CHROMIUM_ENV, str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "missing"))
    assert find_chromium() is None


def test_find_chromium_searches_path(tmp_path, monkeypatch):
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    fake = _fake_chromium(tmp_path, "exit 0")
    fake.rename(tmp_path / "google-chrome")
    assert find_chromium() == str(tmp_path / "google-chrome")
    _fake_chromium(tmp_path, "exit 0").rename(tmp_path / "chromium")
    assert find_chromium() == str(tmp_path / "chromium")


def test_no_chromium_is_a_one_line_runtime_error(tmp_path, monkeypatch):
    (tmp_path / "page.html").write_text("<p>hi</p>", encoding="utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match=f"apt install chromium, or set {CHROMIUM_ENV}") as error:
        screenshot(tmp_path / "page.html", tmp_path / "out.png")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo 'something broke' >&2; exit 3", "status 3: something broke"),
        ("exit 0", "wrote no screenshot"),
        (
            'for a in "$@"; do case "$a" in --screenshot=*) echo notpng > "${a#--screenshot=}";; esac; done',
            "not a PNG",
        ),
    ],
)
def test_chromium_failures_are_runtime_errors(tmp_path, monkeypatch, body, message):
    (tmp_path / "page.html").write_text("<p>hi</p>", encoding="utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(_fake_chromium(tmp_path, body)))
    with pytest.raises(RuntimeError, match=message):
        screenshot(tmp_path / "page.html", tmp_path / "out" / "shot.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_fake_chromium_receives_the_documented_flags(tmp_path, monkeypatch):
    arguments = tmp_path / "arguments.txt"
    prepared = tmp_path / "prepared.png"
    Image.fromarray(np.arange(12 * 8 * 3, dtype=np.uint8).reshape(12, 8, 3)).save(prepared)
    body = (
        f'printf "%s\\n" "$@" > "{arguments}"\n'
        f'for a in "$@"; do case "$a" in --screenshot=*) cp "{prepared}" "${{a#--screenshot=}}";; esac; done'
    )
    (tmp_path / "page.html").write_text("<p>hi</p>", encoding="utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(_fake_chromium(tmp_path, body)))
    out = screenshot(tmp_path / "page.html", tmp_path / "shot.png", width=321, height=123)
    assert out.read_bytes() == prepared.read_bytes()
    lines = arguments.read_text(encoding="utf-8").splitlines()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=321,123"):
        assert flag in lines
    assert lines[-1] == (tmp_path / "page.html").resolve().as_uri()
    profile = next(line for line in lines if line.startswith("--user-data-dir="))
    assert not os.path.exists(profile.split("=", 1)[1])


def test_timeout_stops_chromium(tmp_path, monkeypatch):
    (tmp_path / "page.html").write_text("<p>hi</p>", encoding="utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(_fake_chromium(tmp_path, "sleep 30")))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish"):
        screenshot(tmp_path / "page.html", tmp_path / "shot.png", timeout=0.5)
    assert time.monotonic() - start < 10


def test_main_exits_2_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.html"), str(tmp_path / "shot.png")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "missing.html" in error


def test_bad_size_is_a_value_error(tmp_path):
    (tmp_path / "page.html").write_text("<p>hi</p>", encoding="utf-8")
    with pytest.raises(ValueError, match="width=0"):
        screenshot(tmp_path / "page.html", tmp_path / "shot.png", width=0)


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium on this machine")
def test_only_shows_one_section_and_trim_cuts_the_background(tmp_path):
    report = _small_report(tmp_path)
    whole = screenshot(report, tmp_path / "whole.png", width=900, height=3000, trim=True)
    alone = screenshot(report, tmp_path / "gallery.png", width=900, height=3000, only="gallery", trim=True)
    with Image.open(whole) as image:
        whole_pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    with Image.open(alone) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)

    assert whole_pixels.shape[0] < 3000 and pixels.shape[0] < whole_pixels.shape[0]
    assert whole_pixels[:60].mean() < 120  # the report's dark header band
    assert pixels[:60].mean() > 200  # hidden: the gallery section on the light background comes first
    # the gallery's picture (blue-to-red gradient) is there
    assert (np.abs(pixels[..., 2] - pixels[..., 0]) > 100).any()
    assert sorted(p.name for p in report.parent.iterdir() if p.name.startswith(".")) == []


def test_only_refuses_an_id_the_page_lacks(tmp_path, monkeypatch):
    (tmp_path / "page.html").write_text('<p id="here">hi</p>', encoding="utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(_fake_chromium(tmp_path, "exit 0")))
    with pytest.raises(ValueError, match="no element with id='there'"):
        screenshot(tmp_path / "page.html", tmp_path / "shot.png", only="there")
    with pytest.raises(ValueError, match="element id"):
        screenshot(tmp_path / "page.html", tmp_path / "shot.png", only="here, body")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-chromium", "page.html"]


def test_only_renders_a_copy_with_the_hiding_rule_beside_the_page(tmp_path, monkeypatch):
    seen = tmp_path / "seen.html"
    prepared = tmp_path / "prepared.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(prepared)
    body = (
        'for a in "$@"; do case "$a" in --screenshot=*) out="${a#--screenshot=}";; '
        'file://*) page="${a#file://}";; esac; done; '
        f'cp "$page" "{seen}"; cp "{prepared}" "$out"'
    )
    (tmp_path / "page.html").write_text('<html><head></head><body><p id="here">hi</p></body></html>', "utf-8")
    monkeypatch.setenv(CHROMIUM_ENV, str(_fake_chromium(tmp_path, body)))
    screenshot(tmp_path / "page.html", tmp_path / "shot.png", only="here")
    text = seen.read_text(encoding="utf-8")
    assert (
        "body *:not(:has(#here)):not(#here):not(#here *) { display: none !important; }</style></head>" in text
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".html") == ["page.html", "seen.html"]


def test_trim_bottom_keeps_the_content_and_a_margin(tmp_path):
    pixels = np.full((100, 10, 3), 240, dtype=np.uint8)
    pixels[10:30] = 20
    Image.fromarray(pixels).save(tmp_path / "shot.png")
    trim_bottom(tmp_path / "shot.png", margin=5)
    with Image.open(tmp_path / "shot.png") as image:
        assert image.size == (10, 35)

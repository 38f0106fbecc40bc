"""A PNG screenshot of an HTML file (the evaluation report) with headless Chromium.

Command line: ``python -m aucgan.evaluate.screenshot REPORT.html OUT.png [--width W] [--height H]
[--only ID] [--trim]``: ``--only edit`` shows only the element ``id="edit"`` (e.g. the report's AU-edit
section, far down the page), ``--trim`` cuts the empty background below the content. Chromium is found
through the ``AUCGAN_CHROMIUM`` environment variable, else on ``PATH``; it runs with a fresh temporary
profile, no network services and no sandbox (so it also works as root in a container).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

CHROMIUM_ENV = "AUCGAN_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    """The Chromium executable to use, or None.

    ``$AUCGAN_CHROMIUM`` (a path or a command name) when set, even if it points nowhere (then None, so a
    wrong setting is not silently replaced); else the first of ``chromium``, ``chromium-browser``,
    ``google-chrome``, ``google-chrome-stable`` found on ``PATH``.
    """
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    if configured:
        return shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def screenshot(
    html: str | os.PathLike[str],
    png: str | os.PathLike[str],
    width: int = 1280,
    height: int = 2000,
    timeout: float = 60,
    only: str | None = None,
    trim: bool = False,
) -> Path:
    """Render ``html`` in headless Chromium and save a ``width`` x ``height`` PNG screenshot to ``png``.

    The PNG is written beside ``png`` under a temporary name and moved into place when complete.

    Args:
        html: an HTML file; its images are loaded from ``file://`` URLs relative to it.
        png: the screenshot to write (its folder is created).
        width, height: the browser window in CSS pixels (device scale factor 1), so the PNG's size.
        timeout: seconds before Chromium is stopped.
        only: the id of one element to show alone (with its ancestors, without their other content), e.g.
            ``"edit"`` for a report's AU-edit section; rendered from a temporary copy of ``html`` beside it
            (so relative image paths still resolve) that adds one ``<style>`` rule.
        trim: cut the rows below the content that are all the colour of the bottom row (the page's
            background), keeping a :data:`TRIM_MARGIN` pixel margin; the PNG is then at most ``height`` tall.

    Returns:
        ``png``, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: on a non-positive size or timeout, or an ``only`` that is no id of an element in ``html``.
        FileNotFoundError: when ``html`` does not exist.
        RuntimeError: (one line) when no Chromium is found, or it fails, times out or writes no PNG.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"screenshot size must be positive, got width={width}, height={height}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    html, png = Path(html), Path(png)
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}")
    page = html
    if only is not None:
        page = _isolated_copy(html, only)
    try:
        return _capture(page, html, png, width, height, timeout, trim)
    finally:
        if page != html:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(page)


TRIM_MARGIN = 24
"""Pixels of background kept below the content by ``trim``."""

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _isolated_copy(html: Path, element_id: str) -> Path:
    """A temporary copy of ``html`` beside it in which only the element ``id="element_id"`` shows."""
    if not _ID.fullmatch(element_id):
        raise ValueError(
            f"--only takes an element id (a letter, then letters, digits, - or _), got {element_id!r}"
        )
    text = html.read_text(encoding="utf-8", errors="replace")
    if not re.search(rf"""\bid\s*=\s*["']?{re.escape(element_id)}["'\s>]""", text):
        raise ValueError(f"{html} has no element with id={element_id!r}")
    rule = (
        f"<style>body *:not(:has(#{element_id})):not(#{element_id}):not(#{element_id} *) "
        "{ display: none !important; }</style>"
    )
    head = re.search(r"</head\s*>", text, flags=re.IGNORECASE)
    text = text[: head.start()] + rule + text[head.start() :] if head else rule + text
    copy = html.with_name(f".{html.stem}.{uuid.uuid4().hex}.only-{element_id}.html")
    copy.write_text(text, encoding="utf-8")
    return copy


def trim_bottom(png: str | os.PathLike[str], margin: int = TRIM_MARGIN) -> Path:
    """Cut the rows at the bottom of ``png`` that are all the colour of its last row, keeping ``margin``."""
    import numpy as np
    from PIL import Image

    path = Path(png)
    with Image.open(path) as image:
        pixels = image.convert("RGB")
    array = np.asarray(pixels, dtype=np.int16)
    background = array[-1:, :, :]
    differs = np.nonzero((np.abs(array - background) > 2).any(axis=(1, 2)))[0]
    keep = min(array.shape[0], (int(differs[-1]) + 1 if differs.size else 0) + margin)
    if keep < array.shape[0]:
        pixels.crop((0, 0, array.shape[1], keep)).save(path, format="PNG")
    return path


def _capture(page: Path, html: Path, png: Path, width: int, height: int, timeout: float, trim: bool) -> Path:
    """Screenshot ``page`` (``html`` or its isolated copy) into ``png``."""
    executable = find_chromium()
    if executable is None:
        configured = os.environ.get(CHROMIUM_ENV, "").strip()
        where = f"{CHROMIUM_ENV}={configured!r} is not an executable" if configured else "none on PATH"
        raise RuntimeError(
            f"headless Chromium not found ({where}): apt install chromium, or set {CHROMIUM_ENV} to its path"
        )

    png.parent.mkdir(parents=True, exist_ok=True)
    temporary = png.with_name(f".{png.name}.{uuid.uuid4().hex}.tmp.png")
    try:
        with tempfile.TemporaryDirectory(prefix="aucgan-chromium-") as profile:
            command = [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile}",
                f"--window-size={int(width)},{int(height)}",
                f"--screenshot={temporary.resolve()}",
                page.resolve().as_uri(),
            ]
            returncode, stderr = _run(command, timeout)
        if returncode != 0:
            raise RuntimeError(f"Chromium exited with status {returncode}: {_last_line(stderr)}")
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise RuntimeError(f"Chromium wrote no screenshot for {html}: {_last_line(stderr)}")
        with open(temporary, "rb") as handle:
            if handle.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                raise RuntimeError(f"Chromium's screenshot of {html} is not a PNG file")
        if trim:
            trim_bottom(temporary)
        os.replace(temporary, png)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return png


def _run(command: list[str], timeout: float) -> tuple[int, str]:
    """Run ``command`` in its own process group; on timeout stop the whole group and raise RuntimeError."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=os.name == "posix",
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise RuntimeError(f"Chromium did not finish the screenshot within {timeout:g} s") from None
    except BaseException:
        _stop(process)
        raise
    return process.returncode, stderr.decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen) -> None:
    """Kill ``process`` and, on POSIX, the process group it leads (Chromium's helper processes)."""
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aucgan.evaluate.screenshot REPORT.html OUT.png [--width W] [--height H] [--only ID]
    [--trim]``."""
    parser = argparse.ArgumentParser(
        prog="python -m aucgan.evaluate.screenshot",
        description="Save a PNG screenshot of an HTML file with headless Chromium.",
    )
    parser.add_argument("html", type=Path, help="the HTML file, e.g. report.html")
    parser.add_argument("png", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels (default 1280)")
    parser.add_argument("--height", type=int, default=2000, help="window height in pixels (default 2000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before giving up (default 60)")
    parser.add_argument(
        "--only",
        metavar="ID",
        help="show only the element with this id, e.g. edit (a report's AU-edit section)",
    )
    parser.add_argument("--trim", action="store_true", help="cut the empty background below the content")
    args = parser.parse_args(argv)
    try:
        path = screenshot(
            args.html,
            args.png,
            width=args.width,
            height=args.height,
            timeout=args.timeout,
            only=args.only,
            trim=args.trim,
        )
    except (OSError, RuntimeError, ValueError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

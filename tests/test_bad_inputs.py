"""The bad-input corpus: every awkward input a user can hand the command line, and what it must do.

Each kind gives a correct result or a one-line error that names the file (and says what to do), never a
traceback, and never a partial output that looks complete. Images go through one ``aucgan reconstruct``
batch (a folder with spaces and non-ASCII in its name); configs and checkpoints through ``aucgan doctor``,
``aucgan train`` and ``--weights``; a read-only output folder and a full disk are simulated at the one
writer every output goes through (:mod:`aucgan.atomic`), as the tests run as root here. A batch killed
with SIGKILL midway resumes only the inputs it had not finished.
"""

from __future__ import annotations

import contextlib
import errno
import io
import pickle
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from aucgan import atomic
from aucgan.cli import main
from aucgan.config import preset_path
from aucgan.reconstruct import is_finished

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TINY = preset_path("synthetic-tiny")


def cli(*argv: object) -> tuple[int, list[str]]:
    """``aucgan ARGV`` in-process: its exit status and its output lines, stdout then stderr (progress-bar
    redraws left out)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    text = out.getvalue() + err.getvalue()
    return status, [line for line in text.split("\n") if line.strip() and "\r" not in line]


def huge_png_header(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width x height`` (a decompression bomb in 67 bytes)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header) & 0xFFFFFFFF)
    return bytes(data)


# name -> faces written (an int) or a regex the one-line error must match
IMAGE_CORPUS: dict[str, int | str] = {
    "photo ñ.jpg": 1,
    "grey.png": 1,
    "grey16.png": 1,
    "cmyk.jpg": 1,
    "alpha.png": 1,
    "exif rotated.jpg": 1,
    "two faces.jpg": 2,
    "large.jpg": 1,
    "empty.png": r"empty file \(0 bytes\); re-export",
    "truncated.png": r"truncated or corrupt image .*re-export or re-download",
    "corrupt.jpg": r"cannot open the image .*re-export it as JPEG or PNG",
    "notes.png": r"not an image \(PIL cannot identify it\); give a JPEG/PNG",
    "page.jpg": r"an HTML page, not an image .*download the image file itself",
    "tiny.png": r"1x1 pixels is too small to hold a face .*give a larger image",
    "huge.png": r"too many pixels to decode safely .*downscale the image",
    # the OpenCV detector of the coarse network, or MediaPipe's (coarse.backend=auto with the extra)
    "no face.png": r"no face found; if it is already a face crop pass --no-crop|MediaPipe finds no face;",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PHOTO.is_file():
        pytest.skip(f"matplotlib ships no {PHOTO.name} here")
    folder = tmp_path_factory.mktemp("corpus") / "in folder ü"
    folder.mkdir()
    with Image.open(PHOTO) as opened:
        photo = opened.convert("RGB")
    photo.save(folder / "photo ñ.jpg", quality=95)
    photo.convert("L").save(folder / "grey.png")
    Image.fromarray(np.array(photo.convert("L")).astype(np.uint16) * 257).save(folder / "grey16.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    rgba = np.array(photo.convert("RGBA"))
    rgba[:, :100, 3] = 0
    Image.fromarray(rgba).save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left: viewers turn it right to show it upright
    photo.transpose(Image.Transpose.ROTATE_90).save(
        folder / "exif rotated.jpg", exif=exif.tobytes(), quality=95
    )
    width, height = photo.size
    pair = Image.new("RGB", (2 * width, height))
    pair.paste(photo, (0, 0))
    pair.paste(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (width, 0))
    pair.save(folder / "two faces.jpg", quality=95)
    photo.resize((6 * width, 6 * height), Image.Resampling.BILINEAR).save(folder / "large.jpg", quality=90)
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "grey.png").read_bytes()[:300])
    rng = np.random.default_rng(0)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(5000))
    (folder / "notes.png").write_text("hello\n")
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    (folder / "huge.png").write_bytes(huge_png_header(30000, 30000))
    noise = np.full((300, 300, 3), 128.0) + rng.normal(0, 3, (300, 300, 3))
    Image.fromarray(noise.clip(0, 255).astype(np.uint8)).save(folder / "no face.png")
    assert sorted(p.name for p in folder.iterdir()) == sorted(IMAGE_CORPUS)
    return folder


def face_folders(out: Path, name: str, faces: int) -> list[Path]:
    stem = Path(name).stem
    return [out / stem] if faces == 1 else [out / f"{stem}_face{i}" for i in range(1, faces + 1)]


@pytest.fixture(scope="module")
def reconstructed(corpus: Path, random_weights: Path) -> tuple[Path, int, list[str]]:
    out = corpus.parent / "out ü"
    status, lines = cli("reconstruct", corpus, "--out", out, "--weights", random_weights)
    return out, status, lines


def test_every_image_kind_gives_faces_or_one_line(reconstructed, corpus):
    out, status, lines = reconstructed
    assert status == 1, lines
    failures = {name: pattern for name, pattern in IMAGE_CORPUS.items() if isinstance(pattern, str)}
    summary = [line for line in lines if line.startswith(f"  {corpus}")]
    assert len(summary) == len(failures), lines
    for name, pattern in failures.items():
        (line,) = [line for line in summary if line.startswith(f"  {corpus / name}: ")]
        assert re.search(pattern, line), (name, line)
        assert not (out / Path(name).stem).exists(), name
    for name, faces in IMAGE_CORPUS.items():
        if isinstance(faces, int):
            for folder in face_folders(out, name, faces):
                assert is_finished(folder), folder
    assert not any("Traceback" in line for line in lines)
    written = {p.name for p in out.iterdir()}
    expected = {
        f.name for n, k in IMAGE_CORPUS.items() if isinstance(k, int) for f in face_folders(out, n, k)
    }
    assert written == expected


def test_an_exif_rotated_photo_is_read_upright(reconstructed):
    out, _, _ = reconstructed
    upright = np.asarray(Image.open(out / "photo ñ" / "input.png"), dtype=np.float64)
    rotated = np.asarray(Image.open(out / "exif rotated" / "input.png"), dtype=np.float64)
    turned = min(np.abs(upright - np.rot90(rotated, k)).mean() for k in (1, 2, 3))
    assert np.abs(upright - rotated).mean() < 0.25 * turned  # the same crop up to JPEG noise and a 1 % box


def test_a_rerun_skips_the_finished_and_reports_the_bad_again(reconstructed, corpus, random_weights):
    out, first_status, first_lines = reconstructed
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    status, lines = cli("reconstruct", corpus, "--out", out, "--weights", random_weights)
    assert status == first_status == 1
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before
    assert [line for line in lines if line.startswith("  ")] == [
        line for line in first_lines if line.startswith("  ")
    ]


# Sources with nothing to reconstruct: refused whole, in one line, before any weights load -------------------


def nothing_to_reconstruct(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (source, regex of the one-line error after ``aucgan reconstruct: SOURCE: ``)."""
    empty = folder / "empty folder"
    empty.mkdir()
    documents = folder / "documents"
    documents.mkdir()
    (documents / "notes.md").write_text("# to do\n")
    empty_list = folder / "empty.txt"
    empty_list.write_text("# photos to do\n\n")
    prose = folder / "notes.txt"
    prose.write_text("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 5)
    binary = folder / "binary.lst"
    binary.write_bytes(bytes(range(256)))
    Image.new("RGB", (64, 64)).save(folder / "face.png")
    landmarks = folder / "face.txt"
    np.savetxt(landmarks, np.random.default_rng(0).uniform(10, 50, (68, 2)))
    folders = r"give a folder of images, an image, a video or a \.txt list of paths$"
    lists = r"a list file holds one image or video path per line \(relative to the list's folder\)$"
    return {
        "empty folder": (
            empty,
            rf"no images \(\.jpg, \.png, \.\.\.\) or videos .*\(it is empty\); {folders}",
        ),
        "folder of documents": (
            documents,
            rf"no images .*\(it holds 1 other file \(notes\.md\)\); {folders}",
        ),
        "empty list": (empty_list, rf"an empty list \(no paths in it\); {lists}"),
        "text document": (
            prose,
            rf'not a list of image paths \(line 1 "Lorem ipsum.*…" is not an existing file\); {lists}',
        ),
        "binary list": (binary, rf"not a list of image paths \(a binary file\); {lists}"),
        "landmarks as input": (
            landmarks,
            r"rows of numbers, the landmarks of face\.png\?; give the image .*face\.png instead",
        ),
    }


def test_a_source_with_nothing_to_reconstruct_is_one_line_and_exit_2(random_weights, tmp_path):
    for kind, (source, pattern) in nothing_to_reconstruct(tmp_path).items():
        out = tmp_path / "out"
        status, lines = cli("reconstruct", source, "--out", out, "--weights", random_weights)
        assert status == 2, (kind, lines)
        assert len(lines) == 1, (kind, lines)
        prefix = f"aucgan reconstruct: {source}: "
        assert lines[0].startswith(prefix) and re.search(pattern, lines[0][len(prefix) :]), (kind, lines)
        assert not out.exists(), kind


# Output folder: read-only, full disk ---------------------------------------------------------------------


def failing_writes(monkeypatch, error: OSError, after: int) -> list[Path]:
    """Make every write after the first ``after`` raise ``error`` (at the writer all outputs use)."""
    written: list[Path] = []
    real = atomic.atomic_path

    @contextlib.contextmanager
    def atomic_path(path):
        if len(written) >= after:
            raise OSError(error.errno, error.strerror, str(path))
        with real(path) as temporary:
            yield temporary
        written.append(Path(path))

    monkeypatch.setattr(atomic, "atomic_path", atomic_path)
    return written


def test_a_read_only_output_folder_is_one_line_per_face_and_nothing_looks_done(
    corpus, random_weights, tmp_path, monkeypatch
):
    failing_writes(monkeypatch, OSError(errno.EACCES, "Permission denied"), after=0)
    out = tmp_path / "read-only"
    status, lines = cli("reconstruct", corpus / "photo ñ.jpg", "--out", out, "--weights", random_weights)
    assert status == 1
    (line,) = [line for line in lines if "Permission denied" in line]
    assert line.startswith(f"  cannot write {out / 'photo ñ'}")
    assert not is_finished(out / "photo ñ")


def test_a_full_disk_midway_leaves_no_face_looking_done_and_a_rerun_finishes(
    corpus, random_weights, tmp_path, monkeypatch
):
    out = tmp_path / "full"
    written = failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), after=5)
    status, lines = cli("reconstruct", corpus / "two faces.jpg", "--out", out, "--weights", random_weights)
    assert status == 1
    assert len(written) == 5
    full = [line for line in lines if "No space left on device" in line]
    assert len(full) == 2, lines
    assert not is_finished(out / "two faces_face1") and not is_finished(out / "two faces_face2")
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary left behind

    monkeypatch.undo()
    status, lines = cli("reconstruct", corpus / "two faces.jpg", "--out", out, "--weights", random_weights)
    assert status == 0, lines
    assert is_finished(out / "two faces_face1") and is_finished(out / "two faces_face2")


# Configs -------------------------------------------------------------------------------------------------

CONFIG_CORPUS: dict[str, tuple[str, str]] = {
    "unknown key": ("render:\n  image_sise: 64\n", r"render\.image_sise.*did you mean .*image_size"),
    "duplicate key": ("render:\n  image_size: 64\n  image_size: 128\n", r"duplicate key.*image_size"),
    "bad yaml": ("render: [unclosed\n", r":2: invalid YAML"),
    "wrong type": ("render:\n  image_size: big\n", r"render\.image_size"),
    "not a mapping": ("- a\n- b\n", r"mapping"),
}


@pytest.mark.parametrize("kind", sorted(CONFIG_CORPUS))
def test_a_bad_config_is_one_line_naming_the_file(kind, tmp_path):
    text, pattern = CONFIG_CORPUS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    for argv in (
        ["doctor", "--config", path],
        ["train", "au", path, "trainer.out_dir=" + str(tmp_path / "run")],
    ):
        status, lines = cli(*argv)
        assert status == 2, (argv, lines)
        assert len(lines) == 1 and str(path) in lines[0] and re.search(pattern, lines[0]), (argv, lines)
    assert not (tmp_path / "run").exists()


def test_a_missing_config_and_a_missing_key_are_one_line(tmp_path):
    status, lines = cli("train", "au", tmp_path / "nowhere.yaml")
    assert status == 2 and len(lines) == 1 and "nowhere.yaml" in lines[0]
    status, lines = cli("train", "au", TINY, "render.no_such_key=1", f"trainer.out_dir={tmp_path / 'run'}")
    assert status == 2 and len(lines) == 1 and "render.no_such_key" in lines[0]


# Checkpoints and weights ----------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def checkpoint_corpus(folder: Path, random_weights: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex of the one-line error)."""
    html = folder / "page.safetensors"
    html.write_text("<!DOCTYPE html><html><body>Sign in to download</body></html>\n")
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(random_weights.read_bytes()[:5000])
    empty = folder / "empty.safetensors"
    empty.write_bytes(b"")
    other = folder / "other.safetensors"
    from safetensors.torch import save_file

    save_file(
        {"coarse.x": torch.zeros(2), "detail.y": torch.zeros(3)}, str(other), metadata={"format": "aucgan"}
    )
    Payload.marker = str(folder / "pwned")
    payload = folder / "payload.ckpt"
    payload.write_bytes(pickle.dumps({"state_dict": Payload()}))
    wrong = folder / "wrong-architecture.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}, "aucgan": {}}, wrong)
    return {
        "html page as weights": (html, r"an HTML page, not a weights file"),
        "truncated safetensors": (truncated, r"truncated|not a safetensors|incomplete"),
        "empty weights": (empty, r"empty"),
        "foreign safetensors": (other, r"not aucgan weights .*aucgan pack"),
        "pickle with a payload": (payload, r"refused|not allowed|weights_only|unsupported"),
        "wrong-architecture checkpoint": (wrong, r"not of the AU net .*found top-level keys: fc\)"),
    }


def test_bad_weights_and_checkpoints_are_one_line_and_never_run_code(corpus, random_weights, tmp_path):
    for kind, (path, pattern) in checkpoint_corpus(tmp_path, random_weights).items():
        if path.suffix == ".safetensors":
            argv = ["reconstruct", corpus / "photo ñ.jpg", "--out", tmp_path / "out", "--weights", path]
        else:
            argv = ["train", "detail", TINY, f"assets.au_net={path}", f"trainer.out_dir={tmp_path / 'run'}"]
        status, lines = cli(*argv)
        assert status == 2, (kind, lines)
        assert len(lines) == 1 and str(path) in lines[0] and re.search(pattern, lines[0]), (kind, lines)
        assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "checkpoints").exists(), kind
    assert not (tmp_path / "pwned").exists()


# A batch killed midway -------------------------------------------------------------------------------------


def test_a_batch_killed_midway_resumes_only_the_remaining_inputs(corpus, random_weights, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(8):
        (inputs / f"face{i}.jpg").write_bytes((corpus / "photo ñ.jpg").read_bytes())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "aucgan", "reconstruct", inputs, "--out", out,
               "--weights", random_weights, "--batch-size", "1"]  # fmt: skip
    child = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while sum(is_finished(out / f"face{i}") for i in range(8)) < 3:
            assert child.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "the batch wrote no faces in time"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    done = {i for i in range(8) if is_finished(out / f"face{i}")}
    assert 3 <= len(done) < 8
    stamps = {path: path.stat().st_mtime_ns for i in done for path in (out / f"face{i}").iterdir()}

    status, _ = cli("reconstruct", inputs, "--out", out, "--weights", random_weights, "--batch-size", "1")
    assert status == 0
    assert all(is_finished(out / f"face{i}") for i in range(8))
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps  # finished faces were not redone
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp.png")]

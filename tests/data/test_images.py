"""Tests of real inputs (:mod:`aucgan.data.images`): collecting files, robust reading, face framing.

Every input is written into ``tmp_path``; the one real photo (matplotlib's ``grace_hopper.jpg``) is copied
there. The framing constants are re-measured on the synthetic world so they can never go stale.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
from PIL import Image

from aucgan.data import images
from aucgan.data.images import (
    HAAR_LANDMARK_DROP,
    HAAR_LANDMARK_SIDE,
    IMAGE_SUFFIXES,
    LANDMARK_WINDOW_SCALE,
    LANDMARK_WINDOW_SHIFT,
    LIST_SUFFIXES,
    MIN_IMAGE_SIDE,
    VIDEO_SUFFIXES,
    FaceBox,
    InputError,
    InputItem,
    box_from_landmarks,
    collect_inputs,
    crop_face,
    detect_faces,
    landmarks_beside,
    load_image,
    prepare_faces,
)
from aucgan.data.synthetic import SyntheticWorld
from aucgan.geometry.camera import ndc_to_pixels

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
CALIBRATION_SIZE = 64  # image size of the calibration world (landmarks are in NDC: any size measures alike)
CALIBRATION_SAMPLES = range(0, 32 * 8, 8)  # 32 samples over 64 identities


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful ``(H, W, 3)`` uint8 image (JPEG-friendly) with a little noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([rows, cols, 1 - (rows + cols) / 2], axis=-1) * 200 + 25
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def _input_error(path: Path, frame: int | None = None) -> str:
    """Load ``path`` expecting an :class:`InputError`; check it is one line naming the file."""
    with pytest.raises(InputError) as caught:
        load_image(path, frame)
    message = str(caught.value)
    assert "\n" not in message
    assert path.name in message
    return message


def _face_landmarks(centre_x: float, centre_y: float, width: float, height: float) -> np.ndarray:
    """68 points on an ellipse: a stand-in face with the given landmark box."""
    angles = np.linspace(0.0, 2.0 * math.pi, 68, endpoint=False)
    return np.stack([centre_x + width / 2 * np.cos(angles), centre_y + height / 2 * np.sin(angles)], axis=-1)


# Collecting inputs ---------------------------------------------------------------------------------------


def test_suffix_sets_are_lower_case_and_disjoint() -> None:
    for suffixes in (IMAGE_SUFFIXES, VIDEO_SUFFIXES, LIST_SUFFIXES):
        assert all(s.startswith(".") and s == s.lower() for s in suffixes)
    assert not (IMAGE_SUFFIXES & VIDEO_SUFFIXES) and not (IMAGE_SUFFIXES & LIST_SUFFIXES)


def test_collect_single_image(tmp_path: Path) -> None:
    path = _save(tmp_path / "portrait.png", _photo(20, 20))
    assert collect_inputs(path) == [InputItem("portrait", path)]
    assert collect_inputs(str(path)) == [InputItem("portrait", path)]


def test_collect_folder_sorted_skipping_hidden_landmarks_and_subfolders(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for name in ("b.jpg", "a.png", "c.png", ".hidden.png", "sub/d.png"):
        _save(folder / name, _photo(20, 20))
    np.save(folder / "a.npy", _face_landmarks(10, 10, 8, 8))
    np.savetxt(folder / "c.txt", _face_landmarks(10, 10, 8, 8))
    (folder / "notes.txt").write_text("not a picture\n")
    items = collect_inputs(folder)
    assert [item.path.name for item in items] == ["a.png", "b.jpg", "c.png", "notes.txt"]
    assert [item.name for item in items] == ["a", "b", "c", "notes"]
    assert all(item.frame is None for item in items)
    assert "not an image" in _input_error(items[-1].path)


def test_collect_list_file_relative_paths_comments_folders_and_missing(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        _save(tmp_path / "imgs" / name, _photo(20, 20))
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text("# my photos\n\n../imgs/b.png\n   ../imgs/a.png  \n../imgs\n# gone:\nmissing.png\n")
    items = collect_inputs(listing)
    assert [item.name for item in items] == ["b", "a", "a_2", "b_2", "missing"]
    assert [item.path.resolve() for item in items[:4]] == [
        (tmp_path / "imgs" / n).resolve() for n in ("b.png", "a.png", "a.png", "b.png")
    ]
    assert items[-1].path == listing.parent / "missing.png"
    assert "no such file" in _input_error(items[-1].path)


def test_duplicate_stems_get_unique_case_insensitive_names(tmp_path: Path) -> None:
    for name in ("face.png", "face.jpg", "Face.bmp", "face_2.png"):
        _save(tmp_path / name, _photo(20, 20))
    names = [item.name for item in collect_inputs(tmp_path)]
    assert len({n.casefold() for n in names}) == len(names) == 4
    assert names[0] == "Face" and all("/" not in n for n in names)


def test_missing_source_is_one_line_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "photo.jpg"
    with pytest.raises(InputError) as caught:
        collect_inputs(missing)
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="every"):
        collect_inputs(tmp_path, every=0)


def test_animated_gif_expands_to_every_nth_frame(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (24, 20), colour) for colour in colours]
    path = tmp_path / "clip.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    items = collect_inputs(path, every=2)
    assert items == [InputItem("clip_f00000", path, 0), InputItem("clip_f00002", path, 2)]
    assert [item.frame for item in collect_inputs(path)] == [0, 1, 2]
    for frame, colour in enumerate(colours):
        loaded = load_image(path, frame)
        assert loaded.shape == (20, 24, 3)
        assert np.abs(loaded.astype(int) - np.array(colour)).max() <= 2
    assert "out of range" in _input_error(path, frame=3)
    still = tmp_path / "still.gif"
    frames[0].save(still)
    assert collect_inputs(still) == [InputItem("still", still)]


def _collect_error(source: Path) -> str:
    """Collect ``source`` expecting an :class:`InputError`; check it is one line naming the source."""
    with pytest.raises(InputError) as caught:
        collect_inputs(source)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def test_a_folder_without_images_or_videos_is_refused_whole(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\0\0\0\1")
    assert "(it is empty); give a folder of images, an image, a video or a .txt list of paths" in (
        _collect_error(empty)
    )
    papers = tmp_path / "papers"
    _save(papers / "nested" / "photo.png", _photo(20, 20))
    (papers / "notes.md").write_text("# notes\n")
    (papers / "thesis.pdf").write_bytes(b"%PDF-1.4\n")
    message = _collect_error(papers)
    assert "no images (.jpg, .png, ...) or videos (.mp4, ...) in this folder" in message
    assert "2 other files (notes.md, ...)" in message and "1 sub-folder (nested/, not searched)" in message
    # One image by suffix is enough: the other files stay items whose loading reports them.
    _save(papers / "face.jpg", _photo(20, 20))
    assert [item.name for item in collect_inputs(papers)] == ["face", "notes", "thesis"]


def test_list_files_that_are_no_lists_are_named_as_such(tmp_path: Path) -> None:
    fix = "a list file holds one image or video path per line (relative to the list's folder)"
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n   \n")
    assert _collect_error(empty) == f"{empty}: an empty list (no paths in it); {fix}"
    prose = tmp_path / "notes.txt"
    prose.write_text("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8 + "\nSecond line.\n")
    assert _collect_error(prose) == (
        f'{prose}: not a list of image paths (line 1 "Lorem ipsum dolor sit amet, consectetur…" is not an '
        f"existing file, nor is any other line); {fix}"
    )
    binary = tmp_path / "frames.lst"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert _collect_error(binary) == f"{binary}: not a list of image paths (a binary file); {fix}"
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    assert _collect_error(latin) == f"{latin}: not a list of image paths (not UTF-8 text); {fix}"
    orphan = tmp_path / "orphan.txt"
    np.savetxt(orphan, _face_landmarks(10, 10, 8, 8))
    assert "not a list of image paths but rows of numbers (landmarks?); give the image" in (
        _collect_error(orphan)
    )
    _save(tmp_path / "face.png", _photo(20, 20))
    landmarks = tmp_path / "face.txt"
    np.savetxt(landmarks, _face_landmarks(10, 10, 8, 8), delimiter=",")
    assert f"the landmarks of face.png?; give the image {tmp_path / 'face.png'} instead" in (
        _collect_error(landmarks)
    )


def test_a_real_list_keeps_its_unusable_lines_as_per_entry_failures(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", _photo(20, 20))
    garbage = "x" * 600 + ".jpg"  # longer than any file name may be: the system refuses it
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"a.png\n{garbage}\n")
    first, second = collect_inputs(listing)
    assert first == InputItem("a", tmp_path / "a.png")
    assert second.path == tmp_path / garbage and len(second.name.encode()) <= 180
    assert "no such file" in _input_error(second.path)
    folder_list = tmp_path / "folders.txt"
    (tmp_path / "no images").mkdir()
    folder_list.write_text("no images\n")
    assert "the folders it lists hold no files" in _collect_error(folder_list)


# Videos: read through OpenCV (opencv-python-headless, a dependency, bundles FFmpeg) -----------------------

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}
"""Suffix -> FourCC of the videos the tests write: Motion JPEG (every frame a key frame) and MPEG-4 part 2
(frames predicted from earlier ones, so reading frame k out of order needs a correct seek)."""


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write RGB ``frames`` (all ``(H, W, 3)`` uint8, one size) with OpenCV's own writer."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*VIDEO_CODECS[path.suffix]), fps, (width, height)
    )
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _numbered_frames(count: int, width: int = 96, height: int = 112) -> list[np.ndarray]:
    """The real photo, resized, with frame k's number written as a band of grey level 30 k over its top 8
    rows."""
    with Image.open(GRACE_HOPPER) as opened:
        photo = np.asarray(opened.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
    frames = []
    for k in range(count):
        frame = photo.copy()
        frame[:8] = 30 * k
        frames.append(frame)
    return frames


@pytest.mark.parametrize("suffix", sorted(VIDEO_CODECS))
def test_video_frames_are_read_in_rgb_in_any_order(tmp_path: Path, suffix: str) -> None:
    frames = _numbered_frames(7)
    path = _write_video(tmp_path / f"clip{suffix}", frames)
    assert collect_inputs(path) == [InputItem(f"clip_f{k:05d}", path, k) for k in range(7)]
    assert collect_inputs(path, every=3) == [InputItem(f"clip_f{k:05d}", path, k) for k in (0, 3, 6)]
    assert collect_inputs(tmp_path, every=3) == collect_inputs(path, every=3)
    for k in (6, 0, 3, 4, 1, 5, 2):  # backwards, forwards, by one and by several: every read is frame k
        loaded = load_image(path, k)
        assert loaded.shape == frames[k].shape and loaded.dtype == np.uint8
        assert abs(float(loaded[2:6].mean()) - 30 * k) < 6, k
        photo, written = loaded[12:].astype(float), frames[k][12:].astype(float)
        error = np.abs(photo - written).mean()
        assert error < 6 and np.abs(photo - written[..., ::-1]).mean() > 3 * error, k  # RGB, not BGR
    assert np.array_equal(load_image(path), load_image(path, 0))
    assert _input_error(path, 7) == (
        f"{path}: frame 7 out of range (the video has 7 frames); give a frame index from 0 to 6"
    )


def test_a_video_opencv_cannot_decode_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "interview.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    assert collect_inputs(path) == [InputItem("interview", path)]
    assert collect_inputs(tmp_path) == [InputItem("interview", path)]
    assert _input_error(path) == (
        f"{path}: cannot open the video (OpenCV's FFmpeg cannot decode it); check that it plays, or "
        "extract its frames to images with ffmpeg"
    )


def test_video_without_opencv_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_video(tmp_path / "clip.avi", _numbered_frames(2))
    monkeypatch.setattr(images, "_opencv_video", lambda: None)
    assert collect_inputs(path) == [InputItem("clip", path)]
    assert _input_error(path) == (
        f"{path}: reading videos needs OpenCV: pip install opencv-python-headless (or extract the frames "
        "to images with ffmpeg)"
    )


# Reading images ------------------------------------------------------------------------------------------


def test_load_rgb_and_grayscale(tmp_path: Path) -> None:
    rgb = _photo(30, 40)
    loaded = load_image(_save(tmp_path / "rgb.png", rgb))
    assert loaded.dtype == np.uint8 and loaded.shape == (30, 40, 3)
    np.testing.assert_array_equal(loaded, rgb)
    grey = rgb[..., 0]
    loaded = load_image(_save(tmp_path / "grey.png", grey))
    np.testing.assert_array_equal(loaded, np.repeat(grey[..., None], 3, axis=-1))
    bits = np.arange(20 * 20).reshape(20, 20) % 3 == 0
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    loaded = load_image(tmp_path / "bits.png")
    np.testing.assert_array_equal(loaded[..., 1], np.where(bits, 255, 0))


def test_16_bit_grayscale_keeps_its_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256 * 64).round().astype(np.uint16).reshape(64, 256)
    path = _save(tmp_path / "depth16.png", ramp)
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path)
    assert loaded[0, 0, 0] == 0 and loaded[-1, -1, 0] == 255
    expected = np.round(ramp.astype(np.float64) / 65535.0 * 255.0)
    np.testing.assert_array_equal(loaded[..., 2], expected)
    assert np.all(np.diff(loaded[..., 0].ravel().astype(int)) >= 0)


def test_32_bit_integer_grayscale(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.int32)  # 16-bit data in a 32-bit container
    path = _save(tmp_path / "sixteen_in_32.tif", ramp)
    assert Image.open(path).mode == "I"
    expected = np.round(ramp / 65535.0 * 255.0)
    np.testing.assert_array_equal(load_image(path)[..., 0], expected)
    wide = ramp * 4 - 70000  # beyond 16 bits: scaled by its own range
    loaded = load_image(_save(tmp_path / "wide.tif", wide))[..., 0]
    np.testing.assert_array_equal(loaded, np.round((wide - wide.min()) / np.ptp(wide) * 255.0))


def test_float_grayscale_scaled_by_range(tmp_path: Path) -> None:
    unit = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    loaded = load_image(_save(tmp_path / "unit.tif", unit))
    np.testing.assert_array_equal(loaded[..., 0], np.round(unit.astype(np.float64) * 255))
    wide = unit * 8.0 - 2.0
    loaded = load_image(_save(tmp_path / "wide.tif", wide))
    assert loaded[..., 0].min() == 0 and loaded[..., 0].max() == 255
    np.testing.assert_array_equal(loaded[..., 0], np.round(unit.astype(np.float64) * 255))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_mid_grey(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    image = Image.fromarray(rgba).convert(mode)
    path = tmp_path / f"alpha_{mode}.png"
    image.save(path)
    grey = Image.new("RGBA", image.size, (128, 128, 128, 255))
    expected = np.asarray(Image.alpha_composite(grey, image.convert("RGBA")).convert("RGB")).astype(int)
    assert np.abs(load_image(path).astype(int) - expected).max() <= 1


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    colours = np.array([[200, 30, 40], [10, 220, 60], [30, 40, 250], [240, 240, 20]], dtype=np.uint8)
    index = np.arange(20 * 20).reshape(20, 20) % 4
    rgb = colours[index]
    palette = Image.fromarray(rgb).quantize(colors=4)
    assert palette.mode == "P"
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png"), rgb)
    transparent_index = int(np.asarray(palette)[0, 0])
    palette.save(tmp_path / "transparent.png", transparency=transparent_index)
    loaded = load_image(tmp_path / "transparent.png")
    clear = np.asarray(palette) == transparent_index
    assert np.all(loaded[clear] == 128)
    np.testing.assert_array_equal(loaded[~clear], rgb[~clear])


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    inks = {(255, 0, 0, 0): (0, 255, 255), (0, 255, 0, 0): (255, 0, 255), (0, 0, 0, 255): (0, 0, 0)}
    inks[(0, 0, 0, 0)] = (255, 255, 255)
    cmyk = np.zeros((64, 64, 4), dtype=np.uint8)
    quadrants = [(slice(0, 32), slice(0, 32)), (slice(0, 32), slice(32, 64))]
    quadrants += [(slice(32, 64), slice(0, 32)), (slice(32, 64), slice(32, 64))]
    for (rows, cols), ink in zip(quadrants, inks, strict=True):
        cmyk[rows, cols] = ink
    path = tmp_path / "print.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    loaded = load_image(path)
    for (rows, cols), rgb in zip(quadrants, inks.values(), strict=True):
        inner = loaded[rows, cols][8:-8, 8:-8].astype(int)
        assert np.abs(inner - np.array(rgb)).max() <= 12


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = _photo(24, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left: display rotated 90 degrees clockwise
    path = _save(tmp_path / "phone.jpg", upright, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (48, 24, 3)
    rotated = np.rot90(upright, k=-1).astype(int)
    assert np.abs(loaded.astype(int) - rotated).mean() < 3
    assert np.abs(loaded.astype(int) - np.rot90(upright, k=1).astype(int)).mean() > 20


def _broken_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg, png = _save(folder / "full.jpg", noise), _save(folder / "full.png", noise)
    cases = {
        "empty": (folder / "empty.png", "empty file"),
        "truncated_jpeg": (folder / "cut.jpg", "truncated or corrupt"),
        "truncated_png": (folder / "cut.png", "truncated or corrupt"),
        "random_png": (folder / "random.png", "not an image"),
        "text": (folder / "notes.txt", "not an image"),
        "tiny": (folder / "tiny.png", "too small to hold a face"),
        "missing": (folder / "missing.jpg", "no such file"),
    }
    cases["empty"][0].write_bytes(b"")
    cases["truncated_jpeg"][0].write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    cases["truncated_png"][0].write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    cases["random_png"][0].write_bytes(noise.tobytes()[:3000])
    cases["text"][0].write_text("these are my holiday photos\n")
    _save(cases["tiny"][0], noise[:1, :1])
    return cases


@pytest.mark.parametrize(
    "case", ["empty", "truncated_jpeg", "truncated_png", "random_png", "text", "tiny", "missing"]
)
def test_bad_files_are_one_line_input_errors(tmp_path: Path, case: str) -> None:
    path, expected = _broken_inputs(tmp_path)[case]
    assert expected in _input_error(path)


def test_smallest_accepted_side(tmp_path: Path) -> None:
    assert load_image(_save(tmp_path / "ok.png", _photo(MIN_IMAGE_SIDE, 40))).shape == (MIN_IMAGE_SIDE, 40, 3)
    assert "15x40" in _input_error(_save(tmp_path / "thin.png", _photo(40, MIN_IMAGE_SIDE - 1)))


# Landmarks and framing ----------------------------------------------------------------------------------


def test_landmarks_beside_npy_and_txt(tmp_path: Path) -> None:
    points = _face_landmarks(50, 60, 30, 40)
    image = _save(tmp_path / "a.png", _photo(20, 20))
    assert landmarks_beside(image) is None
    np.save(tmp_path / "a.npy", np.concatenate([points, np.ones((68, 1))], axis=1).astype(np.float32))
    np.testing.assert_allclose(landmarks_beside(image), points, rtol=1e-6)
    other = _save(tmp_path / "b.jpg", _photo(20, 20))
    (tmp_path / "b.txt").write_text("\n".join(f"{x:.3f}, {y:.3f}" for x, y in points) + "\n")
    loaded = landmarks_beside(other)
    assert loaded.shape == (68, 2) and loaded.dtype == np.float64
    np.testing.assert_allclose(loaded, points, atol=1e-3)


@pytest.mark.parametrize(
    "content", [np.zeros((67, 2)), np.zeros((68, 4)), np.full((68, 2), np.nan), "1 2\n3 four\n"]
)
def test_bad_landmark_file_is_input_error(tmp_path: Path, content: object) -> None:
    image = _save(tmp_path / "face.png", _photo(20, 20))
    if isinstance(content, str):
        landmark_file = tmp_path / "face.txt"
        landmark_file.write_text(content)
    else:
        landmark_file = tmp_path / "face.npy"
        np.save(landmark_file, content)
    with pytest.raises(InputError) as caught:
        landmarks_beside(image)
    assert landmark_file.name in str(caught.value) and "\n" not in str(caught.value)


def _measure_synthetic_framing(world: SyntheticWorld, indices: range) -> tuple[float, float, float]:
    """Frame side / landmark-box side, vertical offset of the frame centre from the landmark-box centre (in
    landmark-box sides, y down), and the mean IoU of :func:`box_from_landmarks`'s window with the frame."""
    size = world.image_size
    frame_centre = (size - 1) / 2.0
    scales, shifts, overlaps = [], [], []
    for index in indices:
        pixels = ndc_to_pixels(world.sample(index).landmarks, size, size).double().numpy()
        low, high = pixels.min(axis=0), pixels.max(axis=0)
        side = float((high - low).mean())
        scales.append(size / side)
        shifts.append((frame_centre - (low[1] + high[1]) / 2.0) / side)
        box = box_from_landmarks(pixels)
        half = box.size / 2.0
        overlap_x = min(box.centre_x + half, size - 0.5) - max(box.centre_x - half, -0.5)
        overlap_y = min(box.centre_y + half, size - 0.5) - max(box.centre_y - half, -0.5)
        overlap = max(overlap_x, 0.0) * max(overlap_y, 0.0)
        overlaps.append(overlap / (box.size**2 + size**2 - overlap))
    return float(np.mean(scales)), float(np.mean(shifts)), float(np.mean(overlaps))


@pytest.fixture(scope="module")
def synthetic_framing() -> tuple[float, float, float]:
    world = SyntheticWorld(seed=0, image_size=CALIBRATION_SIZE, uv_size=32)
    return _measure_synthetic_framing(world, CALIBRATION_SAMPLES)


def test_window_constants_match_the_synthetic_world(synthetic_framing: tuple[float, float, float]) -> None:
    scale, shift, _ = synthetic_framing
    assert abs(LANDMARK_WINDOW_SCALE / scale - 1.0) < 0.05
    # The offset is near zero, so compare it as a fraction of the window side.
    assert abs(LANDMARK_WINDOW_SHIFT - shift) / scale < 0.05


def test_landmark_window_reproduces_the_synthetic_frame(
    synthetic_framing: tuple[float, float, float],
) -> None:
    assert synthetic_framing[2] > 0.8


def test_box_from_landmarks_geometry() -> None:
    points = _face_landmarks(100.0, 80.0, 60.0, 40.0)
    box = box_from_landmarks(points)
    assert box.centre_x == pytest.approx(100.0)
    assert box.size == pytest.approx(LANDMARK_WINDOW_SCALE * 50.0)
    assert box.centre_y == pytest.approx(80.0 + LANDMARK_WINDOW_SHIFT * 50.0, abs=0.1)
    doubled = box_from_landmarks(points * 2.0)
    assert doubled.size == pytest.approx(2.0 * box.size) and doubled.centre_x == pytest.approx(200.0)
    with pytest.raises(ValueError, match=r"\(68, 3\)"):
        box_from_landmarks(np.zeros((68, 3)))
    with pytest.raises(ValueError, match="no area"):
        box_from_landmarks(np.ones((68, 2)))


def _reference_crop(image: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Plain bilinear sampling at the output pixel centres, indices clamped (= edge replication)."""
    height, width = image.shape[:2]
    step = box.size / size
    centres = (np.arange(size) + 0.5) * step - box.size / 2.0
    out = np.zeros((size, size, 3))
    for i, y in enumerate(box.centre_y + centres):
        for j, x in enumerate(box.centre_x + centres):
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    row = min(max(y0 + dy, 0), height - 1)
                    col = min(max(x0 + dx, 0), width - 1)
                    out[i, j] += wy * wx * image[row, col]
    return out


@pytest.mark.parametrize(
    "box", [FaceBox(20.3, 14.8, 17.5), FaceBox(2.0, 30.0, 21.0), FaceBox(-4.0, -3.0, 12.25)]
)
def test_crop_face_upscaling_matches_bilinear_reference(box: FaceBox) -> None:
    image = np.random.default_rng(3).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    crop = crop_face(image, box, 30)
    assert crop.shape == (30, 30, 3) and crop.dtype == np.uint8
    assert np.abs(crop.astype(float) - _reference_crop(image, box, 30)).max() <= 1.01


def test_crop_face_downscaling_averages_the_area() -> None:
    image = np.random.default_rng(4).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    box = FaceBox(centre_x=13.5, centre_y=9.5, size=36.0)  # pixel edges -4.5 .. 31.5 and -8.5 .. 27.5
    padded = np.pad(image, ((8, 8), (4, 4), (0, 0)), mode="edge")[0:36, 0:36].astype(float)
    expected = padded.reshape(12, 3, 12, 3, 3).mean(axis=(1, 3))
    assert np.abs(crop_face(image, box, 12).astype(float) - expected).max() <= 1.0


def test_crop_face_replicates_edges_outside_the_image() -> None:
    image = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    crop = crop_face(image, FaceBox(15.5, 15.5 - 16.0, 32.0), 32)
    np.testing.assert_array_equal(crop[16:], image[:16])
    np.testing.assert_array_equal(crop[:16], np.broadcast_to(image[:1], (16, 32, 3)))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        crop_face(image[..., 0], FaceBox(1, 1, 1), 8)


def test_remove_overlaps_keeps_the_largest_of_nested_boxes() -> None:
    kept = images._remove_overlaps([(10, 10, 20, 20), (0, 0, 50, 50), (100, 0, 30, 30), (45, 45, 20, 20)])
    assert kept == [(0, 0, 50, 50), (100, 0, 30, 30), (45, 45, 20, 20)]


def test_remove_overlaps_drops_windows_under_a_quarter_of_the_largest() -> None:
    kept = images._remove_overlaps([(300, 0, 12, 12), (0, 0, 100, 100), (200, 0, 26, 26), (400, 0, 25, 25)])
    assert kept == [(0, 0, 100, 100), (200, 0, 26, 26), (400, 0, 25, 25)]


def _haar_boxes(image: np.ndarray) -> np.ndarray:
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    return np.asarray(cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))


@pytest.fixture(scope="module")
def grace_hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real") / "grace_hopper.jpg"
    shutil.copyfile(GRACE_HOPPER, path)
    return path


def test_detect_faces_frames_the_real_photo(grace_hopper: Path) -> None:
    image = load_image(grace_hopper)
    faces = detect_faces(image)
    assert len(faces) == 1
    (x, y, w, h), face = _haar_boxes(image)[0], faces[0]
    half = face.size / 2.0
    left, right = face.centre_x - half, face.centre_x + half
    top, bottom = face.centre_y - half, face.centre_y + half
    assert left <= x - 0.5 and right >= x + w - 0.5 and top <= y - 0.5 and bottom >= y + h - 0.5
    height, width = image.shape[:2]
    inside_x = min(right, width - 0.5) - max(left, -0.5)
    inside_y = min(bottom, height - 0.5) - max(top, -0.5)
    assert inside_x * inside_y >= 0.9 * face.size**2
    # The window follows the Haar box by the stated proportion.
    haar_side = (w + h) / 2.0
    landmark_side = face.size / LANDMARK_WINDOW_SCALE
    assert landmark_side == pytest.approx(HAAR_LANDMARK_SIDE * haar_side)
    haar_centre_y = y + h / 2.0 - 0.5
    expected_y = haar_centre_y + HAAR_LANDMARK_DROP * haar_side + LANDMARK_WINDOW_SHIFT * landmark_side
    assert face.centre_y == pytest.approx(expected_y)


def test_detect_faces_orders_several_faces_largest_first(grace_hopper: Path, tmp_path: Path) -> None:
    photo = Image.open(grace_hopper).convert("RGB")
    small = photo.resize((photo.width * 3 // 5, photo.height * 3 // 5), Image.Resampling.BOX)
    canvas = Image.new("RGB", (photo.width + small.width + 40, photo.height), (120, 120, 120))
    canvas.paste(small, (0, 100))
    canvas.paste(photo, (small.width + 40, 0))
    path = tmp_path / "pair.png"
    canvas.save(path)
    faces = prepare_faces(InputItem("pair", path), size=32)
    assert [face.name for face in faces] == ["pair_face1", "pair_face2"]
    assert faces[0].box.size > faces[1].box.size
    assert faces[0].box.centre_x > small.width > faces[1].box.centre_x


def test_prepare_faces_detects_the_real_face(grace_hopper: Path) -> None:
    (item,) = collect_inputs(grace_hopper)
    (face,) = prepare_faces(item, size=64)
    assert face.name == "grace_hopper" and face.image.shape == (64, 64, 3) and face.frame is None
    np.testing.assert_array_equal(face.image, crop_face(load_image(grace_hopper), face.box, 64))


def test_prepare_faces_without_crop_takes_the_centre_square(tmp_path: Path) -> None:
    image = _photo(40, 60)
    path = _save(tmp_path / "wide.png", image)
    (face,) = prepare_faces(InputItem("wide", path), size=20, crop=False)
    assert face.box is None and face.image.shape == (20, 20, 3) and face.source == path
    expected = image[:, 10:50].reshape(20, 2, 20, 2, 3).mean(axis=(1, 3))
    assert np.abs(face.image.astype(float) - expected).max() <= 1.0


def test_prepare_faces_uses_landmarks_beside_the_image(tmp_path: Path) -> None:
    path = _save(tmp_path / "posed.png", np.full((80, 100, 3), 128, dtype=np.uint8))
    points = _face_landmarks(55.0, 40.0, 30.0, 34.0)
    np.save(tmp_path / "posed.npy", points)
    (face,) = prepare_faces(InputItem("posed", path), size=32)
    assert face.name == "posed" and face.box == box_from_landmarks(points)
    np.save(tmp_path / "posed.npy", points / 100.0 - 5.0)
    with pytest.raises(InputError, match="do not lie on the"):
        prepare_faces(InputItem("posed", path), size=32)


def test_prepare_faces_without_a_face_is_input_error(tmp_path: Path) -> None:
    path = _save(tmp_path / "wall.png", np.full((120, 160, 3), 128, dtype=np.uint8))
    with pytest.raises(InputError) as caught:
        prepare_faces(InputItem("wall", path), size=32)
    message = str(caught.value)
    assert "wall.png" in message and "no face found" in message and "--no-crop" in message
    assert "\n" not in message

"""Real inputs for ``aucgan reconstruct``: collecting files, reading images robustly, framing faces.

A reconstruction run takes a source (an image, a folder, a video or a list file), turns it into
:class:`InputItem` s with :func:`collect_inputs`, and turns each item into network inputs with
:func:`prepare_faces`. One bad file never stops a batch: every per-file problem raises :class:`InputError`,
whose message is one line naming the file and saying the fix; the caller records it and goes on.

Images are ``(H, W, 3)`` uint8 RGB numpy arrays, row 0 at the top. Pixel coordinates are continuous
``(x, y)`` = (column, row) with x right, y down and pixel centres at integers (pixel ``(i, j)`` covers
``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``), as :func:`aucgan.geometry.camera.ndc_to_pixels` produces.

Framing. The network was trained on synthetic renders (:mod:`aucgan.data.synthetic`) whose square frame
holds the whole face at a known proportion of its 68 landmarks. :func:`box_from_landmarks` reproduces that
frame from a face's landmarks with two constants measured on the synthetic world (the test module
re-measures them); :func:`detect_faces` predicts the landmark box from an OpenCV Haar box and frames it the
same way.
"""

from __future__ import annotations

import glob
import io
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
"""Suffixes (lower-case) of image files."""

VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
"""Suffixes (lower-case) of video files, read through OpenCV (``opencv-python-headless`` bundles FFmpeg)."""

LIST_SUFFIXES: frozenset[str] = frozenset({".txt", ".lst"})
"""Suffixes (lower-case) of list files: one path per line, relative to the list's folder; blank lines and
lines starting with ``#`` are ignored."""

LANDMARK_SUFFIXES: tuple[str, ...] = (".npy", ".txt")
"""Suffixes of landmark files beside an image (``<stem>.npy`` is preferred to ``<stem>.txt``)."""

MIN_IMAGE_SIDE = 16
"""Smallest image side (pixels) that can hold a face."""

LANDMARK_WINDOW_SCALE = 1.54
"""Side of the synthetic frame / side of the 68-landmark box (the mean of its width and height).
Measured on the synthetic world: mean 1.535 over 250 samples (seed 3, every 8th index); re-measured by
``tests/data/test_images.py``."""

LANDMARK_WINDOW_SHIFT = -0.03
"""Vertical offset of the synthetic frame's centre from the landmark box's centre, in landmark-box sides
(y down: negative is up). Measured with :data:`LANDMARK_WINDOW_SCALE`: mean -0.032."""

# Haar box -> landmark box. OpenCV's default frontal cascade returns a near-square box that reaches from the
# middle of the forehead to about the chin and across the cheeks to the ears: it holds all 68 landmarks
# with its margin above the brows, so the landmark box is smaller than the Haar box and its centre lies
# lower (not "brows to mouth": that would make the landmark box the larger one). Measured: on matplotlib's
# grace_hopper.jpg (landmark box read off the photo: brows at row ~176, chin ~332, cheek contour at columns
# ~170-362, in a 231-px Haar box) the landmark side is 0.77 Haar sides and its centre 0.16 Haar sides below
# the Haar centre; on frontal synthetic renders (exact landmarks, 17 detections with |yaw| < 10 deg, seed 3)
# 0.90 and 0.175. The synthetic faces have no hair and a low forehead, real photos have both; we take a
# value between the two, 0.85 and 0.17, which keeps the whole Haar box inside the window. A face framed
# this way is at most ~10 % smaller or larger than one framed from its landmarks, about the spread of the
# synthetic camera scale (0.08-0.095).
HAAR_LANDMARK_SIDE = 0.85
"""Landmark-box side / Haar-box side (see the comment above)."""

HAAR_LANDMARK_DROP = 0.17
"""Landmark-box centre below the Haar-box centre, in Haar-box sides (y down)."""

DETECTION_MAX_SIDE = 1024
"""Images are downscaled to at most this long side (pixels) before face detection."""

DETECTION_MIN_RELATIVE_SIDE = 0.25
"""A detection under this fraction of the largest one's side is dropped: the Haar cascade's false
positives are mostly small windows in textured areas (hair, clothes) beside a real face."""

_HAAR_CASCADE = "haarcascade_frontalface_default.xml"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError)


class InputError(ValueError):
    """A problem with one input file. The message is one line that names the file and says the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


@dataclass(frozen=True)
class InputItem:
    """One thing to reconstruct: an image file, or one frame of a video or an animated GIF.

    Attributes:
        name: unique among the items of one :func:`collect_inputs` call (case-insensitively) and safe as a
            folder name: the file's stem (``f"{stem}_f{frame:05d}"`` for a frame), with ``_2``, ``_3``, ...
            appended to repeats.
        path: the file.
        frame: frame index inside a video or an animated GIF; ``None`` for a still image.
    """

    name: str
    path: Path
    frame: int | None = None


@dataclass(frozen=True)
class FaceBox:
    """A square crop window in the source image's pixel coordinates (may extend past the borders).

    Attributes:
        centre_x: window centre column (x right; pixel centres at integers).
        centre_y: window centre row (y down).
        size: window side in pixels.
    """

    centre_x: float
    centre_y: float
    size: float


@dataclass(frozen=True)
class PreparedFace:
    """One face ready for the network.

    Attributes:
        name: the item's name, or ``f"{item.name}_face{k}"`` (k = 1, 2, ...) when the image holds several
            faces (largest first).
        image: ``(size, size, 3)`` uint8 RGB: what the network sees.
        box: the crop window in the source image; ``None`` when not cropped to a face.
        source: the file.
        frame: the frame index, as in :class:`InputItem`.
        landmarks: ``(468, 3)`` the face's dense landmarks in ``image``'s pixels (depth on the x scale,
            smaller nearer) when a dense-landmark detector framed it (MediaPipe); else ``None``.
    """

    name: str
    image: np.ndarray
    box: FaceBox | None
    source: Path
    frame: int | None
    landmarks: np.ndarray | None = None


# Collecting inputs ---------------------------------------------------------------------------------------


def collect_inputs(source: str | os.PathLike, every: int = 1) -> list[InputItem]:
    """Turn a source into the items to reconstruct.

    * an image file: one item; a file that is not an image by suffix is still an item (loading it reports
      the problem);
    * a video, or an animated GIF with more than one frame: one item per ``every``-th frame (0, every, ...);
      a video that cannot be opened (OpenCV missing, corrupt) gives one item whose loading reports why;
    * a list file (:data:`LIST_SUFFIXES`): the items of each listed path, relative to the list's folder; a
      listed folder is expanded, a missing listed path is still an item (its loading reports it);
    * a folder: every regular, non-hidden file directly inside it, sorted by name, except landmark files
      that belong to an image beside them (:func:`landmarks_beside`). Sub-folders are not descended.

    A source with nothing to reconstruct is refused whole rather than giving no items: a folder without a
    single image or video (by suffix), a list file without entries, and a ``.txt``/``.lst`` file that is no
    list of paths (binary, not UTF-8, or not one of its lines names an existing file: a text document, a
    landmarks file).

    Args:
        source: the path given by the user.
        every: keep every ``every``-th frame of videos and animated GIFs (>= 1).

    Returns:
        The items (at least one), names unique (case-insensitively) within the list.

    Raises:
        InputError: the source does not exist, holds nothing to reconstruct, or a list file or a folder
            cannot be read (one line naming it and saying what would work).
        ValueError: ``every`` < 1.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    path = Path(source)
    if not _exists(path):
        raise InputError(f"{path}: no such file or folder; {_WHAT_WORKS}")
    names = _UniqueNames()
    if path.is_dir():
        _require_media(path)
        return _expand_folder(path, every, names)
    if path.suffix.lower() in LIST_SUFFIXES:
        items: list[InputItem] = []
        for listed in _read_list(path):
            if _is_dir(listed):
                items.extend(_expand_folder(listed, every, names))
            else:
                items.extend(_expand_file(listed, every, names))
        if not items:
            raise InputError(
                f"{path}: the folders it lists hold no files; list image or video files, or folders of them"
            )
        return items
    return _expand_file(path, every, names)


_WHAT_WORKS = "give a folder of images, an image, a video or a .txt list of paths"
_LIST_FORMAT = "a list file holds one image or video path per line (relative to the list's folder)"
_MAX_NAME_BYTES = 180
"""Longest item name (UTF-8 bytes): a folder name within every file system's 255, with room for the
``_face2`` and ``_2`` endings."""


def _exists(path: Path) -> bool:
    """``path.exists()``, false for paths the system refuses (too long, a NUL byte) instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _require_media(folder: Path) -> None:
    """Refuse a folder without a single image or video file directly inside it (one line saying what it
    holds instead)."""
    try:
        entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as error:
        raise InputError(
            f"{folder}: cannot list the folder ({_reason(error)}); check its permissions"
        ) from error
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if any(p.suffix.lower() in media and p.is_file() for p in entries):
        return
    files = [p.name for p in entries if p.is_file()]
    folders = [p.name for p in entries if p.is_dir()]
    held = []
    if files:
        more = ", ..." if len(files) > 1 else ""
        held.append(f"{len(files)} other file{'s' if len(files) != 1 else ''} ({files[0]}{more})")
    if folders:
        more = ", ..." if len(folders) > 1 else ""
        held.append(
            f"{len(folders)} sub-folder{'s' if len(folders) != 1 else ''} ({folders[0]}/{more}, not searched)"
        )
    holds = f"it holds {' and '.join(held)}" if held else "it is empty"
    raise InputError(
        f"{folder}: no images (.jpg, .png, ...) or videos (.mp4, ...) in this folder ({holds}); {_WHAT_WORKS}"
    )


class _UniqueNames:
    """Hands out folder-safe names, unique case-insensitively (macOS and Windows folders are)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def __call__(self, base: str) -> str:
        base = base.replace("/", "_").replace("\\", "_").replace("\0", "_")
        base = _shorten(base)
        if set(base) <= {"."}:
            base = base.replace(".", "_") or "_"
        name, count = base, 1
        while name.casefold() in self._taken:
            count += 1
            name = f"{base}_{count}"
        self._taken.add(name.casefold())
        return name


def _shorten(name: str, limit: int = _MAX_NAME_BYTES) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes (whole characters)."""
    encoded = name.encode("utf-8", errors="surrogateescape")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")


def _read_list(path: Path) -> list[Path]:
    """The paths a list file names, or one line saying why the file is no list of paths."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(
            f"{path}: cannot read the list file ({_reason(error)}); check its permissions"
        ) from error
    if b"\0" in data:
        raise InputError(f"{path}: not a list of image paths (a binary file); {_LIST_FORMAT}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a list of image paths (not UTF-8 text); {_LIST_FORMAT}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append((number, entry, path.parent / _expand_user(entry)))
    if not entries:
        raise InputError(f"{path}: an empty list (no paths in it); {_LIST_FORMAT}")
    if not any(_exists(listed) for _, _, listed in entries):
        raise InputError(_not_a_list(path, entries))
    return [listed for _, _, listed in entries]


def _expand_user(entry: str) -> Path:
    try:
        return Path(entry).expanduser()
    except RuntimeError:  # ~name of an unknown user
        return Path(entry)


def _not_a_list(path: Path, entries: list[tuple[int, str, Path]]) -> str:
    """Why a ``.txt``/``.lst`` file none of whose lines names an existing file is not read as a list."""
    number, first, _ = entries[0]
    numbers = all(_is_number_row(entry) for _, entry, _ in entries)
    if numbers:
        beside = sorted(
            p.name
            for p in path.parent.glob(f"{glob.escape(path.stem)}.*")
            if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if beside:
            return (
                f"{path}: not a list of image paths but rows of numbers, the landmarks of {beside[0]}?; give "
                f"the image {path.parent / beside[0]} instead (landmarks beside an image are read with it); "
                f"{_LIST_FORMAT}"
            )
        return (
            f"{path}: not a list of image paths but rows of numbers (landmarks?); give the image they belong "
            f"to instead (landmarks beside an image, same name, are read with it); {_LIST_FORMAT}"
        )
    shown = first if len(first) <= 40 else first[:39] + "…"
    others = ", nor is any other line" if len(entries) > 1 else ""
    return (
        f'{path}: not a list of image paths (line {number} "{shown}" is not an existing file{others}); '
        f"{_LIST_FORMAT}"
    )


def _is_number_row(entry: str) -> bool:
    parts = entry.replace(",", " ").split()
    try:
        [float(part) for part in parts]
    except ValueError:
        return False
    return bool(parts)


def _expand_folder(folder: Path, every: int, names: _UniqueNames) -> list[InputItem]:
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise InputError(
            f"{folder}: cannot list the folder ({_reason(error)}); check its permissions"
        ) from error
    files = sorted((p for p in entries if not p.name.startswith(".") and p.is_file()), key=lambda p: p.name)
    image_stems = {p.stem for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    items: list[InputItem] = []
    for file in files:
        if file.suffix in LANDMARK_SUFFIXES and file.stem in image_stems:
            continue
        items.extend(_expand_file(file, every, names))
    return items


def _expand_file(path: Path, every: int, names: _UniqueNames) -> list[InputItem]:
    suffix = path.suffix.lower()
    count = None
    if suffix == ".gif":
        count = _gif_frame_count(path)
    elif suffix in VIDEO_SUFFIXES:
        count = _video_frame_count(path)
    if not count or (suffix == ".gif" and count == 1):
        return [InputItem(names(path.stem), path)]
    stem = _shorten(path.stem, _MAX_NAME_BYTES - 12)  # keeps the frame number of long names
    return [InputItem(names(f"{stem}_f{index:05d}"), path, index) for index in range(0, count, every)]


def _gif_frame_count(path: Path) -> int | None:
    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except (*_DECODE_ERRORS, Image.DecompressionBombError):
        return None


def _opencv_video():
    """OpenCV's ``cv2`` with FFmpeg's and OpenCV's own console messages about unreadable videos silenced
    (they would break the one-line errors); ``None`` when OpenCV is not installed."""
    # FFmpeg's log level is read once, when OpenCV first opens a video: a user's own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _open_video(path: Path):
    """``cv2.VideoCapture`` of ``path`` (FFmpeg backend when OpenCV has it), or ``None`` when OpenCV is not
    installed. The capture may not be opened (``isOpened()``): the file is no video OpenCV can decode."""
    cv2 = _opencv_video()
    if cv2 is None:
        return None
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        has_ffmpeg = cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)
        return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG if has_ffmpeg else cv2.CAP_ANY)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _video_frame_count(path: Path) -> int | None:
    """Frames in a video, or ``None`` when it cannot be opened (loading the item then says why).

    The container's frame count is trusted when its last frame can be read; otherwise (no count, or a count
    estimated from the duration that overshoots) the frames are counted by reading through the video.
    """
    if not _exists(path):
        return None
    capture = _open_video(path)
    if capture is None or not capture.isOpened():
        return None
    try:
        import cv2

        declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if math.isfinite(declared) and declared >= 1:
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(declared) - 1)
            if capture.grab():
                return int(declared)
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while capture.grab():
            count += 1
        return count or None
    finally:
        capture.release()


class _VideoReader:
    """An open video kept between reads, so that a batch job asking for frames in increasing order (every
    N-th frame) decodes the video once instead of seeking from the start for each frame."""

    SEEK_AFTER = 64
    """A frame this many frames or more ahead of the read position is reached by seeking, not decoding."""

    def __init__(self, path: Path, key: tuple) -> None:
        self.key = key
        self.capture = _open_video(path)
        self.position = 0  # index of the frame the next read returns

    def read(self, index: int) -> np.ndarray | None:
        """Frame ``index`` as OpenCV decodes it (BGR), or ``None`` when the video has no such frame."""
        import cv2

        if index < self.position or index - self.position >= self.SEEK_AFTER:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.position = index
        while self.position < index:
            if not self.capture.grab():
                return None
            self.position += 1
        ok, frame = self.capture.read()
        if not ok or frame is None:
            return None
        self.position += 1
        return frame

    def release(self) -> None:
        if self.capture is not None:
            self.capture.release()


_open_reader: _VideoReader | None = None


def _video_reader(path: Path) -> _VideoReader:
    """The reader of ``path``, reusing the one left open by the previous call when it is the same file
    (same resolved path, size and modification time)."""
    global _open_reader
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if _open_reader is None or _open_reader.key != key:
        if _open_reader is not None:
            _open_reader.release()
        _open_reader = None
        _open_reader = _VideoReader(path, key)
    return _open_reader


# Reading images ------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
    """Read an image (or one frame of a video / animated GIF) as 8-bit RGB.

    Handles EXIF orientation; grayscale (8-bit, 16-bit and 32-bit integer, float: scaled to 8 bits by their
    range, never clipped); palette; alpha (LA, RGBA, PA, palette transparency) composited over mid-grey
    (128); CMYK and other colour spaces (converted to RGB); 1-bit.

    Args:
        path: the file.
        frame: frame index inside a video or an animated GIF; ``None`` for the first (or only) frame.

    Returns:
        ``(H, W, 3)`` uint8 RGB, row 0 at the top, with H and W >= :data:`MIN_IMAGE_SIDE`.

    Raises:
        InputError: (one line, naming the file) the file is missing, empty, not an image, truncated or
            corrupt, too large to decode safely, too small to hold a face, a video that cannot be read,
            or the frame index is out of range.
    """
    path = Path(path)
    where = _where(path, frame)
    if not _exists(path):
        raise InputError(f"{path}: no such file; check the path (a list file's paths are relative to it)")
    if _is_dir(path):
        raise InputError(f"{path}: is a folder, not an image; give an image file or pass the folder itself")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({_reason(error)}); check its permissions") from error
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes); re-export or re-copy the image")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        rgb = _read_video_frame(path, frame)
    else:
        rgb = _read_with_pil(path, frame)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{where}: {width}x{height} pixels is too small to hold a face "
            f"(need at least {MIN_IMAGE_SIDE} px on a side); give a larger image"
        )
    return rgb


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _read_with_pil(path: Path, frame: int | None) -> np.ndarray:
    try:
        image = Image.open(path)
    except UnidentifiedImageError as error:
        from aucgan.loaders.common import is_html  # only on this error path: images.py stays torch-free

        with open(path, "rb") as stream:
            head = stream.read(512)
        if is_html(head):
            raise InputError(
                f"{path}: an HTML page, not an image (a download that saved the web page?); "
                "download the image file itself"
            ) from error
        raise InputError(
            f"{path}: not an image (PIL cannot identify it); give a JPEG/PNG/BMP/TIFF/WebP/GIF image"
        ) from error
    except Image.DecompressionBombError as error:
        raise InputError(
            f"{path}: too many pixels to decode safely ({_reason(error)}); downscale the image"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(
            f"{path}: cannot open the image ({_reason(error)}); re-export it as JPEG or PNG"
        ) from error
    with image:
        if frame is not None:
            count = int(getattr(image, "n_frames", 1))
            if not 0 <= frame < count:
                raise InputError(
                    f"{path}: frame {frame} out of range (the file has {count} frame"
                    f"{'s' if count != 1 else ''}); give a frame index from 0 to {count - 1}"
                )
        try:
            if frame is not None:
                image.seek(frame)
            image.load()
            upright = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError as error:
            raise InputError(
                f"{path}: too many pixels to decode safely ({_reason(error)}); downscale the image"
            ) from error
        except _DECODE_ERRORS as error:
            raise InputError(
                f"{path}: truncated or corrupt image ({_reason(error)}); re-export or re-download it"
            ) from error
        try:
            return _to_rgb(upright)
        except ValueError as error:
            raise InputError(
                f"{path}: unsupported pixel format {upright.mode} ({_reason(error)}); convert it to 8-bit RGB"
            ) from error


def _read_video_frame(path: Path, frame: int | None) -> np.ndarray:
    """One frame of a video through OpenCV (its wheels bundle FFmpeg), as RGB."""
    index = 0 if frame is None else frame
    if index < 0:
        raise InputError(f"{path}: frame {index} out of range; give a frame index >= 0")
    if _opencv_video() is None:
        raise InputError(
            f"{path}: reading videos needs OpenCV: pip install opencv-python-headless "
            "(or extract the frames to images with ffmpeg)"
        )
    reader = _video_reader(path)
    if reader.capture is None or not reader.capture.isOpened():
        raise InputError(
            f"{path}: cannot open the video (OpenCV's FFmpeg cannot decode it); check that it plays, "
            "or extract its frames to images with ffmpeg"
        )
    bgr = reader.read(index)
    if bgr is None:
        count = _video_frame_count(path)
        if count is not None and index >= count:
            raise InputError(
                f"{path}: frame {index} out of range (the video has {count} frame"
                f"{'s' if count != 1 else ''}); give a frame index from 0 to {count - 1}"
            )
        raise InputError(
            f"{path}: cannot read video frame {index}; check that the video plays, "
            "or extract its frames to images with ffmpeg"
        )
    array = np.asarray(bgr)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = _grey_to_rgb(array)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError(f"{path}: video frame {index} has shape {array.shape}; expected (H, W, 3)")
    if array.dtype != np.uint8:
        full_scale = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else None
        array = _scale_to_uint8(array.astype(np.float64), full_scale)
    return np.ascontiguousarray(array[..., 2::-1])  # BGR(A) -> RGB


def _to_rgb(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from a decoded PIL image of any mode (raises ValueError if unsupported)."""
    mode = image.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if mode == "L":
        return _grey_to_rgb(np.asarray(image, dtype=np.uint8))
    if mode == "1":
        return _grey_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))
    if mode.startswith("I;16"):
        return _grey_to_rgb(_scale_to_uint8(np.asarray(image).astype(np.float64), 65535))
    if mode == "I":
        values = np.asarray(image).astype(np.float64)
        in_16_bits = values.size > 0 and values.min() >= 0 and values.max() <= 65535
        return _grey_to_rgb(_scale_to_uint8(values, 65535 if in_16_bits else None))
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        finite = values[np.isfinite(values)]
        in_unit = finite.size > 0 and finite.min() >= 0 and finite.max() <= 1
        return _grey_to_rgb(_scale_to_uint8(values, 1 if in_unit else None))
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        composite = rgba[..., :3] * alpha + 128.0 * (1.0 - alpha)
        return np.round(composite).astype(np.uint8)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))


def _scale_to_uint8(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Map ``values`` to 0..255: ``[0, full_scale]`` when given, else the finite values' own range."""
    values = np.where(np.isfinite(values), values, np.nan)
    if full_scale is None:
        low = np.nanmin(values) if np.isfinite(values).any() else 0.0
        high = np.nanmax(values) if np.isfinite(values).any() else 0.0
        values = values - low
        full_scale = high - low if high > low else 1.0
    scaled = np.round(np.nan_to_num(values, nan=0.0) * (255.0 / full_scale))
    return np.clip(scaled, 0, 255).astype(np.uint8)


# Landmarks and framing ----------------------------------------------------------------------------------


def landmarks_beside(path: Path) -> np.ndarray | None:
    """68 landmarks given beside an image, as ``<stem>.npy`` or ``<stem>.txt``.

    A ``.txt`` file holds 68 rows of 2 or 3 numbers separated by whitespace or commas; a ``.npy`` file an
    array of shape ``(68, 2)`` or ``(68, 3)``. Only the first two columns are used.

    Args:
        path: the image file.

    Returns:
        ``(68, 2)`` float64 pixel coordinates (x right, y down, pixel centres at integers), or ``None`` when
        neither file exists.

    Raises:
        InputError: a landmark file exists but does not hold 68 rows of 2 or 3 finite numbers.
    """
    path = Path(path)
    for suffix in LANDMARK_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate != path and candidate.is_file():
            return _read_landmarks(candidate)
    return None


def _read_landmarks(path: Path) -> np.ndarray:
    fix = "give 68 rows of x y (pixels, y down) or fix or delete the file"
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8-sig").replace(",", " ")
            values = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as error:
        raise InputError(f"{path}: cannot read landmarks ({_reason(error)}); {fix}") from error
    values = np.asarray(values)
    if (
        values.ndim != 2
        or values.shape[0] != 68
        or values.shape[1] not in (2, 3)
        or values.dtype.kind not in "uif"
    ):
        raise InputError(
            f"{path}: landmarks must be (68, 2) or (68, 3) numbers, got shape {values.shape} "
            f"of {values.dtype}; {fix}"
        )
    points = values[:, :2].astype(np.float64)
    if not np.isfinite(points).all():
        raise InputError(f"{path}: landmarks hold NaN or infinite values; {fix}")
    return points


def _frame_of_landmark_box(centre_x: float, centre_y: float, side: float) -> FaceBox:
    return FaceBox(
        centre_x=float(centre_x),
        centre_y=float(centre_y + LANDMARK_WINDOW_SHIFT * side),
        size=float(LANDMARK_WINDOW_SCALE * side),
    )


def box_from_landmarks(landmarks: np.ndarray) -> FaceBox:
    """The crop window that frames a face as the synthetic world does.

    The landmark box is the bounding box of the points; its side is the mean of its width and height. The
    window is :data:`LANDMARK_WINDOW_SCALE` sides wide and centred :data:`LANDMARK_WINDOW_SHIFT` sides
    below the box's centre.

    Args:
        landmarks: ``(68, 2)`` pixel coordinates (x right, y down).

    Returns:
        The window in the same pixel coordinates.

    Raises:
        ValueError: wrong shape, non-finite values, or all points at one place.
    """
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {landmarks.shape}")
    points = landmarks.astype(np.float64)
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    low, high = points.min(axis=0), points.max(axis=0)
    side = float((high - low).mean())
    if side <= 0:
        raise ValueError(f"landmarks span no area (box from {low.tolist()} to {high.tolist()})")
    centre = (low + high) / 2.0
    return _frame_of_landmark_box(centre[0], centre[1], side)


def _check_image(image: np.ndarray) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[-1] != 3
        or image.dtype != np.uint8
    ):
        shape = getattr(image, "shape", None)
        raise ValueError(
            f"image must be an (H, W, 3) uint8 array, got shape {shape} of {getattr(image, 'dtype', None)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be non-empty, got shape {image.shape}")


@lru_cache(maxsize=1)
def _haar_cascade() -> object:
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "face detection needs OpenCV: pip install opencv-python-headless "
            "(or give landmarks beside the images, or pass --no-crop)"
        ) from error
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, _HAAR_CASCADE))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load its cascade {_HAAR_CASCADE} from {cv2.data.haarcascades}")
    return cascade


def _remove_overlaps(boxes: Iterable[tuple[float, float, float, float]]) -> list[tuple[float, ...]]:
    """Largest first; drops a box when over half of it lies inside an already kept (larger) box, or when
    its side is under :data:`DETECTION_MIN_RELATIVE_SIDE` of the largest box's.

    Args:
        boxes: ``(x, y, width, height)`` rectangles.
    """
    kept: list[tuple[float, ...]] = []
    for box in sorted(boxes, key=lambda b: b[2] * b[3], reverse=True):
        x, y, w, h = box
        if kept and math.sqrt(w * h) < DETECTION_MIN_RELATIVE_SIDE * math.sqrt(kept[0][2] * kept[0][3]):
            break
        duplicate = False
        for kx, ky, kw, kh in kept:
            overlap_w = min(x + w, kx + kw) - max(x, kx)
            overlap_h = min(y + h, ky + kh) - max(y, ky)
            if overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h > 0.5 * w * h:
                duplicate = True
                break
        if not duplicate:
            kept.append(tuple(box))
    return kept


def detect_faces(image: np.ndarray) -> list[FaceBox]:
    """Find frontal faces with OpenCV's default Haar cascade and frame each like the synthetic world.

    Detection runs on a grayscale, histogram-equalised copy, downscaled to at most
    :data:`DETECTION_MAX_SIDE` pixels on the long side. Each Haar box is turned into a predicted landmark
    box (:data:`HAAR_LANDMARK_SIDE`, :data:`HAAR_LANDMARK_DROP`) and then into a window exactly as
    :func:`box_from_landmarks` does.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        One window per face, largest first, duplicates (boxes mostly inside a larger one) and windows
        under a quarter of the largest one's side removed (so in a group photo, faces far smaller than the
        nearest one are skipped); ``[]`` when no face is found.
    """
    _check_image(image)
    cascade = _haar_cascade()
    import cv2

    height, width = image.shape[:2]
    factor = min(1.0, DETECTION_MAX_SIDE / max(height, width))
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    scale_x, scale_y = width / grey.shape[1], height / grey.shape[0]
    faces = []
    for x, y, w, h in _remove_overlaps(
        tuple(float(v) for v in row) for row in np.asarray(found).reshape(-1, 4)
    ):
        # Continuous coordinates: the box covers [x - 0.5, x + w - 0.5] at detection scale.
        centre_x = (x + w / 2.0) * scale_x - 0.5
        centre_y = (y + h / 2.0) * scale_y - 0.5
        side = (w * scale_x + h * scale_y) / 2.0
        faces.append(
            _frame_of_landmark_box(centre_x, centre_y + HAAR_LANDMARK_DROP * side, HAAR_LANDMARK_SIDE * side)
        )
    return faces


def crop_face(image: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Resample a square window of an image; parts outside the image repeat its edge pixels.

    Downscaling averages the covered area (PIL's box filter); upscaling interpolates bilinearly.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        box: the window, in the image's pixel coordinates.
        size: output side in pixels (>= 1).

    Returns:
        ``(size, size, 3)`` uint8 RGB.
    """
    _check_image(image)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    values = (box.centre_x, box.centre_y, box.size)
    if not all(math.isfinite(v) for v in values) or box.size <= 0:
        raise ValueError(f"box must be finite with a positive size, got {box}")
    height, width = image.shape[:2]
    if box.size > 16 * max(height, width, size):
        raise ValueError(f"box size {box.size:.1f} is far larger than the {width}x{height} image")
    # PIL's coordinates put pixel edges at integers: ours + 0.5.
    left = box.centre_x - box.size / 2.0 + 0.5
    top = box.centre_y - box.size / 2.0 + 0.5
    margin = math.ceil(box.size / size) + 2
    x0, y0 = math.floor(left) - margin, math.floor(top) - margin
    x1, y1 = math.ceil(left + box.size) + margin, math.ceil(top + box.size) + margin
    rows = np.clip(np.arange(y0, y1), 0, height - 1)
    cols = np.clip(np.arange(x0, x1), 0, width - 1)
    region = Image.fromarray(image[rows[:, None], cols[None, :]])
    resample = Image.Resampling.BOX if box.size >= size else Image.Resampling.BILINEAR
    window = (left - x0, top - y0, left - x0 + box.size, top - y0 + box.size)
    return np.asarray(region.resize((size, size), resample=resample, box=window), dtype=np.uint8)


# Preparing faces -----------------------------------------------------------------------------------------


def landmarks_in_crop(points: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Pixel points ``(N, 2 or 3)`` of a source image → the same points in ``crop_face(image, box, size)``
    (a third column, depth on the x scale, is scaled like x)."""
    factor = size / box.size
    moved = np.array(points, dtype=np.float64, copy=True)
    moved[:, 0] = (moved[:, 0] - (box.centre_x - box.size / 2.0)) * factor - 0.5
    moved[:, 1] = (moved[:, 1] - (box.centre_y - box.size / 2.0)) * factor - 0.5
    if moved.shape[1] > 2:
        moved[:, 2:] *= factor
    return moved


def faces_from_landmarks(
    item: InputItem,
    image: np.ndarray,
    size: int,
    detector: Callable[[np.ndarray], list],
    crop: bool = True,
) -> list[PreparedFace]:
    """The faces a dense-landmark ``detector`` finds in ``image`` (``item``'s pixels), each framed from its
    68 landmarks of :data:`aucgan.face_model.procedural.LANDMARKS_68` and carrying its 468 landmarks moved
    into its crop; with ``crop=False`` the image's centre square and the largest face in it.

    Raises:
        InputError: no face found (one line naming the file).
    """
    from aucgan.face_model.procedural import LANDMARKS_68

    where = _where(item.path, item.frame)

    def detect(picture: np.ndarray) -> list:
        try:
            return detector(picture)
        except RuntimeError as error:  # MediaPipe's graph reports its failures as RuntimeError
            raise InputError(f"{where}: MediaPipe failed on it ({str(error).splitlines()[0]})") from None

    if not crop:
        face = crop_face(image, _centre_square(image), size)
        found = detect(face)
        if not found:
            raise InputError(
                f"{where}: MediaPipe finds no face in this crop; give a photo with a visible face"
            )
        return [PreparedFace(item.name, face, None, item.path, item.frame, found[0])]
    found = detect(image)
    if not found:
        raise InputError(
            f"{where}: MediaPipe finds no face; give a photo with a visible, roughly frontal face"
        )
    boxes = [box_from_landmarks(points[list(LANDMARKS_68), :2]) for points in found]
    return _framed_faces(item, image, boxes, size, found)


def _where(path: str | os.PathLike | Path, frame: int | None) -> str:
    """How messages name an input: its file, and the frame of a video or animation."""
    return str(path) if frame is None else f"{path} (frame {frame})"


def _centre_square(image: np.ndarray) -> FaceBox:
    """The largest centred square window of ``image``."""
    height, width = image.shape[:2]
    return FaceBox((width - 1) / 2.0, (height - 1) / 2.0, float(min(height, width)))


def _framed_faces(
    item: InputItem,
    image: np.ndarray,
    boxes: list[FaceBox],
    size: int,
    landmarks: list[np.ndarray] | None = None,
) -> list[PreparedFace]:
    """One :class:`PreparedFace` per window (named ``_face1``, ``_face2``, ... when there are several),
    each carrying its ``landmarks`` (source pixels) moved into its crop when given."""
    return [
        PreparedFace(
            item.name if len(boxes) == 1 else f"{item.name}_face{k}",
            crop_face(image, box, size),
            box,
            item.path,
            item.frame,
            None if landmarks is None else landmarks_in_crop(landmarks[k - 1], box, size),
        )
        for k, box in enumerate(boxes, start=1)
    ]


def prepare_faces(
    item: InputItem,
    size: int,
    crop: bool = True,
    detector: Callable[[np.ndarray], list] | None = None,
) -> list[PreparedFace]:
    """Load an item and make the network's inputs from it.

    With ``crop=False`` the whole image, centre-cropped to a square, is resized. With ``crop=True`` the
    face is framed from the landmarks beside the image when present (one face), else from each face that
    :func:`detect_faces` finds. With a dense-landmark ``detector`` (``image → [(468, 3) pixel landmarks]``,
    e.g. :class:`aucgan.data.face_mesh.FaceMeshDetector`) every face it finds is framed from its landmarks
    (the 68 of :data:`aucgan.face_model.procedural.LANDMARKS_68`) and carries them, moved into its crop.

    Args:
        item: what to load.
        size: output side in pixels (>= 1).
        crop: frame faces (``True``) or take the whole image.

    Returns:
        One :class:`PreparedFace` per face, largest first; images ``(size, size, 3)`` uint8.

    Raises:
        InputError: the file cannot be loaded, its landmark file is malformed or lies outside the image,
            or no face is found.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    image = load_image(item.path, item.frame)
    if detector is not None:
        return faces_from_landmarks(item, image, size, detector, crop)
    height, width = image.shape[:2]
    where = _where(item.path, item.frame)
    if not crop:
        return [
            PreparedFace(
                item.name, crop_face(image, _centre_square(image), size), None, item.path, item.frame
            )
        ]
    landmarks = landmarks_beside(item.path) if item.frame is None else None
    if landmarks is not None:
        centre = (landmarks.min(axis=0) + landmarks.max(axis=0)) / 2.0
        inside = -0.5 <= centre[0] <= width - 0.5 and -0.5 <= centre[1] <= height - 0.5
        if not inside or float(np.ptp(landmarks, axis=0).mean()) < 2.0:
            raise InputError(
                f"{where}: its landmarks (centre {centre[0]:.1f}, {centre[1]:.1f}) do not lie on the "
                f"{width}x{height} image; give them in pixels (x right, y down)"
            )
        return _framed_faces(item, image, [box_from_landmarks(landmarks)], size)
    boxes = detect_faces(image)
    if not boxes:
        raise InputError(f"{where}: no face found; if it is already a face crop pass --no-crop")
    return _framed_faces(item, image, boxes, size)

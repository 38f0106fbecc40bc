"""MediaPipe's face mesh behind ``coarse.backend=mediapipe``, and the one-line error without the extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from aucgan.data.face_mesh import FaceMeshDetector, MediaPipeMissing, require_mediapipe
from aucgan.data.images import (
    FaceBox,
    InputItem,
    crop_face,
    faces_from_landmarks,
    landmarks_in_crop,
    prepare_faces,
)
from aucgan.face_model.procedural import LANDMARKS_68


def read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_without_mediapipe_the_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # what `import mediapipe` meets when it is absent
    with pytest.raises(MediaPipeMissing) as raised:
        require_mediapipe()
    message = str(raised.value)
    assert "\n" not in message and "pip install" in message and "[mediapipe]" in message


def test_detector_finds_one_face_with_468_landmarks_on_it(mediapipe_installed, real_photos):
    for path in real_photos.values():
        image = read(path)
        faces = FaceMeshDetector()(image)
        assert len(faces) == 1 and faces[0].shape == (468, 3)
        height, width = image.shape[:2]
        x, y = faces[0][:, 0], faces[0][:, 1]
        assert x.min() > 0 and x.max() < width and y.min() > 0 and y.max() < height
        nose_tip, chin, forehead = faces[0][4], faces[0][152], faces[0][10]
        assert forehead[1] < nose_tip[1] < chin[1], "y runs down the face"
        assert nose_tip[2] < faces[0][234, 2], "the nose tip is nearer than the cheek's edge (smaller depth)"


def test_two_faces_come_largest_first_and_each_gets_its_crop(mediapipe_installed, real_photos, tmp_path):
    photo = Image.fromarray(read(real_photos["grace_hopper"]))
    canvas = np.full((300, 476, 3), 200, np.uint8)
    canvas[:, :256] = np.asarray(photo.resize((256, 300)))
    canvas[:258, 256:] = np.asarray(photo.resize((220, 258)))
    path = tmp_path / "two.png"
    Image.fromarray(canvas).save(path)
    faces = prepare_faces(InputItem("two", path), 128, detector=FaceMeshDetector())
    assert [face.name for face in faces] == ["two_face1", "two_face2"]
    assert faces[0].box.size > faces[1].box.size and faces[1].box.centre_x > 256
    for face in faces:
        box_points = face.landmarks[list(LANDMARKS_68), :2]
        assert face.image.shape == (128, 128, 3)
        assert box_points.min() > 0 and box_points.max() < 128, "the face's landmarks lie inside its crop"


def test_landmarks_in_crop_follow_crop_face():
    image = np.zeros((60, 80, 3), np.uint8)
    image[25, 35] = 255  # one bright pixel at x=35, y=25
    box = FaceBox(centre_x=40.0, centre_y=30.0, size=20.0)
    crop = crop_face(image, box, 40).astype(np.float64)[..., 0]
    rows, cols = np.indices(crop.shape)
    centroid = [(cols * crop).sum() / crop.sum(), (rows * crop).sum() / crop.sum()]
    moved = landmarks_in_crop(np.array([[35.0, 25.0, -3.0]]), box, 40)
    np.testing.assert_allclose(moved[0, :2], centroid, atol=0.05)
    assert moved[0, 2] == -6.0, "depth scales like x"


def test_no_face_is_one_line_naming_the_file(mediapipe_installed, tmp_path):
    path = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(path)
    from aucgan.data.images import InputError

    with pytest.raises(InputError, match=r"wall\.png: MediaPipe finds no face"):
        faces_from_landmarks(InputItem("wall", path), read(path), 64, FaceMeshDetector())

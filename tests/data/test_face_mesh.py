"""MediaPipe's face mesh behind ``coarse.backend=mediapipe``: every face of a group photo (the full-range
detector on tiles, the mesh on each face's crop), small faces reported, and the one-line error without the
extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from aucgan.data.face_mesh import FaceMeshDetector, MediaPipeMissing, _tiles, require_mediapipe
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


GROUP = (
    ("grace_hopper", 200, 250, 250, False),
    ("astronaut", 160, 660, 230, False),
    ("grace_hopper", 130, 1040, 200, True),
    ("astronaut", 110, 200, 650, True),
    ("grace_hopper", 90, 520, 640, True),
    ("astronaut", 75, 820, 660, False),
    ("grace_hopper", 62, 1110, 620, False),
)
"""Seven faces of 62 to 200 px in a 1280x886 scene (:func:`paste_faces`), largest first."""


def landmark_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(2,)`` and size ``(2,)`` of the box of ``points (N, 2 or 3)``."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return (low + high) / 2.0, high - low


def faces_hit(points: np.ndarray, boxes) -> list[int]:
    """Indices of the ``boxes`` ``(x0, y0, x1, y1)`` that hold the centre of the points' box."""
    centre, _ = landmark_box(points)
    return [k for k, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1]


def test_every_face_of_a_wide_group_photo_gets_its_mesh_at_its_place(mediapipe_installed, paste_faces):
    image, boxes = paste_faces(GROUP)
    found = FaceMeshDetector().find(image)
    assert found.too_small == []
    assert len(found.landmarks) == len(GROUP)
    for k, points in enumerate(found.landmarks):  # largest first, as GROUP
        assert points.shape == (468, 3)
        assert faces_hit(points, boxes) == [k], f"face {k} ({GROUP[k][1]} px) not at its place"
        _, size = landmark_box(points)
        assert size[1] == pytest.approx(GROUP[k][1], rel=0.15), "the mesh spans the face, brow to chin"
        nose_tip, chin, forehead = points[4], points[152], points[10]
        assert forehead[1] < nose_tip[1] < chin[1]


def test_max_faces_keeps_the_largest(mediapipe_installed, paste_faces):
    image, boxes = paste_faces(GROUP)
    faces = FaceMeshDetector(max_faces=3)(image)
    assert [faces_hit(points, boxes) for points in faces] == [[0], [1], [2]]


def test_faces_too_small_are_reported_by_height_not_fitted(mediapipe_installed, paste_faces):
    faces = (("astronaut", 120, 300, 400, False), ("astronaut", 30, 800, 300, False))
    image, boxes = paste_faces((*faces, ("grace_hopper", 26, 1000, 600, True)))
    found = FaceMeshDetector(min_face_px=40).find(image)
    assert [faces_hit(points, boxes) for points in found.landmarks] == [[0]]
    assert len(found.too_small) == 2 and found.too_small[0] >= found.too_small[1]
    assert all(15.0 < height < 40.0 for height in found.too_small), found.too_small
    lowered = FaceMeshDetector(min_face_px=15).find(image)
    assert lowered.too_small == [] and len(lowered.landmarks) == 3


def test_detection_tiles_hold_every_face_up_to_half_a_tile_whole():
    width, height, smallest = 1280, 886, 320.0
    tiles = _tiles(width, height, smallest)
    assert tiles[0] == (0, 0, width, height)
    sides = sorted({max(w, h) for _, _, w, h in tiles[1:]}, reverse=True)
    assert sides == [640, 320], "halving from the longer side down to the smallest tile"
    for x, y, w, h in tiles:
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
    rng = np.random.default_rng(0)
    for side in sides:
        level = [tile for tile in tiles[1:] if max(tile[2], tile[3]) == side]
        face = side // 2 - 2
        for x0, y0 in zip(
            rng.integers(0, width - face, 200), rng.integers(0, height - face, 200), strict=True
        ):
            assert any(
                x <= x0 and x0 + face <= x + w and y <= y0 and y0 + face <= y + h for x, y, w, h in level
            ), (side, x0, y0)

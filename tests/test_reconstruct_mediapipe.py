"""``aucgan reconstruct PHOTO --out DIR coarse.backend=mediapipe`` on the two public real photos (issue 10),
with the shipped weights: the full face folder, a fit within 2 % of the face box of MediaPipe's landmarks,
meshes that load, an AU edit; and the one-line error without the extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import trimesh

from aucgan.cli import main
from aucgan.reconstruct import FACE_FILES, Reconstructor
from aucgan.stages.landmark_fit import relative_landmark_error


@pytest.fixture(scope="module")
def reconstructed(mediapipe_installed, real_photos, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("real")
    codes = {}
    for name, path in real_photos.items():
        assert main(["reconstruct", str(path), "--out", str(out), "coarse.backend=mediapipe"]) == 0
        codes[name] = out / name
    return codes


def test_both_photos_get_the_full_face_folder(reconstructed):
    for folder in reconstructed.values():
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(FACE_FILES)


def test_fitted_landmarks_lie_within_two_percent_of_the_face_box(reconstructed):
    for name, folder in reconstructed.items():
        with np.load(folder / "codes.npz") as codes:
            landmarks = torch.from_numpy(codes["landmarks"])[None]
            camera = torch.from_numpy(codes["camera"])[None]
            assert str(codes["record_weights"]).endswith("synthetic.safetensors")
        mesh = trimesh.load(folder / "coarse.obj", process=False)
        vertices = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)[None]
        error = float(relative_landmark_error(vertices, camera, landmarks)[0])
        assert error < 0.02, f"{name}: median landmark distance {error:.4f} of the face box"


def test_meshes_load_in_trimesh_with_uvs(reconstructed):
    for folder in reconstructed.values():
        coarse = trimesh.load(folder / "coarse.obj", process=False)
        detail = trimesh.load(folder / "detail.obj", process=False)
        assert coarse.vertices.shape == (468, 3) and len(coarse.faces) > 800
        assert len(detail.vertices) > 10 * len(coarse.vertices)
        assert detail.visual.uv is not None and np.isfinite(detail.vertices).all()


def test_an_au12_edit_of_a_real_photo_regenerates_the_face(reconstructed):
    folder = reconstructed["astronaut"]
    assert main(["edit", str(folder), "--au", "AU12=1"]) == 0
    edited = folder / "edits" / "AU12=1"
    assert (edited / "before_after.png").is_file()
    with np.load(folder / "codes.npz") as before, np.load(edited / "codes.npz") as after:
        index = list(before["au_names"]).index("AU12")
        assert after["au_intensities"][index] == 1.0
        assert after["expression"][index] == 1.0
        np.testing.assert_array_equal(after["landmarks"], before["landmarks"])


def test_library_call_finds_the_landmarks_itself(mediapipe_installed, real_photos):
    from aucgan.config import CoarseConfig
    from aucgan.reconstruct import load_faces

    images, _ = load_faces([real_photos["grace_hopper"]])
    reconstructor = Reconstructor.load(coarse_settings=CoarseConfig(backend="mediapipe"))
    rec = reconstructor(images)
    assert rec.landmarks.shape == (1, 468, 3)
    error = relative_landmark_error(rec.coarse.vertices, rec.coarse.codes.camera, rec.landmarks)
    assert float(error[0]) < 0.02


def test_without_the_extra_the_backend_is_one_line_saying_how_to_install(
    real_photos, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    path = real_photos["grace_hopper"]
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "out"), "coarse.backend=mediapipe"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "[mediapipe]" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_other_overrides_without_a_config_are_refused_in_one_line(real_photos, tmp_path, capsys):
    path = real_photos["grace_hopper"]
    assert main(["reconstruct", str(path), "--out", str(tmp_path), "model.max_z=0.1"]) == 2
    assert "only coarse.* settings" in capsys.readouterr().err

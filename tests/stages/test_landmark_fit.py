"""The landmark fit (no MediaPipe needed): exact Jacobian, recovery of known codes, appearance fit."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch

from aucgan.config import CoarseConfig, Config, ConfigError, load_config, preset_path
from aucgan.face_model.procedural import ProceduralFaceModel
from aucgan.geometry.camera import ndc_to_pixels, orthographic_project
from aucgan.geometry.rotation import axis_angle_to_matrix
from aucgan.nets.coarse_encoder import CoarseCodes
from aucgan.stages.landmark_fit import (
    AUTO_NETWORK_NOTE,
    BackendChoice,
    FitSettings,
    LandmarkCoarse,
    _jacobian,
    _Layout,
    _residuals,
    fit_appearance,
    fit_geometry,
    landmarks_to_ndc,
    relative_landmark_error,
    resolve_backend,
    similarity_init,
)

N_SAMPLES = 2
TINY_CONFIG = preset_path("synthetic-tiny")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY_CONFIG)


@pytest.fixture(scope="module")
def model() -> ProceduralFaceModel:
    return ProceduralFaceModel(12)


def known_faces(model: ProceduralFaceModel, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Codes of ``batch`` faces (sparse AU intensities, head turned up to ~15°) and their 468 landmarks, NDC,
    with a depth offset as MediaPipe's relative depth has."""
    generator = torch.Generator().manual_seed(seed)
    shape = torch.randn(batch, model.n_shape, generator=generator) * 0.5
    active = torch.rand(batch, 27, generator=generator) < 0.15
    expression = torch.rand(batch, 27, generator=generator) * active
    pose = torch.cat([torch.randn(batch, 3, generator=generator) * 0.15, torch.zeros(batch, 3)], dim=1)
    camera = torch.stack(
        [
            0.085 + 0.01 * torch.rand(batch, generator=generator),
            *(torch.randn(2, batch, generator=generator) * 0.3),
        ],
        dim=1,
    )
    landmarks = orthographic_project(model(shape, expression, pose).vertices, camera)
    landmarks[..., 2] += 0.4
    return {"shape": shape, "expression": expression, "pose": pose, "camera": camera, "landmarks": landmarks}


def test_jacobian_equals_autograd_in_float64(model):
    double = copy.deepcopy(model).double()
    layout = _Layout(model.n_shape, model.n_expression)
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(3, layout.size, generator=generator, dtype=torch.float64) * 0.3
    params[:, layout.expression] = torch.rand(3, 27, generator=generator, dtype=torch.float64)
    params[:, layout.camera.start] = 0.09
    landmarks = torch.randn(3, 468, 3, generator=generator, dtype=torch.float64) * 0.3
    settings = FitSettings()
    analytic = _jacobian(double, layout, params, settings)
    full = torch.autograd.functional.jacobian(
        lambda p: _residuals(double, layout, p, landmarks, settings), params
    )
    reference = torch.stack([full[b, :, b] for b in range(3)])
    torch.testing.assert_close(analytic, reference, atol=1e-9, rtol=1e-9)
    assert reference.abs().amax(dim=(0, 1)).gt(0).all(), "every parameter moves some residual"


def test_fit_recovers_the_codes_of_exact_landmarks(model):
    faces = known_faces(model, 6)
    fit = fit_geometry(
        model, faces["landmarks"], FitSettings(iterations=15, shape_prior=1e-3, expression_prior=1e-3)
    )
    assert fit.error.median() < 2e-3  # NDC: a tenth of a pixel of a 128-px crop
    # The identity basis holds a face-width and a face-height field, which trade against the camera scale.
    torch.testing.assert_close(fit.camera[:, 0], faces["camera"][:, 0], rtol=0.05, atol=0)
    torch.testing.assert_close(fit.pose[:, :3], faces["pose"][:, :3], atol=0.02, rtol=0)
    assert (fit.expression - faces["expression"]).abs().mean() < 0.03
    assert (fit.shape - faces["shape"]).abs().mean() < 0.1
    assert fit.expression.min() >= 0 and fit.expression.max() <= 1


def test_fit_with_the_default_priors_stays_within_a_hundredth_of_the_face(model):
    faces = known_faces(model, 4, seed=2)
    fit = fit_geometry(model, faces["landmarks"])
    geometry = model(fit.shape, fit.expression, fit.pose)
    assert relative_landmark_error(geometry.vertices, fit.camera, faces["landmarks"]).max() < 0.01


def test_fit_leaves_the_face_model_untouched(model):
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fit_geometry(model, known_faces(model, 1)["landmarks"])
    after = model.state_dict()
    assert all(
        after[name].dtype == value.dtype and torch.equal(after[name], value) for name, value in before.items()
    )


def test_fit_refuses_other_models_and_bad_landmarks(model):
    class NotTheBuiltInFace(ProceduralFaceModel):
        pass

    other = NotTheBuiltInFace(4)
    other.expression_is_au_rig = False
    with pytest.raises(ValueError, match="built-in face model"):
        fit_geometry(other, torch.zeros(1, 468, 3))
    with pytest.raises(ValueError, match=r"\(B, 468, 3\)"):
        fit_geometry(model, torch.zeros(1, 68, 3))
    bad = known_faces(model, 1)["landmarks"]
    bad[0, 5, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        fit_geometry(model, bad)


def test_similarity_init_recovers_a_similarity(model):
    generator = torch.Generator().manual_seed(3)
    rotation = axis_angle_to_matrix(torch.randn(4, 3, generator=generator, dtype=torch.float64))
    scale = torch.rand(4, generator=generator, dtype=torch.float64) + 0.5
    translation = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    template = model.template.double()
    target = (
        scale[:, None, None].double() * template @ rotation.double().transpose(1, 2)
        + translation[:, None].double()
    )
    found_rotation, found_scale, found_translation = similarity_init(template, target)
    torch.testing.assert_close(found_rotation, rotation, atol=1e-9, rtol=0)
    torch.testing.assert_close(found_scale, scale, atol=1e-9, rtol=0)
    torch.testing.assert_close(found_translation, translation, atol=1e-9, rtol=0)


def test_landmarks_to_ndc_inverts_ndc_to_pixels():
    ndc = torch.tensor([[[-0.5, 0.25, 0.1], [0.9, -0.9, -0.2]]])
    pixels = ndc_to_pixels(ndc, 128, 128)
    depth = -ndc[..., 2:] * 128 / 2
    torch.testing.assert_close(landmarks_to_ndc(torch.cat([pixels, depth], -1), 128), ndc)


def test_relative_landmark_error_is_the_median_distance_over_the_face_box(model):
    faces = known_faces(model, 2)
    vertices = model(faces["shape"], faces["expression"], faces["pose"]).vertices
    assert relative_landmark_error(vertices, faces["camera"], faces["landmarks"]).abs().max() < 1e-6
    moved = faces["landmarks"].clone()
    moved[..., 0] += 0.01
    box = faces["landmarks"][:, [234, 454, 10, 152], :2]  # not the box itself; only its order of size
    error = relative_landmark_error(vertices, faces["camera"], moved)
    assert torch.all(error > 0.01 / (box.amax(1) - box.amin(1)).amax(-1) / 2)
    assert torch.all(error < 0.01 / 0.3)


def test_appearance_least_squares_recovers_light_and_albedo(cfg, coarse_stage):
    faces = known_faces(coarse_stage.face_model, 2, seed=5)
    generator = torch.Generator().manual_seed(6)
    light = torch.zeros(2, 9, 3)
    light[:, 0] = 2.0 + 0.5 * torch.rand(2, 3, generator=generator)
    light[:, 1:4] = 0.4 * torch.randn(2, 3, 3, generator=generator)
    albedo = 0.5 * torch.randn(2, coarse_stage.albedo.n_albedo, generator=generator)
    codes = CoarseCodes(
        shape=faces["shape"], albedo=albedo, expression=faces["expression"], pose=faces["pose"],
        camera=faces["camera"], light=light,
    )  # fmt: skip
    truth = coarse_stage.decode(codes)
    image = coarse_stage.render(truth, image_size=128).image
    found_light, found_albedo = fit_appearance(coarse_stage, image, truth, FitSettings(appearance_rounds=6))
    fitted = coarse_stage.render(
        coarse_stage.decode(CoarseCodes(**{**vars(codes), "light": found_light, "albedo": found_albedo})),
        image_size=128,
    ).image
    mask = coarse_stage.render(truth, image_size=128).mask
    # Light and albedo trade a common factor, so the test is the picture they make together.
    assert ((fitted - image).abs() * mask).sum() / (mask.sum() * 3) < 0.02
    flat = coarse_stage.render(
        coarse_stage.decode(CoarseCodes(**{**vars(codes), "albedo": 0 * albedo})), image_size=128
    )
    assert ((flat.image - image).abs() * mask).sum() / (mask.sum() * 3) > 0.02, "the albedo code matters"


def test_landmark_coarse_returns_a_decoded_coarse_output(coarse_stage):
    faces = known_faces(coarse_stage.face_model, 2, seed=7)
    images = torch.rand(2, 3, 64, 64)
    coarse, error = LandmarkCoarse(coarse_stage)(images, faces["landmarks"])
    assert coarse.vertices.shape == (2, 468, 3) and coarse.landmarks.shape == (2, 68, 2)
    assert coarse.codes.light.shape == (2, 9, 3) and coarse.codes.albedo.shape == (
        2,
        coarse_stage.albedo.n_albedo,
    )
    assert error.shape == (2, 468) and error.median() < 0.01


def test_a_face_fits_the_same_alone_and_in_a_batch(model):
    faces = known_faces(model, 4, seed=8)
    noisy = faces["landmarks"] + 0.004 * torch.randn(
        faces["landmarks"].shape, generator=torch.Generator().manual_seed(9)
    )
    together = fit_geometry(model, noisy)
    alone = fit_geometry(model, noisy[2:3])
    torch.testing.assert_close(alone.expression[0], together.expression[2], atol=1e-4, rtol=0)
    torch.testing.assert_close(alone.camera[0], together.camera[2], atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_landmark_coarse_runs_on_cuda_like_on_the_cpu(coarse_stage):
    faces = known_faces(coarse_stage.face_model, 2, seed=10)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    on_cpu, _ = LandmarkCoarse(coarse_stage)(images, faces["landmarks"])
    stage = copy.deepcopy(coarse_stage).cuda()
    on_gpu, _ = LandmarkCoarse(stage)(images.cuda(), faces["landmarks"].cuda())
    torch.testing.assert_close(on_gpu.vertices.cpu(), on_cpu.vertices, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(on_gpu.codes.light.cpu(), on_cpu.codes.light, atol=1e-2, rtol=1e-2)


def test_auto_backend_keeps_the_synthetic_world_and_flame_on_the_network(monkeypatch):
    auto = CoarseConfig(backend="auto")
    assert resolve_backend(CoarseConfig(backend="network"), "procedural") == BackendChoice("network")
    assert resolve_backend(CoarseConfig(backend="mediapipe"), "procedural") == BackendChoice("mediapipe")
    assert resolve_backend(auto, "procedural", photos=False) == BackendChoice("network")
    assert resolve_backend(auto, "flame") == BackendChoice("network")
    # Weights trained on photos have no coarse encoder: MediaPipe is their only way to read a face.
    assert resolve_backend(auto, "procedural", has_encoder=False, photos=False) == BackendChoice("mediapipe")
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # what `import mediapipe` meets when it is absent
    choice = resolve_backend(auto, "procedural")
    assert choice == BackendChoice("network", AUTO_NETWORK_NOTE)
    assert "\n" not in choice.note and "pip install 'aucgan[mediapipe]'" in choice.note
    with pytest.raises(ConfigError, match=r"coarse\.backend=dlib: choose network, mediapipe or auto"):
        resolve_backend(CoarseConfig(backend="dlib"), "procedural")


def test_auto_backend_reads_photos_with_mediapipe_when_installed(mediapipe_installed):
    assert resolve_backend(CoarseConfig(backend="auto"), "procedural") == BackendChoice("mediapipe")

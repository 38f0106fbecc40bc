"""Tests of aucgan.stages.coarse: decoding ground-truth codes reproduces the synthetic world's geometry,
landmarks and image; the encoder path has the documented shapes and carries gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aucgan.config import Config, load_config
from aucgan.face_model.albedo import LinearAlbedo
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout
from aucgan.stages.coarse import CoarseOutput, CoarseStage

SIZE = 64
N_SAMPLES = 4


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, None, [f"render.image_size={SIZE}", f"render.uv_size={SIZE}"])


def test_decode_gives_the_face_models_geometry_and_surface(coarse_stage, world, batch):
    codes = batch.coarse_codes(coarse_stage.albedo.n_albedo)
    coarse = coarse_stage.decode(codes, uv_albedo=batch.uv_albedo)
    assert isinstance(coarse, CoarseOutput) and coarse.codes is codes
    geometry = world.model(batch.shape, batch.expression, batch.pose)
    torch.testing.assert_close(coarse.vertices, geometry.vertices)
    surface = world.uv_space.surface(geometry.vertices)
    torch.testing.assert_close(coarse.surface.positions, surface.positions)
    torch.testing.assert_close(coarse.surface.normals, surface.normals)
    assert coarse.uv_albedo is batch.uv_albedo


def test_decode_landmarks_are_the_orthographic_projection_of_the_models_landmarks(coarse_stage, batch):
    coarse = coarse_stage.decode(batch.coarse_codes(coarse_stage.albedo.n_albedo), uv_albedo=batch.uv_albedo)
    assert coarse.landmarks.shape == (N_SAMPLES, 68, 2)
    landmarks = coarse_stage.face_model(batch.shape, batch.expression, batch.pose).landmarks
    scale, shift = batch.camera[:, None, :1], batch.camera[:, None, 1:]
    torch.testing.assert_close(coarse.landmarks, scale * (landmarks[..., :2] + shift))
    # The synthetic world's landmarks are the same projection.
    torch.testing.assert_close(coarse.landmarks, batch.landmarks)


def test_decode_without_an_albedo_map_uses_the_albedo_model(coarse_stage, batch):
    generator = torch.Generator().manual_seed(0)
    albedo_code = torch.randn(N_SAMPLES, coarse_stage.albedo.n_albedo, generator=generator)
    codes = dataclasses.replace(batch.coarse_codes(coarse_stage.albedo.n_albedo), albedo=albedo_code)
    coarse = coarse_stage.decode(codes)
    model = coarse_stage.albedo
    expected = model.mean + torch.einsum("bk,kchw->bchw", albedo_code, model.basis)
    torch.testing.assert_close(coarse.uv_albedo, expected.clamp(0.0, 1.0))
    assert (coarse.uv_albedo - model.mean.clamp(0.0, 1.0)).abs().max() > 0.01
    assert coarse.uv_albedo.shape == (N_SAMPLES, 3, SIZE, SIZE)


def test_rendering_the_ground_truth_reproduces_the_sample_image(coarse_stage, batch):
    """The world renders its samples with the detail normals over a background and quantises to 8 bits:
    the coarse coarse_stage's renderer with the same inputs must agree to half an 8-bit level."""
    coarse = coarse_stage.decode(batch.coarse_codes(coarse_stage.albedo.n_albedo), uv_albedo=batch.uv_albedo)
    normals = coarse_stage.uv_space.detail_normals(coarse.surface, batch.uv_displacement)
    rendering = coarse_stage.render(coarse, uv_normals=normals, background=batch.background)
    assert rendering.image.shape == batch.image.shape
    assert (rendering.image.clamp(0, 1) - batch.image).abs().max() <= 0.5 / 255 + 1e-5
    torch.testing.assert_close(rendering.mask, batch.mask)
    # Smooth normals instead of the detail normals: the wrinkles' shading is missing.
    smooth = coarse_stage.render(coarse, background=batch.background)
    assert (smooth.image.clamp(0, 1) - batch.image).abs().max() > 4.0 / 255


def test_albedo_model_travels_in_the_state_dict(coarse_stage):
    state = coarse_stage.state_dict()
    assert torch.equal(state["albedo.mean"], coarse_stage.albedo.mean)
    assert torch.equal(state["albedo.basis"], coarse_stage.albedo.basis)


def test_forward_with_a_small_encoder_has_the_documented_shapes_and_gradients(coarse_stage):
    encoder = CoarseEncoder(coarse_stage.layout, "resnet18")
    with_encoder = CoarseStage(
        coarse_stage.face_model, coarse_stage.albedo, coarse_stage.uv_space, encoder, image_size=SIZE
    )
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    coarse = with_encoder(images)  # decode(encode(images))
    codes = coarse.codes
    model = coarse_stage.face_model
    expected = {
        "shape": (2, model.n_shape),
        "albedo": (2, coarse_stage.albedo.n_albedo),
        "expression": (2, model.n_expression),
        "pose": (2, 6),
        "camera": (2, 3),
        "light": (2, 9, 3),
    }
    assert {name: tuple(getattr(codes, name).shape) for name in expected} == expected
    n_vertices = model.template.shape[0]
    assert coarse.vertices.shape == (2, n_vertices, 3)
    assert coarse.landmarks.shape == (2, 68, 2)
    assert coarse.surface.positions.shape == coarse.surface.normals.shape == (2, 3, SIZE, SIZE)
    assert coarse.uv_albedo.shape == (2, 3, SIZE, SIZE)
    assert coarse.uv_albedo.min() >= 0.0 and coarse.uv_albedo.max() <= 1.0
    (coarse.landmarks.sum() + coarse.uv_albedo.sum() + coarse.surface.normals.sum()).backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(b.grad is None for b in coarse_stage.albedo.buffers())


def test_render_draws_the_faces_at_the_stage_image_size(coarse_stage, batch):
    coarse = coarse_stage.decode(batch.coarse_codes(coarse_stage.albedo.n_albedo), uv_albedo=batch.uv_albedo)
    rendering = coarse_stage.render(coarse)
    assert rendering.image.shape == (N_SAMPLES, 3, SIZE, SIZE)
    assert (rendering.mask.sum(dim=(1, 2, 3)) > 0.1 * SIZE * SIZE).all()


def test_errors(coarse_stage):
    small = LinearAlbedo(torch.zeros(3, 32, 32), torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="32"):
        CoarseStage(coarse_stage.face_model, small, coarse_stage.uv_space)
    wrong = CoarseEncoder(
        CodeLayout.for_face_model(coarse_stage.face_model, coarse_stage.albedo.n_albedo + 1), "resnet18"
    )
    with pytest.raises(ValueError, match="encoder"):
        CoarseStage(coarse_stage.face_model, coarse_stage.albedo, coarse_stage.uv_space, wrong)
    with pytest.raises(ValueError, match="no encoder"):
        coarse_stage.encode(torch.zeros(1, 3, SIZE, SIZE))


def test_decode_rejects_an_albedo_map_of_the_wrong_size(coarse_stage, batch):
    codes = batch.coarse_codes(coarse_stage.albedo.n_albedo)
    with pytest.raises(ValueError, match=r"\(4, 3, 32, 32\)"):
        coarse_stage.decode(codes, uv_albedo=torch.zeros(N_SAMPLES, 3, 32, 32))

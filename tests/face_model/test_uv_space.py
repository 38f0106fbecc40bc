"""Tests of aucgan.face_model.uv_space: the face model's UV layout, skin mask, UV surface and detail normals,
against the geometry functions called directly and a per-texel barycentric gather."""

from __future__ import annotations

import pytest
import torch

from aucgan.face_model import ProceduralFaceModel
from aucgan.face_model.base import FACE_PART_SKIN
from aucgan.face_model.uv_space import UVSpace
from aucgan.geometry.mesh import vertex_normals
from aucgan.geometry.render import uv_maps
from aucgan.geometry.uv import displacement_to_normals

SIZE = 64


@pytest.fixture(scope="module")
def face_model() -> ProceduralFaceModel:
    return ProceduralFaceModel()


@pytest.fixture(scope="module")
def uv_space(face_model) -> UVSpace:
    return UVSpace(face_model, SIZE)


@pytest.fixture(scope="module")
def vertices(face_model) -> torch.Tensor:
    """``(2, V, 3)`` two posed faces (identity, expression, head and jaw pose)."""
    generator = torch.Generator().manual_seed(1)
    shape = torch.randn(2, face_model.n_shape, generator=generator)
    expression = torch.rand(2, face_model.n_expression, generator=generator)
    pose = torch.tensor([[0.1, 0.3, -0.05, 0.04, 0.0, 0.0], [-0.1, -0.2, 0.1, 0.0, 0.0, 0.0]])
    return face_model(shape, expression, pose).vertices


def displacement(batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    """``(B, 1, S, S)`` wrinkle-sized random displacement (cm)."""
    generator = torch.Generator().manual_seed(2)
    return 0.05 * torch.randn(batch, 1, SIZE, SIZE, generator=generator, dtype=dtype)


def test_skin_is_the_layout_minus_eye_and_mouth_triangles(face_model, uv_space):
    skin, mask = uv_space.skin, uv_space.layout.mask
    assert skin.shape == mask.shape == (1, 1, SIZE, SIZE)
    assert set(skin.unique().tolist()) == {0.0, 1.0}
    assert (skin <= mask).all()
    face_index = uv_space.layout.fragments.face_index[0]
    holes = (mask[0, 0] > 0) & (skin[0, 0] == 0)
    assert holes.any()
    assert (face_model.face_part[face_index[holes]] != FACE_PART_SKIN).all()
    on_skin = skin[0, 0] > 0
    assert (face_model.face_part[face_index[on_skin]] == FACE_PART_SKIN).all()


def test_surface_positions_are_the_barycentric_gather_of_the_vertices(face_model, uv_space, vertices):
    surface = uv_space.surface(vertices)
    fragments = uv_space.layout.fragments
    face_index, barycentric = fragments.face_index[0], fragments.barycentric[0]
    covered = face_index >= 0
    corners = vertices[:, face_model.faces[face_index[covered]]]  # (B, T, 3, 3)
    expected = (barycentric[covered][None, :, :, None] * corners).sum(2)  # (B, T, 3)
    positions = surface.positions.permute(0, 2, 3, 1)
    torch.testing.assert_close(positions[:, covered], expected, atol=1e-5, rtol=1e-5)
    assert (positions[:, ~covered] == 0).all()


def test_surface_equals_uv_maps_of_vertices_and_vertex_normals(face_model, uv_space, vertices):
    surface = uv_space.surface(vertices)
    positions = uv_maps(vertices, uv_space.layout)
    normals = uv_maps(vertex_normals(vertices, face_model.faces), uv_space.layout)
    normals = normals / normals.norm(dim=1, keepdim=True).clamp(min=1e-12)
    torch.testing.assert_close(surface.positions, positions)
    torch.testing.assert_close(surface.normals, normals, atol=1e-6, rtol=1e-5)
    mask = uv_space.layout.mask[0, 0] > 0
    length = surface.normals.norm(dim=1)
    torch.testing.assert_close(length[:, mask], torch.ones_like(length[:, mask]))
    assert (surface.normals[:, :, ~mask] == 0).all()


def test_surface_in_float64_matches_float32(uv_space, vertices):
    single = uv_space.surface(vertices)
    double = uv_space.surface(vertices.double())
    assert double.positions.dtype == double.normals.dtype == torch.float64
    torch.testing.assert_close(double.positions.float(), single.positions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(double.normals.float(), single.normals, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_detail_normals_are_displacement_to_normals_with_the_skin_mask(uv_space, vertices, dtype):
    surface = uv_space.surface(vertices.to(dtype))
    d = displacement(dtype=dtype)
    result = uv_space.detail_normals(surface, d)
    assert result.dtype == dtype
    expected = displacement_to_normals(
        surface.positions, surface.normals, d * uv_space.skin.to(dtype), mask=uv_space.layout.mask.bool()
    )
    torch.testing.assert_close(result, expected)
    # The displacement changes the normals, and only the skin's displacement counts.
    assert (result - surface.normals).norm(dim=1).max() > 0.1
    unmasked = displacement_to_normals(
        surface.positions, surface.normals, d, mask=uv_space.layout.mask.bool()
    )
    assert (unmasked - result).abs().max() > 1e-3


def test_displacement_off_the_skin_is_ignored(uv_space, vertices):
    surface = uv_space.surface(vertices)
    off_skin = displacement() * (1.0 - uv_space.skin)
    torch.testing.assert_close(uv_space.detail_normals(surface, off_skin), surface.normals)


def test_zero_displacement_gives_the_smooth_normals_on_skin(uv_space, vertices):
    surface = uv_space.surface(vertices)
    result = uv_space.detail_normals(surface, torch.zeros(2, 1, SIZE, SIZE))
    skin = uv_space.skin[0, 0] > 0
    torch.testing.assert_close(result[:, :, skin], surface.normals[:, :, skin], atol=1e-6, rtol=0.0)


def test_to_the_same_device_returns_itself(uv_space):
    assert uv_space.to("cpu") is uv_space
    assert uv_space.to(torch.device("cpu")) is uv_space


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_moves_every_tensor_and_gives_the_same_normals(uv_space, vertices):
    moved = uv_space.to("cuda")
    assert moved is uv_space.to("cuda")
    assert moved.skin.is_cuda and moved.layout.mask.is_cuda and moved.stencils.defined.is_cuda
    surface = moved.surface(vertices.cuda())
    result = moved.detail_normals(surface, displacement().cuda())
    expected = uv_space.detail_normals(uv_space.surface(vertices), displacement())
    torch.testing.assert_close(result.cpu(), expected, atol=1e-5, rtol=1e-5)


def test_shape_errors_quote_the_shape(face_model, uv_space, vertices):
    surface = uv_space.surface(vertices)
    with pytest.raises(ValueError, match=r"\(2, 1, 32, 32\)"):
        uv_space.detail_normals(surface, torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(2, 3, 64, 64\)"):
        uv_space.detail_normals(surface, torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(3, 1, 64, 64\)"):
        uv_space.detail_normals(surface, torch.zeros(3, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="4"):
        UVSpace(face_model, 4)

"""Tests of aucgan.geometry.mesh: face and vertex normals against plain references and trimesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from aucgan.geometry.mesh import face_normals, vertex_normals


def reference_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Plain loop: sum of each touching triangle's cross product (twice its area along its normal)."""
    summed = np.zeros_like(vertices)
    for a, b, c in faces:
        cross = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        for index in (a, b, c):
            summed[index] += cross
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    return np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)


def as_batch(mesh: trimesh.Trimesh, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(mesh.vertices, dtype=dtype)[None], torch.tensor(mesh.faces, dtype=torch.int64)


def test_counter_clockwise_triangle_in_xy_plane_faces_plus_z():
    vertices = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(face_normals(vertices, faces), torch.tensor([[[0.0, 0.0, 1.0]]]))
    torch.testing.assert_close(face_normals(vertices, faces.flip(-1)), torch.tensor([[[0.0, 0.0, -1.0]]]))
    # Unnormalised: length = twice the area (2 * 3 / 2 * 2 = 6).
    raw = face_normals(vertices, faces, normalize=False)
    torch.testing.assert_close(raw, torch.tensor([[[0.0, 0.0, 2.0 * (0.5 * 2.0 * 3.0)]]]))
    torch.testing.assert_close(vertex_normals(vertices, faces), torch.tensor([[[0.0, 0.0, 1.0]] * 3]))


def test_regular_tetrahedron_normals_point_away_from_the_opposite_corner():
    corners = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    # Wind each face counter-clockwise seen from outside (outside = away from the fourth corner).
    for k, face in enumerate(faces):
        opposite = corners[({0, 1, 2, 3} - set(face)).pop()]
        cross = np.cross(corners[face[1]] - corners[face[0]], corners[face[2]] - corners[face[0]])
        if np.dot(cross, corners[face[0]] - opposite) < 0:
            faces[k] = face[[0, 2, 1]]
    vertices = torch.tensor(corners)[None]
    normals = face_normals(vertices, torch.tensor(faces))[0].numpy()
    for face, normal in zip(faces, normals, strict=True):
        opposite = corners[({0, 1, 2, 3} - set(face)).pop()]
        np.testing.assert_allclose(normal, -opposite / np.linalg.norm(opposite), atol=1e-12)
    # By symmetry each vertex normal points along the vertex itself.
    np.testing.assert_allclose(
        vertex_normals(vertices, torch.tensor(faces))[0].numpy(), corners / math.sqrt(3.0), atol=1e-12
    )


def test_cube_matches_trimesh():
    cube = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    vertices, faces = as_batch(cube)
    np.testing.assert_allclose(face_normals(vertices, faces)[0].numpy(), cube.face_normals, atol=1e-12)
    normals = vertex_normals(vertices, faces)[0].numpy()
    np.testing.assert_allclose(normals, reference_vertex_normals(cube.vertices, cube.faces), atol=1e-12)
    # Every corner normal points outwards, into its octant.
    assert (np.sign(normals) == np.sign(cube.vertices)).all()


def test_sphere_vertex_normals_are_radial_within_two_degrees():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
    vertices, faces = as_batch(sphere, torch.float32)
    normals = vertex_normals(vertices, faces)[0].double().numpy()
    radial = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    cosine = np.clip((normals * radial).sum(1), -1.0, 1.0)
    assert np.degrees(np.arccos(cosine)).max() < 2.0


def test_vertex_normals_match_the_loop_reference_on_a_random_mesh():
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(2, 30, 3))
    faces = rng.integers(0, 25, size=(60, 3))  # vertices 25..29 unused
    result = vertex_normals(torch.tensor(vertices), torch.tensor(faces)).numpy()
    for b in range(2):
        np.testing.assert_allclose(result[b], reference_vertex_normals(vertices[b], faces), atol=1e-12)
    assert (result[:, 25:] == 0).all()


def test_vertex_normals_are_area_weighted():
    # Two triangles share vertex 0: a large one facing +z and a small one facing +x.
    vertices = torch.tensor(
        [[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    area_z, area_x = 0.5 * 4.0 * 4.0, 0.5 * 1.0 * 1.0
    expected = torch.tensor([area_x, 0.0, area_z], dtype=torch.float64)
    torch.testing.assert_close(vertex_normals(vertices, faces)[0, 0], expected / expected.norm())


def test_zero_area_faces_give_no_nan():
    vertices = torch.tensor(
        [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [4, 4, 4]])
    normals = face_normals(vertices, faces)
    torch.testing.assert_close(normals[0, 0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(normals[0, 2], torch.zeros(3, dtype=torch.float64))
    per_vertex = vertex_normals(vertices, faces)
    assert torch.isfinite(per_vertex).all()
    torch.testing.assert_close(per_vertex[0, 0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(per_vertex[0, 4], torch.zeros(3, dtype=torch.float64))
    (normals.sum() + per_vertex.sum()).backward()
    assert torch.isfinite(vertices.grad).all()


def test_vertex_normals_gradcheck():
    sphere = trimesh.creation.icosphere(subdivisions=0)
    rng = np.random.default_rng(1)
    vertices = torch.tensor(sphere.vertices * rng.uniform(0.8, 1.2, size=(2, 12, 1)), requires_grad=True)
    faces = torch.tensor(sphere.faces, dtype=torch.int64)
    assert torch.autograd.gradcheck(lambda v: vertex_normals(v, faces), (vertices,))
    assert torch.autograd.gradcheck(lambda v: face_normals(v, faces), (vertices,))


def test_float32_and_int32_faces_agree_with_float64():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    vertices, faces = as_batch(sphere)
    expected = vertex_normals(vertices, faces)
    result = vertex_normals(vertices.float(), faces.int())
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("vertices", "faces", "quoted"),
    [
        (torch.zeros(4, 3), torch.zeros(1, 3, dtype=torch.int64), r"\(4, 3\)"),
        (torch.zeros(1, 4, 2), torch.zeros(1, 3, dtype=torch.int64), r"\(1, 4, 2\)"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 4, dtype=torch.int64), r"\(1, 4\)"),
        (torch.zeros(1, 4, 3), torch.zeros(3, dtype=torch.int64), r"\(3,\)"),
    ],
)
def test_shape_errors_quote_the_shape(vertices, faces, quoted):
    with pytest.raises(ValueError, match=quoted):
        face_normals(vertices, faces)
    with pytest.raises(ValueError, match=quoted):
        vertex_normals(vertices, faces)

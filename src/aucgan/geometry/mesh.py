"""Mesh quantities: face and vertex normals, edges and topology helpers."""

from __future__ import annotations

import torch


def _check_mesh(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Normals of the triangles, right-handed: counter-clockwise corners give a normal towards the viewer.

    Args:
        vertices: ``(B, V, 3)``.
        faces: ``(F, 3)`` int64 vertex indices.
        normalize: unit length if True; else the cross product, whose length is twice the triangle area.

    Returns:
        ``(B, F, 3)``.
    """
    _check_mesh(vertices, faces)
    corners = vertices[:, faces]
    normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12) if normalize else normals


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted average of the normals of the triangles around each vertex.

    Args:
        vertices: ``(B, V, 3)``.
        faces: ``(F, 3)`` int64.

    Returns:
        ``(B, V, 3)`` unit normals; zero for a vertex used by no triangle.
    """
    weighted = face_normals(vertices, faces, normalize=False)
    batch, n_vertices = vertices.shape[:2]
    summed = vertices.new_zeros(batch, n_vertices, 3)
    index = faces.reshape(1, -1, 1).expand(batch, -1, 3)
    summed = summed.scatter_add(1, index, weighted.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(summed, dim=-1, eps=1e-12)

"""A face model's UV layout at one resolution, with the masks and stencils the stages and the world share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aucgan.face_model.base import FACE_PART_SKIN, FaceModel
from aucgan.geometry.mesh import vertex_normals
from aucgan.geometry.render import UVLayout, uv_layout, uv_maps
from aucgan.geometry.uv import (
    DetailFrame,
    GridStencils,
    detail_frame,
    displacement_to_normals,
    grid_stencils,
    normalize_map,
)


@dataclass(frozen=True)
class UVSurface:
    """A posed coarse surface in UV space.

    Attributes:
        positions: ``(B, 3, S, S)`` world positions of the texels (0 outside the layout).
        normals: ``(B, 3, S, S)`` unit smooth (interpolated vertex) normals (0 outside the layout).
    """

    positions: torch.Tensor
    normals: torch.Tensor


class UVSpace:
    """The UV layout of ``face_model`` rasterised at ``size``² texels, built once and reused.

    Attributes:
        size: S.
        layout: the rasterised layout (:func:`~aucgan.geometry.render.uv_layout`).
        skin: ``(1, 1, S, S)`` float, 1 on texels of skin triangles (not eyes, not the mouth interior):
            where displacement lives and where the photometric detail loss looks.
        stencils: finite-difference stencils of the layout mask, for detail normals.
    """

    def __init__(self, face_model: FaceModel, size: int) -> None:
        if size < 8:
            raise ValueError(f"UV size must be at least 8 texels, got {size}")
        self.size = size
        self.layout: UVLayout = uv_layout(face_model.uvs, face_model.uv_faces, face_model.faces, size)
        skin_faces = (face_model.face_part == FACE_PART_SKIN).to(self.layout.mask.dtype)
        face_of_texel = self.layout.fragments.face_index[0]
        self.skin = (skin_faces[face_of_texel.clamp(min=0)] * (face_of_texel >= 0))[None, None]
        self.stencils: GridStencils = grid_stencils(self.layout.mask.bool())
        self._faces = face_model.faces
        self._on: dict[torch.device, UVSpace] = {}

    def to(self, device: torch.device | str) -> UVSpace:
        """This UV space with its tensors on ``device`` (cached per device)."""
        device = torch.device(device)
        if device == self.skin.device:
            return self
        if device not in self._on:
            moved = object.__new__(UVSpace)
            moved.size = self.size
            moved.layout = UVLayout(
                fragments=self.layout.fragments,
                faces=self.layout.faces.to(device),
                mask=self.layout.mask.to(device),
                weights=self.layout.weights.to(device),
            )
            moved.skin = self.skin.to(device)
            moved.stencils = GridStencils(*(t.to(device) for t in vars(self.stencils).values()))
            moved._faces = self._faces.to(device)
            moved._on = {}
            self._on[device] = moved
        return self._on[device]

    def surface(self, vertices: torch.Tensor) -> UVSurface:
        """World → UV positions and smooth normals of posed ``vertices (B, V, 3)``."""
        normals = vertex_normals(vertices, self._faces.to(vertices.device))
        maps = uv_maps(torch.cat([vertices, normals], dim=-1), self.layout)
        return UVSurface(positions=maps[:, :3], normals=normalize_map(maps[:, 3:]))

    def detail_normals(self, surface: UVSurface, uv_displacement: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` unit normals of the surface displaced by ``uv_displacement (B, 1, S, S)`` along
        its smooth normals; the displacement counts only on skin texels."""
        if uv_displacement.shape[-2:] != (self.size, self.size) or uv_displacement.shape[1] != 1:
            expected = f"(B, 1, {self.size}, {self.size})"
            raise ValueError(f"uv_displacement must be {expected}, got {tuple(uv_displacement.shape)}")
        return displacement_to_normals(
            surface.positions, surface.normals, uv_displacement * self.skin, stencils=self.stencils
        )

    def detail_frame(self, surface: UVSurface) -> DetailFrame:
        """The :class:`~aucgan.geometry.uv.DetailFrame` of ``surface``: ``frame.normals(d * skin)`` equals
        :meth:`detail_normals` of ``d``, with the surface's share computed once."""
        return detail_frame(surface.positions, surface.normals, stencils=self.stencils)

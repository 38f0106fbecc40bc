"""The coarse stage: image → face-model codes → posed mesh, landmarks, UV surface and albedo.

``CoarseStage.encode`` is the regression (DECA's ``encode``); ``CoarseStage.decode`` turns codes — regressed,
ground truth or edited — into geometry and UV maps; ``CoarseStage.render`` draws them. The stage owns no
training logic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aucgan.face_model.albedo import LinearAlbedo
from aucgan.face_model.base import FaceModel
from aucgan.face_model.uv_space import UVSpace, UVSurface
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.raster import Fragments
from aucgan.geometry.render import Rendering, render
from aucgan.nets.coarse_encoder import CoarseCodes, CoarseEncoder, CodeLayout


@dataclass(frozen=True)
class CoarseOutput:
    """What the coarse stage knows about a batch of faces.

    Attributes:
        codes: the face-model codes (shape, albedo, expression, pose, camera, light).
        vertices: ``(B, V, 3)`` posed vertices, face-model units.
        landmarks: ``(B, 68, 2)`` projected landmarks, NDC (x right, y up, [-1, 1] across the image).
        surface: the coarse surface in UV space (positions and smooth normals, ``(B, 3, S, S)`` each).
        uv_albedo: ``(B, 3, S, S)`` albedo in [0, 1].
    """

    codes: CoarseCodes
    vertices: torch.Tensor
    landmarks: torch.Tensor
    surface: UVSurface
    uv_albedo: torch.Tensor


class CoarseStage(nn.Module):
    """Face model + linear albedo model + (optionally) the coarse encoder.

    Args:
        face_model: a stateless :class:`~aucgan.face_model.base.FaceModel`.
        albedo: the linear albedo model; its size must equal ``uv_space.size``.
        uv_space: the face model's UV layout at the working resolution.
        encoder: the coarse encoder; ``None`` for a stage that only decodes given codes.
        image_size: side of the images this stage renders.
    """

    def __init__(
        self,
        face_model: FaceModel,
        albedo: LinearAlbedo,
        uv_space: UVSpace,
        encoder: CoarseEncoder | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if albedo.size != uv_space.size:
            raise ValueError(f"albedo maps are {albedo.size}² but the UV space is {uv_space.size}²")
        self.face_model = face_model
        self.albedo = albedo
        self.uv_space = uv_space
        self.encoder = encoder
        self.image_size = image_size
        self.layout = CodeLayout.for_face_model(face_model, albedo.n_albedo)
        if encoder is not None and encoder.layout != self.layout:
            raise ValueError(f"the encoder regresses {encoder.layout}, the face model needs {self.layout}")

    def encode(self, images: torch.Tensor) -> CoarseCodes:
        """Regress codes from ``images (B, 3, H, W)`` in [0, 1]."""
        if self.encoder is None:
            raise ValueError("this coarse stage has no encoder; give it codes through decode()")
        return self.encoder(images)

    def decode(self, codes: CoarseCodes, uv_albedo: torch.Tensor | None = None) -> CoarseOutput:
        """Geometry and UV maps of ``codes``; ``uv_albedo (B, 3, S, S)`` replaces the albedo model's."""
        geometry = self.face_model(codes.shape, codes.expression, codes.pose)
        uv_space = self.uv_space.to(geometry.vertices.device)
        if uv_albedo is None:
            uv_albedo = self.albedo(codes.albedo)
        expected = (geometry.vertices.shape[0], 3, uv_space.size, uv_space.size)
        if tuple(uv_albedo.shape) != expected:
            raise ValueError(f"uv_albedo must be {expected}, got {tuple(uv_albedo.shape)}")
        return CoarseOutput(
            codes=codes,
            vertices=geometry.vertices,
            landmarks=orthographic_project(geometry.landmarks, codes.camera)[..., :2],
            surface=uv_space.surface(geometry.vertices),
            uv_albedo=uv_albedo,
        )

    def forward(self, images: torch.Tensor) -> CoarseOutput:
        return self.decode(self.encode(images))

    def render(
        self,
        coarse: CoarseOutput,
        uv_normals: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        image_size: int | None = None,
        fragments: Fragments | None = None,
    ) -> Rendering:
        """Render the coarse faces (smooth normals), or with ``uv_normals (B, 3, S, S)`` (detail normals),
        over ``background (B, 3, H, W)`` (black if not given), at ``image_size`` (default: the stage's; the
        camera is in NDC, so any size frames the face the same way). ``fragments`` of an earlier render of
        the same ``coarse`` at the same size skip the rasterisation."""
        model = self.face_model
        return render(
            coarse.vertices, model.faces, model.uvs, model.uv_faces, coarse.codes.camera, coarse.codes.light,
            coarse.uv_albedo, image_size or self.image_size, uv_normal_map=uv_normals, background=background,
            cull_backfaces=True, fragments=fragments,
        )  # fmt: skip

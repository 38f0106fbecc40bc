"""The interface every face model implements, and its typed output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FACE_PART_SKIN, FACE_PART_EYE, FACE_PART_MOUTH = 0, 1, 2


@dataclass(frozen=True)
class FaceGeometry:
    """Posed face geometry in the face model's world units (cm for the built-in model).

    Attributes:
        vertices: ``(B, V, 3)`` posed vertices.
        landmarks: ``(B, L, 3)`` posed landmarks (68 in the iBUG-68 layout).
    """

    vertices: torch.Tensor
    landmarks: torch.Tensor


class FaceModel(nn.Module):
    """A stateless face-model layer: every code is a forward argument.

    Buffers every face model provides:
        ``faces (F, 3)`` int64 vertex triangles; ``uvs (U, 2)`` in the unit square, v up;
        ``uv_faces (F, 3)`` triangles into ``uvs`` in the same order as ``faces``;
        ``face_part (F,)`` int64, one of ``FACE_PART_SKIN / EYE / MOUTH``;
        ``landmark_indices (L,)`` int64 vertex indices of the landmarks.

    Attributes:
        n_shape: size of the identity shape code.
        n_expression: size of the expression code.
        n_pose: size of the pose code (global rotation 3 + jaw rotation 3, axis-angle, radians).
        expression_is_au_rig: the expression code is the 27 main AU intensities
            (:data:`aucgan.au.MAIN_AUS` order), so an AU edit also moves the coarse mesh; False for a
            PCA expression space such as FLAME's.
    """

    n_shape: int
    n_expression: int
    n_pose: int = 6
    expression_is_au_rig: bool = False
    faces: torch.Tensor
    uvs: torch.Tensor
    uv_faces: torch.Tensor
    face_part: torch.Tensor
    landmark_indices: torch.Tensor

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> FaceGeometry:
        raise NotImplementedError

    def check_codes(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> None:
        """Raise ``ValueError`` quoting the shapes unless the codes are ``(B, n_shape)``,
        ``(B, n_expression)``, ``(B, 6)`` with one batch size."""
        check_code_shapes(self.n_shape, self.n_expression, self.n_pose, shape, expression, pose)


def check_code_shapes(
    n_shape: int,
    n_expression: int,
    n_pose: int,
    shape: torch.Tensor,
    expression: torch.Tensor,
    pose: torch.Tensor,
) -> None:
    """Raise ``ValueError`` quoting the shapes unless the codes are ``(B, n_shape)``, ``(B, n_expression)``,
    ``(B, n_pose)`` with one batch size (for any face-model layer, :class:`FaceModel` or not)."""
    batch = shape.shape[0] if shape.ndim == 2 else -1
    expected = ((batch, n_shape), (batch, n_expression), (batch, n_pose))
    actual = (tuple(shape.shape), tuple(expression.shape), tuple(pose.shape))
    if batch < 1 or actual != expected:
        raise ValueError(
            f"codes must be shape (B, {n_shape}), expression (B, {n_expression}), "
            f"pose (B, {n_pose}); got {actual[0]}, {actual[1]}, {actual[2]}"
        )

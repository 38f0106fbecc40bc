"""Rotations: axis-angle vectors to matrices (Rodrigues' formula), smooth at zero angle, and back."""

from __future__ import annotations

import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors.

    Args:
        axis_angle: ``(..., 3)``; direction = axis, length = angle in radians (right-hand rule).

    Returns:
        ``(..., 3, 3)`` rotation matrices ``R`` acting on column vectors (``p' = R p``).
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle must be (..., 3), got {tuple(axis_angle.shape)}")
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]
    small = angle_sq < 1e-8
    safe_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    angle = safe_sq.sqrt()
    # sin(t)/t and (1 - cos t)/t^2, with their Taylor series near zero. The second is computed as
    # 2 sin^2(t/2) / t^2 because 1 - cos t cancels catastrophically for small t in float32.
    a = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(angle) / angle)
    half_sinc = torch.sin(0.5 * angle) / angle
    b = torch.where(small, 0.5 - angle_sq / 24.0, 2.0 * half_sinc * half_sinc)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` of rotation matrices ``(..., 3, 3)`` with angles below π (the inverse of
    :func:`aucgan.geometry.rotation.axis_angle_to_matrix` there)."""
    cosine = ((rotation.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cosine)
    axis = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )
    sine = torch.sin(angle)
    factor = torch.where(sine.abs() > 1e-6, angle / (2.0 * sine.clamp(min=1e-12)), torch.full_like(sine, 0.5))
    return axis * factor[..., None]

"""Regularisers of the detail displacement (DECA's ``z_reg``, ``z_diff``, ``z_sym``)."""

from __future__ import annotations

import torch


def _check_map(name: str, tensor: torch.Tensor, channels: int | None = None) -> None:
    if tensor.ndim != 4 or (channels is not None and tensor.shape[1] != channels):
        expected = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must be {expected}, got {tuple(tensor.shape)}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def displacement_magnitude(uv_displacement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``z_reg``: mean absolute displacement, ``mean_mask |z|`` (keeps the detail small where unneeded).

    Args:
        uv_displacement: ``(B, 1, H, W)`` model units.
        mask: optional ``(B or 1, 1, H, W)`` texels that count.
    """
    _check_map("uv_displacement", uv_displacement, 1)
    return _masked_mean(uv_displacement.abs(), mask)


def shading_smoothness(uv_shading: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``z_diff``: mean squared finite difference of the detail shading between neighbouring texels,
    ``mean_mask [(S(i, j+1) - S(i, j))^2] + mean_mask [(S(i+1, j) - S(i, j))^2]``; a pair counts only when
    both texels are in the mask.

    Args:
        uv_shading: ``(B, C, H, W)`` shading of the detail normals in UV space.
        mask: optional ``(B or 1, 1, H, W)`` texels that count.
    """
    _check_map("uv_shading", uv_shading)
    dx = (uv_shading[..., :, 1:] - uv_shading[..., :, :-1]) ** 2
    dy = (uv_shading[..., 1:, :] - uv_shading[..., :-1, :]) ** 2
    if mask is None:
        return dx.mean() + dy.mean()
    mask = mask.to(uv_shading.dtype)
    return _masked_mean(dx, mask[..., :, 1:] * mask[..., :, :-1]) + _masked_mean(
        dy, mask[..., 1:, :] * mask[..., :-1, :]
    )


def displacement_symmetry(uv_displacement: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``z_sym``: mean absolute difference between the displacement and its left-right mirror (u → 1 - u),
    ``mean_mask |z - flip_u(z)|``, over ``mask`` (DECA uses the texels not visible in the image, where the
    photo gives no evidence). Assumes a UV layout that is mirror-symmetric in u, as the built-in face's and
    FLAME's are.

    Args:
        uv_displacement: ``(B, 1, H, W)``.
        mask: ``(B or 1, 1, H, W)`` texels that count.
    """
    _check_map("uv_displacement", uv_displacement, 1)
    return _masked_mean((uv_displacement - uv_displacement.flip(-1)).abs(), mask)

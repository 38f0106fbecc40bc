"""Orthographic camera with DECA's convention.

A camera is ``(B, 3)`` = (scale s, tx, ty). A world point ``p = (x, y, z)`` projects to NDC as
``s * (x + tx), s * (y + ty), s * z``: the translation is applied before the scale, and depth is scaled
like x and y so that distances stay isotropic (needed for normals and depth tests in NDC).
"""

from __future__ import annotations

import torch


def orthographic_project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Project world points to NDC with a weak-perspective (scaled orthographic) camera.

    Args:
        points: ``(B, N, 3)`` world coordinates.
        camera: ``(B, 3)`` = (scale, tx, ty).

    Returns:
        ``(B, N, 3)``: NDC x, y in [-1, 1] over the image, and the scaled depth (larger is nearer).
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if camera.shape != (points.shape[0], 3):
        raise ValueError(f"camera must be ({points.shape[0]}, 3), got {tuple(camera.shape)}")
    scale = camera[:, None, :1]
    shift = torch.cat([camera[:, None, 1:], torch.zeros_like(camera[:, None, :1])], dim=-1)
    return scale * (points + shift)


def ndc_to_pixels(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Map NDC x, y to continuous pixel coordinates (column, row); pixel centres are integers.

    Args:
        points: ``(..., 2)`` or ``(..., 3)`` NDC points (only x and y are used).
        height: image height H in pixels.
        width: image width W in pixels.

    Returns:
        ``(..., 2)`` (column, row): pixel (i, j) has its centre at column j, row i.
    """
    if points.ndim < 1 or points.shape[-1] not in (2, 3):
        raise ValueError(f"points must be (..., 2) or (..., 3), got {tuple(points.shape)}")
    col = (points[..., 0] + 1.0) * (width / 2.0) - 0.5
    row = (1.0 - points[..., 1]) * (height / 2.0) - 0.5
    return torch.stack([col, row], dim=-1)


def uv_to_ndc(uvs: torch.Tensor) -> torch.Tensor:
    """Map UV coordinates ``(..., 2)`` in the unit square (v up) to NDC ``(..., 3)`` with zero depth."""
    if uvs.ndim < 1 or uvs.shape[-1] != 2:
        raise ValueError(f"uvs must be (..., 2), got {tuple(uvs.shape)}")
    xy = uvs * 2.0 - 1.0
    return torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1)

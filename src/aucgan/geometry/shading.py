"""Second-order spherical-harmonics (SH) shading of Lambertian surfaces, with DECA's basis and constants.

The irradiance at a surface with unit normal ``n = (x, y, z)`` under SH light ``L`` (9 coefficients per
colour channel) is ``E(n) = sum_k c_k * b_k(n) * L_k`` with the basis
``b(n) = [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]`` and constants ``c_k`` that fold the real SH
normalisation together with the clamped-cosine convolution (Ramamoorthi & Hanrahan 2001) — except that
band 0 carries no factor pi, as in DECA, so that published light codes give the same shading.
"""

from __future__ import annotations

import math

import torch

SH_CONSTANTS: tuple[float, ...] = (
    1.0 / math.sqrt(4.0 * math.pi),
    *(2.0 * math.pi / 3.0 * math.sqrt(3.0 / (4.0 * math.pi)),) * 3,
    *(math.pi / 4.0 * 3.0 * math.sqrt(5.0 / (12.0 * math.pi)),) * 3,
    math.pi / 4.0 * 1.5 * math.sqrt(5.0 / (12.0 * math.pi)),
    math.pi / 4.0 * 0.5 * math.sqrt(5.0 / (4.0 * math.pi)),
)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The nine scaled basis functions ``c_k b_k(n)``.

    Args:
        normals: ``(..., 3)`` unit normals.

    Returns:
        ``(..., 9)``.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must be (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0], dim=-1
    )
    return basis * basis.new_tensor(SH_CONSTANTS)


def sh_shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Irradiance of an image of normals under SH light.

    Args:
        normals: ``(B, 3, H, W)`` unit normals (any zero vector gives the ambient term only).
        light: ``(B, 9, 3)`` SH coefficients, 9 per RGB channel (DECA's 27-d light code reshaped).

    Returns:
        ``(B, 3, H, W)`` shading, to be multiplied with albedo.
    """
    if normals.ndim != 4 or normals.shape[1] != 3:
        raise ValueError(f"normals must be (B, 3, H, W), got {tuple(normals.shape)}")
    if light.shape != (normals.shape[0], 9, 3):
        raise ValueError(f"light must be ({normals.shape[0]}, 9, 3), got {tuple(light.shape)}")
    # Channel-first, one multiply-add per basis function and colour: the sum of sh_basis times the light
    # over the nine terms, without permuting the maps to channels-last (several times faster on CPU).
    x, y, z = normals[:, 0:1], normals[:, 1:2], normals[:, 2:3]
    basis = (None, x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0)
    weights = light * light.new_tensor(SH_CONSTANTS)[None, :, None]  # (B, 9, 3)
    shading = weights[:, 0, :, None, None].expand(-1, -1, *normals.shape[-2:])
    for k in range(1, 9):
        shading = shading + basis[k] * weights[:, k, :, None, None]
    return shading


def light_from_direction(
    direction: torch.Tensor, intensity: float = 1.0, ambient: float = 1.0
) -> torch.Tensor:
    """SH light for a distant white light from ``direction`` plus a uniform ambient term.

    Args:
        direction: ``(B, 3)`` direction towards the light (normalised here).
        intensity: strength of the directional part.
        ambient: strength of the uniform part.

    Returns:
        ``(B, 9, 3)`` coefficients, equal in the three channels.
    """
    if direction.ndim != 2 or direction.shape[-1] != 3:
        raise ValueError(f"direction must be (B, 3), got {tuple(direction.shape)}")
    d = torch.nn.functional.normalize(direction, dim=-1)
    coeffs = direction.new_zeros(direction.shape[0], 9)
    coeffs[:, 0] = ambient / SH_CONSTANTS[0]
    coeffs[:, 1:4] = intensity * d / SH_CONSTANTS[1]
    return coeffs[:, :, None].expand(-1, -1, 3).contiguous()

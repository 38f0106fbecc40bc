"""Tests of aucgan.geometry.shading against closed forms written out here."""

from __future__ import annotations

import math
import re

import pytest
import torch

from aucgan.geometry.shading import SH_CONSTANTS, light_from_direction, sh_basis, sh_shading

# DECA's constants as published (rounded to 4 decimals).
DECA_ROUNDED = (0.2821, 1.0233, 1.0233, 1.0233, 0.8581, 0.8581, 0.8581, 0.4290, 0.2477)

# Clamped-cosine convolution factors per band (Ramamoorthi & Hanrahan 2001).
BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
CLAMPED_COSINE = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
# Normalisation of the real SH basis functions written as N_k * b_k(n) with b = [1, x, y, z, xy, xz, yz,
# x^2 - y^2, 3z^2 - 1].
SH_NORM = (
    math.sqrt(1.0 / (4.0 * math.pi)),
    *(math.sqrt(3.0 / (4.0 * math.pi)),) * 3,
    *(math.sqrt(15.0 / (4.0 * math.pi)),) * 3,
    math.sqrt(15.0 / (16.0 * math.pi)),
    math.sqrt(5.0 / (16.0 * math.pi)),
)


def expected_constants() -> list[float]:
    c0 = 1.0 / math.sqrt(4.0 * math.pi)
    c1 = (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi))
    c2 = (math.pi / 4.0) * 3.0 * math.sqrt(5.0 / (12.0 * math.pi))
    c3 = (math.pi / 4.0) * 1.5 * math.sqrt(5.0 / (12.0 * math.pi))
    c4 = (math.pi / 4.0) * 0.5 * math.sqrt(5.0 / (4.0 * math.pi))
    return [c0, c1, c1, c1, c2, c2, c2, c3, c4]


def basis_functions(n: torch.Tensor) -> torch.Tensor:
    """The unscaled basis ``(..., 9)`` of unit normals ``(..., 3)``, written out element by element."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x**2 - y**2, 3 * z**2 - 1], dim=-1)


def random_unit(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, 3, generator=generator, dtype=dtype), dim=-1)


def test_constants_equal_deca_published_values():
    assert len(SH_CONSTANTS) == 9
    assert pytest.approx(DECA_ROUNDED, abs=1e-4) == SH_CONSTANTS
    assert pytest.approx(expected_constants(), rel=1e-12) == SH_CONSTANTS


def test_constants_are_normalisation_times_clamped_cosine_factor_except_band_zero():
    for k, constant in enumerate(SH_CONSTANTS):
        factor = 1.0 if k == 0 else CLAMPED_COSINE[BAND[k]]
        assert constant == pytest.approx(factor * SH_NORM[k], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sh_shading_matches_closed_form_per_channel(dtype):
    generator = torch.Generator().manual_seed(0)
    normals = random_unit((2, 5, 7), generator, dtype)  # (B, H, W, 3)
    light = torch.randn(2, 9, 3, generator=generator, dtype=dtype)
    shading = sh_shading(normals.permute(0, 3, 1, 2), light)
    assert shading.shape == (2, 3, 5, 7) and shading.dtype == dtype

    constants = torch.tensor(expected_constants(), dtype=torch.float64)
    basis = basis_functions(normals.double()) * constants
    for b in range(2):
        for c in range(3):
            expected = (basis[b] * light[b, :, c].double()).sum(-1)
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(shading[b, c].double(), expected, rtol=tol, atol=tol)


def test_sh_basis_is_constants_times_basis():
    generator = torch.Generator().manual_seed(1)
    normals = random_unit((4, 6), generator)
    expected = basis_functions(normals) * torch.tensor(expected_constants(), dtype=torch.float64)
    torch.testing.assert_close(sh_basis(normals), expected)


def test_zero_normal_gives_ambient_only():
    generator = torch.Generator().manual_seed(2)
    light = torch.randn(1, 9, 3, generator=generator)
    shading = sh_shading(torch.zeros(1, 3, 2, 2), light)
    # b(0) = [1, 0, ..., 0, -1]: the constant term and the 3z^2 - 1 term survive.
    expected = SH_CONSTANTS[0] * light[0, 0] - SH_CONSTANTS[8] * light[0, 8]
    torch.testing.assert_close(shading[0].permute(1, 2, 0), expected.expand(2, 2, 3))


def test_light_from_direction_gives_ambient_plus_intensity_times_cosine():
    generator = torch.Generator().manual_seed(3)
    # Not unit length: light_from_direction normalises it.
    direction = torch.randn(3, 3, generator=generator, dtype=torch.float64) * 4.0
    normals = random_unit((3, 4, 5), generator)
    ambient, intensity = 0.37, 0.81
    light = light_from_direction(direction, intensity=intensity, ambient=ambient)
    assert light.shape == (3, 9, 3)
    shading = sh_shading(normals.permute(0, 3, 1, 2), light)
    unit = direction / direction.norm(dim=-1, keepdim=True)
    cosine = (normals * unit[:, None, None, :]).sum(-1)
    expected = (ambient + intensity * cosine)[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(shading, expected)


def test_projected_directional_light_gives_order_two_clamped_cosine():
    """Light = SH projection of a unit directional light; the irradiance must be the order-2 truncation of
    max(0, cos) by the addition theorem: sum_l A_l (2l+1)/(4 pi) P_l(t) = 1/4 + t/2 + (5/16) P_2(t)."""
    generator = torch.Generator().manual_seed(4)
    direction = random_unit((2,), generator)
    normals = random_unit((2, 3, 8), generator)
    # L_k = Y_k(d), the SH coefficients of a delta light; band 0 carries the factor pi DECA leaves out.
    norm = torch.tensor(SH_NORM, dtype=torch.float64)
    band_factor = torch.tensor([CLAMPED_COSINE[BAND[k]] for k in range(9)], dtype=torch.float64)
    constants = torch.tensor(expected_constants(), dtype=torch.float64)
    coefficients = band_factor * norm**2 * basis_functions(direction) / constants  # (2, 9)
    light = coefficients[:, :, None].expand(-1, -1, 3)
    shading = sh_shading(normals.permute(0, 3, 1, 2), light)

    t = (normals * direction[:, None, None, :]).sum(-1)
    expected = 0.25 + 0.5 * t + (5.0 / 16.0) * (3.0 * t**2 - 1.0) / 2.0
    torch.testing.assert_close(shading, expected[:, None].expand(-1, 3, -1, -1))
    # ... which approximates the clamped cosine to within its worst error, 1/4 - 5/32 at t = 0.
    assert (shading[:, 0] - t.clamp(min=0)).abs().max() <= 0.25 - 5.0 / 32.0 + 1e-9


def test_sh_shading_gradcheck():
    generator = torch.Generator().manual_seed(5)
    normals = random_unit((2, 3, 2), generator).permute(0, 3, 1, 2).contiguous().requires_grad_()
    light = torch.randn(2, 9, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sh_shading, (normals, light))


def test_light_from_direction_gradcheck():
    generator = torch.Generator().manual_seed(6)
    direction = torch.randn(2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: light_from_direction(d, 0.7, 0.2), (direction,))


@pytest.mark.parametrize(
    ("normals", "light", "quoted"),
    [
        (torch.zeros(1, 4, 2, 2), torch.zeros(1, 9, 3), "(1, 4, 2, 2)"),
        (torch.zeros(3, 2, 2), torch.zeros(1, 9, 3), "(3, 2, 2)"),
        (torch.zeros(2, 3, 2, 2), torch.zeros(1, 9, 3), "(1, 9, 3)"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 27), "(1, 27)"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 9), "(1, 3, 9)"),
    ],
)
def test_sh_shading_shape_errors_quote_the_shape(normals, light, quoted):
    with pytest.raises(ValueError, match=re.escape(quoted)):
        sh_shading(normals, light)


def test_shape_errors_of_basis_and_light_from_direction():
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        sh_basis(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        light_from_direction(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        light_from_direction(torch.zeros(1, 2))

"""Tests of aucgan.geometry.rotation against scipy's rotation vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from aucgan.geometry.rotation import axis_angle_to_matrix, matrix_to_axis_angle


def random_rotvecs(count: int, angles: list[float], seed: int) -> np.ndarray:
    """Rotation vectors with random axes and the given angles (cycled)."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * np.resize(np.asarray(angles, dtype=np.float64), count)[:, None]


ANGLES = [0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1.5e-4, 1e-3, 0.3, 1.0, 2.5, math.pi - 1e-6, math.pi, 4.0, 7.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_scipy_from_rotvec(dtype):
    rotvecs = random_rotvecs(4 * len(ANGLES), ANGLES, seed=0)
    matrices = axis_angle_to_matrix(torch.tensor(rotvecs, dtype=dtype))
    assert matrices.shape == (len(rotvecs), 3, 3) and matrices.dtype == dtype
    expected = Rotation.from_rotvec(rotvecs).as_matrix()
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(matrices.double().numpy(), expected, rtol=0, atol=tol)


def test_random_vectors_match_scipy():
    rotvecs = np.random.default_rng(1).normal(size=(64, 3)) * 2.0
    expected = Rotation.from_rotvec(rotvecs).as_matrix()
    np.testing.assert_allclose(axis_angle_to_matrix(torch.from_numpy(rotvecs)).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthonormal_with_determinant_one(dtype):
    rotvecs = torch.tensor(random_rotvecs(3 * len(ANGLES), ANGLES, seed=2), dtype=dtype)
    matrices = axis_angle_to_matrix(rotvecs)
    eye = torch.eye(3, dtype=dtype).expand_as(matrices)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(matrices @ matrices.transpose(-1, -2), eye, atol=tol, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(matrices), torch.ones(len(rotvecs), dtype=dtype), atol=tol, rtol=0
    )


def test_axis_is_fixed_and_right_hand_rule():
    angle = 0.7
    matrix = axis_angle_to_matrix(torch.tensor([0.0, 0.0, angle], dtype=torch.float64))
    # A positive rotation about +z takes +x towards +y.
    torch.testing.assert_close(
        matrix @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
        torch.tensor([math.cos(angle), math.sin(angle), 0.0], dtype=torch.float64),
    )
    rotvecs = torch.tensor(random_rotvecs(8, [0.4, 2.0], seed=3))
    torch.testing.assert_close(axis_angle_to_matrix(rotvecs) @ rotvecs[..., None], rotvecs[..., None])


def test_batch_dimensions_are_kept():
    rotvecs = torch.tensor(random_rotvecs(6, [0.5, 1.5], seed=4)).reshape(2, 3, 3)
    matrices = axis_angle_to_matrix(rotvecs)
    assert matrices.shape == (2, 3, 3, 3)
    torch.testing.assert_close(matrices.reshape(6, 3, 3), axis_angle_to_matrix(rotvecs.reshape(6, 3)))
    assert axis_angle_to_matrix(torch.zeros(3)).shape == (3, 3)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 9.9e-5, 1.01e-4, 1e-2, 1.0, math.pi])
def test_gradcheck_float64(angle):
    rotvec = torch.tensor(random_rotvecs(2, [angle], seed=5), requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rotvec,))


def test_derivative_at_zero_is_the_generators():
    jacobian = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3, dtype=torch.float64))
    for k in range(3):
        generator = np.cross(np.eye(3)[k], np.eye(3))  # column i is e_k x e_i: the skew matrix [e_k]_x
        np.testing.assert_allclose(jacobian[..., k].numpy(), generator.T, atol=1e-15)


def plain_rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """R = I + sin(t) [k]x + (1 - cos t) [k]x^2 of one rotation vector ``(3,)``, t > 0, no special cases."""
    angle = rotvec.norm()
    kx, ky, kz = (rotvec / angle).unbind()
    zero = torch.zeros_like(kx)
    skew = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero]).reshape(3, 3)
    return (
        torch.eye(3, dtype=rotvec.dtype)
        + torch.sin(angle) * skew
        + 2.0 * torch.sin(angle / 2) ** 2 * skew @ skew
    )


@pytest.mark.parametrize("angle", [1e-6, 5e-5, 9.9e-5, 2e-4, 1e-2, 1.0])
def test_jacobian_matches_plain_rodrigues_on_both_sides_of_the_series_switch(angle):
    rotvec = torch.tensor(random_rotvecs(1, [angle], seed=7)[0])
    expected = torch.autograd.functional.jacobian(plain_rodrigues, rotvec)
    result = torch.autograd.functional.jacobian(axis_angle_to_matrix, rotvec)
    torch.testing.assert_close(result, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("angle", [1e-5, 1.5e-4, 1e-3, 1e-2, 0.5])
def test_float32_jacobian_is_accurate_near_zero(angle):
    rotvec = torch.tensor(random_rotvecs(1, [angle], seed=6)[0])
    exact = torch.autograd.functional.jacobian(axis_angle_to_matrix, rotvec)
    single = torch.autograd.functional.jacobian(axis_angle_to_matrix, rotvec.float())
    torch.testing.assert_close(single.double(), exact, atol=2e-6, rtol=0)


def test_shape_error_quotes_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        axis_angle_to_matrix(torch.zeros(2, 4))


def test_matrix_to_axis_angle_inverts_axis_angle_to_matrix():
    generator = torch.Generator().manual_seed(4)
    directions = torch.nn.functional.normalize(
        torch.randn(64, 3, generator=generator, dtype=torch.float64), dim=1
    )
    angles = torch.linspace(0.0, 3.0, 64, dtype=torch.float64)[:, None]
    axis_angle = directions * angles
    torch.testing.assert_close(
        matrix_to_axis_angle(axis_angle_to_matrix(axis_angle)), axis_angle, atol=1e-7, rtol=0
    )

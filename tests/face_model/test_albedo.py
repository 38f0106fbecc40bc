"""Tests of aucgan.face_model.albedo: the linear albedo model and its PCA fit, against closed forms and
``torch.linalg.lstsq``."""

from __future__ import annotations

import pytest
import torch

from aucgan.face_model.albedo import LinearAlbedo, fit_linear_albedo

SIZE = 8
RANK = 4
COUNT = 20


def affine_span_examples(dtype=torch.float64) -> torch.Tensor:
    """``(COUNT, 3, SIZE, SIZE)`` maps ``centre + Σ_k c_k d_k`` with RANK random directions: inside (0, 1)."""
    generator = torch.Generator().manual_seed(3)
    centre = 0.3 + 0.4 * torch.rand(3, SIZE, SIZE, generator=generator, dtype=dtype)
    directions = torch.randn(RANK, 3, SIZE, SIZE, generator=generator, dtype=dtype)
    coefficients = torch.randn(COUNT, RANK, generator=generator, dtype=dtype)
    maps = centre + 0.02 * torch.einsum("nk,kchw->nchw", coefficients, directions)
    assert maps.min() > 0.0 and maps.max() < 1.0
    return maps


def random_model(dtype=torch.float64, n_albedo: int = 5) -> LinearAlbedo:
    """A model with a general (not orthogonal) basis."""
    generator = torch.Generator().manual_seed(4)
    mean = torch.rand(3, SIZE, SIZE, generator=generator, dtype=dtype)
    basis = torch.randn(n_albedo, 3, SIZE, SIZE, generator=generator, dtype=dtype)
    return LinearAlbedo(mean, basis)


def test_examples_in_an_affine_span_are_reproduced_exactly():
    maps = affine_span_examples().float()
    model = fit_linear_albedo(maps, RANK)
    assert (model.n_albedo, model.size) == (RANK, SIZE)
    reproduced = model(model.project(maps))
    torch.testing.assert_close(reproduced, maps, atol=1e-5, rtol=0.0)
    # One component too few cannot reproduce them: the test sees the missing direction.
    fewer = fit_linear_albedo(maps, RANK - 1)
    assert (fewer(fewer.project(maps)) - maps).abs().max() > 1e-3


def test_example_codes_have_unit_variance_and_are_uncorrelated():
    maps = affine_span_examples()
    model = fit_linear_albedo(maps, RANK).double()
    codes = model.project(maps)
    torch.testing.assert_close(codes.mean(0), torch.zeros(RANK, dtype=codes.dtype), atol=1e-4, rtol=0.0)
    covariance = codes.T @ (codes - codes.mean(0)) / (COUNT - 1)
    torch.testing.assert_close(covariance, torch.eye(RANK, dtype=codes.dtype), atol=1e-4, rtol=0.0)


def test_the_mean_is_the_example_mean_and_components_come_in_decreasing_variance():
    maps = affine_span_examples()
    model = fit_linear_albedo(maps, RANK)
    torch.testing.assert_close(model.mean, maps.mean(0).float(), atol=1e-6, rtol=0.0)
    norms = model.basis.flatten(1).norm(dim=1)
    assert (norms[:-1] >= norms[1:]).all()
    # The basis directions are orthogonal (principal directions).
    gram = model.basis.flatten(1).double() @ model.basis.flatten(1).double().T
    off_diagonal = gram - torch.diag(torch.diagonal(gram))
    assert off_diagonal.abs().max() < 1e-5 * gram.diagonal().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_is_the_least_squares_solution(dtype):
    model = random_model(dtype)
    generator = torch.Generator().manual_seed(5)
    albedo = torch.rand(3, 3, SIZE, SIZE, generator=generator, dtype=dtype)  # not in the span
    codes = model.project(albedo)
    assert codes.shape == (3, model.n_albedo) and codes.dtype == dtype
    design = model.basis.flatten(1).T.double()
    targets = (albedo - model.mean).flatten(1).T.double()
    expected = torch.linalg.lstsq(design, targets).solution.T
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(codes.double(), expected, atol=tolerance, rtol=tolerance)


def test_forward_is_the_clamped_linear_combination():
    model = random_model()
    generator = torch.Generator().manual_seed(6)
    code = 2.0 * torch.randn(2, model.n_albedo, generator=generator, dtype=torch.float64)
    expected = model.mean.clone().expand(2, -1, -1, -1).clone()
    for k in range(model.n_albedo):
        expected = expected + code[:, k, None, None, None] * model.basis[k]
    result = model(code)
    torch.testing.assert_close(result, expected.clamp(0.0, 1.0))
    assert (expected < 0).any() and (expected > 1).any()  # the clamp was exercised


def test_float64_model_matches_float32():
    maps = affine_span_examples()
    model32 = fit_linear_albedo(maps.float(), RANK)
    model64 = fit_linear_albedo(maps, RANK).double()
    assert model64.mean.dtype == torch.float64 and model64.basis.dtype == torch.float64
    codes = model64.project(maps)
    assert codes.dtype == torch.float64
    out64 = model64(codes)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, maps, atol=1e-6, rtol=0.0)
    torch.testing.assert_close(model32(codes.float()), out64.float(), atol=1e-5, rtol=0.0)


def test_buffers_are_saved_and_restored():
    model = random_model(torch.float32)
    assert set(model.state_dict()) == {"mean", "basis"}
    fresh = LinearAlbedo(torch.zeros(3, SIZE, SIZE), torch.zeros(model.n_albedo, 3, SIZE, SIZE))
    fresh.load_state_dict(model.state_dict())
    code = torch.randn(2, model.n_albedo)
    torch.testing.assert_close(fresh(code), model(code))


def test_shape_errors_quote_the_shape():
    mean = torch.zeros(3, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"\(4, 3, 6, 6\)"):
        LinearAlbedo(mean, torch.zeros(4, 3, 6, 6))
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        LinearAlbedo(torch.zeros(1, SIZE, SIZE), torch.zeros(4, 1, SIZE, SIZE))
    model = random_model(torch.float32, n_albedo=5)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        model(torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
        model.project(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        model.project(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(6, 4, 8, 8\)"):
        fit_linear_albedo(torch.zeros(6, 4, SIZE, SIZE), 2)
    with pytest.raises(ValueError, match="more examples"):
        fit_linear_albedo(torch.rand(4, 3, SIZE, SIZE), 4)
    with pytest.raises(ValueError, match="more examples"):
        fit_linear_albedo(torch.rand(4, 3, SIZE, SIZE), 0)

"""Tests of aucgan.geometry.camera: DECA's orthographic camera and the NDC / pixel / UV conventions."""

from __future__ import annotations

import pytest
import torch

from aucgan.geometry.camera import ndc_to_pixels, orthographic_project, uv_to_ndc


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthographic_project_translates_then_scales(dtype):
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3, 11, 3, generator=generator, dtype=dtype)
    camera = torch.randn(3, 3, generator=generator, dtype=dtype)
    projected = orthographic_project(points, camera)
    assert projected.shape == (3, 11, 3) and projected.dtype == dtype
    for b in range(3):
        s, tx, ty = camera[b].tolist()
        for n in range(11):
            x, y, z = points[b, n].tolist()
            expected = torch.tensor([s * (x + tx), s * (y + ty), s * z], dtype=dtype)
            torch.testing.assert_close(projected[b, n], expected)


def test_orthographic_project_gradcheck():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    camera = torch.randn(2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(orthographic_project, (points, camera))


@pytest.mark.parametrize(("height", "width"), [(4, 4), (3, 7), (8, 5)])
def test_ndc_pixel_centres_map_to_integer_pixels(height, width):
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    x = (2.0 * cols.double() + 1.0) / width - 1.0
    y = 1.0 - (2.0 * rows.double() + 1.0) / height
    pixels = ndc_to_pixels(torch.stack([x, y], dim=-1), height, width)
    torch.testing.assert_close(pixels[..., 0], cols.double())
    torch.testing.assert_close(pixels[..., 1], rows.double())
    # Depth, if present, is ignored.
    with_depth = torch.stack([x, y, torch.rand_like(x)], dim=-1)
    torch.testing.assert_close(ndc_to_pixels(with_depth, height, width), pixels)


def test_ndc_corners_are_pixel_edges():
    corners = torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    height, width = 6, 10
    pixels = ndc_to_pixels(corners, height, width)
    # The top-left image corner is half a pixel up and left of pixel (0, 0)'s centre.
    torch.testing.assert_close(pixels[0], torch.tensor([-0.5, -0.5], dtype=torch.float64))
    torch.testing.assert_close(pixels[1], torch.tensor([width - 0.5, height - 0.5], dtype=torch.float64))


def test_uv_to_ndc_maps_the_unit_square_onto_the_image():
    generator = torch.Generator().manual_seed(2)
    uvs = torch.rand(2, 5, 2, generator=generator, dtype=torch.float64)
    ndc = uv_to_ndc(uvs)
    assert ndc.shape == (2, 5, 3)
    torch.testing.assert_close(ndc[..., 0], 2.0 * uvs[..., 0] - 1.0)
    torch.testing.assert_close(ndc[..., 1], 2.0 * uvs[..., 1] - 1.0)
    assert (ndc[..., 2] == 0).all()


def test_texel_centres_land_on_their_pixels_with_v_up():
    size = 8
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u = (cols.double() + 0.5) / size
    v = 1.0 - (rows.double() + 0.5) / size  # row 0 holds the largest v
    pixels = ndc_to_pixels(uv_to_ndc(torch.stack([u, v], dim=-1)), size, size)
    torch.testing.assert_close(pixels[..., 0], cols.double())
    torch.testing.assert_close(pixels[..., 1], rows.double())


@pytest.mark.parametrize(
    ("points", "camera", "quoted"),
    [
        (torch.zeros(5, 3), torch.zeros(1, 3), "(5, 3)"),
        (torch.zeros(1, 5, 2), torch.zeros(1, 3), "(1, 5, 2)"),
        (torch.zeros(2, 5, 3), torch.zeros(1, 3), "(1, 3)"),
        (torch.zeros(1, 5, 3), torch.zeros(1, 4), "(1, 4)"),
        (torch.zeros(1, 5, 3), torch.zeros(3), "(3,)"),
    ],
)
def test_orthographic_project_shape_errors_quote_the_shape(points, camera, quoted):
    with pytest.raises(ValueError) as error:
        orthographic_project(points, camera)
    assert quoted in str(error.value)


def test_ndc_to_pixels_and_uv_to_ndc_shape_errors_quote_the_shape():
    with pytest.raises(ValueError) as error:
        ndc_to_pixels(torch.zeros(4, 1), 8, 8)
    assert "(4, 1)" in str(error.value)
    with pytest.raises(ValueError) as error:
        uv_to_ndc(torch.zeros(4, 3))
    assert "(4, 3)" in str(error.value)

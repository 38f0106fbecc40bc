"""Tests of aucgan.geometry.render's image → UV functions: ``image_to_uv`` (against an image that encodes its
own NDC coordinates) and ``texel_visibility`` (against a per-texel reference and the built-in face)."""

from __future__ import annotations

import math

import pytest
import torch

from aucgan.face_model import ProceduralFaceModel
from aucgan.face_model.uv_space import UVSpace
from aucgan.geometry.camera import ndc_to_pixels, orthographic_project
from aucgan.geometry.raster import Fragments, rasterize
from aucgan.geometry.render import image_to_uv, texel_visibility

HEIGHT, WIDTH = 24, 32  # not square: a mix-up of rows and columns shows
TEXELS = 12
FACE_IMAGE = 64
FACE_UV = 64
FACE_CAMERA = (0.105, 0.0, 0.45)  # the whole built-in head inside the image, as the synthetic world frames it


def ndc_image(batch: int, dtype=torch.float64) -> torch.Tensor:
    """``(B, 3, H, W)``: channel 0 is the NDC x of each pixel centre, channel 1 its NDC y, channel 2 one."""
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    x = (2.0 * cols.to(dtype) + 1.0) / WIDTH - 1.0
    y = 1.0 - (2.0 * rows.to(dtype) + 1.0) / HEIGHT
    return torch.stack([x, y, torch.ones_like(x)])[None].repeat(batch, 1, 1, 1)


def texels_inside(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World positions ``(2, 3, S, S)`` whose projections land at least one pixel inside the image, the
    cameras ``(2, 3)`` and the projections' NDC x, y ``(2, 2, S, S)`` written out by hand."""
    generator = torch.Generator().manual_seed(0)
    camera = torch.tensor([[1.4, 0.1, -0.2], [0.7, -0.3, 0.25]], dtype=dtype)
    margin = 2.0 / min(HEIGHT, WIDTH)
    ndc = (1.0 - margin) * (2.0 * torch.rand(2, 2, TEXELS, TEXELS, generator=generator, dtype=dtype) - 1.0)
    scale, shift = camera[:, 0, None, None, None], camera[:, 1:, None, None]
    xy = ndc / scale - shift
    z = torch.randn(2, 1, TEXELS, TEXELS, generator=generator, dtype=dtype)
    return torch.cat([xy, z], dim=1), camera, ndc


def test_image_to_uv_returns_the_projected_ndc_of_each_texel():
    positions, camera, ndc = texels_inside()
    # The hand-written projection agrees with the camera module.
    projected = orthographic_project(positions.flatten(2).transpose(1, 2), camera)[..., :2]
    torch.testing.assert_close(projected.transpose(1, 2).reshape(2, 2, TEXELS, TEXELS), ndc)
    sampled = image_to_uv(ndc_image(2), positions, camera)
    assert sampled.shape == (2, 3, TEXELS, TEXELS)
    torch.testing.assert_close(sampled[:, :2], ndc, atol=1e-12, rtol=0.0)
    torch.testing.assert_close(sampled[:, 2], torch.ones_like(sampled[:, 2]), atol=1e-12, rtol=0.0)


def test_image_to_uv_is_zero_outside_the_image():
    camera = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    positions = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    positions[0, 0] = torch.tensor([[1.5, -1.5], [0.0, 0.0]])
    positions[0, 1] = torch.tensor([[0.0, 0.0], [1.5, -1.5]])
    sampled = image_to_uv(ndc_image(1) + 2.0, positions, camera)  # every pixel nonzero
    assert (sampled == 0).all()


def test_image_to_uv_in_float32_matches_float64():
    positions, camera, ndc = texels_inside()
    sampled = image_to_uv(ndc_image(2, torch.float32), positions.float(), camera.float())
    assert sampled.dtype == torch.float32
    torch.testing.assert_close(sampled[:, :2], ndc.float(), atol=1e-5, rtol=0.0)


def test_image_to_uv_gradients_reach_the_image_and_the_positions():
    positions, camera, _ = texels_inside()
    image = ndc_image(2).requires_grad_(True)
    positions = positions.requires_grad_(True)
    sampled = image_to_uv(image, positions, camera)
    sampled[:, 0].sum().backward()
    # Bilinear weights of each texel sum to one, so channel 0's gradient sums to the number of texels.
    assert image.grad[:, 1:].abs().max() == 0
    grad_sums = image.grad[:, 0].sum(dim=(1, 2))
    torch.testing.assert_close(grad_sums, torch.full_like(grad_sums, TEXELS * TEXELS))
    # The sampled x is s * (x + tx): its derivative by the world x is the camera scale, 0 by y and z.
    scale = camera[:, 0, None, None].expand(2, TEXELS, TEXELS)
    torch.testing.assert_close(positions.grad[:, 0], scale, atol=1e-10, rtol=0.0)
    assert positions.grad[:, 1:].abs().max() < 1e-10


def test_image_to_uv_rejects_bad_positions():
    with pytest.raises(ValueError, match=r"\(2, 2, 12, 12\)"):
        image_to_uv(ndc_image(2), torch.zeros(2, 2, TEXELS, TEXELS, dtype=torch.float64), torch.ones(2, 3))


# texel_visibility ---------------------------------------------------------------------------------------


def visibility_reference(
    positions: torch.Tensor, normals: torch.Tensor, camera: torch.Tensor, fragments: Fragments, pixels: float
) -> torch.Tensor:
    """Per texel: find the pixel its point projects to (nearest centre), then ask whether that pixel is
    covered, its z-buffer depth within ``pixels`` pixels of the point's depth, and the normal towards +z."""
    batch, _, size, _ = positions.shape
    height, width = fragments.depth.shape[-2:]
    points = orthographic_project(positions.flatten(2).transpose(1, 2), camera)
    col_row = ndc_to_pixels(points, height, width)
    result = torch.zeros(batch, size * size)
    for b in range(batch):
        for t in range(size * size):
            j, i = round(float(col_row[b, t, 0])), round(float(col_row[b, t, 1]))
            if not (0 <= i < height and 0 <= j < width) or not fragments.mask[b, i, j]:
                continue
            near = abs(float(points[b, t, 2] - fragments.depth[b, i, j])) < pixels * 2.0 / width
            facing = float(normals[b, 2].flatten()[t]) > 0
            result[b, t] = float(near and facing)
    return result.reshape(batch, 1, size, size)


@pytest.fixture(scope="module")
def face_model() -> ProceduralFaceModel:
    return ProceduralFaceModel()


@pytest.fixture(scope="module")
def uv_space(face_model) -> UVSpace:
    return UVSpace(face_model, FACE_UV)


def turned_face(face_model, uv_space, yaw_degrees: float, pitch_degrees: float = 0.0):
    """The neutral face turned by ``yaw`` about the vertical axis: its UV surface, camera and fragments."""
    pose = torch.tensor([[math.radians(pitch_degrees), math.radians(yaw_degrees), 0.0, 0.0, 0.0, 0.0]])
    vertices = face_model(torch.zeros(1, face_model.n_shape), torch.zeros(1, face_model.n_expression), pose)
    vertices = vertices.vertices
    camera = torch.tensor([FACE_CAMERA])
    fragments = rasterize(orthographic_project(vertices, camera), face_model.faces, FACE_IMAGE, True)
    return uv_space.surface(vertices), camera, fragments


def halves(face_model, uv_space) -> tuple[slice, slice]:
    """Texel columns of the face's two UV halves, ordered (world x < 0, world x > 0) on the neutral face."""
    surface = turned_face(face_model, uv_space, 0.0)[0]
    first, second = slice(0, FACE_UV // 2), slice(FACE_UV // 2, FACE_UV)
    inside = uv_space.layout.mask[0, 0] > 0
    mean_x = [float(surface.positions[0, 0][:, half][inside[:, half]].mean()) for half in (first, second)]
    assert mean_x[0] * mean_x[1] < 0  # the halves lie on either side of the face's midplane
    return (first, second) if mean_x[0] < 0 else (second, first)


def visible_fraction(visibility: torch.Tensor, mask: torch.Tensor, columns: slice) -> float:
    return float(visibility[..., columns].sum() / mask[..., columns].sum())


@pytest.mark.parametrize("yaw", [0.0, 40.0])
def test_texel_visibility_matches_a_per_texel_reference(face_model, uv_space, yaw):
    surface, camera, fragments = turned_face(face_model, uv_space, yaw, pitch_degrees=10.0)
    visibility = texel_visibility(surface.positions, surface.normals, camera, fragments)
    expected = visibility_reference(surface.positions, surface.normals, camera, fragments, 4.0)
    assert visibility.shape == (1, 1, FACE_UV, FACE_UV)
    assert torch.equal(visibility, expected)
    tight = texel_visibility(surface.positions, surface.normals, camera, fragments, 0.5)
    assert torch.equal(
        tight, visibility_reference(surface.positions, surface.normals, camera, fragments, 0.5)
    )
    assert tight.sum() < visibility.sum()  # the depth tolerance matters on oblique skin


def test_frontal_face_sees_front_facing_texels_of_the_layout_symmetrically(face_model, uv_space):
    surface, camera, fragments = turned_face(face_model, uv_space, 0.0)
    visibility = texel_visibility(surface.positions, surface.normals, camera, fragments)
    mask = uv_space.layout.mask
    assert set(visibility.unique().tolist()) == {0.0, 1.0}
    assert (visibility <= mask).all()
    assert (surface.normals[:, 2:][visibility > 0] > 0).all()
    assert visibility.sum() > 0.95 * mask.sum()
    negative_x, positive_x = halves(face_model, uv_space)
    left, right = (visible_fraction(visibility, mask, half) for half in (negative_x, positive_x))
    assert abs(left - right) < 0.02


def test_texels_facing_away_or_behind_are_hidden(face_model, uv_space):
    surface, camera, fragments = turned_face(face_model, uv_space, 0.0)
    flipped = texel_visibility(surface.positions, -surface.normals, camera, fragments)
    assert (flipped == 0).all()
    surface, camera, fragments = turned_face(face_model, uv_space, 180.0)
    assert (texel_visibility(surface.positions, surface.normals, camera, fragments) == 0).all()


@pytest.mark.parametrize("yaw", [60.0, -60.0])
def test_turning_the_head_hides_the_side_that_turns_away(face_model, uv_space, yaw):
    """A positive rotation about +y carries +z towards +x, so the side at x > 0 turns to face -z (away)."""
    mask = uv_space.layout.mask
    negative_x, positive_x = halves(face_model, uv_space)
    surface, camera, fragments = turned_face(face_model, uv_space, yaw)
    visibility = texel_visibility(surface.positions, surface.normals, camera, fragments)
    away, towards = (positive_x, negative_x) if yaw > 0 else (negative_x, positive_x)
    hidden_side = visible_fraction(visibility, mask, away)
    seen_side = visible_fraction(visibility, mask, towards)
    assert hidden_side < 0.5 * seen_side
    assert seen_side > 0.7
    # Some texels still face the camera but lie behind the nose: the depth test hides them.
    facing = (surface.normals[:, 2:] > 0.1) & (mask > 0)
    assert (facing & (visibility == 0))[..., away].sum() > 10

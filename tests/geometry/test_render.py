"""Tests of aucgan.geometry.render: image-space rendering and world → UV maps, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from aucgan.face_model import ProceduralFaceModel
from aucgan.geometry.render import render, uv_layout, uv_maps
from aucgan.geometry.shading import SH_CONSTANTS
from aucgan.preview import FaceScene, render_scene

SIZE = 16  # image side; no pixel centre (odd multiples of 1/16 - 1) lies on the quad's edges below
UV_SIZE = 16
QUAD_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])
# UV = A (x, y) + t: a general affine map of the quad [-0.5, 0.5]^2 into [0.1, 0.9]^2.
UV_MATRIX = ((0.7, 0.1), (-0.1, 0.6))
UV_SHIFT = (0.5, 0.5)
CAMERAS = ((1.5, 0.1, -0.05), (1.2, -0.2, 0.15))


def quad(dtype=torch.float64, depth: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A square facing +z, corners counter-clockwise, and its UVs (an affine function of x, y)."""
    xy = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=dtype)
    vertices = torch.cat([xy, torch.full((4, 1), depth, dtype=dtype)], dim=-1)
    return vertices, affine_uv(xy)


def affine_uv(xy: torch.Tensor) -> torch.Tensor:
    return xy @ torch.tensor(UV_MATRIX, dtype=xy.dtype).T + torch.tensor(UV_SHIFT, dtype=xy.dtype)


def pixel_centres_world(camera: tuple[float, float, float], dtype=torch.float64) -> torch.Tensor:
    """World (x, y) ``(H, W, 2)`` seen at each pixel centre through ``camera``: the inverse of s * (p + t)."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    x = (2.0 * cols.to(dtype) + 1.0) / SIZE - 1.0
    y = 1.0 - (2.0 * rows.to(dtype) + 1.0) / SIZE
    s, tx, ty = camera
    return torch.stack([x / s - tx, y / s - ty], dim=-1)


def affine_albedo_coefficients(dtype=torch.float64) -> torch.Tensor:
    """``(B, 3, 3)``: per image and channel, albedo = a + b u + c v."""
    generator = torch.Generator().manual_seed(10)
    base = torch.rand(2, 3, 1, generator=generator, dtype=dtype) * 0.4 + 0.1
    slopes = torch.rand(2, 3, 2, generator=generator, dtype=dtype) * 0.5
    return torch.cat([base, slopes], dim=-1)


def affine_albedo_map(coefficients: torch.Tensor, size: int = UV_SIZE) -> torch.Tensor:
    """``(B, 3, S, S)``: the affine albedo at texel centres u = (j + 0.5) / S, v = 1 - (i + 0.5) / S."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u = (cols.to(coefficients.dtype) + 0.5) / size
    v = 1.0 - (rows.to(coefficients.dtype) + 0.5) / size
    a, b, c = coefficients[..., None, None].unbind(-3)
    return a + b * u + c * v


def shading_closed_form(normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """SH irradiance ``(..., 3)`` of unit normals ``(..., 3)`` under ``light`` ``(9, 3)``, written out."""
    x, y, z = normal[..., 0], normal[..., 1], normal[..., 2]
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    return (basis * torch.tensor(SH_CONSTANTS, dtype=normal.dtype)) @ light


def render_quads(dtype=torch.float64, **kwargs):
    vertices, uvs = quad(dtype)
    generator = torch.Generator().manual_seed(11)
    light = torch.randn(2, 9, 3, generator=generator, dtype=dtype) * 0.3
    light[:, 0] += 2.0
    coefficients = affine_albedo_coefficients(dtype)
    result = render(
        vertices.expand(2, -1, -1),
        QUAD_FACES,
        uvs,
        QUAD_FACES,
        camera=torch.tensor(CAMERAS, dtype=dtype),
        light=light,
        albedo_map=affine_albedo_map(coefficients),
        image_size=SIZE,
        **kwargs,
    )
    return result, light, coefficients


def expected_coverage() -> torch.Tensor:
    """``(B, H, W)`` bool: pixel centres strictly inside the quad (none lies on an edge here)."""
    return torch.stack([(pixel_centres_world(c).abs() < 0.5).all(-1) for c in CAMERAS])


def expected_uv() -> torch.Tensor:
    """``(B, H, W, 2)``: the quad's affine UV at every pixel centre (meaningful where covered)."""
    return torch.stack([affine_uv(pixel_centres_world(c)) for c in CAMERAS])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_quad_gives_albedo_times_closed_form_shading(dtype):
    result, light, coefficients = render_quads(dtype)
    assert result.image.shape == (2, 3, SIZE, SIZE) and result.image.dtype == dtype
    covered = expected_coverage()
    torch.testing.assert_close(result.mask[:, 0], covered.to(dtype))
    assert covered.sum() > 60  # the quads cover a good part of the image

    uv = expected_uv()
    albedo = coefficients[:, None, None, :, 0] + coefficients[:, None, None, :, 1] * uv[..., :1]
    albedo = albedo + coefficients[:, None, None, :, 2] * uv[..., 1:]  # (B, H, W, 3)
    plus_z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    shading = torch.stack([shading_closed_form(plus_z, light[b].double()) for b in range(2)])  # (B, 3)
    tol = {"atol": 1e-10, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    for b in range(2):
        inside = covered[b]
        got = result.image[b].permute(1, 2, 0)[inside].double()
        torch.testing.assert_close(got, albedo[b][inside] * shading[b], **tol)
        torch.testing.assert_close(
            result.albedo[b].permute(1, 2, 0)[inside].double(), albedo[b][inside], **tol
        )
        torch.testing.assert_close(
            result.shading[b].permute(1, 2, 0)[inside].double(),
            shading[b].expand(int(inside.sum()), 3),
            **tol,
        )
        torch.testing.assert_close(
            result.normals[b].permute(1, 2, 0)[inside].double(), plus_z.expand(int(inside.sum()), 3), **tol
        )
        # Off the quad: black image, and every other map zero.
        outside = ~inside
        for image in (result.image, result.albedo, result.shading, result.normals, result.uv):
            assert (image[b].permute(1, 2, 0)[outside] == 0).all()


def test_uv_channel_equals_the_expected_uv():
    result, _, _ = render_quads()
    covered = expected_coverage()
    uv = result.uv.permute(0, 2, 3, 1)
    assert result.uv.shape == (2, 2, SIZE, SIZE)
    torch.testing.assert_close(uv[covered], expected_uv()[covered], atol=1e-12, rtol=0)


def test_background_colour_and_image_are_composited():
    colour = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    plain, _, _ = render_quads()
    result, _, _ = render_quads(background=colour)
    mask = result.mask
    torch.testing.assert_close(result.image, plain.image + (1.0 - mask) * colour[None, :, None, None])

    generator = torch.Generator().manual_seed(12)
    picture = torch.rand(2, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    result, _, _ = render_quads(background=picture)
    torch.testing.assert_close(result.image, plain.image + (1.0 - mask) * picture)


def test_uv_normal_map_replaces_vertex_normals():
    # Unnormalised normals (u - 0.5, v - 0.5, 1): affine in (u, v), so bilinear sampling is exact.
    size = UV_SIZE
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u = (cols.double() + 0.5) / size
    v = 1.0 - (rows.double() + 0.5) / size
    normal_map = torch.stack([u - 0.5, v - 0.5, torch.ones_like(u)])[None].expand(2, -1, -1, -1)
    result, light, _ = render_quads(uv_normal_map=normal_map)

    covered = expected_coverage()
    uv = expected_uv()
    normals = torch.nn.functional.normalize(torch.cat([uv - 0.5, torch.ones_like(uv[..., :1])], -1), dim=-1)
    for b in range(2):
        inside = covered[b]
        torch.testing.assert_close(result.normals[b].permute(1, 2, 0)[inside], normals[b][inside])
        expected = shading_closed_form(normals[b][inside], light[b])
        torch.testing.assert_close(result.shading[b].permute(1, 2, 0)[inside], expected)
        albedo = result.albedo[b].permute(1, 2, 0)[inside]
        torch.testing.assert_close(result.image[b].permute(1, 2, 0)[inside], albedo * expected)


def test_nearer_surface_hides_the_farther_one():
    near, uvs = quad(depth=0.3)
    far = near.clone()
    far[:, 2] = -0.3
    far[:, :2] += 0.25
    vertices = torch.cat([near, far])[None]
    faces = torch.cat([QUAD_FACES, QUAD_FACES + 4])
    uv_all = torch.cat([uvs, uvs])
    result = render(
        vertices,
        faces,
        uv_all,
        faces,
        camera=torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64),
        light=torch.zeros(1, 9, 3, dtype=torch.float64),
        albedo_map=torch.ones(1, 3, 4, 4, dtype=torch.float64),
        image_size=SIZE,
    )
    world = pixel_centres_world((1.0, 0.0, 0.0))
    in_near = (world.abs() < 0.5).all(-1)
    in_far = ((world - 0.25).abs() < 0.5).all(-1)
    depth = result.fragments.depth[0]
    torch.testing.assert_close(depth[in_near], torch.full_like(depth[in_near], 0.3))
    only_far = in_far & ~in_near
    assert only_far.any()
    torch.testing.assert_close(depth[only_far], torch.full_like(depth[only_far], -0.3))
    assert (result.fragments.face_index[0][in_near] < 2).all()


def test_gradients_reach_vertices_light_and_albedo():
    vertices, uvs = quad()
    vertices = vertices.expand(2, -1, -1).clone().requires_grad_()
    coefficients = affine_albedo_coefficients()
    albedo_map = affine_albedo_map(coefficients).requires_grad_()
    generator = torch.Generator().manual_seed(13)
    light = (torch.randn(2, 9, 3, generator=generator, dtype=torch.float64) + 1.0).requires_grad_()
    result = render(
        vertices,
        QUAD_FACES,
        uvs,
        QUAD_FACES,
        torch.tensor(CAMERAS, dtype=torch.float64),
        light,
        albedo_map,
        SIZE,
    )
    weights = torch.rand(result.image.shape, generator=generator, dtype=torch.float64)
    (result.image * weights).sum().backward()
    for name, tensor in (("vertices", vertices), ("light", light), ("albedo", albedo_map)):
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


def test_render_gradcheck_with_respect_to_vertices():
    vertices, uvs = quad()
    generator = torch.Generator().manual_seed(14)
    vertices = (vertices + 0.05 * torch.rand(4, 3, generator=generator, dtype=torch.float64))[None]
    albedo_map = affine_albedo_map(affine_albedo_coefficients())[:1]
    light = torch.randn(1, 9, 3, generator=generator, dtype=torch.float64)
    camera = torch.tensor(CAMERAS[:1], dtype=torch.float64)

    def image(v: torch.Tensor) -> torch.Tensor:
        return render(v, QUAD_FACES, uvs, QUAD_FACES, camera, light, albedo_map, 8).image

    # Small steps never move a pixel centre across an edge, so the image is smooth in the vertices.
    assert torch.autograd.gradcheck(image, (vertices.requires_grad_(),), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "quoted"),
    [
        ({"uvs": torch.zeros(4, 3)}, "(4, 3)"),
        ({"uv_faces": QUAD_FACES[:1]}, "(1, 3)"),
        ({"vertices": torch.zeros(4, 3)}, "(4, 3)"),
        ({"camera": torch.zeros(2, 3)}, "(2, 3)"),
        ({"light": torch.zeros(1, 27)}, "(1, 27)"),
        ({"albedo_map": torch.ones(2, 3, 4, 4)}, "(2, 3, 4, 4)"),
        ({"albedo_map": torch.ones(1, 4, 4)}, "(1, 4, 4)"),
        ({"uv_normal_map": torch.ones(1, 2, 4, 4)}, "(1, 2, 4, 4)"),
        ({"background": torch.ones(4)}, "(4,)"),
        ({"background": torch.ones(1, 3, 4, 4)}, "(1, 3, 4, 4)"),
    ],
)
def test_render_shape_errors_quote_the_shape(change, quoted):
    vertices, uvs = quad(torch.float32)
    args = {
        "vertices": vertices[None],
        "faces": QUAD_FACES,
        "uvs": uvs,
        "uv_faces": QUAD_FACES,
        "camera": torch.tensor(CAMERAS[:1]),
        "light": torch.zeros(1, 9, 3),
        "albedo_map": torch.ones(1, 3, 4, 4),
        "image_size": 8,
    }
    render(**args)
    with pytest.raises(ValueError) as error:
        render(**{**args, **change})
    assert quoted in str(error.value)


def grid_mesh(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """An n x n vertex grid over [-1, 1]^2 (x, y) and its counter-clockwise triangles."""
    line = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    y, x = torch.meshgrid(line, line, indexing="ij")
    xy = torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)
    index = torch.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return xy, faces


def test_uv_maps_invert_an_affine_uv_layout():
    xy, faces = grid_mesh()
    # UV = M (x, y) + t, a rotated and sheared parallelogram inside the unit square.
    angle = 0.3
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
    )
    matrix = rotation @ torch.tensor([[0.3, 0.05], [0.0, 0.25]], dtype=torch.float64)
    shift = torch.tensor([0.5, 0.48], dtype=torch.float64)
    uvs = xy @ matrix.T + shift
    assert (uvs > 0).all() and (uvs < 1).all()
    heights = torch.tensor([[0.2, -0.4, 0.1], [1.0, 0.3, -0.7]], dtype=torch.float64)  # z = h0 + h1 x + h2 y
    positions = torch.stack(
        [torch.cat([xy, (h[0] + xy @ h[1:])[:, None]], dim=-1) for h in heights]
    )  # (2, V, 3)

    size = 32
    layout = uv_layout(uvs, faces, faces, size)
    maps = uv_maps(positions, layout)
    assert maps.shape == (2, 3, size, size)

    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    texel_uv = torch.stack([(cols.double() + 0.5) / size, 1.0 - (rows.double() + 0.5) / size], dim=-1)
    texel_xy = (texel_uv - shift) @ torch.linalg.inv(matrix).T
    distance_inside = 1.0 - texel_xy.abs().amax(-1)  # > 0 inside the parallelogram
    inside, outside = distance_inside > 1e-9, distance_inside < -1e-9
    assert inside.sum() > 0.1 * size * size and outside.sum() > 0.1 * size * size
    assert (layout.mask[0, 0][inside] == 1).all() and (layout.mask[0, 0][outside] == 0).all()
    for b in range(2):
        expected_z = heights[b, 0] + texel_xy @ heights[b, 1:]
        expected = torch.cat([texel_xy, expected_z[..., None]], dim=-1)
        torch.testing.assert_close(maps[b].permute(1, 2, 0)[inside], expected[inside], atol=1e-12, rtol=0)
        assert (maps[b].permute(1, 2, 0)[outside] == 0).all()


def test_uv_maps_with_separate_uv_indices_and_float32():
    # UV triangles index their own list (one UV per corner); vertex triangles index the shared vertices.
    xy, faces = grid_mesh(3)
    uvs_per_corner = (xy[faces.reshape(-1)] * 0.4 + 0.5).float()
    uv_faces = torch.arange(faces.numel()).reshape(-1, 3)
    layout = uv_layout(uvs_per_corner, uv_faces, faces, 16)
    shared = uv_layout(xy.float() * 0.4 + 0.5, faces, faces, 16)
    attributes = torch.randn(1, xy.shape[0], 4, generator=torch.Generator().manual_seed(15))
    torch.testing.assert_close(uv_maps(attributes, layout), uv_maps(attributes, shared))
    assert uv_maps(attributes, layout).dtype == torch.float32


def test_uv_maps_shape_error_quotes_the_shape():
    xy, faces = grid_mesh(2)
    layout = uv_layout(xy * 0.4 + 0.5, faces, faces, 8)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        uv_maps(torch.zeros(4, 3), layout)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        uv_layout(torch.zeros(4, 3), faces, faces, 8)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        uv_layout(xy, faces[:1], faces, 8)


@pytest.fixture(scope="module")
def face_model() -> ProceduralFaceModel:
    return ProceduralFaceModel()


def test_builtin_face_renders_a_sensible_picture(face_model):
    size = 64
    scene = FaceScene(
        shape=torch.zeros(2, face_model.n_shape),
        expression=torch.zeros(2, face_model.n_expression),
        pose=torch.zeros(2, 6),
        light_direction=torch.tensor([[0.3, 0.4, 1.0], [-0.5, 0.0, 1.0]]),
    )
    result = render_scene(face_model, scene, image_size=size, uv_size=64)
    rendering = result.rendering
    assert rendering.image.shape == (2, 3, size, size)
    assert torch.isfinite(rendering.image).all()
    assert rendering.image.min() >= 0.0 and rendering.image.max() <= 1.05
    coverage = rendering.mask.mean(dim=(1, 2, 3))
    assert ((coverage > 0.3) & (coverage < 0.85)).all(), coverage
    # The face is roughly centred and does not touch the left or right border.
    mask = rendering.mask[0, 0] > 0
    rows, cols = mask.nonzero(as_tuple=True)
    assert abs(cols.double().mean() / size - 0.5) < 0.1 and abs(rows.double().mean() / size - 0.5) < 0.15
    assert not mask[:, 0].any() and not mask[:, -1].any()
    # Shading is lit from the given side: the lit half is brighter.
    left, right = rendering.shading[1, :, :, : size // 2], rendering.shading[1, :, :, size // 2 :]
    assert left.sum() > right.sum()


def test_reused_fragments_shade_exactly_like_a_fresh_rasterisation():
    first, _, _ = render_quads()
    size = UV_SIZE
    normal_map = torch.nn.functional.normalize(torch.rand(2, 3, size, size, dtype=torch.float64) + 0.5, dim=1)
    background = torch.rand(2, 3, SIZE, SIZE, dtype=torch.float64)
    fresh, _, _ = render_quads(uv_normal_map=normal_map, background=background)
    reused, _, _ = render_quads(uv_normal_map=normal_map, background=background, fragments=first.fragments)
    for name in ("image", "mask", "shading", "normals", "albedo"):
        torch.testing.assert_close(getattr(reused, name), getattr(fresh, name), rtol=0, atol=0)
    vertices, uvs = quad()
    with pytest.raises(ValueError, match=r"fragments are \(2, .*rasterise again"):
        render(
            vertices[None], QUAD_FACES, uvs, QUAD_FACES, torch.tensor(CAMERAS[:1], dtype=torch.float64),
            torch.zeros(1, 9, 3, dtype=torch.float64), affine_albedo_map(affine_albedo_coefficients())[:1],
            SIZE, fragments=first.fragments,
        )  # fmt: skip

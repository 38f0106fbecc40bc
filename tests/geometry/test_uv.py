import math
import re

import numpy as np
import pytest
import torch

from aucgan.geometry.mesh import face_normals
from aucgan.geometry.uv import (
    angle_degrees,
    dense_mesh,
    detail_frame,
    displace,
    displacement_to_normals,
    grid_stencils,
    sample_uv_map,
    surface_normals,
)

# A wrinkle as the detail stage sees it: a UV map of 256² texels over 25.6 cm of surface (1 mm per texel,
# about the face region of a 256² FLAME map), forehead-like lines 12 mm apart and 0.5 mm deep in
# amplitude (a slope of up to 15°). Lengths in cm, the built-in face's unit; scale 0.01 gives the same
# in metres (FLAME).
MAP_SIZE = 256
PLANE_SIZE = 25.6
WRINKLE_AMPLITUDE = 0.05
WRINKLE_WAVELENGTH = 1.2
WRINKLE_PHASE = 0.3
MAX_ERROR_DEG = 1.0


def _texel_uvs(height: int, width: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) u and v of the texel centres."""
    u = (torch.arange(width, dtype=dtype) + 0.5) / width
    v = 1.0 - (torch.arange(height, dtype=dtype) + 0.5) / height
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    return grid_u, grid_v


def _plane(size: int, extent: float, dtype=torch.float32) -> torch.Tensor:
    """(1, 3, size, size) positions (u, v, 0) * extent."""
    grid_u, grid_v = _texel_uvs(size, size, dtype)
    return torch.stack([grid_u * extent, grid_v * extent, torch.zeros_like(grid_u)])[None]


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, H, W) angle in degrees between (B, 3, H, W) unit vector fields."""
    cosine = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))


def _rotation(axis: tuple[float, float, float], angle: float) -> torch.Tensor:
    k = torch.nn.functional.normalize(torch.tensor(axis, dtype=torch.float64), dim=0) * angle
    skew = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    return torch.linalg.matrix_exp(skew)


def _sinusoid_case(scale: float, along: str):
    """Plane, its normals, a sinusoidal displacement along u or v and the analytic detail normals."""
    positions = _plane(MAP_SIZE, PLANE_SIZE * scale)
    normals = torch.zeros_like(positions)
    normals[:, 2] = 1.0
    amplitude = WRINKLE_AMPLITUDE * scale
    wavenumber = 2.0 * math.pi / (WRINKLE_WAVELENGTH * scale)
    coordinate = positions[:, 0:1] if along == "u" else positions[:, 1:2]
    displacement = amplitude * torch.sin(wavenumber * coordinate + WRINKLE_PHASE)
    slope = -amplitude * wavenumber * torch.cos(wavenumber * coordinate + WRINKLE_PHASE)
    zero = torch.zeros_like(slope)
    gradient = [slope, zero] if along == "u" else [zero, slope]
    expected = torch.nn.functional.normalize(torch.cat([*gradient, torch.ones_like(slope)], dim=1), dim=1)
    return positions, normals, displacement, expected


@pytest.mark.parametrize("scale", [1.0, 0.01], ids=["cm", "m"])
@pytest.mark.parametrize("along", ["u", "v"])
def test_sinusoid_detail_normals_match_analytic_normals(scale, along):
    positions, normals, displacement, expected = _sinusoid_case(scale, along)
    detail = displacement_to_normals(positions, normals, displacement)
    assert detail.shape == (1, 3, MAP_SIZE, MAP_SIZE)
    assert _angle_deg(detail, expected).max() < MAX_ERROR_DEG
    assert _angle_deg(normals, expected).max() > 10.0


def test_sinusoid_on_tilted_plane_matches_rotated_analytic_normals():
    positions, normals, displacement, expected = _sinusoid_case(1.0, "u")
    rotation = _rotation((1.0, 2.0, -0.5), 0.9).float()
    offset = torch.tensor([3.0, -7.0, 11.0]).view(1, 3, 1, 1)

    def rotate(field: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", rotation, field)

    detail = displacement_to_normals(rotate(positions) + offset, rotate(normals), displacement)
    assert _angle_deg(detail, rotate(expected)).max() < MAX_ERROR_DEG


def _sphere_patch(size: int, radius: float, dtype=torch.float64) -> torch.Tensor:
    """(1, 3, size, size) front-facing sphere patch: x grows with u, y with v; outward normal +z mid-patch."""
    grid_u, grid_v = _texel_uvs(size, size, dtype)
    azimuth, elevation = (grid_u - 0.5) * 1.2, (grid_v - 0.5) * 1.2
    points = torch.stack(
        [
            torch.sin(azimuth) * torch.cos(elevation),
            torch.sin(elevation),
            torch.cos(azimuth) * torch.cos(elevation),
        ]
    )
    return (radius * points)[None]


def _disk_mask(size: int) -> torch.Tensor:
    grid_u, grid_v = _texel_uvs(size, size)
    return (((grid_u - 0.5) ** 2 + (grid_v - 0.45) ** 2) < 0.4**2)[None, None]


@pytest.mark.parametrize("with_mask", [False, True])
def test_zero_displacement_gives_back_reference_normals_on_sphere(with_mask):
    radius = 10.0
    positions = _sphere_patch(64, radius, torch.float32)
    normals = positions / radius
    mask = _disk_mask(64) if with_mask else None
    detail = displacement_to_normals(positions, normals, torch.zeros_like(positions[:, :1]), mask=mask)
    inside = torch.ones(64, 64, dtype=torch.bool) if mask is None else mask[0, 0]
    assert _angle_deg(detail, normals)[0][inside].max() < 0.5
    if mask is not None:
        assert torch.equal(detail[0][:, ~inside], normals[0][:, ~inside])


def test_default_orientation_follows_uv_convention():
    plane = _plane(8, 1.0)
    expected = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand_as(plane)
    assert torch.allclose(surface_normals(plane), expected, atol=1e-6)

    radius = 5.0
    sphere = _sphere_patch(32, radius)
    assert _angle_deg(surface_normals(sphere), sphere / radius).max() < 0.5
    mirrored = sphere.flip(-1)
    assert _angle_deg(surface_normals(mirrored), -mirrored / radius).max() < 0.5
    assert (
        _angle_deg(surface_normals(mirrored, reference_normals=mirrored / radius), mirrored / radius).max()
        < 0.5
    )


def _reference_surface_normals(
    positions: np.ndarray, mask: np.ndarray, reference: np.ndarray | None
) -> np.ndarray:
    """Plain per-texel loops over one (3, H, W) map and (H, W) mask, following the documented stencils."""
    _, height, width = positions.shape

    def inside(i: int, j: int) -> bool:
        return 0 <= i < height and 0 <= j < width and bool(mask[i, j])

    def derivative(i: int, j: int, di: int, dj: int) -> np.ndarray | None:
        def at(k: int) -> np.ndarray:
            return positions[:, i + k * di, j + k * dj]

        def ok(k: int) -> bool:
            return inside(i + k * di, j + k * dj)

        if ok(-1) and ok(1):
            return (at(1) - at(-1)) / 2
        if ok(1) and ok(2):
            return (-3 * at(0) + 4 * at(1) - at(2)) / 2
        if ok(-1) and ok(-2):
            return (3 * at(0) - 4 * at(-1) + at(-2)) / 2
        if ok(1):
            return at(1) - at(0)
        if ok(-1):
            return at(0) - at(-1)
        return None

    result = np.zeros_like(positions) if reference is None else reference.copy()
    for i in range(height):
        for j in range(width):
            if not mask[i, j]:
                continue
            along_u = derivative(i, j, 0, 1)
            along_rows = derivative(i, j, 1, 0)
            if along_u is None or along_rows is None:
                continue
            normal = np.cross(along_u, -along_rows)
            normal = normal / np.linalg.norm(normal)
            if reference is not None and normal @ reference[:, i, j] < 0:
                normal = -normal
            result[:, i, j] = normal
    return result


@pytest.mark.parametrize("with_reference", [False, True])
def test_surface_normals_match_plain_reference_on_irregular_mask(with_reference):
    generator = torch.Generator().manual_seed(0)
    batch, height, width = 2, 13, 11
    grid_u, grid_v = _texel_uvs(height, width, torch.float64)
    positions = torch.stack([grid_u, grid_v, 0.05 * torch.sin(7 * grid_u) * grid_v]).expand(batch, 3, -1, -1)
    positions = positions + 0.01 * torch.randn(
        batch, 3, height, width, generator=generator, dtype=torch.float64
    )
    mask = torch.rand(batch, 1, height, width, generator=generator) < 0.75
    mask[0, 0, 5, 5] = True
    mask[0, 0, 4:7, 4] = False
    mask[0, 0, 4:7, 6] = False
    reference = None
    if with_reference:
        reference = torch.nn.functional.normalize(
            torch.randn(batch, 3, height, width, generator=generator, dtype=torch.float64), dim=1
        )
    result = surface_normals(positions, mask=mask, reference_normals=reference)
    for b in range(batch):
        expected = _reference_surface_normals(
            positions[b].numpy(), mask[b, 0].numpy(), None if reference is None else reference[b].numpy()
        )
        np.testing.assert_allclose(result[b].numpy(), expected, atol=1e-12)


def test_texels_outside_mask_hold_reference_or_zero():
    positions = _plane(6, 1.0)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    mask[..., 2, 3] = False
    reference = torch.nn.functional.normalize(torch.randn(1, 3, 6, 6), dim=1)
    assert torch.equal(surface_normals(positions, mask)[0, :, 2, 3], torch.zeros(3))
    assert torch.equal(surface_normals(positions, mask, reference)[0, :, 2, 3], reference[0, :, 2, 3])


def test_single_mask_is_shared_by_the_batch():
    generator = torch.Generator().manual_seed(6)
    positions = _sphere_patch(10, 2.0).expand(3, -1, -1, -1)
    positions = positions + 0.01 * torch.randn(3, 3, 10, 10, generator=generator, dtype=torch.float64)
    mask = torch.rand(1, 1, 10, 10, generator=generator) < 0.8
    shared = surface_normals(positions, mask=mask)
    assert torch.equal(shared, surface_normals(positions, mask=mask.expand(3, -1, -1, -1)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(7)
    positions = _sphere_patch(16, 3.0, torch.float32)
    normals = positions / 3.0
    displacement = 0.01 * torch.randn(1, 1, 16, 16, generator=generator)
    mask = _disk_mask(16)
    cpu = displacement_to_normals(positions, normals, displacement, mask)
    cuda = displacement_to_normals(positions.cuda(), normals.cuda(), displacement.cuda(), mask.cuda())
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5)
    cpu_mesh = dense_mesh(positions[0], mask[0, 0])
    for on_cpu, on_cuda in zip(cpu_mesh, dense_mesh(positions[0].cuda(), mask[0, 0].cuda()), strict=True):
        assert torch.allclose(on_cuda.cpu(), on_cpu)
    uvs = torch.rand(1, 9, 2, generator=generator)
    assert torch.allclose(
        sample_uv_map(positions.cuda(), uvs.cuda()).cpu(), sample_uv_map(positions, uvs), atol=1e-6
    )


def test_displace_moves_along_normals():
    generator = torch.Generator().manual_seed(1)
    positions = torch.randn(2, 3, 4, 5, generator=generator)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5, generator=generator), dim=1)
    displacement = torch.randn(2, 1, 4, 5, generator=generator)
    moved = displace(positions, normals, displacement)
    assert torch.allclose(((moved - positions) * normals).sum(dim=1, keepdim=True), displacement, atol=1e-6)
    assert torch.allclose(
        torch.linalg.cross(moved - positions, normals, dim=1), torch.zeros_like(moved), atol=1e-6
    )


@pytest.mark.parametrize("with_mask", [False, True])
def test_gradcheck_displacement_to_normals(with_mask):
    generator = torch.Generator().manual_seed(2)
    height, width = 6, 7
    grid_u, grid_v = _texel_uvs(height, width, torch.float64)
    positions = torch.stack([grid_u, grid_v, torch.zeros_like(grid_u)])[None]
    positions = positions + 0.02 * torch.randn(1, 3, height, width, generator=generator, dtype=torch.float64)
    normals = torch.nn.functional.normalize(
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
        + 0.1 * torch.randn(1, 3, height, width, generator=generator, dtype=torch.float64),
        dim=1,
    )
    displacement = 0.01 * torch.randn(1, 1, height, width, generator=generator, dtype=torch.float64)
    mask = None
    if with_mask:
        mask = torch.ones(1, 1, height, width, dtype=torch.bool)
        mask[..., 0, :2] = False
        mask[..., 3, 3] = False
    positions.requires_grad_(True)
    normals.requires_grad_(True)
    displacement.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, n, d: displacement_to_normals(p, n, d, mask=mask), (positions, normals, displacement)
    )


def test_sample_uv_map_at_texel_centres_returns_texels():
    generator = torch.Generator().manual_seed(3)
    for dtype, tolerance in [(torch.float64, 1e-12), (torch.float32, 1e-6)]:
        uv_map = torch.randn(2, 4, 5, 7, generator=generator, dtype=dtype)
        grid_u, grid_v = _texel_uvs(5, 7, dtype)
        uvs = torch.stack([grid_u.reshape(-1), grid_v.reshape(-1)], dim=-1).expand(2, -1, -1)
        sampled = sample_uv_map(uv_map, uvs)
        assert sampled.shape == (2, 35, 4)
        expected = uv_map.flatten(2).transpose(1, 2)
        assert torch.allclose(sampled, expected, atol=tolerance, rtol=0)


def test_sample_uv_map_orientation_interpolation_and_border():
    uv_map = torch.tensor([[[[0.0, 1.0], [10.0, 11.0]]]], dtype=torch.float64)
    uvs = torch.tensor(
        [[[0.25, 0.75], [0.5, 0.75], [0.25, 0.5], [0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64
    )
    sampled = sample_uv_map(uv_map, uvs)[0, :, 0]
    assert torch.allclose(sampled, torch.tensor([0.0, 0.5, 5.0, 0.0, 11.0], dtype=torch.float64))


def test_gradcheck_sample_uv_map():
    generator = torch.Generator().manual_seed(4)
    uv_map = torch.randn(1, 2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    uvs = (0.1 + 0.8 * torch.rand(1, 6, 2, generator=generator, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(sample_uv_map, (uv_map, uvs))


def _canonical(triangles: np.ndarray) -> set[tuple[int, int, int]]:
    """Triangles as a set, each rotated so its smallest index comes first (winding preserved)."""
    result = set()
    for triangle in triangles.tolist():
        k = triangle.index(min(triangle))
        result.add(tuple(triangle[k:] + triangle[:k]))
    return result


def _reference_dense_faces(mask: np.ndarray) -> set[tuple[int, int, int]]:
    """Per block, the masked corners taken counter-clockwise in (u, v); 4 -> two triangles, 3 -> one."""
    index = -np.ones(mask.shape, dtype=np.int64)
    index[mask] = np.arange(mask.sum())
    faces = []
    for i in range(mask.shape[0] - 1):
        for j in range(mask.shape[1] - 1):
            corners = [(i + 1, j), (i + 1, j + 1), (i, j + 1), (i, j)]
            kept = [int(index[c]) for c in corners if mask[c]]
            if len(kept) == 4:
                faces += [[kept[0], kept[1], kept[2]], [kept[0], kept[2], kept[3]]]
            elif len(kept) == 3:
                faces.append(kept)
    return _canonical(np.array(faces, dtype=np.int64).reshape(-1, 3))


def _signed_uv_areas(faces: torch.Tensor, uvs: torch.Tensor) -> torch.Tensor:
    a, b, c = uvs[faces[:, 0]], uvs[faces[:, 1]], uvs[faces[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def test_dense_mesh_full_mask():
    height, width = 5, 7
    positions = torch.randn(3, height, width)
    vertices, faces, uvs = dense_mesh(positions, torch.ones(height, width, dtype=torch.bool))
    assert vertices.shape == (height * width, 3)
    assert faces.shape == (2 * (height - 1) * (width - 1), 3)
    assert faces.dtype == torch.int64
    assert torch.equal(vertices, positions.permute(1, 2, 0).reshape(-1, 3))
    grid_u, grid_v = _texel_uvs(height, width)
    assert torch.allclose(uvs, torch.stack([grid_u.reshape(-1), grid_v.reshape(-1)], dim=-1))
    assert (_signed_uv_areas(faces, uvs) > 0).all()
    assert _canonical(faces.numpy()) == _reference_dense_faces(np.ones((height, width), dtype=bool))


def test_dense_mesh_respects_holes_and_matches_reference():
    generator = torch.Generator().manual_seed(5)
    height, width = 12, 10
    mask = torch.rand(height, width, generator=generator) < 0.7
    positions = torch.randn(3, height, width, generator=generator)
    vertices, faces, uvs = dense_mesh(positions, mask)
    assert vertices.shape == (int(mask.sum()), 3)
    assert torch.equal(vertices, positions.permute(1, 2, 0)[mask])
    grid_u, grid_v = _texel_uvs(height, width)
    assert torch.equal(uvs, torch.stack([grid_u[mask], grid_v[mask]], dim=-1))
    assert faces.min() >= 0 and faces.max() < vertices.shape[0]
    assert (_signed_uv_areas(faces, uvs) > 0).all()
    assert _canonical(faces.numpy()) == _reference_dense_faces(mask.numpy())


def test_dense_mesh_of_plane_faces_up_and_agrees_with_surface_normals():
    plane = _plane(9, 2.0)[0]
    mask = torch.ones(9, 9, dtype=torch.bool)
    mask[3:5, 2:6] = False
    vertices, faces, _ = dense_mesh(plane, mask)
    normals = face_normals(vertices[None], faces)[0]
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, 1.0]).expand_as(normals), atol=1e-6)

    sphere = _sphere_patch(16, 3.0, torch.float32)
    vertices, faces, _ = dense_mesh(sphere[0], torch.ones(16, 16, dtype=torch.bool))
    centroids = vertices[faces].mean(dim=1)
    assert ((face_normals(vertices[None], faces)[0] * centroids).sum(dim=-1) > 0).all()


def test_shape_errors_quote_shapes():
    positions = torch.zeros(2, 3, 8, 8)
    normals = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 8)")):
        displace(positions[:, :, 0], normals, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=re.escape("(2, 3, 8, 8)")):
        displace(positions, normals, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=re.escape("(2, 1, 8, 9)")):
        displacement_to_normals(positions, normals, torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match=re.escape("(3, 1, 8, 8)")):
        surface_normals(positions, mask=torch.ones(3, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        surface_normals(positions, mask=torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match=re.escape("(1, 3, 8, 8)")):
        surface_normals(positions, reference_normals=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=re.escape("(2, 5, 3)")):
        sample_uv_map(torch.zeros(2, 4, 8, 8), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=re.escape("(4, 8, 8)")):
        sample_uv_map(torch.zeros(4, 8, 8), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match=re.escape("(1, 3, 8, 8)")):
        dense_mesh(torch.zeros(1, 3, 8, 8), torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("(8, 7)")):
        dense_mesh(torch.zeros(3, 8, 8), torch.ones(8, 7, dtype=torch.bool))


def test_detail_normals_of_a_faceted_surface_follow_its_smooth_normals():
    # A coarse, faceted position map (piecewise linear between 8x8 nodes of a sphere) with the smooth
    # sphere normals: zero displacement must give the smooth normals exactly (no facets), and a local
    # bump must change the normals only where the bump's slope is.
    size = 64
    nodes = torch.linspace(-0.6, 0.6, 8, dtype=torch.float64)
    y, x = torch.meshgrid(nodes.flip(0), nodes, indexing="ij")
    coarse = torch.stack([x, y, (1.0 - x**2 - y**2).sqrt()])[None]
    positions = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bilinear", align_corners=True
    )
    normals = positions / positions.norm(dim=1, keepdim=True)
    flat = displacement_to_normals(positions, normals, torch.zeros(1, 1, size, size, dtype=torch.float64))
    torch.testing.assert_close(flat, normals, atol=1e-12, rtol=0)
    u = torch.arange(size, dtype=torch.float64)
    bump = torch.exp(-((u[None, :] - 32) ** 2 + (u[:, None] - 32) ** 2) / 18.0)[None, None] * 0.01
    detailed = displacement_to_normals(positions, normals, bump)
    changed = ((detailed - normals).norm(dim=1) > 1e-6)[0]
    assert changed[32, 36] and changed[28, 32]
    assert not changed[:16].any() and not changed[:, 50:].any()


def test_precomputed_stencils_give_the_same_normals():
    positions = _sphere_patch(32, 10.0, torch.float64)
    normals = positions / 10.0
    mask = _disk_mask(32)
    bump = 0.05 * torch.rand(1, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stencils = grid_stencils(mask, torch.float64)
    expected = displacement_to_normals(positions, normals, bump, mask=mask)
    assert torch.equal(displacement_to_normals(positions, normals, bump, stencils=stencils), expected)
    with pytest.raises(ValueError, match="stencils are for"):
        displacement_to_normals(
            positions[..., :16, :16], normals[..., :16, :16], bump[..., :16, :16], stencils=stencils
        )


def test_angle_degrees_is_accurate_at_small_angles_where_acos_is_not():
    generator = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, 8, 8, generator=generator), dim=1)
    rounded = normals.half().float()
    exact = angle_degrees(normals, rounded)
    assert exact.max() < 0.05  # float16 rounding is ~1e-3 relative
    through_acos = torch.rad2deg(torch.acos((normals * rounded).sum(1, keepdim=True).clamp(-1, 1)))
    assert through_acos.max() > 5 * exact.max()  # the floor the metric used to have
    tilt = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([math.cos(0.3), math.sin(0.3), 0.0])
    a, b = (v.reshape(1, 3, 1, 1) for v in tilt)
    assert float(angle_degrees(a, b)) == pytest.approx(math.degrees(0.3), rel=1e-5)
    assert float(angle_degrees(a, -a)) == pytest.approx(180.0)
    with pytest.raises(ValueError, match=r"\(1, 2, 1, 1\)"):
        angle_degrees(a[:, :2], b)


def test_a_detail_frame_serves_many_displacements_as_fresh_calls_do():
    positions = _sphere_patch(24, 5.0, dtype=torch.float32)
    normals = surface_normals(positions)
    mask = torch.ones(1, 1, 24, 24, dtype=torch.bool)
    mask[..., :3, :5] = False
    frame = detail_frame(positions, normals, mask)
    for seed in range(3):
        displacement = 0.05 * torch.randn(1, 1, 24, 24, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(
            frame.normals(displacement), displacement_to_normals(positions, normals, displacement, mask)
        )
    with pytest.raises(ValueError, match="uv_displacement"):
        frame.normals(torch.zeros(1, 1, 12, 12))

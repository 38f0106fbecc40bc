"""Tests of the triangle rasteriser: an independent ray-casting oracle (trimesh), the brute-force
reference, watertightness and tie rules, gradients, UV-space rasterisation and input checks."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import aucgan
from aucgan.geometry import raster
from aucgan.geometry.raster import Fragments, interpolate, rasterize, rasterize_reference, rasterize_uv

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("rtree")

FACE_MESH = Path(aucgan.__file__).parent / "face_model" / "data" / "canonical_face_mesh.npz"


def triangle_soup(generator: torch.Generator, batch: int, count: int, spread: float = 0.35) -> tuple:
    """``count`` independent random triangles per batch element with random depths, so they overlap and
    interpenetrate. Returns vertices ``(batch, 3 * count, 3)`` and faces ``(count, 3)``."""
    centres = torch.rand(batch, count, 1, 3, generator=generator, dtype=torch.float64) * 2.2 - 1.1
    corners = centres + spread * torch.randn(batch, count, 3, 3, generator=generator, dtype=torch.float64)
    faces = torch.arange(3 * count).view(count, 3)
    return corners.reshape(batch, 3 * count, 3), faces


def grid_faces(rows: int, cols: int) -> torch.Tensor:
    """Two triangles per cell of a ``(rows + 1) x (cols + 1)`` vertex grid, counter-clockwise with y up
    when vertex (r, c) sits at x growing with c and y growing with r."""
    index = torch.arange((rows + 1) * (cols + 1)).view(rows + 1, cols + 1)
    a, b = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1)
    c, d = index[1:, :-1].reshape(-1), index[1:, 1:].reshape(-1)
    return torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)])


def folded_grid(generator: torch.Generator, batch: int, cells: int = 24) -> tuple:
    """A randomly displaced grid, turned by a random yaw and pitch of up to 80 degrees each so that its
    bumps occlude one another. Returns vertices ``(batch, V, 3)`` and faces."""
    ticks = torch.linspace(-1.0, 1.0, cells + 1, dtype=torch.float64)
    y, x = torch.meshgrid(ticks, ticks, indexing="ij")
    base = torch.stack([x, y, torch.zeros_like(x)], -1).reshape(-1, 3)
    meshes = []
    for _ in range(batch):
        bumps = 0.25 * torch.randn(base.shape[0], generator=generator, dtype=torch.float64)
        points = base + torch.stack([torch.zeros_like(bumps), torch.zeros_like(bumps), bumps], -1)
        yaw, pitch = (torch.rand(2, generator=generator, dtype=torch.float64) * 2.8 - 1.4).tolist()
        turn_y = torch.tensor(
            [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]],
            dtype=torch.float64,
        )
        turn_x = torch.tensor(
            [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]],
            dtype=torch.float64,
        )
        meshes.append(points @ (turn_x @ turn_y).T * 0.9)
    return torch.stack(meshes), grid_faces(cells, cells)


def face_mesh() -> tuple:
    """The canonical face mesh scaled from cm to NDC: vertices ``(1, 468, 3)``, faces ``(898, 3)``, uvs."""
    data = np.load(FACE_MESH)
    vertices = torch.from_numpy(data["vertices"].astype(np.float64)) / 10.0
    faces = torch.from_numpy(data["faces"].astype(np.int64))
    return vertices[None], faces, torch.from_numpy(data["uvs"].astype(np.float64))


def ray_cast(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> tuple:
    """Oracle: one ray per pixel centre along -z from in front of the mesh, with trimesh.

    Returns face index ``(H, W)`` (nearest hit, ties to the larger face index, -1 on a miss),
    barycentric weights ``(H, W, 3)`` of the hit, and the number of triangles each ray crosses ``(H, W)``.
    """
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    x = (2 * cols.ravel() + 1) / width - 1
    y = 1 - (2 * rows.ravel() + 1) / height
    origins = np.stack([x, y, np.full_like(x, mesh.vertices[:, 2].max() + 1.0)], -1)
    directions = np.tile([0.0, 0.0, -1.0], (origins.shape[0], 1))
    intersector = trimesh.ray.ray_triangle.RayMeshIntersector(mesh)
    tri, ray, location = intersector.intersects_id(
        origins, directions, multiple_hits=True, return_locations=True
    )
    # Nearest hit first (largest z), then the larger face index; keep the first row per ray.
    order = np.lexsort((-tri, -location[:, 2], ray))
    tri, ray, location = tri[order], ray[order], location[order]
    first = np.ones(ray.size, dtype=bool)
    first[1:] = ray[1:] != ray[:-1]
    face = np.full(height * width, -1)
    face[ray[first]] = tri[first]
    barycentric = np.zeros((height * width, 3))
    barycentric[ray[first]] = trimesh.triangles.points_to_barycentric(
        mesh.triangles[tri[first]], location[first]
    )
    layers = np.bincount(ray, minlength=height * width)
    return (
        torch.from_numpy(face).view(height, width),
        torch.from_numpy(barycentric).view(height, width, 3),
        torch.from_numpy(layers).view(height, width),
    )


def assert_agrees_with_oracle(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> None:
    """Coverage and face index agree on >= 99.5 % of pixels; barycentrics to 1e-4 where faces agree."""
    fragments = rasterize(vertices.float(), faces, (height, width))
    occluded = 0
    for b in range(vertices.shape[0]):
        face, barycentric, layers = ray_cast(vertices[b], faces, height, width)
        covered = face >= 0
        assert covered.float().mean() > 0.3
        occluded += int((layers >= 2).sum())
        assert (fragments.mask[b] != covered).float().mean() <= 0.005
        both = fragments.mask[b] & covered
        same = both & (fragments.face_index[b] == face)
        assert same.sum() >= 0.995 * both.sum()
        error = (fragments.barycentric[b][same].double() - barycentric[same]).abs().max()
        assert error <= 1e-4
    assert occluded > 0.05 * fragments.mask.numel()  # there was occlusion to resolve


def test_random_soups_agree_with_ray_casting():
    vertices, faces = triangle_soup(torch.Generator().manual_seed(1), batch=2, count=400, spread=0.2)
    assert_agrees_with_oracle(vertices, faces, 64, 80)


def test_folded_grids_agree_with_ray_casting():
    vertices, faces = folded_grid(torch.Generator().manual_seed(2), batch=2)
    assert_agrees_with_oracle(vertices, faces, 72, 64)


def test_face_mesh_agrees_with_ray_casting():
    vertices, faces, _ = face_mesh()
    turned = vertices.clone()
    # Also a view from the side, where the nose occludes the far cheek.
    angle = 1.2
    turned[..., 0] = vertices[..., 0] * math.cos(angle) + vertices[..., 2] * math.sin(angle)
    turned[..., 2] = -vertices[..., 0] * math.sin(angle) + vertices[..., 2] * math.cos(angle)
    assert_agrees_with_oracle(torch.cat([vertices, turned]) + torch.tensor([0.0, 0.05, 0.0]), faces, 96, 96)


def assert_same_fragments(fast: Fragments, reference: Fragments) -> None:
    assert torch.equal(fast.face_index, reference.face_index)
    assert torch.equal(fast.mask, reference.mask)
    torch.testing.assert_close(fast.barycentric, reference.barycentric, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast.depth, reference.depth, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cull_backfaces", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_reference(cull_backfaces, dtype):
    generator = torch.Generator().manual_seed(3)
    soup, soup_faces = triangle_soup(generator, batch=3, count=200)
    grid, grid_faces_ = folded_grid(generator, batch=3, cells=12)
    for vertices, faces in [(soup, soup_faces), (grid, grid_faces_)]:
        vertices = vertices.to(dtype)
        fast = rasterize(vertices, faces, (37, 52), cull_backfaces=cull_backfaces)
        assert fast.mask.any() and fast.barycentric.dtype == dtype
        assert_same_fragments(
            fast, rasterize_reference(vertices, faces, (37, 52), cull_backfaces=cull_backfaces)
        )


def assert_fast_paths_match_reference(
    vertices: torch.Tensor, faces: torch.Tensor, size, cull_backfaces: bool = False
) -> None:
    """Both ways out of the fast path agree with the reference: without gradients (the weights of the
    visible candidates, scattered as they are found) and with them (recomputed from the per-face
    table)."""
    expected = rasterize_reference(vertices, faces, size, cull_backfaces=cull_backfaces)
    plain = rasterize(vertices, faces, size, cull_backfaces=cull_backfaces)
    tracked = rasterize(vertices.clone().requires_grad_(True), faces, size, cull_backfaces=cull_backfaces)
    assert tracked.barycentric.requires_grad and not plain.barycentric.requires_grad
    assert_same_fragments(plain, expected)
    # The same operations on the same numbers: bit for bit equal.
    assert torch.equal(tracked.face_index, plain.face_index)
    assert torch.equal(tracked.barycentric.detach(), plain.barycentric)
    assert torch.equal(tracked.depth.detach(), plain.depth)


def posed_face_meshes(generator: torch.Generator, batch: int) -> tuple:
    """The canonical face mesh turned by random yaw (up to 70 degrees, so the nose hides part of a
    cheek), pitch and roll, scaled and shifted: vertices ``(batch, 468, 3)`` and faces ``(898, 3)``."""
    vertices, faces, _ = face_mesh()
    meshes = []
    for _ in range(batch):
        yaw, pitch, roll = (
            (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1)
            * torch.tensor([1.2, 0.5, 0.4], dtype=torch.float64)
        ).tolist()
        cy, sy, cp, sp, cr, sr = (f(a) for a in (yaw, pitch, roll) for f in (math.cos, math.sin))
        turn = (
            torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
            @ torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
            @ torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
        )
        scale = 0.8 + 0.5 * float(torch.rand(1, generator=generator))
        shift = 0.15 * (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1)
        meshes.append(scale * vertices[0] @ turn.T + shift)
    return torch.stack(meshes), faces


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cull_backfaces", [False, True])
def test_face_mesh_at_several_poses_matches_reference(batch, cull_backfaces, monkeypatch):
    vertices, faces = posed_face_meshes(torch.Generator().manual_seed(10 + batch), batch)
    calls = []
    recompute = raster._fragments_from_table
    monkeypatch.setattr(raster, "_fragments_from_table", lambda *args: calls.append(1) or recompute(*args))
    for dtype in (torch.float32, torch.float64):
        posed = vertices.to(dtype)
        assert_fast_paths_match_reference(posed, faces, (128, 112), cull_backfaces=cull_backfaces)
        assert rasterize(posed, faces, (128, 112), cull_backfaces=cull_backfaces).mask.float().mean() > 0.25
    # Weights were recomputed from the per-face table for the two calls with gradients only.
    assert len(calls) == 2


def test_fast_path_matches_reference_in_small_chunks(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    vertices, faces = triangle_soup(generator, batch=2, count=150, spread=0.5)
    # Add a quad bigger than the image, behind everything, and one in front of everything.
    quad = torch.tensor([[-1.5, -1.5, -9.0], [1.5, -1.5, -9.0], [1.5, 1.5, -9.0], [-1.5, 1.5, -9.0]])
    near = torch.tensor([[-0.2, -0.3, 9.0], [0.4, -0.3, 9.0], [0.4, 0.5, 9.0], [-0.2, 0.5, 9.0]])
    extra = torch.cat([quad, near]).to(vertices).expand(2, -1, -1)
    faces = torch.cat([faces, torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]]) + vertices.shape[1]])
    vertices = torch.cat([vertices, extra], dim=1)
    expected = rasterize_reference(vertices, faces, 31)
    assert expected.mask.all()
    assert_same_fragments(rasterize(vertices, faces, 31), expected)
    # Many groups of faces and chunks of candidates, each merged into the earlier ones; with a limit of
    # one, one face per group and one row of its box per chunk.
    for limit in (97, 1):
        monkeypatch.setattr(raster, "_MAX_PAIRS_PER_CHUNK", limit)
        assert_same_fragments(rasterize(vertices, faces, 31), expected)
        tracked = rasterize(vertices.clone().requires_grad_(True), faces, 31)
        detached = dataclasses.replace(
            tracked, barycentric=tracked.barycentric.detach(), depth=tracked.depth.detach()
        )
        assert_same_fragments(detached, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slivers_and_pixel_aligned_triangles_match_reference(dtype):
    generator = torch.Generator().manual_seed(11)
    # Corners on pixel centres (edges along rows and columns, and through many centres up to the
    # rounding of NDC values like 1 / 30), and long thin slivers in every direction.
    size, aligned_count, sliver_count = 30, 300, 120
    rows, cols = torch.randint(-2, size + 2, (2, 2, aligned_count, 3), generator=generator)
    # Leave out exactly collinear corners: rounding can give such a triangle a tiny area, and then its
    # edge functions accept pixel centres on its line far outside it, which the reference tests and
    # the fast path, looking only inside bounding boxes, does not.
    twice_area = (cols[..., 1] - cols[..., 0]) * (rows[..., 2] - rows[..., 0]) - (
        rows[..., 1] - rows[..., 0]
    ) * (cols[..., 2] - cols[..., 0])
    rows, cols = (torch.where(twice_area[..., None] == 0, 0, index).to(dtype) for index in (rows, cols))
    aligned = torch.stack([(2 * cols + 1) / size - 1, 1 - (2 * rows + 1) / size], -1)
    start = torch.rand(2, sliver_count, 1, 2, generator=generator, dtype=dtype) * 2.4 - 1.2
    direction = torch.randn(2, sliver_count, 1, 2, generator=generator, dtype=dtype)
    across = 0.02 * torch.randn(2, sliver_count, 1, 2, generator=generator, dtype=dtype)
    slivers = torch.cat([start, start + direction, start + direction * 0.5 + across], dim=2)
    corners = torch.cat([aligned, slivers], dim=1)
    depth = torch.rand(2, corners.shape[1], 3, 1, generator=generator, dtype=dtype)
    vertices = torch.cat([corners, depth], -1).reshape(2, -1, 3)
    faces = torch.arange(vertices.shape[1]).view(-1, 3)
    for cull_backfaces in (False, True):
        assert_fast_paths_match_reference(vertices, faces, size, cull_backfaces=cull_backfaces)


def test_closed_grid_has_no_cracks_and_ties_go_to_the_larger_face_index():
    generator = torch.Generator().manual_seed(5)
    cells = 8
    ticks = torch.linspace(-1.2, 1.2, cells + 1)
    y, x = torch.meshgrid(ticks, ticks, indexing="ij")
    jitter = 0.08 * torch.randn(2, cells + 1, cells + 1, generator=generator)
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    depth = torch.randn(cells + 1, cells + 1, generator=generator)
    vertices = torch.stack([x + jitter[0], y + jitter[1], depth], -1).reshape(1, -1, 3)
    faces = grid_faces(cells, cells)
    fragments = rasterize(vertices, faces, 40)
    assert fragments.mask.all()
    assert_same_fragments(fragments, rasterize_reference(vertices, faces, 40))

    # A flat quad whose diagonal passes exactly through pixel centres (0, 0), (1, 1), ... of a 4x4 image.
    quad = torch.tensor([[[-1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [-1.0, -1.0, 0.0]]])
    split = torch.tensor([[0, 3, 2], [0, 2, 1]])
    fragments = rasterize(quad, split, 4)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    expected = torch.where(cols >= rows, 1, 0)  # on the diagonal both cover the centre at equal depth
    assert torch.equal(fragments.face_index[0], expected)
    assert torch.equal(rasterize(quad, split.flip(0), 4).face_index[0], torch.where(cols > rows, 0, 1))


def test_edges_through_a_pixel_centre_leave_no_crack():
    # Pairs of triangles sharing an edge that passes through pixel centre (row 3, col 4) up to rounding:
    # one of the two, or both, must cover it whatever the rounding of the shared edge.
    generator = torch.Generator().manual_seed(9)
    count = 256
    centre = torch.tensor([(2 * 4 + 1) / 8 - 1, 1 - (2 * 3 + 1) / 8])
    angle = torch.rand(count, generator=generator) * 2 * math.pi
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    normal = torch.stack([-direction[:, 1], direction[:, 0]], -1)
    reach = 0.1 + torch.rand(count, 2, 1, generator=generator)
    corners = [
        centre + reach[:, 0] * direction,
        centre - reach[:, 1] * direction,
        centre + 0.4 * normal,
        centre - 0.4 * normal,
    ]
    vertices = torch.cat([torch.stack(corners, 1), torch.rand(count, 4, 1, generator=generator)], -1)
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
    for rasterizer in (rasterize, rasterize_reference):
        assert rasterizer(vertices, faces, 8).mask[:, 3, 4].all()


def test_nearest_triangle_wins():
    far = [[-1.0, -1.0, 0.0], [3.0, -1.0, 0.0], [-1.0, 3.0, 0.0]]
    near = [[-1.0, -1.0, 0.5], [3.0, -1.0, 0.5], [-1.0, 3.0, 0.5]]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for layers, nearest in [(near + far, 0), (far + near, 1)]:
        fragments = rasterize(torch.tensor([layers]), faces, 8)
        assert torch.equal(fragments.face_index, torch.full((1, 8, 8), nearest))
        torch.testing.assert_close(fragments.depth, torch.full((1, 8, 8), 0.5))


def test_degenerate_triangles_cover_nothing():
    vertices = torch.tensor(
        [
            [
                [-1.0, -1.0, 0.0],
                [1.0, 1.0, 0.0],
                [0.0, 0.0, 0.0],
                [-1.0, 1.0, 0.0],
                [-0.5, -0.5, 0.0],
                [1.0, -1.0, 0.0],
            ]
        ]
    )
    # Collinear corners along the image diagonal, a repeated corner, and one proper triangle.
    faces = torch.tensor([[0, 1, 2], [3, 3, 1], [0, 3, 5], [2, 0, 4]])
    for rasterizer in (rasterize, rasterize_reference):
        fragments = rasterizer(vertices, faces, 16)
        assert set(fragments.face_index.unique().tolist()) == {-1, 2}


def test_backface_culling_skips_clockwise_triangles():
    ccw = torch.tensor([[[-0.9, -0.9, 0.0], [0.9, -0.9, 0.0], [0.0, 0.9, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    clockwise = faces.flip(1)
    for rasterizer in (rasterize, rasterize_reference):
        assert rasterizer(ccw, faces, 12, cull_backfaces=True).mask.any()
        assert not rasterizer(ccw, clockwise, 12, cull_backfaces=True).mask.any()
        assert torch.equal(rasterizer(ccw, clockwise, 12).mask, rasterizer(ccw, faces, 12).mask)


def test_barycentric_weights_interpolate_the_pixel_centre():
    vertices, faces = folded_grid(torch.Generator().manual_seed(6), batch=2, cells=10)
    height, width = 20, 28
    fragments = rasterize(vertices, faces, (height, width))
    ndc = interpolate(vertices[..., :2], faces, fragments)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = torch.stack([(2 * cols + 1) / width - 1, 1 - (2 * rows + 1) / height], -1).to(ndc)
    assert fragments.mask.float().mean() > 0.3
    torch.testing.assert_close(ndc[fragments.mask], centres.expand_as(ndc)[fragments.mask])
    assert (fragments.barycentric >= 0).all()
    torch.testing.assert_close(fragments.barycentric.sum(-1), fragments.mask.to(ndc.dtype))
    assert not ndc[~fragments.mask].any() and not fragments.depth[~fragments.mask].any()
    assert (fragments.face_index[~fragments.mask] == -1).all()


def well_inside_case() -> tuple:
    """Two float64 triangles on a 6x6 image whose edges stay clear of every pixel centre."""
    vertices = torch.tensor(
        [[[-0.98, -0.99, 0.1], [0.78, -0.88, 0.3], [-0.89, 0.81, -0.2], [0.74, 0.61, 0.6]]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    centres = (torch.arange(6, dtype=torch.float64) * 2 + 1) / 6 - 1
    y, x = torch.meshgrid(-centres, centres, indexing="ij")
    points = torch.stack([x, y], -1).reshape(-1, 2)
    for corners in vertices[0, faces, :2]:
        # Barycentric coordinates of every centre w.r.t. the triangle, inside or not.
        basis = torch.stack([corners[0] - corners[2], corners[1] - corners[2]], -1)
        first_two = torch.linalg.solve(basis, (points - corners[2]).T).T
        weights = torch.cat([first_two, 1 - first_two.sum(-1, keepdim=True)], -1)
        assert weights.abs().min() > 0.01  # >= 0.05 pixel from every edge
    assert rasterize(vertices, faces, 6).mask.sum() > 20
    return vertices, faces


def test_interpolate_gradcheck_attributes():
    vertices, faces = well_inside_case()
    fragments = rasterize(vertices, faces, 6)
    attributes = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, fragments), (attributes,))
    shared = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, fragments), (shared,))


def test_interpolate_gradcheck_vertices_through_barycentrics():
    vertices, faces = well_inside_case()
    attributes = torch.randn(4, 3, dtype=torch.float64)
    vertices.requires_grad_(True)

    def render(v: torch.Tensor) -> tuple:
        fragments = rasterize(v, faces, 6)
        return interpolate(attributes, faces, fragments), fragments.depth

    assert torch.autograd.gradcheck(render, (vertices,))
    reference = rasterize_reference(vertices, faces, 6)
    (grad,) = torch.autograd.grad(render(vertices)[0].square().sum(), vertices)
    (expected,) = torch.autograd.grad(interpolate(attributes, faces, reference).square().sum(), vertices)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_interpolate_broadcasts_attributes_and_takes_other_faces():
    vertices, faces = folded_grid(torch.Generator().manual_seed(7), batch=2, cells=6)
    fragments = rasterize(vertices, faces, 16)
    attributes = torch.randn(vertices.shape[1], 5, dtype=torch.float64)
    shared = interpolate(attributes, faces, fragments)
    assert shared.shape == (2, 16, 16, 5)
    torch.testing.assert_close(shared, interpolate(attributes.expand(2, -1, -1), faces, fragments))
    # Per-corner attributes through other faces in the same order (as for UV seams).
    corner_values = attributes[faces].reshape(-1, 5)
    corner_faces = torch.arange(corner_values.shape[0]).view(-1, 3)
    torch.testing.assert_close(interpolate(corner_values, corner_faces, fragments), shared)


@pytest.mark.parametrize("size", [(48, 48), (40, 56)])
def test_rasterize_uv_reproduces_texel_centres(size):
    height, width = size
    _, faces, uvs = face_mesh()
    # The face mesh layout, and a jittered grid that tiles the whole square.
    cells = 7
    ticks = torch.linspace(0.0, 1.0, cells + 1, dtype=torch.float64)
    v, u = torch.meshgrid(ticks, ticks, indexing="ij")
    jitter = 0.03 * torch.randn(
        2, cells + 1, cells + 1, generator=torch.Generator().manual_seed(8), dtype=v.dtype
    )
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    grid_uvs = torch.stack([u + jitter[0], v + jitter[1]], -1).reshape(-1, 2)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    texel_centres = torch.stack([(cols + 0.5) / width, 1 - (rows + 0.5) / height], -1).to(uvs)
    for layout, layout_faces in [(uvs, faces), (grid_uvs, grid_faces(cells, cells))]:
        fragments = rasterize_uv(layout, layout_faces, size)
        assert fragments.face_index.shape == (1, height, width) and fragments.mask.float().mean() > 0.4
        assert not fragments.depth.any()
        coordinates = interpolate(layout, layout_faces, fragments)[0]
        torch.testing.assert_close(coordinates[fragments.mask[0]], texel_centres[fragments.mask[0]])
    assert fragments.mask.all()


def test_rasterize_uv_overlaps_go_to_the_larger_face_index():
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 0.1], [0.9, 0.1], [0.1, 0.9]])
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    fragments = rasterize_uv(uvs, faces, 16)
    assert set(fragments.face_index.unique().tolist()) == {-1, 1}
    assert set(rasterize_uv(uvs, faces.flip(0), 16).face_index.unique().tolist()) == {-1, 0, 1}


def test_empty_and_offscreen_meshes():
    vertices = torch.tensor([[[2.0, 2.0, 0.0], [3.0, 2.0, 0.0], [2.0, 3.0, 0.0]]])
    for faces in (torch.tensor([[0, 1, 2]]), torch.zeros(0, 3, dtype=torch.long)):
        fragments = rasterize(vertices, faces, (5, 7))
        assert fragments.face_index.shape == (1, 5, 7) and not fragments.mask.any()
        assert fragments.image_size == (5, 7) and fragments.batch_size == 1
    nan = torch.full((1, 3, 3), math.nan)
    assert not rasterize(nan, torch.tensor([[0, 1, 2]]), 4).mask.any()
    for vertices in (torch.zeros(0, 3, 3), torch.zeros(0, 3, 3, requires_grad=True)):
        fragments = rasterize(vertices, torch.tensor([[0, 1, 2]]), (5, 7))
        assert fragments.face_index.shape == (0, 5, 7) and fragments.barycentric.shape == (0, 5, 7, 3)


def test_fragments_are_frozen():
    fragments = rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fragments.mask = None


@pytest.mark.parametrize(
    ("vertices", "faces", "size", "quoted"),
    [
        (torch.zeros(5, 3), torch.tensor([[0, 1, 2]]), 8, "(5, 3)"),
        (torch.zeros(1, 5, 2), torch.tensor([[0, 1, 2]]), 8, "(1, 5, 2)"),
        (torch.zeros(1, 5, 3), torch.tensor([[0, 1, 2, 3]]), 8, "(1, 4)"),
        (torch.zeros(1, 5, 3), torch.tensor([0, 1, 2]), 8, "(3,)"),
        (torch.zeros(1, 5, 3), torch.tensor([[0, 1, 5]]), 8, "[0, 5]"),
        (torch.zeros(1, 5, 3), torch.tensor([[0.0, 1.0, 2.0]]), 8, "float32"),
        (torch.zeros(1, 5, 3), torch.tensor([[0, 1, 2]]), (8, 0), "(8, 0)"),
        (torch.zeros(1, 5, 3, dtype=torch.long), torch.tensor([[0, 1, 2]]), 8, "int64"),
    ],
)
def test_rasterize_rejects_bad_shapes(vertices, faces, size, quoted):
    for rasterizer in (rasterize, rasterize_reference):
        with pytest.raises(
            ValueError, match=quoted.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            rasterizer(vertices, faces, size)


def test_interpolate_and_rasterize_uv_reject_bad_shapes():
    fragments = rasterize(torch.zeros(2, 3, 3), torch.tensor([[0, 1, 2]]), 4)
    with pytest.raises(ValueError, match=r"\(3, 3, 2\)"):
        interpolate(torch.zeros(3, 3, 2), torch.tensor([[0, 1, 2]]), fragments)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        interpolate(torch.zeros(4), torch.tensor([[0, 1, 2]]), fragments)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        interpolate(torch.zeros(3, 2), torch.tensor([[0, 1]]), fragments)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        rasterize_uv(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 8)

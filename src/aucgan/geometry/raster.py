"""Triangle rasterisation in image space and UV space, in pure PyTorch.

The rasteriser answers, for every pixel centre, which triangle is visible there and where inside it the
centre lies. Shading is not its business: :func:`interpolate` turns the answer (a :class:`Fragments`)
into per-pixel attributes, and a shader does the rest.

Conventions (see :mod:`aucgan.geometry`): vertices are in NDC, x right and y up with [-1, 1] spanning
the image, a larger z is nearer the viewer; pixel (i, j) has its centre at ``x = (2j + 1) / W - 1``,
``y = 1 - (2i + 1) / H``.

Rules, shared by the fast path and the reference:

* a pixel centre is covered by a triangle when it lies inside it or on its boundary, where "on the
  boundary" is decided by edge functions that give exactly opposite values for the two triangles that
  share an edge, so that a closed mesh has no cracks;
* among the triangles covering a pixel centre the one with the largest interpolated z wins, and among
  equal depths the one with the largest face index;
* triangles of zero projected area, or with a non-finite vertex, cover nothing;
* with ``cull_backfaces`` triangles whose projected winding is clockwise (counter-clockwise is the front
  in NDC with y up) cover nothing.

The fast path enumerates, per triangle, the pixel centres inside its screen bounding box, keeps those
the edge functions accept, resolves visibility with two scatter-max passes (depth, then face index
among the nearest), and finally recomputes the barycentric weights of the winning triangle with
differentiable operations on the input vertices, so gradients reach the vertex positions.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aucgan.geometry.camera import ndc_to_pixels, uv_to_ndc

# Candidate (triangle, pixel) pairs evaluated at once by the fast path; bounds its working memory to a
# few hundred MB whatever the triangle sizes.
_MAX_PAIRS_PER_CHUNK = 1 << 20
# Pixel tests that cost about as much as the fixed overhead of one more pass over a group of faces.
_PIXEL_TESTS_PER_PASS = 1 << 14
# Faces evaluated against every pixel at once by the reference implementation.
_REFERENCE_FACES_PER_CHUNK = 32

# Rows of the per-face edge table built by _edge_table, each holding one value per edge (per corner for
# depth).
_SLOPE_ROW, _SLOPE_COL, _ORIGIN_COL, _ORIGIN_ROW, _DEPTH = range(5)


@dataclass(frozen=True)
class Fragments:
    """What the rasteriser sees at each pixel centre; the contract between rasteriser and shader.

    Attributes:
        face_index: ``(B, H, W)`` int64, index into the rasterised faces, ``-1`` where no triangle covers
            the pixel centre.
        barycentric: ``(B, H, W, 3)`` float, weights of the visible face's three vertices at the pixel
            centre (non-negative, summing to one), zero on background; differentiable with respect to
            the vertex positions given to the rasteriser.
        depth: ``(B, H, W)`` float, NDC z of the visible surface (larger is nearer), zero on background;
            differentiable like ``barycentric``.
        mask: ``(B, H, W)`` bool, pixels whose centre some triangle covers.
    """

    face_index: Tensor
    barycentric: Tensor
    depth: Tensor
    mask: Tensor

    @property
    def batch_size(self) -> int:
        """Number of images B."""
        return self.face_index.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the rasterised images."""
        return (self.face_index.shape[1], self.face_index.shape[2])


def rasterize(
    vertices: Tensor, faces: Tensor, image_size: tuple[int, int] | int, cull_backfaces: bool = False
) -> Fragments:
    """Rasterise a batch of triangle meshes sharing one topology.

    Args:
        vertices: ``(B, V, 3)`` positions in NDC (x right, y up, [-1, 1] spans the image; larger z is
            nearer), float32 or float64.
        faces: ``(F, 3)`` integer vertex indices in [0, V), shared by the batch.
        image_size: ``(H, W)`` in pixels, or one int for a square image.
        cull_backfaces: skip triangles whose projected winding is clockwise.

    Returns:
        :class:`Fragments` of shape ``(B, H, W)``; its barycentric weights and depth carry gradients to
        ``vertices``.

    Raises:
        ValueError: on malformed shapes, dtypes, sizes or out-of-range face indices.
    """
    height, width = _check_mesh(vertices, faces, image_size)
    faces = faces.long()
    face_index = _visible_faces(vertices.detach(), faces, height, width, cull_backfaces)
    return _fragments_for(vertices, faces, face_index)


def rasterize_reference(
    vertices: Tensor, faces: Tensor, image_size: tuple[int, int] | int, cull_backfaces: bool = False
) -> Fragments:
    """Brute-force rasteriser with the same contract as :func:`rasterize`, for testing the fast path.

    Every face is tested against every pixel centre (a few faces at a time); a pixel keeps a face
    when the face covers it at a depth not below the best one so far, faces being visited in index
    order. Slow: ``O(B * F * H * W)``.

    Args and returns: as :func:`rasterize`.
    """
    height, width = _check_mesh(vertices, faces, image_size)
    faces = faces.long()
    batch, num_faces = vertices.shape[0], faces.shape[0]
    device = vertices.device
    pixel = torch.arange(height * width, device=device)
    col = (pixel % width).to(vertices.dtype)
    row = (pixel // width).to(vertices.dtype)
    face_index = torch.full((batch, height * width), -1, dtype=torch.long, device=device)
    with torch.no_grad():
        table = _edge_table(_screen_corners(vertices.detach()[:, faces], height, width), cull_backfaces)
        for b in range(batch):
            best_depth = torch.full_like(col, -torch.inf)
            for first in range(0, num_faces, _REFERENCE_FACES_PER_CHUNK):
                ids = torch.arange(first, min(first + _REFERENCE_FACES_PER_CHUNK, num_faces), device=device)
                chunk = table[:, :, b, ids, None]
                edges = _edge_values(chunk, col, row)
                covered = _is_covered(edges)
                *_, depth = _barycentric_and_depth(edges, tuple(chunk[_DEPTH]))
                depth = torch.where(covered, depth, -torch.inf)
                # The nearest covering face of the chunk, the last one among equals...
                chunk_depth = depth.amax(dim=0)
                is_nearest = covered & (depth == chunk_depth)
                chunk_face = torch.where(is_nearest, ids[:, None], -1).amax(dim=0)
                # ...replaces the earlier faces' winner unless that one is strictly nearer.
                take = (chunk_face >= 0) & (chunk_depth >= best_depth)
                best_depth = torch.where(take, chunk_depth, best_depth)
                face_index[b] = torch.where(take, chunk_face, face_index[b])
    return _fragments_for(vertices, faces, face_index.view(batch, height, width))


def rasterize_uv(uvs: Tensor, faces: Tensor, size: int | tuple[int, int]) -> Fragments:
    """Rasterise UV triangles over a UV map.

    Texel (i, j) of an ``(H, W)`` map has its centre at ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``
    (row 0 has the largest v). Where UV triangles overlap the one with the largest face index wins.
    Interpolating per-vertex attributes through faces in the same order (e.g. mesh vertex positions
    through the vertex-index triangles) with :func:`interpolate` gives attribute maps in UV space.

    Args:
        uvs: ``(U, 2)`` texture coordinates in the unit square, v up.
        faces: ``(F, 3)`` integer indices into ``uvs``.
        size: ``(H, W)`` of the map, or one int for a square map.

    Returns:
        :class:`Fragments` with batch size 1 over the map; depth is zero everywhere.
    """
    if uvs.ndim != 2 or uvs.shape[-1] != 2:
        raise ValueError(f"uvs must be (U, 2), got {tuple(uvs.shape)}")
    return rasterize(uv_to_ndc(uvs)[None], faces, size)


def interpolate(attributes: Tensor, faces: Tensor, fragments: Fragments) -> Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentric weights.

    Args:
        attributes: ``(B, V, C)`` per-vertex values, or ``(V, C)`` shared by the batch.
        faces: ``(F, 3)`` integer indices into the V attributes. May differ from the faces that were
            rasterised as long as face ``f`` of both lists is the same triangle (same count F), e.g.
            UV-index triangles rasterised, vertex-index triangles interpolated.
        fragments: output of a rasteriser, ``(B, H, W)``.

    Returns:
        ``(B, H, W, C)`` interpolated attributes, zero on background; differentiable with respect to
        ``attributes`` and ``fragments.barycentric``.

    Raises:
        ValueError: on malformed shapes or indices out of range.
    """
    batch, height, width = fragments.face_index.shape
    shared = attributes.ndim == 2
    if not shared and (attributes.ndim != 3 or attributes.shape[0] != batch):
        raise ValueError(f"attributes must be ({batch}, V, C) or (V, C), got {tuple(attributes.shape)}")
    _check_faces(faces, attributes.shape[-2])
    if fragments.barycentric.shape != (batch, height, width, 3):
        raise ValueError(
            f"fragments.barycentric must be ({batch}, {height}, {width}, 3), "
            f"got {tuple(fragments.barycentric.shape)}"
        )
    if fragments.face_index.numel() and int(fragments.face_index.max()) >= faces.shape[0]:
        largest = int(fragments.face_index.max())
        raise ValueError(f"fragments index faces up to {largest}, but faces is {tuple(faces.shape)}")
    num_pixels = height * width
    flat = (fragments.face_index.reshape(-1) >= 0).nonzero().squeeze(1)
    corner_ids = faces.long().index_select(0, fragments.face_index.reshape(-1).index_select(0, flat))
    if shared:
        corner_values = attributes.index_select(0, corner_ids.view(-1))
    else:
        image = torch.div(flat, num_pixels, rounding_mode="floor")
        corner_ids = corner_ids + (image * attributes.shape[1])[:, None]
        corner_values = attributes.reshape(-1, attributes.shape[-1]).index_select(0, corner_ids.view(-1))
    weights = fragments.barycentric.reshape(-1, 3).index_select(0, flat)
    values = (weights[:, :, None] * corner_values.view(-1, 3, attributes.shape[-1])).sum(dim=1)
    out = values.new_zeros(batch * num_pixels, attributes.shape[-1]).index_put((flat,), values)
    return out.view(batch, height, width, -1)


def _check_mesh(vertices: Tensor, faces: Tensor, image_size: tuple[int, int] | int) -> tuple[int, int]:
    """Validate rasteriser inputs; return ``(H, W)``."""
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise ValueError(f"vertices must be floating point, got {vertices.dtype}")
    _check_faces(faces, vertices.shape[1])
    try:
        size = (operator.index(image_size),) * 2 if not isinstance(image_size, tuple | list) else image_size
        height, width = (operator.index(side) for side in size)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0 or isinstance(image_size, bool):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return height, width


def _check_faces(faces: Tensor, num_vertices: int) -> None:
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer indices, got {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ValueError(
            f"faces index vertices in [{int(faces.min())}, {int(faces.max())}], "
            f"outside [0, {num_vertices}) for {num_vertices} vertices"
        )


def _screen_corners(corners: Tensor, height: int, width: int) -> Tensor:
    """NDC points ``(..., 3)`` -> (column, row, depth) ``(..., 3)``, with pixel centres at integers."""
    return torch.cat([ndc_to_pixels(corners, height, width), corners[..., 2:]], dim=-1)


def _edge_table(corners: Tensor, cull_backfaces: bool) -> Tensor:
    """Per-face constants of the oriented edge functions.

    Edge k joins corners k+1 and k+2 (mod 3). Its edge function at pixel centre (c, r) is
    ``slope_row * (r - origin_row) - slope_col * (c - origin_col)``, where the origin is the edge's
    lexicographically smaller endpoint and the slopes are the vector to the other endpoint times the
    face's orientation sign, negated when the edge runs the other way in the face. So two faces that
    share an edge compute the very same products and get exactly opposite values (no cracks, no double
    coverage beyond the edge itself), and the three values are non-negative inside the triangle whatever
    its winding. Faces that must cover nothing (zero area, non-finite, culled) get zero slopes.

    Args:
        corners: ``(..., 3, 3)`` (column, row, depth) of each face's corners.
        cull_backfaces: zero the slopes of faces that are clockwise in NDC (counter-clockwise in pixel
            coordinates, whose row axis points down).

    Returns:
        ``(5, 3, ...)``: rows slope_row, slope_col, origin_col, origin_row (one column per edge) and depth
        (one column per corner).
    """
    col, row, depth = corners.unbind(-1)
    start_col, start_row = col.roll(-1, -1), row.roll(-1, -1)
    end_col, end_row = col.roll(-2, -1), row.roll(-2, -1)
    swap = (start_col > end_col) | ((start_col == end_col) & (start_row > end_row))
    origin_col = torch.where(swap, end_col, start_col)
    origin_row = torch.where(swap, end_row, start_row)
    delta_col = torch.where(swap, start_col, end_col) - origin_col
    delta_row = torch.where(swap, start_row, end_row) - origin_row
    with torch.no_grad():
        area = (col[..., 1] - col[..., 0]) * (row[..., 2] - row[..., 0]) - (row[..., 1] - row[..., 0]) * (
            col[..., 2] - col[..., 0]
        )
        keep = torch.isfinite(corners).flatten(-2).all(-1) & (area != 0)
        if cull_backfaces:
            keep &= area < 0
        orientation = torch.where(keep, torch.sign(area), 0.0)[..., None]
        sign = torch.where(swap, -orientation, orientation)
    table = torch.stack([sign * delta_col, sign * delta_row, origin_col, origin_row, depth])
    return table.movedim(-1, 1)


def _edge_values(table: Tensor, col: Tensor, row: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Oriented edge functions of ``table`` ``(5, 3, ...)`` at pixel centres broadcastable with ``...``."""
    return tuple(
        table[_SLOPE_ROW, k] * (row - table[_ORIGIN_ROW, k])
        - table[_SLOPE_COL, k] * (col - table[_ORIGIN_COL, k])
        for k in range(3)
    )


def _barycentric_and_depth(
    edges: tuple[Tensor, Tensor, Tensor], corner_depth: tuple[Tensor, Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normalise oriented edge values to barycentric weights and interpolate the corner depths."""
    total = edges[0] + edges[1] + edges[2]
    weights = [edge / total for edge in edges]
    depth = weights[0] * corner_depth[0] + weights[1] * corner_depth[1] + weights[2] * corner_depth[2]
    return weights[0], weights[1], weights[2], depth


def _is_covered(edges: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Inside-or-on-the-boundary test from the three oriented edge values."""
    return (edges[0] >= 0) & (edges[1] >= 0) & (edges[2] >= 0) & (edges[0] + edges[1] + edges[2] > 0)


def _block_sizes(limit: int) -> Tensor:
    """Block side lengths 1, 2, 3, 4, 6, 8, 12, ... below ``limit``, then ``limit``."""
    sizes = {1, 2, 3}
    side = 4
    while side < limit:
        sizes.update((side, side + side // 2))
        side *= 2
    return torch.tensor(sorted({s for s in sizes if s < limit} | {limit}), dtype=torch.long)


def _plan_blocks(
    rows: np.ndarray, cols: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, list[int], list[int]]:
    """Merge block shapes greedily while a merge costs fewer pixel tests than a pass of its own.

    Args:
        rows, cols: ``(G,)`` block shape of each class of faces.
        counts: ``(G,)`` faces per class.

    Returns:
        ``(G,)`` merged group of each class (numbered 0..K-1), and the K group shapes (rows, cols).
    """
    rows, cols, counts = rows.astype(np.float64), cols.astype(np.float64), counts.astype(np.float64)
    label = np.arange(rows.size)
    alive = np.ones(rows.size, dtype=bool)
    area = rows * cols
    merged_area = np.maximum.outer(rows, rows) * np.maximum.outer(cols, cols)
    cost = counts[:, None] * (merged_area - area[:, None]) + counts[None, :] * (merged_area - area[None, :])
    np.fill_diagonal(cost, np.inf)
    while True:
        keep, drop = np.unravel_index(np.argmin(cost), cost.shape)
        if not cost[keep, drop] < _PIXEL_TESTS_PER_PASS:
            break
        rows[keep], cols[keep] = max(rows[keep], rows[drop]), max(cols[keep], cols[drop])
        area[keep] = rows[keep] * cols[keep]
        counts[keep] += counts[drop]
        alive[drop] = False
        label[label == drop] = keep
        merged_area = np.maximum(rows[keep], rows) * np.maximum(cols[keep], cols)
        row_cost = counts[keep] * (merged_area - area[keep]) + counts * (merged_area - area)
        row_cost[~alive] = np.inf
        row_cost[keep] = np.inf
        cost[keep, :] = row_cost
        cost[:, keep] = row_cost
        cost[drop, :] = np.inf
        cost[:, drop] = np.inf
    survivors = np.flatnonzero(alive)
    renumber = np.zeros(rows.size, dtype=np.int64)
    renumber[survivors] = np.arange(survivors.size)
    return (
        renumber[label],
        rows[survivors].astype(np.int64).tolist(),
        cols[survivors].astype(np.int64).tolist(),
    )


def _visible_faces(vertices: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool) -> Tensor:
    """Fast path: ``(B, H, W)`` int64 index of the visible face per pixel centre, -1 on background.

    Faces are grouped by the size of their pixel bounding box, rounded up to a few block sizes (rare
    sizes merged into common ones, see :func:`_plan_blocks`); each group is evaluated as a dense
    ``(block rows, block cols, faces)`` array of pixel centres, where an edge function is the difference
    of a per-row and a per-column term, so no per-pixel gathers are needed. The covered (pixel, depth,
    face) triples then go through a depth scatter-max and a face-index scatter-max, in bounded chunks.
    """
    batch, num_faces = vertices.shape[0], faces.shape[0]
    device, dtype = vertices.device, vertices.dtype
    num_pixels = height * width
    best_face = torch.full((batch * num_pixels,), -1, dtype=torch.long, device=device)
    best_depth = torch.full((batch * num_pixels,), -torch.inf, dtype=dtype, device=device)
    if num_faces == 0:
        return best_face.view(batch, height, width)
    corners = _screen_corners(vertices[:, faces], height, width).reshape(batch * num_faces, 3, 3)
    table = _edge_table(corners, cull_backfaces)

    # Pixel-centre bounding boxes, widened by a hair so that rounding in the edge functions can never
    # accept a centre just outside the box.
    coords = corners[..., :2]
    margin = 1e-3 + 64 * torch.finfo(dtype).eps * coords.abs().amax(dim=(1, 2))
    upper = torch.tensor([width - 1, height - 1], dtype=dtype, device=device)
    low = torch.ceil((coords.amin(dim=1) - margin[:, None]).clamp(min=0.0)).long()
    high = torch.floor(torch.minimum(coords.amax(dim=1) + margin[:, None], upper)).long()
    span = high - low + 1
    live = ((span > 0).all(-1) & (table[_SLOPE_ROW] != 0).any(0)).nonzero().squeeze(1)
    if live.numel() == 0:
        return best_face.view(batch, height, width)

    # Group faces by block shape (rows, cols): each side rounded up to one of a few sizes, then rare
    # shapes merged into common ones where that costs fewer extra pixel tests than a separate pass.
    col_sizes, row_sizes = _block_sizes(width), _block_sizes(height)
    shape_class = torch.searchsorted(row_sizes.to(device), span[live, 1]) * col_sizes.numel()
    shape_class += torch.searchsorted(col_sizes.to(device), span[live, 0])
    classes, face_class, class_counts = torch.unique(shape_class, return_inverse=True, return_counts=True)
    classes = classes.cpu()
    merged, block_rows, block_cols = _plan_blocks(
        row_sizes[classes // col_sizes.numel()].numpy(),
        col_sizes[classes % col_sizes.numel()].numpy(),
        class_counts.cpu().numpy(),
    )
    group = torch.from_numpy(merged).to(device)[face_class]
    group, order = torch.sort(group, stable=True)
    counts = torch.bincount(group, minlength=len(block_rows)).tolist()
    live = live[order]
    table = table[..., live]
    # Block origin, moved back inside the image where the block would stick out of it.
    group_rows = torch.tensor(block_rows, device=device)[group]
    group_cols = torch.tensor(block_cols, device=device)[group]
    origin_col = torch.minimum(low[live, 0], width - group_cols)
    origin_row = torch.minimum(low[live, 1], height - group_rows)
    image = live // num_faces
    face_ids = live - image * num_faces
    origin_pixel = image * num_pixels + origin_row * width + origin_col
    origin_col = origin_col.to(dtype)
    origin_row = origin_row.to(dtype)

    row_steps = torch.arange(max(block_rows), device=device, dtype=dtype)
    col_steps = torch.arange(max(block_cols), device=device, dtype=dtype)
    pending: list[tuple[Tensor, Tensor, Tensor]] = []
    pending_size = 0
    flushed = False
    first = 0
    for rows, cols, count in zip(block_rows, block_cols, counts, strict=True):
        step = max(1, _MAX_PAIRS_PER_CHUNK // (rows * cols))
        for lo in range(first, first + count, step):
            members = slice(lo, min(lo + step, first + count))
            size = members.stop - members.start
            # Dense (block row, block col, face) arrays, faces innermost so every operation streams.
            row = origin_row[None, members] + row_steps[:rows, None]
            col = origin_col[None, members] + col_steps[:cols, None]
            part = table[..., members]
            edges = tuple(
                (part[_SLOPE_ROW, k] * (row - part[_ORIGIN_ROW, k]))[:, None, :]
                - (part[_SLOPE_COL, k] * (col - part[_ORIGIN_COL, k]))[None, :, :]
                for k in range(3)
            )
            # Inside or on the boundary (the zero-sum case is sorted out below, on the few hits).
            hits = (torch.minimum(torch.minimum(edges[0], edges[1]), edges[2]) >= 0).view(-1).nonzero()
            hits = hits.squeeze(1)
            edges = tuple(edge.view(-1).index_select(0, hits) for edge in edges)
            positive = (edges[0] + edges[1] + edges[2] > 0).nonzero().squeeze(1)
            if positive.numel() < hits.numel():
                hits = hits.index_select(0, positive)
                edges = tuple(edge.index_select(0, positive) for edge in edges)
            if hits.numel() == 0:
                continue
            block_pixel = torch.div(hits, size, rounding_mode="floor")
            member = hits - block_pixel * size + members.start
            block_row = torch.div(block_pixel, cols, rounding_mode="floor")
            pixel = (
                origin_pixel.index_select(0, member) + block_row * width + (block_pixel - block_row * cols)
            )
            *_, depth = _barycentric_and_depth(
                edges, tuple(table[_DEPTH, k].index_select(0, member) for k in range(3))
            )
            pending.append((pixel, depth, face_ids.index_select(0, member)))
            pending_size += hits.numel()
            if pending_size >= _MAX_PAIRS_PER_CHUNK:
                _resolve_depth(best_depth, best_face, pending, fresh=not flushed)
                pending, pending_size, flushed = [], 0, True
        first += count
    if pending:
        _resolve_depth(best_depth, best_face, pending, fresh=not flushed)
    return best_face.view(batch, height, width)


def _resolve_depth(
    best_depth: Tensor, best_face: Tensor, pending: list[tuple[Tensor, Tensor, Tensor]], fresh: bool
) -> None:
    """Merge covered (pixel, depth, face) triples into the running depth and face buffers, in place.

    A pixel keeps the largest depth; among triples at that depth, the largest face index. Triples seen
    earlier that no longer reach the (possibly raised) depth of their pixel lose their claim. ``fresh``
    says that the buffers still hold their initial -inf and -1.
    """
    pixel, depth, face = (torch.cat(parts) for parts in zip(*pending, strict=True))
    previous = None if fresh else best_depth.clone()
    best_depth.scatter_reduce_(0, pixel, depth, reduce="amax")
    if previous is not None:
        best_face.masked_fill_(best_depth > previous, -1)
    nearest = depth == best_depth.index_select(0, pixel)
    best_face.scatter_reduce_(0, pixel[nearest], face[nearest], reduce="amax")


def _fragments_for(vertices: Tensor, faces: Tensor, face_index: Tensor) -> Fragments:
    """Differentiable barycentric weights and depth of the chosen faces at the pixel centres.

    Args:
        vertices: ``(B, V, 3)`` NDC positions, as given to the rasteriser.
        faces: ``(F, 3)`` int64 vertex indices.
        face_index: ``(B, H, W)`` int64 visible face per pixel centre, -1 on background.
    """
    batch, height, width = face_index.shape
    num_pixels = height * width
    flat = (face_index.view(-1) >= 0).nonzero().squeeze(1)
    image = torch.div(flat, num_pixels, rounding_mode="floor")
    pixel = flat - image * num_pixels
    corner_ids = faces.index_select(0, face_index.view(-1).index_select(0, flat))
    corner_ids = (corner_ids + (image * vertices.shape[1])[:, None]).view(-1)
    corners = _screen_corners(vertices.reshape(-1, 3), height, width).index_select(0, corner_ids)
    table = _edge_table(corners.view(-1, 3, 3), cull_backfaces=False)
    row = torch.div(pixel, width, rounding_mode="floor")
    col = (pixel - row * width).to(vertices.dtype)
    *weights, depth = _barycentric_and_depth(
        _edge_values(table, col, row.to(vertices.dtype)), tuple(table[_DEPTH])
    )
    size = batch * num_pixels
    barycentric = vertices.new_zeros(size, 3).index_put((flat,), torch.stack(weights, dim=-1))
    depth_map = vertices.new_zeros(size).index_put((flat,), depth)
    return Fragments(
        face_index=face_index,
        barycentric=barycentric.view(batch, height, width, 3),
        depth=depth_map.view(batch, height, width),
        mask=face_index >= 0,
    )

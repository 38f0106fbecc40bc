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

The fast path works on (triangle, pixel) candidates. Faces are taken in index order, in groups whose
pixel bounding boxes hold a bounded number of pixels; every row of a face's box is a run of consecutive
columns, narrowed to those the edge functions can accept on that row, and the runs of a group are laid
end to end and tested at once, an edge function being the difference of a per-row and a per-column
term. Covered candidates go through a depth scatter-max, then a face-index scatter-max among the
nearest. Without gradients, the candidates visible so far also scatter their barycentric weights and
depth; with gradients, the weights of each pixel's visible triangle are recomputed from the vertices
with differentiable operations, so gradients reach the vertex positions. Coverage tests, weights and
depths use the very same floating-point operations as :func:`rasterize_reference`, so both choose the
same faces and give the same weights; the one difference is that the fast path looks only inside
bounding boxes, where the reference also accepts far points of the line through a triangle whose
collinear corners rounding has given a tiny area.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from aucgan.geometry.camera import ndc_to_pixels, uv_to_ndc

# Pixels in the bounding boxes of a group of faces evaluated at once by the fast path, and so candidate
# (triangle, pixel) pairs (a face with a larger box is split by rows). Keeps the working memory to tens
# of MB, small enough to be reused from group to group and call to call rather than handed back to the
# system and faulted in again.
_MAX_PAIRS_PER_CHUNK = 1 << 18
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
    corners, table, keep = _face_table(vertices, faces.long(), height, width, cull_backfaces)
    differentiable = torch.is_grad_enabled() and table.requires_grad
    face_index, barycentric, depth = _visible_faces(
        corners.detach(),
        table.detach(),
        keep,
        faces.shape[0],
        (vertices.shape[0], height, width),
        not differentiable,
    )
    if differentiable:
        return _fragments_from_table(table, face_index, faces.shape[0])
    return Fragments(face_index=face_index, barycentric=barycentric, depth=depth, mask=face_index >= 0)


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
    return _edge_rows(torch.movedim(corners, (-1, -2), (0, 1)), cull_backfaces)[0]


def _edge_rows(corners: Tensor, cull_backfaces: bool) -> tuple[Tensor, Tensor]:
    """The edge table of :func:`_edge_table` from corners laid out ``(3, 3, ...)`` = (quantity, corner, ...).

    Returns:
        ``(5, 3, ...)`` table and ``(...)`` bool: the faces that may cover pixels (finite, non-zero area,
        not culled); the others get zero slopes.
    """
    col, row, depth = corners.unbind(0)
    start_col, start_row = col.roll(-1, 0), row.roll(-1, 0)
    end_col, end_row = col.roll(-2, 0), row.roll(-2, 0)
    swap = (start_col > end_col) | ((start_col == end_col) & (start_row > end_row))
    origin_col = torch.where(swap, end_col, start_col)
    origin_row = torch.where(swap, end_row, start_row)
    delta_col = torch.where(swap, start_col, end_col) - origin_col
    delta_row = torch.where(swap, start_row, end_row) - origin_row
    with torch.no_grad():
        area = (col[1] - col[0]) * (row[2] - row[0]) - (row[1] - row[0]) * (col[2] - col[0])
        # Zero times a coordinate is zero unless the coordinate is infinite or NaN.
        keep = ((corners * 0).sum(dim=(0, 1)) == 0) & (area != 0)
        if cull_backfaces:
            keep &= area < 0
        orientation = torch.where(keep, torch.sign(area), 0.0)
        sign = torch.where(swap, -orientation, orientation)
    return torch.stack([sign * delta_col, sign * delta_row, origin_col, origin_row, depth]), keep


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


def _face_table(
    vertices: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Corners and edge table of every face of every image, one column per face, for the fast path.

    Holds the very values :func:`_edge_table` gives for ``_screen_corners(vertices[:, faces])``, gathered
    straight into the ``(quantity, corner, face)`` layout of :func:`_edge_rows`, which costs a fraction of
    the time of building ``(..., 3, 3)`` blocks for large meshes.

    Args:
        vertices: ``(B, V, 3)`` NDC positions.
        faces: ``(F, 3)`` int64 vertex indices.
        height, width: image size in pixels.
        cull_backfaces: as :func:`_edge_table`.

    Returns:
        Corners ``(3, 3, B * F)`` (column, row, depth of corner k of face ``b * F + f``) and the table
        ``(5, 3, B * F)`` with the rows of :func:`_edge_table`, both differentiable like ``vertices``;
        and ``(B * F,)`` bool, the faces that may cover pixels (the others have zero slopes).
    """
    batch, num_vertices = vertices.shape[:2]
    screen = _screen_corners(vertices, height, width).permute(2, 0, 1).reshape(3, batch * num_vertices)
    corner_ids = faces.t()
    if batch != 1:
        image_start = torch.arange(batch, device=faces.device) * num_vertices
        corner_ids = corner_ids[:, None, :] + image_start[:, None]
    corners = screen.index_select(1, corner_ids.reshape(-1)).view(3, 3, -1)
    table, keep = _edge_rows(corners, cull_backfaces)
    return corners, table, keep


def _visible_faces(
    corners: Tensor,
    table: Tensor,
    keep: Tensor,
    num_faces: int,
    shape: tuple[int, int, int],
    with_weights: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Fast path: ``(B, H, W)`` int64 index of the visible face per pixel centre, -1 on background.

    Live faces (kept, with a box inside the image) are taken in index order, in groups whose pixel
    bounding boxes hold at most ``_MAX_PAIRS_PER_CHUNK`` pixels in all, so that working memory stays
    small and in cache whatever the batch; the candidates of each group (see :func:`_candidates`) are
    merged into running depth and face buffers.

    Args:
        corners: ``(3, 3, B * F)`` from :func:`_face_table`, detached.
        table: ``(5, 3, B * F)`` from :func:`_face_table`, detached.
        keep: ``(B * F,)`` bool from :func:`_face_table`.
        num_faces: faces per image F.
        shape: ``(B, H, W)``, number of images and their size in pixels.
        with_weights: also return the barycentric weights and depth of the visible faces.

    Returns:
        Face index ``(B, H, W)``; with ``with_weights``, barycentric weights ``(B, H, W, 3)`` and depth
        ``(B, H, W)`` (zero on background, without gradients), else None and None. These are the very
        values :func:`_fragments_from_table` computes (same numbers, same operations): after each chunk
        of candidates, those that are the visible face of their pixel so far write theirs, and a later
        chunk that takes the pixel over writes again.
    """
    device, dtype = table.device, table.dtype
    batch, height, width = shape
    size = batch * height * width
    best_face = torch.full((size,), -1, dtype=torch.long, device=device)
    best_depth = torch.full((size,), -torch.inf, dtype=dtype, device=device)
    # Each with one spare element at the end, where candidates that are not visible write.
    barycentric = table.new_zeros(3 * size + 3) if with_weights else None
    depth_map = table.new_zeros(size + 1) if with_weights else None
    corner_offset = torch.arange(3, device=device)[:, None]

    # Pixel-centre bounding boxes, widened by a hair so that rounding in the edge functions can never
    # accept a centre just outside the box.
    col, row = corners[0], corners[1]
    col_min = torch.minimum(torch.minimum(col[0], col[1]), col[2])
    col_max = torch.maximum(torch.maximum(col[0], col[1]), col[2])
    row_min = torch.minimum(torch.minimum(row[0], row[1]), row[2])
    row_max = torch.maximum(torch.maximum(row[0], row[1]), row[2])
    reach = torch.maximum(torch.maximum(col_max, -col_min), torch.maximum(row_max, -row_min))
    margin = 1e-3 + 64 * torch.finfo(dtype).eps * reach
    # Clamped on both sides (an empty box off the image) before the conversion to integers.
    box = torch.stack(
        [
            torch.ceil((col_min - margin).clamp(min=0.0, max=width)),
            torch.floor((col_max + margin).clamp(min=-1.0, max=width - 1)),
            torch.ceil((row_min - margin).clamp(min=0.0, max=height)),
            torch.floor((row_max + margin).clamp(min=-1.0, max=height - 1)),
        ]
    ).long()
    live = (keep & (box[1] >= box[0]) & (box[3] >= box[2])).nonzero().squeeze(1)
    box = box.index_select(1, live)
    margin = margin.index_select(0, live)
    box_end = ((box[1] - box[0] + 1) * (box[3] - box[2] + 1)).cumsum(0)
    total = int(box_end[-1]) if live.numel() else 0
    first = done = 0
    while first < live.numel():
        stop = live.numel()
        if total - done > _MAX_PAIRS_PER_CHUNK:
            stop = max(int(torch.searchsorted(box_end, done + _MAX_PAIRS_PER_CHUNK, right=True)), first + 1)
        group = slice(first, stop)
        chunks = _candidates(table, live[group], box[:, group], margin[group], num_faces, height, width)
        for pixel, depth, face, weights in chunks:
            _resolve_depth(best_depth, best_face, pixel, depth, face)
            if with_weights:
                target = torch.where(face == best_face.index_select(0, pixel), pixel, size)
                depth_map.scatter_(0, target, depth)
                barycentric.scatter_(0, (target.mul_(3) + corner_offset).view(-1), weights.view(-1))
            del pixel, depth, face, weights
        first, done = stop, int(box_end[stop - 1])
    face_index = best_face.view(batch, height, width)
    if not with_weights:
        return face_index, None, None
    return (
        face_index,
        barycentric[:-3].view(batch, height, width, 3),
        depth_map[:-1].view(batch, height, width),
    )


def _candidates(
    table: Tensor, faces: Tensor, box: Tensor, margin: Tensor, num_faces: int, height: int, width: int
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The candidate pixels of some faces, tested with the exact edge functions of the reference.

    Every row of a face's pixel bounding box is an entry, whose columns are narrowed to those that the
    three edge functions can accept on that row: each accepts a half-line of columns, rounding included,
    since the rounded edge function is monotonic in the column. The columns of all entries, laid end to
    end, are the candidates; an edge function is the difference of a per-row term (one per entry) and a
    per-column term (one per column of the face's box).

    Args:
        table: ``(5, 3, B * F)`` edge table of all faces from :func:`_face_table`, detached.
        faces: ``(G,)`` int64 faces to test, ``b * F + f`` for face f of image b, increasing.
        box: ``(4, G)`` int64 first column, last column, first row and last row of their pixel boxes,
            inside the image and not empty.
        margin: ``(G,)`` their box margins in pixels, as widening for the column ranges.
        num_faces: faces per image F.
        height, width: image size in pixels.

    Yields:
        Chunks of at most ``_MAX_PAIRS_PER_CHUNK`` candidates (more only for one entry wider than that),
        faces in increasing order: pixel ``(N,)`` int64 flat index over the batch; depth ``(N,)``, -inf
        where the face does not cover the pixel centre; face ``(N,)`` int64 index in its image, -2
        where it does not cover; barycentric weights ``(3, N)``.
    """
    device, dtype = table.device, table.dtype
    flat_table = table.view(15, -1)
    box_col, box_last_col, box_row, box_last_row = box

    # Entries: one per (face, row of its box).
    box_rows = box_last_row - box_row + 1
    rows_before = box_rows.cumsum(0) - box_rows
    num_entries = int(rows_before[-1] + box_rows[-1])
    entry_face = torch.repeat_interleave(box_rows, output_size=num_entries)
    entry_row = torch.arange(num_entries, device=device) + (box_row - rows_before).index_select(0, entry_face)
    entry_owner = faces.index_select(0, entry_face)
    entry_table = flat_table[: 3 * _ORIGIN_ROW + 3].index_select(1, entry_owner).view(4, 3, -1)
    row_terms = entry_table[_SLOPE_ROW] * (entry_row.to(dtype) - entry_table[_ORIGIN_ROW])
    # Edge k accepts column c where slope_col * (c - origin_col) <= row_term: c up to a bound for a
    # positive slope, down to it for a negative one, every c or none for a zero slope.
    slope_col = entry_table[_SLOPE_COL]
    bound = entry_table[_ORIGIN_COL] + row_terms / slope_col
    lower = torch.where(slope_col < 0, bound, -torch.inf)
    upper = torch.where(slope_col > 0, bound, torch.inf)
    upper = torch.where((slope_col == 0) & (row_terms < 0), -torch.inf, upper)
    entry_margin = margin.index_select(0, entry_face)
    lower = torch.maximum(torch.maximum(lower[0], lower[1]), lower[2]) - entry_margin
    upper = torch.minimum(torch.minimum(upper[0], upper[1]), upper[2]) + entry_margin
    first_col = torch.ceil(lower.clamp(min=-1.0, max=width)).long()
    first_col = torch.maximum(first_col, box_col.index_select(0, entry_face))
    last_col = torch.floor(upper.clamp(min=-1.0, max=width)).long()
    last_col = torch.minimum(last_col, box_last_col.index_select(0, entry_face))
    entry_size = (last_col - first_col + 1).clamp(min=0)
    entry_end = entry_size.cumsum(0)
    entry_start = entry_end - entry_size
    num_pairs = int(entry_end[-1])
    entry_depth = flat_table[3 * _DEPTH :].index_select(1, entry_owner)
    del entry_table, slope_col, bound, lower, upper, entry_margin, last_col

    # Column terms of every face over the columns of its box.
    box_cols = box_last_col - box_col + 1
    cols_before = box_cols.cumsum(0) - box_cols
    num_cols = int(cols_before[-1] + box_cols[-1])
    col_face = torch.repeat_interleave(box_cols, output_size=num_cols)
    col_value = torch.arange(num_cols, device=device) + (box_col - cols_before).index_select(0, col_face)
    col_table = flat_table[3 * _SLOPE_COL : 3 * _ORIGIN_COL + 3].index_select(
        1, faces.index_select(0, col_face)
    )
    col_terms = col_table[:3] * (col_value.to(dtype) - col_table[3:])
    del col_face, col_value, col_table

    # Candidate p of an entry sits at column first_col + p - entry_start: shifts from p to its pixel
    # and to its column term.
    image = torch.div(entry_owner, num_faces, rounding_mode="floor")
    entry_pixel = (image * height + entry_row) * width + first_col - entry_start
    entry_col_term = (cols_before - box_col).index_select(0, entry_face) + first_col - entry_start
    entry_face_id = entry_owner - image * num_faces
    del image, entry_row, entry_owner, first_col

    first = done = 0
    while first < num_entries:
        stop = num_entries
        if num_pairs - done > _MAX_PAIRS_PER_CHUNK:
            stop = int(torch.searchsorted(entry_end, done + _MAX_PAIRS_PER_CHUNK, right=True))
            stop = max(stop, first + 1)
        count = int(entry_end[stop - 1]) - done
        entry = torch.repeat_interleave(entry_size[first:stop], output_size=count)
        if first:
            entry += first
        # In-place steps where they keep the same rounding: the working memory is what costs here.
        candidate = torch.arange(done, done + count, device=device)
        pixel = entry_pixel.index_select(0, entry).add_(candidate)
        col_term = entry_col_term.index_select(0, entry).add_(candidate)
        del candidate
        edges = row_terms.index_select(1, entry).sub_(col_terms.index_select(1, col_term))
        del col_term
        edge_sum = (edges[0] + edges[1]).add_(edges[2])
        covered = (torch.minimum(torch.minimum(edges[0], edges[1]), edges[2]) >= 0) & (edge_sum > 0)
        weights = edges.div_(edge_sum)
        del edges, edge_sum
        corner_depth = entry_depth.index_select(1, entry)
        depth = (
            (weights[0] * corner_depth[0])
            .add_(weights[1] * corner_depth[1])
            .add_(weights[2] * corner_depth[2])
        )
        depth = torch.where(covered, depth, -torch.inf)
        # -2 rather than -1 for uncovered candidates, so that they never match a background pixel.
        face = torch.where(covered, entry_face_id.index_select(0, entry), -2)
        del entry, covered, corner_depth
        yield pixel, depth, face, weights
        first, done = stop, done + count


def _resolve_depth(best_depth: Tensor, best_face: Tensor, pixel: Tensor, depth: Tensor, face: Tensor) -> None:
    """Merge (pixel, depth, face) triples ``(N,)`` into the running depth and face buffers, in place.

    A pixel keeps the largest depth; among triples at that depth, the largest face index. Triples with
    depth -inf and a negative face stand for candidates that cover nothing and change nothing. The
    faces of an image must come in increasing order over successive calls, so that a face that raises
    a pixel's depth also has the largest index seen there so far and needs no earlier claim cleared.
    """
    best_depth.scatter_reduce_(0, pixel, depth, reduce="amax")
    nearest = depth == best_depth.index_select(0, pixel)
    best_face.scatter_reduce_(0, pixel, torch.where(nearest, face, -1), reduce="amax")


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


def _fragments_from_table(table: Tensor, face_index: Tensor, num_faces: int) -> Fragments:
    """Differentiable barycentric weights and depth of the chosen faces, from the per-face table.

    The same operations as :func:`_fragments_for`, on the table columns of each covered pixel's face.

    Args:
        table: ``(5, 3, B * F)`` edge table from :func:`_face_table`, carrying gradients.
        face_index: ``(B, H, W)`` int64 visible face per pixel centre, -1 on background.
        num_faces: faces per image F.
    """
    batch, height, width = face_index.shape
    num_pixels = height * width
    dtype = table.dtype
    mask = face_index >= 0
    flat = mask.view(-1).nonzero().squeeze(1)
    face = face_index.view(-1).index_select(0, flat)
    pixel = flat
    if batch > 1:
        image = torch.div(flat, num_pixels, rounding_mode="floor")
        face = face + image * num_faces
        pixel = flat - image * num_pixels
    row = torch.div(pixel, width, rounding_mode="floor")
    col = (pixel - row * width).to(dtype)
    part = table.reshape(15, -1).index_select(1, face).view(5, 3, -1)
    edges = part[_SLOPE_ROW] * (row.to(dtype) - part[_ORIGIN_ROW]) - part[_SLOPE_COL] * (
        col - part[_ORIGIN_COL]
    )
    weights = edges / (edges[0] + edges[1] + edges[2])
    corner_depth = part[_DEPTH]
    depth = weights[0] * corner_depth[0] + weights[1] * corner_depth[1] + weights[2] * corner_depth[2]
    # One-dimensional scatters into zeros: much cheaper than index_put on the CPU.
    size = batch * num_pixels
    target = (flat * 3 + torch.arange(3, device=flat.device)[:, None]).view(-1)
    barycentric = table.new_zeros(size * 3).scatter(0, target, weights.reshape(-1))
    depth_map = table.new_zeros(size).scatter(0, flat, depth)
    return Fragments(
        face_index=face_index,
        barycentric=barycentric.view(batch, height, width, 3),
        depth=depth_map.view(batch, height, width),
        mask=mask,
    )

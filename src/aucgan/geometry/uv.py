"""UV-space detail geometry: displacement along normals, normals of a surface sampled on the UV grid,
bilinear lookups in UV maps and the dense "detail mesh" with one vertex per texel.

UV maps follow the convention of :mod:`aucgan.geometry`: ``(B, C, H, W)`` images over the unit square,
u to the right and v up, so texel ``(i, j)`` has its centre at ``u = (j + 0.5) / W``,
``v = 1 - (i + 0.5) / H`` and row 0 holds the largest v.

Positions and displacements are in the units of the face model (metres for FLAME, centimetres for the
built-in face); normals are unit vectors in the same (object) frame. Surface normals are oriented as
``dP/du x dP/dv``, so that the plane ``P = (u, v, 0)`` has the normal +z and a mesh whose triangles are
counter-clockwise in (u, v) agrees with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_NORMALIZE_EPS = 1e-12


def _check_map(name: str, tensor: torch.Tensor, channels: int) -> None:
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise ValueError(f"{name} must be (B, {channels}, H, W), got {tuple(tensor.shape)}")


def _check_same_grid(name: str, tensor: torch.Tensor, reference: torch.Tensor) -> None:
    if tensor.shape[0] != reference.shape[0] or tensor.shape[-2:] != reference.shape[-2:]:
        raise ValueError(
            f"{name} must match the batch and size of uv_positions {tuple(reference.shape)}, "
            f"got {tuple(tensor.shape)}"
        )


def _check_mask(mask: torch.Tensor, positions: torch.Tensor) -> None:
    batch, _, height, width = positions.shape
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] not in (1, batch)
        or mask.shape[-2:] != (height, width)
    ):
        raise ValueError(f"mask must be ({batch} or 1, 1, {height}, {width}), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the channel axis of ``(B, 3, H, W)`` maps: ``(B, 1, H, W)``.

    Written per channel: on CPU this is several times faster than a reduction over dim 1."""
    return a[:, 0:1] * b[:, 0:1] + a[:, 1:2] * b[:, 1:2] + a[:, 2:3] * b[:, 2:3]


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the channel axis of ``(B, 3, H, W)`` maps."""
    ax, ay, az = a[:, 0:1], a[:, 1:2], a[:, 2:3]
    bx, by, bz = b[:, 0:1], b[:, 1:2], b[:, 2:3]
    return torch.cat([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=1)


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` angle in degrees between the vector maps ``a`` and ``b`` ``(B, 3, S, S)``, as
    ``atan2(|a × b|, a · b)``: accurate at small angles, where ``acos`` of a rounded dot product is not
    (a float16-rounded unit normal against itself gives about 0.4° through ``acos``, < 0.05° here)."""
    _check_map("a", a, 3)
    _check_map("b", b, 3)
    cross = _cross(a, b).norm(dim=1, keepdim=True)
    return torch.rad2deg(torch.atan2(cross, _dot(a, b)))


def normalize_map(vectors: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the channel axis of ``(B, 3, H, W)`` maps; zero stays zero with a finite gradient.

    Equivalent to ``F.normalize(vectors, dim=1)``, several times faster on CPU for image-sized maps."""
    return vectors / torch.sqrt(torch.clamp(_dot(vectors, vectors), min=_NORMALIZE_EPS**2))


def displace(
    uv_positions: torch.Tensor, uv_normals: torch.Tensor, uv_displacement: torch.Tensor
) -> torch.Tensor:
    """Move every texel's surface point along its normal: ``P + d * N``.

    Args:
        uv_positions: ``(B, 3, H, W)`` coarse surface positions rendered into UV space (model units).
        uv_normals: ``(B, 3, H, W)`` unit normals of the coarse surface in UV space.
        uv_displacement: ``(B, 1, H, W)`` signed displacement along the normal (model units, small,
            e.g. within ±0.01 m for FLAME).

    Returns:
        ``(B, 3, H, W)`` displaced positions.
    """
    _check_map("uv_positions", uv_positions, 3)
    _check_map("uv_normals", uv_normals, 3)
    _check_map("uv_displacement", uv_displacement, 1)
    _check_same_grid("uv_normals", uv_normals, uv_positions)
    _check_same_grid("uv_displacement", uv_displacement, uv_positions)
    return uv_positions + uv_displacement * uv_normals


def _shift(tensor: torch.Tensor, dim: int, offset: int, length: int) -> torch.Tensor:
    """Slice of a tensor padded by 2 along ``dim``: its entry k is the unpadded entry ``k + offset``."""
    return tensor.narrow(dim, 2 + offset, length)


# Finite-difference stencils over offsets (-2, -1, 0, +1, +2), by case: none, central, forward and backward
# second order, forward and backward first order.
_STENCILS = (
    (0.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, -0.5, 0.0, 0.5, 0.0),
    (0.0, 0.0, -1.5, 2.0, -0.5),
    (0.5, -2.0, 1.5, 0.0, 0.0),
    (0.0, 0.0, -1.0, 1.0, 0.0),
    (0.0, -1.0, 1.0, 0.0, 0.0),
)


def _stencil(valid: torch.Tensor, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-texel difference weights along ``dim`` (-1: columns, -2: rows) for a validity mask.

    Central differences where both neighbours are valid; otherwise second-order one-sided differences
    where two neighbours on one side are valid; otherwise first-order one-sided differences; otherwise zero.

    Args:
        valid: ``(B', 1, H, W)`` bool; texels outside the image count as invalid.

    Returns:
        ``(5, B', 1, H, W)`` weights of the values at offsets -2..+2, and ``(B', 1, H, W)`` bool: whether
        any neighbour along ``dim`` is valid.
    """
    length = valid.shape[dim]
    pad = (2, 2) if dim == -1 else (0, 0, 2, 2)
    padded = F.pad(valid.to(torch.uint8), pad).bool()
    v_m2, v_m1, v_p1, v_p2 = (_shift(padded, dim, k, length) for k in (-2, -1, 1, 2))
    central = v_m1 & v_p1
    forward2 = ~central & v_p1 & v_p2
    backward2 = ~central & ~forward2 & v_m1 & v_m2
    forward1 = ~central & ~forward2 & ~backward2 & v_p1
    backward1 = ~central & ~forward2 & ~backward2 & ~forward1 & v_m1
    case = torch.zeros(valid.shape, dtype=torch.long, device=valid.device)
    for number, chosen in enumerate((central, forward2, backward2, forward1, backward1), start=1):
        case = case.masked_fill(chosen, number)
    table = torch.tensor(_STENCILS, dtype=dtype, device=valid.device)
    return table[case].movedim(-1, 0), v_m1 | v_p1


@dataclass(frozen=True)
class GridStencils:
    """Finite-difference stencils of one UV mask, reusable for every map on that mask.

    Attributes:
        defined: ``(B', 1, H, W)`` bool, texels in the mask with a masked neighbour along u and along v.
        along_u: ``(5, B', 1, H, W)`` weights of the values at offsets -2..+2 along u.
        along_rows: ``(5, B', 1, H, W)`` the same along rows.
    """

    defined: torch.Tensor
    along_u: torch.Tensor
    along_rows: torch.Tensor


def grid_stencils(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> GridStencils:
    """Stencils for a ``(B', 1, H, W)`` bool mask; pass them to :func:`displacement_to_normals` to skip
    rebuilding them on every call when the mask is fixed (a face model's UV layout)."""
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, 1, H, W) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    along_u, has_u = _stencil(mask, -1, dtype)
    along_rows, has_v = _stencil(mask, -2, dtype)
    return GridStencils(mask & has_u & has_v, along_u, along_rows)


def _grid_stencils(uv_positions: torch.Tensor, mask: torch.Tensor | None) -> GridStencils:
    """Stencils for a UV grid (``mask`` None: all texels belong to the surface)."""
    if mask is None:
        mask = torch.ones((1, 1, *uv_positions.shape[-2:]), dtype=torch.bool, device=uv_positions.device)
    else:
        _check_mask(mask, uv_positions)
    return grid_stencils(mask, uv_positions.dtype)


def _derivative(values: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply :func:`_stencil` weights to ``(B, C, H, W)`` values: the derivative w.r.t. the texel index."""
    length = values.shape[dim]
    pad = (2, 2) if dim == -1 else (0, 0, 2, 2)
    padded = F.pad(values, pad)
    return sum(weights[k] * _shift(padded, dim, offset, length) for k, offset in enumerate((-2, -1, 0, 1, 2)))


def surface_normals(
    uv_positions: torch.Tensor,
    mask: torch.Tensor | None = None,
    reference_normals: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normals of the surface sampled on the UV grid: ``normalize(dP/du x dP/dv)``.

    Derivatives are central differences in the interior; where a neighbour lies outside ``mask`` (or
    outside the map) they are second-order one-sided differences when two texels on the other side are
    inside, first-order ones when only one is. With u to the right and v up, the plane ``P = (u, v, 0)``
    gets the normal +z.

    Args:
        uv_positions: ``(B, 3, H, W)`` surface positions (model units).
        mask: ``(B, 1, H, W)`` or ``(1, 1, H, W)`` bool, the texels that belong to the surface; None for all.
        reference_normals: ``(B, 3, H, W)`` unit normals, or None. When given, each normal is flipped where
            it points against the reference, and texels without a normal take the reference's value.

    Returns:
        ``(B, 3, H, W)`` unit normals. Texels outside ``mask``, and masked texels with no masked neighbour
        along u or along v, hold ``reference_normals`` if given, else zeros.
    """
    _check_map("uv_positions", uv_positions, 3)
    if reference_normals is not None:
        _check_map("reference_normals", reference_normals, 3)
        _check_same_grid("reference_normals", reference_normals, uv_positions)
    stencils = _grid_stencils(uv_positions, mask)
    defined = stencils.defined
    d_du = _derivative(uv_positions, stencils.along_u, -1)
    d_drow = _derivative(uv_positions, stencils.along_rows, -2)
    d_dv = -d_drow
    normals = normalize_map(_cross(d_du, d_dv))

    if reference_normals is None:
        return torch.where(defined, normals, torch.zeros_like(normals))
    agrees = _dot(normals, reference_normals) >= 0
    oriented = torch.where(agrees, normals, -normals)
    return torch.where(defined, oriented, reference_normals)


def displacement_to_normals(
    uv_positions: torch.Tensor,
    uv_normals: torch.Tensor,
    uv_displacement: torch.Tensor,
    mask: torch.Tensor | None = None,
    stencils: GridStencils | None = None,
) -> torch.Tensor:
    """Detail normals: normals of the coarse surface displaced along its (smooth) normals.

    The displaced surface is ``D = P + d N``. To first order in ``d`` its tangents are ``t_u + d_u N`` and
    ``t_v + d_v N``, where ``t_u, t_v`` are the coarse tangents ``dP/du, dP/dv`` projected onto the plane
    orthogonal to the smooth normal ``N`` and ``d_u, d_v`` the displacement's UV derivatives, so

        n = normalize(a N + d_v (t_u x N) + d_u (N x t_v)),   a = (t_u x t_v) . N.

    Building the normal around the interpolated smooth ``N`` rather than the faceted ``dP/du x dP/dv``
    keeps a coarse mesh from showing its triangles through the detail shading; on a plane both agree.
    The term ``d dN/du`` (displacement times surface curvature) is dropped: it is below 1 % for wrinkles.

    Args:
        uv_positions: ``(B, 3, H, W)`` coarse surface positions in UV space (model units).
        uv_normals: ``(B, 3, H, W)`` unit smooth coarse normals in UV space; also the orientation reference.
        uv_displacement: ``(B, 1, H, W)`` displacement along the normal (model units).
        mask: ``(B, 1, H, W)`` or ``(1, 1, H, W)`` bool texels of the face in UV space, or None for all.
        stencils: :func:`grid_stencils` of ``mask``, precomputed (then ``mask`` is not needed).

    Returns:
        ``(B, 3, H, W)`` unit detail normals (``uv_detail_normals``); ``uv_normals`` outside ``mask`` and
        where a texel has no masked neighbour along u or v.
    """
    _check_map("uv_displacement", uv_displacement, 1)
    _check_same_grid("uv_displacement", uv_displacement, uv_positions)
    return detail_frame(uv_positions, uv_normals, mask, stencils).normals(uv_displacement)


@dataclass(frozen=True)
class DetailFrame:
    """What :func:`displacement_to_normals` needs of a coarse surface, computed once for any number of
    displacements of it (e.g. the steps of an optimisation of the displacement).

    Attributes:
        normal: ``(B, 3, H, W)`` the smooth unit normals ``N``.
        base: ``(B, 3, H, W)`` ``a N`` with ``a = (t_u x t_v) . N``, oriented (see below).
        along_rows: ``(B, 3, H, W)`` ``-(t_u x N)``: the normal's change per unit of ``d_row`` (oriented).
        along_u: ``(B, 3, H, W)`` ``N x t_v``: the normal's change per unit of ``d_u`` (oriented).
        stencils: the finite-difference stencils of the mask.

    Where ``a < 0`` (a mirrored layout) the three vectors are negated, so the normal agrees with ``N``.
    """

    normal: torch.Tensor
    base: torch.Tensor
    along_rows: torch.Tensor
    along_u: torch.Tensor
    stencils: GridStencils

    def normals(self, uv_displacement: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` unit detail normals of ``uv_displacement (B, 1, H, W)`` (see
        :func:`displacement_to_normals`)."""
        _check_map("uv_displacement", uv_displacement, 1)
        _check_same_grid("uv_displacement", uv_displacement, self.normal)
        dd_du = _derivative(uv_displacement, self.stencils.along_u, -1)
        dd_drow = _derivative(uv_displacement, self.stencils.along_rows, -2)
        detail = normalize_map(self.base + dd_drow * self.along_rows + dd_du * self.along_u)
        return torch.where(self.stencils.defined, detail, self.normal)


def detail_frame(
    uv_positions: torch.Tensor,
    uv_normals: torch.Tensor,
    mask: torch.Tensor | None = None,
    stencils: GridStencils | None = None,
) -> DetailFrame:
    """The :class:`DetailFrame` of a coarse surface (arguments as :func:`displacement_to_normals`)."""
    _check_map("uv_positions", uv_positions, 3)
    _check_map("uv_normals", uv_normals, 3)
    _check_same_grid("uv_normals", uv_normals, uv_positions)
    normal = uv_normals
    if stencils is None:
        stencils = _grid_stencils(uv_positions, mask)
    elif stencils.defined.shape[-2:] != uv_positions.shape[-2:]:
        raise ValueError(
            f"stencils are for {tuple(stencils.defined.shape)}, maps are {tuple(uv_positions.shape)}"
        )
    dp_du = _derivative(uv_positions, stencils.along_u, -1)
    dp_drow = _derivative(uv_positions, stencils.along_rows, -2)
    t_u = dp_du - _dot(dp_du, normal) * normal
    t_v = -dp_drow + _dot(dp_drow, normal) * normal
    area = _dot(_cross(t_u, t_v), normal)
    sign = torch.where(area < 0, -1.0, 1.0).to(area.dtype)
    return DetailFrame(
        normal=normal,
        base=sign * area * normal,
        along_rows=-sign * _cross(t_u, normal),
        along_u=sign * _cross(normal, t_v),
        stencils=stencils,
    )


def sample_uv_map(uv_map: torch.Tensor, uvs: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup in a UV map at continuous UV coordinates, clamped to the border texels.

    Args:
        uv_map: ``(B, C, H, W)`` map over the unit square (v up, row 0 = largest v).
        uvs: ``(B, N, 2)`` coordinates (u, v) in [0, 1].

    Returns:
        ``(B, N, C)`` values; a texel centre returns that texel's value.
    """
    if uv_map.ndim != 4:
        raise ValueError(f"uv_map must be (B, C, H, W), got {tuple(uv_map.shape)}")
    if uvs.ndim != 3 or uvs.shape[-1] != 2 or uvs.shape[0] != uv_map.shape[0]:
        raise ValueError(f"uvs must be ({uv_map.shape[0]}, N, 2), got {tuple(uvs.shape)}")
    uvs = uvs.to(uv_map.dtype)
    grid = torch.stack([2.0 * uvs[..., 0] - 1.0, 1.0 - 2.0 * uvs[..., 1]], dim=-1)[:, None]
    sampled = F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :, 0].transpose(1, 2)


def dense_mesh(
    uv_positions: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triangle mesh with one vertex per masked texel of a single UV position map (the detail mesh).

    Each 2x2 block of texels whose four corners are masked gives two triangles (split along the diagonal
    from its lower-left to its upper-right texel in (u, v)); a block with exactly three masked corners gives
    the one triangle of those three. Triangles are counter-clockwise in (u, v) with u right and v up, so
    their normals agree with :func:`surface_normals`.

    Args:
        uv_positions: ``(3, H, W)`` positions of one map (e.g. the displaced detail surface).
        mask: ``(H, W)`` bool texels to turn into vertices.

    Returns:
        vertices ``(N, 3)`` in row-major texel order, faces ``(M, 3)`` int64 indices into the vertices, and
        uvs ``(N, 2)``: the texel centres (u, v), v up.
    """
    if uv_positions.ndim != 3 or uv_positions.shape[0] != 3:
        raise ValueError(f"uv_positions must be (3, H, W), got {tuple(uv_positions.shape)}")
    if mask.shape != uv_positions.shape[1:]:
        raise ValueError(f"mask must be {tuple(uv_positions.shape[1:])}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    height, width = mask.shape
    device = uv_positions.device
    mask = mask.to(device)

    index = torch.full((height, width), -1, dtype=torch.int64, device=device)
    count = int(mask.sum())
    index[mask] = torch.arange(count, dtype=torch.int64, device=device)

    rows = (torch.arange(height, device=device, dtype=uv_positions.dtype) + 0.5) / height
    cols = (torch.arange(width, device=device, dtype=uv_positions.dtype) + 0.5) / width
    grid_v, grid_u = torch.meshgrid(1.0 - rows, cols, indexing="ij")
    uvs = torch.stack([grid_u[mask], grid_v[mask]], dim=-1)
    vertices = uv_positions.permute(1, 2, 0)[mask]

    top_left, top_right = index[:-1, :-1], index[:-1, 1:]
    bottom_left, bottom_right = index[1:, :-1], index[1:, 1:]
    tl, tr = top_left >= 0, top_right >= 0
    bl, br = bottom_left >= 0, bottom_right >= 0
    candidates = torch.stack(
        [
            torch.stack([bottom_left, bottom_right, top_right], dim=-1),
            torch.stack([bottom_left, top_right, top_left], dim=-1),
            torch.stack([top_left, bottom_right, top_right], dim=-1),
            torch.stack([bottom_left, bottom_right, top_left], dim=-1),
        ],
        dim=2,
    )
    keep = torch.stack([bl & br & tr, bl & tr & tl, tl & br & tr & ~bl, bl & br & tl & ~tr], dim=-1)
    faces = candidates[keep]
    return vertices, faces, uvs

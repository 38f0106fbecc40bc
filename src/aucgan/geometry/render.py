"""The renderer: camera → rasteriser → attribute interpolation → SH shading, composed in plain functions.

Two spaces are rendered with the same rasteriser:

* **image space** — :func:`render` projects a mesh with the orthographic camera and shades it;
* **UV space** — :func:`uv_maps` rasterises the UV layout once and interpolates per-vertex world
  attributes (positions, normals) into UV maps, the inputs of the detail stage.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aucgan.geometry.camera import orthographic_project, uv_to_ndc
from aucgan.geometry.mesh import vertex_normals
from aucgan.geometry.raster import Fragments, interpolate, rasterize
from aucgan.geometry.shading import sh_shading
from aucgan.geometry.uv import normalize_map, sample_uv_map


@dataclass(frozen=True)
class Rendering:
    """What :func:`render` returns. All images ``(B, C, H, W)``.

    Attributes:
        image: ``(B, 3, H, W)`` shaded colour composited over the background.
        albedo: ``(B, 3, H, W)`` sampled albedo (0 on background).
        shading: ``(B, 3, H, W)`` SH irradiance (0 on background).
        normals: ``(B, 3, H, W)`` unit world-space normals used for shading (0 on background).
        uv: ``(B, 2, H, W)`` UV coordinates of each pixel (0 on background).
        mask: ``(B, 1, H, W)`` float, 1 on covered pixels.
        fragments: the rasteriser output.
    """

    image: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    normals: torch.Tensor
    uv: torch.Tensor
    mask: torch.Tensor
    fragments: Fragments


def _check_uv_map(name: str, uv_map: torch.Tensor, batch: int) -> None:
    if uv_map.ndim != 4 or uv_map.shape[:2] != (batch, 3):
        raise ValueError(f"{name} must be ({batch}, 3, Hu, Wu), got {tuple(uv_map.shape)}")


def _to_image(values: torch.Tensor) -> torch.Tensor:
    return values.permute(0, 3, 1, 2)


def render(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    uv_faces: torch.Tensor,
    camera: torch.Tensor,
    light: torch.Tensor,
    albedo_map: torch.Tensor,
    image_size: int,
    uv_normal_map: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    cull_backfaces: bool = False,
    fragments: Fragments | None = None,
) -> Rendering:
    """Render a textured, SH-lit mesh with the orthographic camera.

    Args:
        vertices: ``(B, V, 3)`` world positions.
        faces: ``(F, 3)`` int64 vertex triangles.
        uvs: ``(U, 2)`` UV coordinates (v up); uv_faces: ``(F, 3)`` triangles into ``uvs``.
        camera: ``(B, 3)`` (scale, tx, ty).
        light: ``(B, 9, 3)`` SH coefficients.
        albedo_map: ``(B, 3, Hu, Wu)`` UV albedo in [0, 1].
        image_size: output height = width in pixels.
        uv_normal_map: optional ``(B, 3, Hu, Wu)`` world-space detail normals in UV space; replaces the
            interpolated vertex normals where given (the detail stage's shading).
        background: optional ``(B, 3, H, W)`` or ``(3,)`` colour behind the face; black by default.
        cull_backfaces: skip triangles facing away from the camera (right for an open face mask, and
            faster).
        fragments: the :attr:`Rendering.fragments` of an earlier call with the same vertices, faces,
            camera, ``image_size`` and culling, to shade the same geometry again (other albedo, normals,
            light or background) without rasterising it again; checked for shape only.

    Returns:
        :class:`Rendering`.
    """
    if uvs.ndim != 2 or uvs.shape[-1] != 2 or uv_faces.shape != faces.shape:
        raise ValueError(
            f"uvs must be (U, 2) and uv_faces {tuple(faces.shape)}; got {tuple(uvs.shape)}, "
            f"{tuple(uv_faces.shape)}"
        )
    projected = orthographic_project(vertices, camera)
    batch = vertices.shape[0]
    _check_uv_map("albedo_map", albedo_map, batch)
    if uv_normal_map is not None:
        _check_uv_map("uv_normal_map", uv_normal_map, batch)
    if background is not None and background.shape not in ((3,), (batch, 3, image_size, image_size)):
        raise ValueError(
            f"background must be (3,) or ({batch}, 3, {image_size}, {image_size}), "
            f"got {tuple(background.shape)}"
        )
    if fragments is None:
        fragments = rasterize(projected, faces, image_size, cull_backfaces)
    elif fragments.face_index.shape != (batch, image_size, image_size):
        raise ValueError(
            f"fragments are {tuple(fragments.face_index.shape)}, this render is ({batch}, {image_size}, "
            f"{image_size}); rasterise again (fragments=None)"
        )
    mask = fragments.mask[:, None].to(vertices.dtype)
    uv = _to_image(interpolate(uvs.to(vertices.dtype).expand(batch, -1, -1), uv_faces, fragments))
    flat_uv = uv.permute(0, 2, 3, 1).reshape(batch, -1, 2)

    def sample(uv_map: torch.Tensor) -> torch.Tensor:
        values = sample_uv_map(uv_map, flat_uv)
        return values.reshape(batch, image_size, image_size, -1).permute(0, 3, 1, 2) * mask

    albedo = sample(albedo_map)
    if uv_normal_map is None:
        normals = _to_image(interpolate(vertex_normals(vertices, faces), faces, fragments))
    else:
        normals = sample(uv_normal_map)
    normals = normalize_map(normals)
    shading = sh_shading(normals, light) * mask
    if background is None:
        background = vertices.new_zeros(3)
    if background.ndim == 1:
        background = background.to(vertices)[None, :, None, None]
    image = albedo * shading + (1.0 - mask) * background
    return Rendering(
        image=image, albedo=albedo, shading=shading, normals=normals, uv=uv, mask=mask, fragments=fragments
    )


@dataclass(frozen=True)
class UVLayout:
    """A mesh's UV layout rasterised once at one resolution; reused for every batch of world→UV maps.

    Attributes:
        fragments: batch-1 fragments over the UV square.
        faces: ``(F, 3)`` vertex triangles in the order of the UV triangles.
        mask: ``(1, 1, S, S)`` float, 1 on texels covered by the layout.
        weights: ``(S * S, V)`` sparse CSR matrix of the barycentric weights of each texel's three
            vertices: world → UV interpolation is one sparse matrix product.
    """

    fragments: Fragments
    faces: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor


def uv_layout(uvs: torch.Tensor, uv_faces: torch.Tensor, faces: torch.Tensor, size: int) -> UVLayout:
    """Rasterise the UV triangles ``uv_faces`` into a ``size``² map (see :class:`UVLayout`).

    Args:
        uvs: ``(U, 2)`` UV coordinates in the unit square, v up.
        uv_faces: ``(F, 3)`` triangles into ``uvs``.
        faces: ``(F, 3)`` the same triangles as vertex indices, used by :func:`uv_maps`.
        size: side S of the square map in texels.
    """
    if uvs.ndim != 2 or uvs.shape[-1] != 2 or uv_faces.shape != faces.shape:
        raise ValueError(
            f"uvs must be (U, 2) and uv_faces {tuple(faces.shape)}; got {tuple(uvs.shape)}, "
            f"{tuple(uv_faces.shape)}"
        )
    fragments = rasterize(uv_to_ndc(uvs)[None], uv_faces, size)
    face_index = fragments.face_index.reshape(-1)
    texels = (face_index >= 0).nonzero().squeeze(1)
    columns = faces[face_index[texels]].reshape(-1)
    values = fragments.barycentric.reshape(-1, 3)[texels].reshape(-1)
    n_vertices = int(faces.max()) + 1 if faces.numel() else 0
    rows = texels.repeat_interleave(3)
    shape = (size * size, n_vertices)
    coo = torch.sparse_coo_tensor(torch.stack([rows, columns]), values, shape, check_invariants=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        weights = coo.coalesce().to_sparse_csr()
    mask = fragments.mask[:, None].to(uvs.dtype)
    return UVLayout(fragments=fragments, faces=faces, mask=mask, weights=weights)


def uv_maps(attributes: torch.Tensor, layout: UVLayout) -> torch.Tensor:
    """World → UV: interpolate per-vertex attributes into UV space.

    Args:
        attributes: ``(B, V, C)`` per-vertex values (positions, normals, colours).
        layout: from :func:`uv_layout`.

    Returns:
        ``(B, C, S, S)``, zero outside the layout.
    """
    n_vertices = layout.weights.shape[1]
    if attributes.ndim != 3 or attributes.shape[1] < n_vertices:
        raise ValueError(f"attributes must be (B, V >= {n_vertices}, C), got {tuple(attributes.shape)}")
    batch, _, channels = attributes.shape
    size = layout.fragments.face_index.shape[-1]
    stacked = attributes[:, :n_vertices].permute(1, 0, 2).reshape(n_vertices, batch * channels)
    weights = layout.weights.to(device=attributes.device, dtype=attributes.dtype)
    texels = weights @ stacked
    return texels.reshape(size, size, batch, channels).permute(2, 3, 0, 1)


def _texel_grid(uv_positions: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project UV-space positions ``(B, 3, S, S)``: ``grid (B, S*S, 1, 2)`` for ``grid_sample`` and the
    projected points ``(B, S*S, 3)``."""
    if uv_positions.ndim != 4 or uv_positions.shape[1] != 3:
        raise ValueError(f"uv_positions must be (B, 3, S, S), got {tuple(uv_positions.shape)}")
    points = orthographic_project(uv_positions.flatten(2).transpose(1, 2), camera)
    grid = torch.stack([points[..., 0], -points[..., 1]], dim=-1)[:, :, None]
    return grid, points


def image_to_uv(images: torch.Tensor, uv_positions: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Sample an image into UV space: each texel takes the colour at the pixel its surface point projects to.

    Args:
        images: ``(B, C, H, W)``.
        uv_positions: ``(B, 3, S, S)`` world positions of the texels (from :func:`uv_maps`).
        camera: ``(B, 3)`` (scale, tx, ty).

    Returns:
        ``(B, C, S, S)`` bilinearly sampled colours (zero where the point falls outside the image);
        differentiable with respect to the image and the positions. Occlusion is not checked: combine with
        :func:`texel_visibility`.
    """
    grid, _ = _texel_grid(uv_positions, camera)
    size = uv_positions.shape[-1]
    sampled = F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled.reshape(images.shape[0], images.shape[1], size, size)


def texel_visibility(
    uv_positions: torch.Tensor,
    uv_normals: torch.Tensor,
    camera: torch.Tensor,
    fragments: Fragments,
    depth_tolerance_pixels: float = 4.0,
) -> torch.Tensor:
    """``(B, 1, S, S)`` float: 1 where a texel faces the camera and is the surface seen at its pixel.

    Args:
        uv_positions: ``(B, 3, S, S)`` world positions of the texels.
        uv_normals: ``(B, 3, S, S)`` their normals (world space; +z towards the camera).
        camera: ``(B, 3)``.
        fragments: the rasteriser's output for the same faces and camera (its z-buffer).
        depth_tolerance_pixels: a texel counts as the seen surface when its NDC depth is within this many
            pixels' worth of depth of the z-buffer at its pixel (oblique surfaces change depth quickly
            across one pixel; occluders such as the nose stand a centimetre or more in front).
    """
    grid, points = _texel_grid(uv_positions, camera)
    batch, size = uv_positions.shape[0], uv_positions.shape[-1]
    image_size = fragments.depth.shape[-1]
    depth = fragments.depth[:, None].to(uv_positions.dtype)
    mask = fragments.mask[:, None].to(uv_positions.dtype)
    grid = grid.to(uv_positions.dtype)
    seen = F.grid_sample(depth, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0, :, 0]
    covered = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0, :, 0]
    tolerance = depth_tolerance_pixels * 2.0 / image_size
    unoccluded = ((points[..., 2] - seen).abs() < tolerance) & (covered > 0)
    facing = uv_normals[:, 2].flatten(1) > 0.0
    return (unoccluded & facing).to(uv_positions.dtype).reshape(batch, 1, size, size)

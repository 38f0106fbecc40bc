"""Photometric refinement, no training data needed: a coarse fit, an AU fit, then shape from shading in UV.

:func:`fit_coarse` first refits the coarse stage's shape, expression, albedo, pose, camera and light to the
photo (by analysis by synthesis, in UV): every later fit reads the photo through that surface, and the
detail's normals sit on it, so its misplacement costs more than any detail can win back.
:func:`fit_intensities` then fits the AU intensities that condition the detail decoder to the photo's fine
shading: the detail stays among the folds the decoder learnt to draw, which the skin's fine albedo texture
cannot imitate (on the synthetic world that texture is as strong as the wrinkles' shading, and a free
displacement copies it). :func:`refine_detail` last fits the displacement itself:

Starting from a displacement (the network's, or flat), the refinement fits, per face, the UV displacement,
the SH light and a smooth albedo correction so that ``albedo × SH(detail normals)`` matches the photo
sampled into UV through the coarse fit, on the visible skin only. The albedo may only change at low
frequency (a coarse grid of gains, upsampled), so the photo's fine shading can only be explained by the
displacement; a curvature penalty, a pull towards the starting displacement and left-right symmetry where a
side is unseen keep it a surface.

The displacement is optimised in *texel-slope units*: one unit is the world length of one texel step on this
face, so a difference of 1 between neighbouring texels tilts the normal by 45° whatever the face model's
units (centimetres for the built-in face, metres for FLAME) or the UV size; the settings do not depend on
either.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aucgan.config import RefineConfig
from aucgan.face_model.appearance import part_masks
from aucgan.face_model.base import FaceModel
from aucgan.face_model.uv_space import UVSpace, UVSurface
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.render import Rendering, image_to_uv, texel_visibility
from aucgan.geometry.shading import sh_shading
from aucgan.geometry.uv import normalize_map
from aucgan.nets.detail_decoder import AUCondition
from aucgan.stages.coarse import CoarseOutput, CoarseStage
from aucgan.stages.detail import DetailStage, UVEvidence, photo_maps

HIGH_PASS_SIGMA_AT_256 = 2.0
"""Sigma, in texels at UV 256 (scaled with the UV size), of the Gaussian whose complement is the high-pass
of :func:`high_frequency_residual`: it keeps features narrower than about 4 texels at UV 256 (3.5 mm on the
built-in face), wrinkles and pores, and drops what a smooth albedo or light can explain."""

BEFORE_DISPLACEMENT = ("coarse_steps", "coarse_lr", "coarse_uv", "au_steps", "au_lr", "au_start")
"""The ``refine.*`` settings of the coarse fit and the AU fit: the displacement fit (:func:`refine_faces`)
does not read them."""

COARSE_PRIOR = 1e-3
"""Weight of the coarse fit's pull of the shape, expression and albedo codes towards their start (squared
distance, against a data term normalised by ``refine.robust``²)."""

LANDMARK_SCALE = 0.01
"""The coarse fit counts landmark distances in this fraction of the face box (about the landmark fit's own
median error on a photo)."""

LANDMARK_WEIGHT = 1.0
"""Weight of the mean squared landmark distance (in :data:`LANDMARK_SCALE` units) in the coarse fit, beside
its photometric term (normalised by ``refine.robust``²)."""

UNSUPPORTED_WEIGHT = 1.0
"""Weight of the pull towards the starting displacement on skin the photo does not speak for (outliers such
as hair and glasses, and unseen texels whose mirror is not seen either), on top of ``refine.magnitude``'s,
so that the fitted detail does not leak there through the smoothness and the pyramid."""


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine_detail` returns.

    Attributes:
        uv_displacement: ``(B, 1, S, S)`` refined displacement, face-model units, 0 off the skin.
        uv_detail_normals: ``(B, 3, S, S)`` its detail normals.
        light: ``(B, 9, 3)`` refitted SH light.
        uv_albedo: ``(B, 3, S, S)`` the starting albedo times the fitted smooth gain.
        uv_rendering: ``(B, 3, S, S)`` the refined rendering in UV: ``uv_albedo × SH(uv_detail_normals)``.
        mask: ``(B, 1, S, S)`` the texels that were fitted and where the residuals are measured: the
            visible skin of :func:`fit_mask` without the outliers, texels whose photo the coarse-only
            rendering misses by more than ``settings.outlier`` (hair, glasses, cast shadows).
        residual_coarse: ``(B,)`` high-frequency residual RMS over ``mask`` of the coarse-only rendering
            (no displacement, the starting light and albedo; :func:`high_frequency_residual`).
        residual: ``(B,)`` the same for the refined rendering.
        start: ``(B, 1, S, S)`` the displacement the refinement started from (face-model units).
    """

    uv_displacement: torch.Tensor
    uv_detail_normals: torch.Tensor
    light: torch.Tensor
    uv_albedo: torch.Tensor
    uv_rendering: torch.Tensor
    mask: torch.Tensor
    residual_coarse: torch.Tensor
    residual: torch.Tensor
    start: torch.Tensor


def texel_length(surface: UVSurface, skin: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1)``: the mean world length of one texel step along u and v on the skin of ``surface``."""
    positions = surface.positions
    along_u = (positions[..., :, 1:] - positions[..., :, :-1]).norm(dim=1, keepdim=True)
    along_v = (positions[..., 1:, :] - positions[..., :-1, :]).norm(dim=1, keepdim=True)
    both_u = skin[..., :, 1:] * skin[..., :, :-1]
    both_v = skin[..., 1:, :] * skin[..., :-1, :]
    total = (along_u * both_u).sum((1, 2, 3)) + (along_v * both_v).sum((1, 2, 3))
    count = both_u.sum((1, 2, 3)) + both_v.sum((1, 2, 3))
    return (total / count.clamp(min=1.0)).clamp(min=1e-12)[:, None, None, None]


def gaussian_blur(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with zero padding (truncated at 2.5 sigma)."""
    radius = max(1, math.ceil(2.5 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    weights = kernel.tolist()
    # Shifted, weighted sums: for these few taps several times faster than a grouped convolution on CPU,
    # forward and backward.
    padded = F.pad(values, (radius, radius, 0, 0))
    width = values.shape[-1]
    rows = sum(weight * padded[..., :, k : k + width] for k, weight in enumerate(weights))
    padded = F.pad(rows, (0, 0, radius, radius))
    height = values.shape[-2]
    return sum(weight * padded[..., k : k + height, :] for k, weight in enumerate(weights))


def masked_blur(values: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised Gaussian blur of ``values`` over ``mask (B, 1, H, W)``: texels outside the mask do not
    count (the average of the masked neighbourhood; 0 where no masked texel is near)."""
    weight = gaussian_blur(mask, sigma)
    return gaussian_blur(values * mask, sigma) / weight.clamp(min=1e-6) * (weight > 1e-6)


def high_frequency_residual(
    photo: torch.Tensor, rendering: torch.Tensor, mask: torch.Tensor, sigma: float | None = None
) -> torch.Tensor:
    """``(B,)`` RMS over ``mask`` of the photo's residual against a rendering after a Gaussian high-pass.

    The residual ``photo - rendering (B, 3, S, S)`` minus its masked Gaussian blur of ``sigma`` texels
    (default :data:`HIGH_PASS_SIGMA_AT_256` scaled to the UV size): what smooth albedo and light cannot
    explain, i.e. the fine shading a detail map should account for. NaN for a face with an empty mask.
    """
    if sigma is None:
        sigma = HIGH_PASS_SIGMA_AT_256 * photo.shape[-1] / 256.0
    residual = photo - rendering
    high = (residual - masked_blur(residual, mask, sigma)) * mask
    count = mask.sum((1, 2, 3)) * photo.shape[1]
    return ((high**2).sum((1, 2, 3)) / count).sqrt()


def _high_pass(
    residual: torch.Tensor, mask: torch.Tensor, sigma: float, blurred_mask: torch.Tensor | None
) -> torch.Tensor:
    """``residual`` minus its masked Gaussian blur (``blurred_mask``: :func:`gaussian_blur` of ``mask``,
    precomputed; ``None``: no high-pass)."""
    if blurred_mask is None:
        return residual
    return residual - _coarse_blur(residual * mask, sigma) / blurred_mask.clamp(min=1e-6)


def _coarse_blur(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`gaussian_blur`, computed at half resolution when ``sigma`` spans 2 samples or more (the
    blurred map has nothing finer to lose; a quarter of the cost, which the fit pays at every step)."""
    if sigma < 2.0 or values.shape[-1] % 2 or values.shape[-2] % 2:
        return gaussian_blur(values, sigma)
    half = gaussian_blur(F.avg_pool2d(values, 2), sigma / 2.0)
    return F.interpolate(half, size=values.shape[-2:], mode="bilinear", align_corners=False)


def _laplacian(values: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian of ``(B, C, H, W)`` maps, zero outside."""
    padded = F.pad(values, (1, 1, 1, 1))
    return (
        padded[..., :-2, 1:-1]
        + padded[..., 2:, 1:-1]
        + padded[..., 1:-1, :-2]
        + padded[..., 1:-1, 2:]
        - 4.0 * values
    )


def _dilate(mask: torch.Tensor, texels: int) -> torch.Tensor:
    if texels <= 0:
        return mask
    return F.max_pool2d(mask, 2 * texels + 1, stride=1, padding=texels)


def _erode(mask: torch.Tensor, texels: int) -> torch.Tensor:
    return 1.0 - _dilate(1.0 - mask, texels)


def _grow_texels(size: int) -> int:
    """How far a mask is grown at UV size ``size``: about 2 texels at UV 256, at least 1."""
    return max(1, round(2 * size / 256))


def _resized(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``maps (B, C, S, S)`` resampled to ``size``² (bilinear, antialiased when shrinking: a texel averages
    the texels it covers); ``maps`` itself at its own size."""
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _charbonnier(residual: torch.Tensor, scale: float) -> torch.Tensor:
    return scale**2 * (torch.sqrt(1.0 + (residual / scale) ** 2) - 1.0)


def _uv_band(mask: torch.Tensor, settings: RefineConfig) -> tuple[float, torch.Tensor | None]:
    """The fit's high-pass in UV: ``settings.band`` texels at UV 256 scaled to ``mask``'s size, and the
    blurred ``mask`` :func:`_high_pass` divides by (``None``: no high-pass)."""
    band = settings.band * mask.shape[-1] / 256.0
    return band, _coarse_blur(mask, band) if settings.band > 0 else None


def _uv_misfit(
    rendered: torch.Tensor,
    photo: torch.Tensor,
    mask: torch.Tensor,
    band: float,
    blurred_mask: torch.Tensor | None,
    settings: RefineConfig,
) -> torch.Tensor:
    """``(B,)`` the robust misfit in UV of ``rendered`` to ``photo`` after the high-pass (none with
    ``blurred_mask=None``), averaged over ``mask``: the data term every fit minimises."""
    residual = _high_pass(rendered - photo, mask, band, blurred_mask)
    texels = mask.sum((1, 2, 3)).clamp(min=1.0)
    return (_charbonnier(residual, settings.robust) * mask).sum((1, 2, 3)) / texels


def _light_and_gain(
    light: torch.Tensor, batch: int, settings: RefineConfig
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """What both fits adjust beside the detail: the SH light (started at ``light (B, 9, 3)``) and the albedo's
    log-gain on ``settings.albedo_cells``² cells (started at 0), with their Adam parameter groups."""
    sh = light.detach().clone().requires_grad_(True)
    cells = settings.albedo_cells
    gain = light.new_zeros(batch, 3, cells, cells, requires_grad=True)
    groups = [
        {"params": [gain], "lr": settings.lr * 0.1},
        {"params": [sh], "lr": settings.lr * settings.light_lr},
    ]
    return sh, gain, groups


def fit_mask(
    skin: torch.Tensor,
    visibility: torch.Tensor,
    normals: torch.Tensor,
    excluded: torch.Tensor | None = None,
    min_facing: float = 0.3,
) -> torch.Tensor:
    """``(B, 1, S, S)`` the texels the photo can tell the detail of: skin, seen, facing the camera by at
    least ``min_facing`` (the cosine of the view angle: grazing texels are smeared in the photo), one texel
    in from the skin's border, and outside ``excluded (1 or B, 1, S, S)`` (brows, lips, eyes... dilated)."""
    mask = _erode(skin.expand_as(visibility), 1) * visibility * (normals[:, 2:3] > min_facing)
    if excluded is not None:
        mask = mask * (1.0 - excluded)
    return mask


def smooth_gain(gain: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, size, size)`` the albedo gain of log-gains on a coarse grid ``(B, C, cells, cells)``: bicubic
    over the cells up to 4 samples per cell, then bilinear (smooth, and cheap to differentiate at full
    size), exponentiated."""
    middle = min(size, 4 * gain.shape[-1])
    smooth = F.interpolate(gain, size=(middle, middle), mode="bicubic", align_corners=False)
    return torch.exp(F.interpolate(smooth, size=(size, size), mode="bilinear", align_corners=False))


def agrees(photo: torch.Tensor, rendering: torch.Tensor, outlier: float) -> torch.Tensor:
    """``(B, 1, S, S)`` bool: texels whose grey level in ``photo`` is within ``outlier`` (relative) of the
    coarse-only ``rendering``'s (not hair, glasses or a cast shadow)."""
    grey_photo, grey_render = photo.mean(1, keepdim=True), rendering.mean(1, keepdim=True)
    return (grey_photo / grey_render.clamp(min=1e-3) - 1.0).abs() < outlier


def pixel_grid(pixel_uv: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 2)`` the ``grid_sample`` grid of a rendering's per-pixel UV coordinates
    ``(B, 2, H, W)`` (:attr:`~aucgan.geometry.render.Rendering.uv`, v up)."""
    u, v = pixel_uv[:, 0], pixel_uv[:, 1]
    return torch.stack([2.0 * u - 1.0, 1.0 - 2.0 * v], dim=-1)


def _at_pixels(uv_map: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    return F.grid_sample(uv_map, grid, mode=mode, padding_mode="border", align_corners=False)


def refine_detail(
    uv_space: UVSpace,
    surface: UVSurface,
    images: torch.Tensor,
    pixel_uv: torch.Tensor,
    pixel_mask: torch.Tensor,
    photo: torch.Tensor,
    mask: torch.Tensor,
    albedo: torch.Tensor,
    light: torch.Tensor,
    displacement: torch.Tensor,
    settings: RefineConfig,
    pixel_length: torch.Tensor | None = None,
    progress: Callable[[int], object] | None = None,
) -> Refinement:
    """Refine ``displacement (B, 1, S, S)`` against the photo, jointly with the SH ``light (B, 9, 3)`` and
    a smooth gain on ``albedo (B, 3, S, S)``; ``progress(1)`` is called after each step. Gradients do not
    flow to the inputs.

    The fit compares renderings with ``images (B, 3, H, W)`` pixel by pixel, as the camera saw them: the
    coarse fit's rasterisation gives each pixel its UV coordinates ``pixel_uv (B, 2, H, W)`` and
    ``pixel_mask (B, 1, H, W)`` (pixels of the face), and the detail normals and albedo are looked up there.
    Only pixels whose texel is in ``mask (B, 1, S, S)`` (:func:`fit_mask`) count. ``photo (B, 3, S, S)``, the
    photo sampled into UV, is what the reported high-frequency residuals compare in UV, and what the fit
    compares with ``settings.compare="uv"``. With ``"auto"`` each face is compared where it is sampled more
    coarsely: in the image when a pixel spans at least a texel (``pixel_length (B,)``, world units per
    pixel, against :func:`texel_length`), else in UV.
    """
    if settings.compare == "auto" and pixel_length is None:
        raise ValueError("refine.compare=auto needs the pixel_length of each face")
    skin = uv_space.skin.to(photo.device, photo.dtype)
    surface = UVSurface(surface.positions.detach(), surface.normals.detach())
    photo, albedo, start_light = photo.detach(), albedo.detach(), light.detach()
    scale = texel_length(surface, skin)
    start = (displacement.detach() * skin) / scale
    size = uv_space.size
    batch = photo.shape[0]

    grid = pixel_grid(pixel_uv.detach().to(photo.dtype))
    images = images.detach()

    frame = uv_space.detail_frame(surface)

    def maps(slope: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The detail normals and the albedo with its gain, in UV."""
        return frame.normals(slope * scale * skin), albedo * smooth_gain(gain, size)

    def render(normals: torch.Tensor, lit: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        return lit * sh_shading(normals, sh)

    def render_pixels(normals: torch.Tensor, lit: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        at_pixels = _at_pixels(torch.cat([normals, lit], dim=1), grid)
        return at_pixels[:, 3:] * sh_shading(normalize_map(at_pixels[:, :3]), sh)

    with torch.no_grad():
        no_gain = photo.new_zeros(batch, 3, 1, 1)
        coarse_only = render(*maps(torch.zeros_like(start), no_gain), start_light)
        mask = mask.detach() * agrees(photo, coarse_only, settings.outlier)
        residual_coarse = high_frequency_residual(photo, coarse_only, mask)
        pixels = pixel_mask.detach().to(photo.dtype) * _at_pixels(mask, grid, mode="nearest")
        pixel_count = pixels.sum((1, 2, 3)).clamp(min=1.0)
        if settings.compare == "auto":
            in_image = pixel_length.flatten() >= scale.flatten()
        else:
            in_image = torch.full((batch,), settings.compare == "image", device=photo.device)
        # The fit sees the residual's band finer than settings.band texels at UV 256 (in the image: the same
        # length on the face, in pixels): smooth mismatches of the coarse fit must not become detail.
        band_uv, blurred_mask_uv = _uv_band(mask, settings)
        band_world = float((scale.flatten() * band_uv).mean())
        band_pixels = band_world / float(pixel_length.mean()) if pixel_length is not None else band_uv
        blurred_pixels = _coarse_blur(pixels, band_pixels) if settings.band > 0 else None

    levels = [
        photo.new_zeros(batch, 1, size >> k, size >> k, requires_grad=True)
        for k in range(settings.levels)
        if size >> k >= 4
    ]

    def displacement_of(levels: list[torch.Tensor]) -> torch.Tensor:
        total = start + levels[0]
        for k, level in enumerate(levels[1:], start=1):
            upsampled = F.interpolate(level, size=(size, size), mode="bilinear", align_corners=False)
            total = total + (2.0**k) * upsampled
        return total

    sh, gain, appearance = _light_and_gain(start_light, batch, settings)
    optimiser = torch.optim.Adam([{"params": levels, "lr": settings.lr}, *appearance])
    interior = _erode(skin, 1)
    seen_mirror = (mask.flip(-1) > 0) & (mask == 0)
    unseen = (seen_mirror & (skin > 0)).to(photo.dtype)
    # Texels the photo does not speak for (hair, glasses, unseen without a seen mirror) stay at the start.
    near_fit = _dilate(mask, _grow_texels(size))
    unsupported = skin * (1.0 - torch.maximum(near_fit, unseen))
    skin_texels = skin.sum().clamp(min=1.0)
    for _ in range(settings.steps):
        slope = displacement_of(levels)
        normals, lit = maps(slope, gain)
        data = slope.new_zeros(batch)
        if not in_image.all():
            in_uv = _uv_misfit(render(normals, lit, sh), photo, mask, band_uv, blurred_mask_uv, settings)
            data = data + in_uv * ~in_image
        if in_image.any():
            rendered = render_pixels(normals, lit, sh)
            residual = _high_pass(rendered - images, pixels, band_pixels, blurred_pixels)
            at_pixels = (_charbonnier(residual, settings.robust) * pixels).sum((1, 2, 3))
            data = data + at_pixels / pixel_count * in_image
        curvature = ((_laplacian(slope) * interior) ** 2).sum((1, 2, 3)) / skin_texels
        pull = (((slope - start) * skin) ** 2).sum((1, 2, 3)) / skin_texels
        outside = (((slope - start) * unsupported) ** 2).sum((1, 2, 3)) / skin_texels
        loss = (
            data / settings.robust**2
            + settings.smoothness * curvature
            + settings.magnitude * pull
            + UNSUPPORTED_WEIGHT * outside
        )
        if settings.symmetry > 0:
            mirrored = slope.flip(-1).detach()
            loss = loss + settings.symmetry * ((slope - mirrored) ** 2 * unseen).sum((1, 2, 3)) / skin_texels
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimiser.step()
        if progress is not None:
            progress(1)

    with torch.no_grad():
        slope = displacement_of(levels)
        normals, lit = maps(slope, gain)
        rendered = render(normals, lit, sh)
        return Refinement(
            uv_displacement=slope.detach() * scale * skin,
            uv_detail_normals=normals,
            light=sh.detach(),
            uv_albedo=lit,
            uv_rendering=rendered,
            mask=mask,
            residual_coarse=residual_coarse,
            residual=high_frequency_residual(photo, rendered, mask),
            start=start * scale,
        )


def excluded_parts(face_model: FaceModel, size: int) -> torch.Tensor:
    """``(1, 1, S, S)`` float: the texels whose colour is not skin shading (brows, lips, eyes, the mouth
    opening), dilated by about 2 texels at UV 256; zeros for a face model without part outlines (FLAME,
    whose UV skin mask already leaves out the eyes and mouth)."""
    rims = getattr(face_model, "rims", None)
    if rims is None:
        return torch.zeros(1, 1, size, size)
    parts = part_masks(face_model.uvs, rims, size)
    excluded = (parts.lips | parts.brows | parts.eyes | parts.irises | parts.mouth).float()[None, None]
    return _dilate(excluded, _grow_texels(size))


def _seen_mask(
    coarse_stage: CoarseStage, coarse: CoarseOutput, images: torch.Tensor, excluded: torch.Tensor | None
) -> tuple[Rendering, torch.Tensor]:
    """The coarse faces rasterised at the size of ``images (B, 3, P, P)``, and :func:`fit_mask` of the skin
    seen in that rasterisation, without ``excluded``."""
    surface = coarse.surface
    skin = coarse_stage.uv_space.to(images.device).skin.to(images.dtype)
    rendering = coarse_stage.render(coarse, image_size=images.shape[-1])
    seen = texel_visibility(surface.positions, surface.normals, coarse.codes.camera, rendering.fragments)
    return rendering, fit_mask(skin, seen * skin, surface.normals, excluded)


def refine_faces(
    coarse_stage: CoarseStage,
    coarse: CoarseOutput,
    images: torch.Tensor,
    displacement: torch.Tensor,
    settings: RefineConfig,
    progress: Callable[[int], object] | None = None,
) -> Refinement:
    """:func:`refine_detail` of ``images (B, 3, H, W)`` read through their coarse fit ``coarse``, starting
    from ``displacement (B, 1, S, S)`` (the network's, or zeros): the coarse faces are rasterised at the
    images' size for the pixels' UV coordinates and the texels' visibility; the fitted texels are the
    visible skin of :func:`fit_mask`, without :func:`excluded_parts`."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"refinement needs square images (B, 3, S, S), got {tuple(images.shape)}")
    images = images.detach().float()
    uv_space = coarse_stage.uv_space.to(images.device)
    excluded = excluded_parts(coarse_stage.face_model, uv_space.size).to(images.device)
    rendering, mask = _seen_mask(coarse_stage, coarse, images, excluded)
    surface = coarse.surface
    photo = image_to_uv(images, surface.positions, coarse.codes.camera).clamp(0, 1)
    pixel_length = 2.0 / (coarse.codes.camera[:, 0].abs().clamp(min=1e-12) * images.shape[-1])
    return refine_detail(
        uv_space, surface, images, rendering.uv, rendering.mask, photo, mask, coarse.uv_albedo,
        coarse.codes.light, displacement, settings, pixel_length, progress,
    )  # fmt: skip


ALBEDO_CODE_LR = 3.0
"""The coarse fit's Adam step of the albedo code, as a multiple of ``refine.coarse_lr``."""

COARSE_ALBEDO_CELLS = 4
"""The coarse fit's albedo gain lives on this many cells across the UV square: coarser than the detail fits'
gain, so that the shading of the face's shape (a few cells across a cheek) is the geometry's to explain."""


def fit_coarse(
    coarse_stage: CoarseStage,
    coarse: CoarseOutput,
    images: torch.Tensor,
    settings: RefineConfig,
    landmarks: torch.Tensor | None = None,
    progress: Callable[[int], object] | None = None,
) -> CoarseOutput:
    """``coarse`` refitted to ``images (B, 3, H, W)`` by analysis by synthesis: ``settings.coarse_steps``
    steps of Adam (``settings.coarse_lr``) on the shape, expression and albedo codes, the pose and camera,
    the SH light and a smooth albedo gain, so that ``albedo × SH(smooth normals)`` matches the photo sampled
    into UV through the moving geometry; ``progress(1)`` after each step. Gradients do not flow to the
    inputs. The comparison is made in a UV map of at most ``settings.coarse_uv`` texels (the mask, the
    albedo and its basis resampled to it; a texel counts when most of what it covers does); the fitted
    albedo map is returned at the UV space's size.

    Both halves of the photo speak: its shading tells the surface's orientation, and the outlines of the
    albedo's parts (brows, lips, eyes), sampled through the geometry, tell where the surface is. The texels
    compared are the visible skin and parts of :func:`fit_mask` at the start (not re-rasterised); the
    residual is robust (``settings.robust``: a misplaced outline, hair or glasses count linearly) and not
    high-passed. The codes are pulled towards their start (a weak prior; the network's, or the landmark
    fit's, estimate) and an AU-rig expression is kept in [0, 1]. The albedo map is the start's, moved along
    the albedo model's basis by the code's change, times the fitted gain.

    With the dense ``landmarks (B, V, 3)`` NDC the start was fitted to (the MediaPipe backend), their
    image-plane distances to the projected vertices stay in the fit (:data:`LANDMARK_WEIGHT`, in units of
    :data:`LANDMARK_SCALE` of the face box): on a real photo the built-in albedo's outlines are a guess, and
    the landmarks keep the registration they gave.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"the coarse fit needs square images (B, 3, S, S), got {tuple(images.shape)}")
    images = images.detach().float()
    codes = coarse.codes
    full = coarse_stage.uv_space
    model = coarse_stage.face_model
    size = min(settings.coarse_uv or full.size, full.size)
    uv_space = (full if size == full.size else UVSpace(model, size)).to(images.device)
    with torch.no_grad():
        mask = (_resized(_seen_mask(coarse_stage, coarse, images, None)[1], size) > 0.5).to(images.dtype)
        if landmarks is not None:
            landmarks = landmarks.detach()[..., :2].to(images.dtype)
            box = (landmarks.amax(1) - landmarks.amin(1)).mean(-1)  # the face box's mean side, NDC
            landmark_scale = (LANDMARK_SCALE * box)[:, None]
    albedo, basis = coarse.uv_albedo.detach(), coarse_stage.albedo.basis
    fit_albedo, fit_basis = _resized(albedo, size), _resized(basis, size)
    start_albedo = codes.albedo.detach()
    albedo_code = start_albedo.clone().requires_grad_(True)
    bounded = model.expression_is_au_rig
    start_shape = codes.shape.detach()
    start_expression = codes.expression.detach().clamp(0.0, 1.0) if bounded else codes.expression.detach()
    shape = start_shape.clone().requires_grad_(True)
    expression = start_expression.clone().requires_grad_(True)
    pose = codes.pose.detach().clone().requires_grad_(True)
    camera = codes.camera.detach().clone().requires_grad_(True)
    sh = codes.light.detach().clone().requires_grad_(True)
    gain = images.new_zeros(images.shape[0], 3, COARSE_ALBEDO_CELLS, COARSE_ALBEDO_CELLS, requires_grad=True)
    lr = settings.coarse_lr
    optimiser = torch.optim.Adam(
        [
            {"params": [shape, expression, sh, gain], "lr": lr},
            {"params": [albedo_code], "lr": lr * ALBEDO_CODE_LR},
            {"params": [pose], "lr": lr * 0.1},
            {"params": [camera], "lr": lr * 0.01},
        ]
    )

    def albedo_of(
        code: torch.Tensor, gain: torch.Tensor, albedo: torch.Tensor, basis: torch.Tensor
    ) -> torch.Tensor:
        """The start's ``albedo`` map moved along the albedo model's ``basis`` by the code's change, times
        the gain (whatever map the start holds: the model's, or one given to the coarse stage)."""
        change = torch.einsum("bk,kchw->bchw", code - start_albedo, basis)
        return ((albedo + change) * smooth_gain(gain, albedo.shape[-1])).clamp(0.0, 1.0)

    for _ in range(settings.coarse_steps):
        geometry = model(shape, expression, pose)
        moved = uv_space.surface(geometry.vertices)
        sampled = image_to_uv(images, moved.positions, camera)
        rendered = albedo_of(albedo_code, gain, fit_albedo, fit_basis) * sh_shading(moved.normals, sh)
        data = _uv_misfit(rendered, sampled, mask, 0.0, None, settings)  # no high-pass
        prior = (
            ((shape - start_shape) ** 2).sum(1)
            + ((expression - start_expression) ** 2).sum(1)
            + ((albedo_code - start_albedo) ** 2).sum(1)
        )
        loss = data / settings.robust**2 + COARSE_PRIOR * prior
        if landmarks is not None:
            projected = orthographic_project(geometry.vertices, camera)[..., :2]
            distance = ((projected - landmarks) / landmark_scale[..., None]).square().sum(-1)
            loss = loss + LANDMARK_WEIGHT * distance.mean(1)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimiser.step()
        if bounded:
            with torch.no_grad():
                expression.clamp_(0.0, 1.0)
        if progress is not None:
            progress(1)
    with torch.no_grad():
        fitted = dataclasses.replace(
            codes,
            shape=shape.detach(),
            expression=expression.detach(),
            pose=pose.detach(),
            camera=camera.detach(),
            light=sh.detach(),
            albedo=albedo_code.detach(),
        )
        return coarse_stage.decode(fitted, uv_albedo=albedo_of(albedo_code, gain, albedo, basis))


def fit_intensities(
    coarse_stage: CoarseStage,
    detail_stage: DetailStage,
    coarse: CoarseOutput,
    evidence: UVEvidence,
    detail_code: torch.Tensor,
    condition: AUCondition,
    settings: RefineConfig,
    from_zero: bool = False,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """``(B, K)`` the AU intensities in [0, 1] whose detail, as the AU-conditioned decoder draws it, best
    explains the photo's fine shading: ``settings.au_steps`` steps of projected Adam (``settings.au_lr``)
    from ``condition``'s intensities (or from zero: a flat prediction), jointly with the SH light and a
    smooth albedo gain, on the photo sampled into UV (``evidence``, :func:`~aucgan.stages.detail.read_photo`),
    over the visible skin of :func:`fit_mask` without :func:`excluded_parts` and outliers,
    after the same high-pass as :func:`refine_detail`. ``progress(1)`` after each step.

    Only the intensities change, never the decoder: the detail stays among the folds the decoder learnt to
    draw, so a photo's fine albedo texture (which a free displacement would copy) cannot become detail. The
    AU recogniser's intensities are the start; the fit corrects them from what the folds look like.
    """
    if not detail_stage.decoder.conditioned:
        raise ValueError("fitting AU intensities needs an AU-conditioned detail decoder")
    uv_space = coarse_stage.uv_space.to(detail_code.device)
    size, skin = uv_space.size, uv_space.skin.to(detail_code.dtype)
    photo = evidence.photo.detach()
    maps = photo_maps(evidence).detach() if detail_stage.reads_photo else None
    excluded = excluded_parts(coarse_stage.face_model, size).to(photo.device)
    frame = uv_space.detail_frame(coarse.surface)
    with torch.no_grad():
        mask = fit_mask(skin, evidence.visibility, coarse.surface.normals, excluded)
        coarse_only = coarse.uv_albedo * sh_shading(coarse.surface.normals, coarse.codes.light)
        mask = mask * agrees(photo, coarse_only, settings.outlier)
        band, blurred_mask = _uv_band(mask, settings)
    start = condition.intensities.detach().clamp(0.0, 1.0)
    intensities = (torch.zeros_like(start) if from_zero else start).clone().requires_grad_(True)
    sh, gain, appearance = _light_and_gain(coarse.codes.light, photo.shape[0], settings)
    optimiser = torch.optim.Adam([{"params": [intensities], "lr": settings.au_lr}, *appearance])
    features = condition.features.detach()
    code = detail_code.detach()
    for _ in range(settings.au_steps):
        displacement = detail_stage.displacement(coarse, code, AUCondition(features, intensities), maps=maps)
        rendered = (
            coarse.uv_albedo * smooth_gain(gain, size) * sh_shading(frame.normals(displacement * skin), sh)
        )
        loss = _uv_misfit(rendered, photo, mask, band, blurred_mask, settings)
        # gradients of the fitted values only: the decoder's parameters are left alone
        grads = torch.autograd.grad(loss.sum() / settings.robust**2, [intensities, sh, gain])
        for value, grad in zip((intensities, sh, gain), grads, strict=True):
            value.grad = grad
        optimiser.step()
        with torch.no_grad():
            intensities.clamp_(0.0, 1.0)
        if progress is not None:
            progress(1)
    return intensities.detach()


__all__ = [
    "BEFORE_DISPLACEMENT",
    "HIGH_PASS_SIGMA_AT_256",
    "Refinement",
    "agrees",
    "excluded_parts",
    "fit_coarse",
    "fit_intensities",
    "fit_mask",
    "gaussian_blur",
    "high_frequency_residual",
    "masked_blur",
    "refine_detail",
    "refine_faces",
    "smooth_gain",
    "texel_length",
]

"""Named UV regions of the built-in face where Action Units fold the skin (SPEC §6), and UV masks.

Regions are ellipses in the UV square (u right, v up) placed on the canonical mesh's UV layout, which is
close to a frontal projection (about 0.048 UV units per cm). Regions are defined on the subject's right
(u < 0.5) or on the midline; every right-side region has a mirrored left twin (u -> 1 - u). Texel (i, j)
of a size-S map has its centre at ``u = (j + 0.5) / S``, ``v = 1 - (i + 0.5) / S``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from aucgan.au import MAIN_AUS


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in UV: centre ``(u, v)``, semi-axes ``(a, b)`` along its own axes, rotated by ``angle``
    degrees counter-clockwise from the u axis."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0

    def mirrored(self) -> Ellipse:
        return Ellipse((1.0 - self.centre[0], self.centre[1]), self.axes, -self.angle)


_RIGHT_AND_MIDLINE: dict[str, Ellipse] = {
    "forehead_centre": Ellipse((0.5, 0.805), (0.12, 0.06)),
    "forehead_lateral_right": Ellipse((0.29, 0.785), (0.07, 0.045), -15.0),
    "glabella": Ellipse((0.5, 0.705), (0.032, 0.04)),
    "nasion": Ellipse((0.5, 0.655), (0.04, 0.018)),
    "crows_feet_right": Ellipse((0.225, 0.615), (0.032, 0.05)),
    "lower_lid_right": Ellipse((0.35, 0.572), (0.06, 0.018)),
    "nose_bridge": Ellipse((0.5, 0.565), (0.035, 0.04)),
    "nasolabial_right": Ellipse((0.378, 0.372), (0.075, 0.018), 70.0),
    "nose_wing_right": Ellipse((0.415, 0.452), (0.026, 0.036)),
    "perioral": Ellipse((0.5, 0.305), (0.13, 0.062)),
    "mouth_corner_right": Ellipse((0.352, 0.302), (0.024, 0.03)),
    "below_mouth_corner_right": Ellipse((0.38, 0.245), (0.02, 0.04), 80.0),
    "chin": Ellipse((0.5, 0.165), (0.075, 0.058)),
    "cheek_right": Ellipse((0.28, 0.475), (0.06, 0.06)),
}

UV_REGIONS: dict[str, Ellipse] = dict(_RIGHT_AND_MIDLINE)
for _name, _ellipse in _RIGHT_AND_MIDLINE.items():
    if _name.endswith("_right"):
        UV_REGIONS[_name[: -len("right")] + "left"] = _ellipse.mirrored()

# Which regions each wrinkle-producing AU folds (SPEC §6).
AU_WRINKLE_REGIONS: dict[str, tuple[str, ...]] = {
    "AU1": ("forehead_centre",),
    "AU2": ("forehead_lateral_right", "forehead_lateral_left"),
    "AU4": ("glabella", "nasion"),
    "AU6": ("crows_feet_right", "crows_feet_left"),
    "AU7": ("lower_lid_right", "lower_lid_left"),
    "AU9": ("nose_bridge",),
    "AU10": ("nasolabial_right", "nasolabial_left"),
    "AU11": ("nasolabial_right", "nasolabial_left"),
    "AU12": ("nasolabial_right", "nasolabial_left"),
    "AU14": ("mouth_corner_right", "mouth_corner_left"),
    "AU15": ("below_mouth_corner_right", "below_mouth_corner_left"),
    "AU17": ("chin",),
    "AU20": ("mouth_corner_right", "mouth_corner_left"),
    "AU23": ("perioral",),
    "AU24": ("perioral",),
    "AU32": ("chin",),
    "AU38": ("nose_wing_right", "nose_wing_left"),
    "AU39": ("nose_wing_right", "nose_wing_left"),
}


def texel_centres(
    size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """UV coordinates of the texel centres of a ``size``² map: ``(size, size, 2)``, row 0 at v ≈ 1."""
    t = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
    v, u = torch.meshgrid(1.0 - t, t, indexing="ij")
    return torch.stack([u, v], dim=-1)


def ellipse_radius(ellipse: Ellipse, uv: torch.Tensor) -> torch.Tensor:
    """Normalised elliptical radius of UV points ``(..., 2)``: < 1 inside, 1 on the boundary."""
    c, s = math.cos(math.radians(ellipse.angle)), math.sin(math.radians(ellipse.angle))
    d = uv - uv.new_tensor(ellipse.centre)
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    return torch.sqrt((along / ellipse.axes[0]) ** 2 + (across / ellipse.axes[1]) ** 2)


def region_window(name: str, size: int) -> tuple[slice, slice]:
    """Rows and columns of a ``size``² UV map that contain the whole region (its ellipse's bounding box)."""
    ellipse = UV_REGIONS[name]
    c, s = math.cos(math.radians(ellipse.angle)), math.sin(math.radians(ellipse.angle))
    a, b = ellipse.axes
    half_u, half_v = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    u0, u1 = ellipse.centre[0] - half_u, ellipse.centre[0] + half_u
    v0, v1 = ellipse.centre[1] - half_v, ellipse.centre[1] + half_v
    cols = slice(max(0, math.floor(u0 * size - 0.5)), min(size, math.ceil(u1 * size + 0.5)))
    rows = slice(max(0, math.floor((1.0 - v1) * size - 0.5)), min(size, math.ceil((1.0 - v0) * size + 0.5)))
    return rows, cols


def region_mask(name: str, size: int, soft: bool = False) -> torch.Tensor:
    """Mask of one named region on a ``size``² UV map.

    Args:
        name: a key of :data:`UV_REGIONS`.
        size: UV map size in texels.
        soft: if True, 1 inside 0.6 of the radius falling smoothly to 0 on the boundary (for blending;
            it is zero wherever the hard mask is); else a hard 0/1 mask of the ellipse.

    Returns:
        ``(size, size)`` float mask.
    """
    if name not in UV_REGIONS:
        raise ValueError(f"unknown region {name!r}; valid: {', '.join(sorted(UV_REGIONS))}")
    return _region_mask(name, size, soft).clone()


@lru_cache(maxsize=256)
def _region_mask(name: str, size: int, soft: bool) -> torch.Tensor:
    radius = ellipse_radius(UV_REGIONS[name], texel_centres(size))
    if not soft:
        return (radius <= 1.0).float()
    t = ((1.0 - radius) / 0.4).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def polygon_mask(polygon: torch.Tensor, size: int) -> torch.Tensor:
    """Texels of a ``size``² UV map whose centre lies inside a closed polygon (even-odd rule).

    Args:
        polygon: ``(N, 2)`` UV vertices in order.
        size: map size.

    Returns:
        ``(size, size)`` bool.
    """
    if polygon.ndim != 2 or polygon.shape[-1] != 2 or polygon.shape[0] < 3:
        raise ValueError(f"polygon must be (N >= 3, 2), got {tuple(polygon.shape)}")
    points = texel_centres(size, dtype=polygon.dtype).reshape(-1, 1, 2)
    a, b = polygon, polygon.roll(-1, dims=0)
    straddles = (a[:, 1] > points[..., 1]) != (b[:, 1] > points[..., 1])
    t = (points[..., 1] - a[:, 1]) / torch.where(
        b[:, 1] == a[:, 1], torch.ones_like(a[:, 1]), b[:, 1] - a[:, 1]
    )
    crossing_u = a[:, 0] + t * (b[:, 0] - a[:, 0])
    crossings = (straddles & (points[..., 0] < crossing_u)).sum(-1)
    return (crossings % 2 == 1).reshape(size, size)


def au_region_mask(au: str, size: int) -> torch.Tensor:
    """``(S, S)`` the union of ``au``'s wrinkle regions (hard masks)."""
    return torch.stack([region_mask(name, size) for name in AU_WRINKLE_REGIONS[au]]).amax(0)


def active_region_mask(occurrence: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 1, S, S)``: the union of the wrinkle regions of the AUs that occur in each face.

    Args:
        occurrence: ``(B, 27)`` bool (or 0/1) AU occurrences in :data:`aucgan.au.MAIN_AUS` order.
        size: UV map size.
    """
    if occurrence.ndim != 2 or occurrence.shape[1] != len(MAIN_AUS):
        raise ValueError(f"occurrence must be (B, {len(MAIN_AUS)}), got {tuple(occurrence.shape)}")
    masks = torch.stack(
        [au_region_mask(au, size) if au in AU_WRINKLE_REGIONS else torch.zeros(size, size) for au in MAIN_AUS]
    ).to(occurrence.device)
    return (occurrence.float()[:, :, None, None] * masks).amax(1, keepdim=True)

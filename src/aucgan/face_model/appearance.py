"""Albedo for the built-in face: skin, lips, brows, eyes and mouth painted into its UV layout.

:func:`albedo_map` paints a :class:`Palette`; the default palette gives a plain neutral face, and the
synthetic world draws one palette (plus skin blotches) per identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aucgan.face_model.regions import polygon_mask, texel_centres

# Ordered contours (vertex indices of the canonical mesh) of the outer lip line and of the brows.
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
BROW_RIGHT = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
BROW_LEFT = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Palette:
    """Colours (linear RGB in [0, 1]) of the parts of the face."""

    skin: Colour = (0.78, 0.60, 0.50)
    lips: Colour = (0.66, 0.36, 0.36)
    brows: Colour = (0.32, 0.23, 0.18)
    sclera: Colour = (0.86, 0.84, 0.80)
    iris: Colour = (0.22, 0.16, 0.12)
    mouth: Colour = (0.25, 0.08, 0.08)


@dataclass(frozen=True)
class PartMasks:
    """Where each part lies in a ``size``² UV map: ``(size, size)`` bool masks."""

    lips: torch.Tensor
    brows: torch.Tensor
    mouth: torch.Tensor
    eyes: torch.Tensor
    irises: torch.Tensor

    @property
    def skin(self) -> torch.Tensor:
        return ~(self.lips | self.brows | self.mouth | self.eyes)


def part_masks(uvs: torch.Tensor, rims: dict[str, torch.Tensor], size: int) -> PartMasks:
    """Masks of lips, brows, mouth opening, eyes and irises for the built-in face's UV layout.

    Args:
        uvs: ``(468, 2)`` the built-in model's UVs (v up).
        rims: the model's ordered hole rims (``eye_right``, ``eye_left``, ``mouth``).
        size: map size.
    """
    uvs = uvs.detach().float().cpu()
    centres = texel_centres(size)
    eyes = torch.zeros(size, size, dtype=torch.bool)
    irises = torch.zeros(size, size, dtype=torch.bool)
    for side in ("eye_right", "eye_left"):
        rim = uvs[rims[side]]
        eye = polygon_mask(rim, size)
        radius = 0.3 * (rim[:, 0].max() - rim[:, 0].min())
        eyes |= eye
        irises |= eye & (((centres - rim.mean(0)) ** 2).sum(-1).sqrt() < radius)
    mouth = polygon_mask(uvs[rims["mouth"]], size)
    return PartMasks(
        lips=polygon_mask(uvs[list(OUTER_LIPS)], size) & ~mouth,
        brows=polygon_mask(uvs[list(BROW_RIGHT)], size) | polygon_mask(uvs[list(BROW_LEFT)], size),
        mouth=mouth,
        eyes=eyes & ~irises,
        irises=irises,
    )


def albedo_map(parts: PartMasks, palette: Palette | None = None) -> torch.Tensor:
    """Paint ``palette`` into the part masks: ``(3, S, S)`` albedo in [0, 1]."""
    palette = palette or Palette()
    image = torch.tensor(palette.skin)[:, None, None].expand(3, *parts.lips.shape).clone()
    for mask, colour in (
        (parts.lips, palette.lips),
        (parts.brows, palette.brows),
        (parts.mouth, palette.mouth),
        (parts.eyes, palette.sclera),
        (parts.irises, palette.iris),
    ):
        image = torch.where(mask[None], torch.tensor(colour)[:, None, None], image)
    return image


def default_albedo(uvs: torch.Tensor, rims: dict[str, torch.Tensor], size: int = 256) -> torch.Tensor:
    """The plain default albedo ``(3, size, size)`` of the built-in face."""
    return albedo_map(part_masks(uvs, rims, size))

"""A plain default appearance for the built-in face: skin, lips, brows, eyes and mouth as a UV albedo map.

Per-identity albedo (skin tone, pattern, pores) belongs to the synthetic world; this map is what renders
a neutral face when nothing else is given.
"""

from __future__ import annotations

import torch

from aucgan.face_model.regions import polygon_mask, texel_centres

# Ordered contours (vertex indices of the canonical mesh) of the outer lip line and of the brows.
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
BROW_RIGHT = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
BROW_LEFT = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

SKIN = (0.78, 0.60, 0.50)
LIPS = (0.66, 0.36, 0.36)
BROWS = (0.32, 0.23, 0.18)
SCLERA = (0.86, 0.84, 0.80)
IRIS = (0.22, 0.16, 0.12)
MOUTH = (0.25, 0.08, 0.08)


def default_albedo(uvs: torch.Tensor, rims: dict[str, torch.Tensor], size: int = 256) -> torch.Tensor:
    """A ``(3, size, size)`` albedo in [0, 1] for the built-in face's UV layout.

    Args:
        uvs: ``(468, 2)`` the built-in model's UVs (v up).
        rims: the model's ordered hole rims (``eye_right``, ``eye_left``, ``mouth``).
        size: map size.
    """

    def fill(image: torch.Tensor, mask: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
        return torch.where(mask[None], image.new_tensor(colour)[:, None, None], image)

    uvs = uvs.detach().float().cpu()
    image = torch.tensor(SKIN)[:, None, None].expand(3, size, size).clone()
    image = fill(image, polygon_mask(uvs[list(OUTER_LIPS)], size), LIPS)
    image = fill(image, polygon_mask(uvs[list(BROW_RIGHT)], size), BROWS)
    image = fill(image, polygon_mask(uvs[list(BROW_LEFT)], size), BROWS)
    image = fill(image, polygon_mask(uvs[rims["mouth"]], size), MOUTH)
    centres = texel_centres(size)
    for side in ("eye_right", "eye_left"):
        rim = uvs[rims[side]]
        image = fill(image, polygon_mask(rim, size), SCLERA)
        iris_radius = 0.3 * (rim[:, 0].max() - rim[:, 0].min())
        iris = ((centres - rim.mean(0)) ** 2).sum(-1).sqrt() < iris_radius
        image = fill(image, iris & polygon_mask(rim, size), IRIS)
    return image

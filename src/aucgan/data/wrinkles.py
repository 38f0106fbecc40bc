"""Ground-truth wrinkles of the synthetic world: UV displacement patterns placed by FACS (SPEC §6).

Every wrinkle-producing Action Unit folds the skin in its anatomical regions (:data:`AU_WRINKLE_REGIONS`)
with a characteristic pattern: parallel grooves (forehead, glabella, nose, lids, perioral), grooves
radiating from the eye corner (crow's feet), one deep furrow (nasolabial), a pit (dimple) or bumps (chin).
A pattern has unit depth, is negative where the skin folds inwards, and is multiplied by the soft region
mask, which is zero outside the region: an AU never changes the displacement elsewhere.

The displacement of a face is ``static detail + sum_k intensity_k * depth_k * pattern_k``: linear in each AU
intensity, with per-identity depth, spacing and phase (:class:`WrinkleStyle`). Units are those of the face
model (cm for the built-in face, about 0.048 UV units per cm, see :mod:`aucgan.face_model.regions`).

Scales are those of real faces. Depth: profilometry grades facial wrinkles from fine lines of about 0.2 mm
to deep furrows of 1.5–2 mm and more (Lemperle et al., "A classification of facial wrinkles", Plast.
Reconstr. Surg. 108:1735, 2001); crow's feet and forehead lines deepen with age (Akazaki et al., Br. J.
Dermatol. 147:689, 2002; Luebberding et al., Dermatol. Surg. 40:22, 2014, 3D fringe projection of
forehead, glabellar and periorbital lines in 200 people aged 20–70). Here furrows are 0.2–1 mm deep at
intensity 1 for an average identity, times 0.5–1.7 by age and skin. Spacing: forehead lines about 1 cm
apart, glabellar lines about 0.8 cm, crow's feet fanning about 20° apart (4–6 mm at the fold), and the fine
lines of lids, nose, lips and chin 6 mm apart — the upper end of their real 3–6 mm, so that every groove
spans at least about 4 texels and 4 pixels at the CPU preset (``configs/synthetic.yaml``: 160 px, UV 160);
``configs/synthetic-deca.yaml`` (224 px, UV 256, DECA's scale) resolves them with room to spare. The folds
of AU11, AU14, AU32, AU38 and AU39 are about 2 mm: deliberately deep, because these AUs move the mesh little
or like other AUs and identity directions do, and a face recogniser must be able to tell them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aucgan.au import MAIN_AUS
from aucgan.face_model.regions import (
    UV_REGIONS,
    ellipse_radius,
    region_mask,
    region_window,
    texel_centres,
)


@dataclass(frozen=True)
class Fold:
    """One wrinkle pattern of an AU in one region.

    Attributes:
        region: key of :data:`UV_REGIONS`.
        kind: ``"lines"`` (parallel grooves), ``"radial"`` (grooves radiating from ``origin``), ``"furrow"``
            (one groove along the region's long axis), ``"pit"`` or ``"bumps"``.
        angle: direction the grooves run, degrees from the u axis (``lines``); mirrored on the left.
        spacing: groove period in UV units (``lines``) or degrees (``radial``).
        depth: depth in cm at intensity 1 for an average identity.
        curvature: bends ``lines`` into arcs (UV⁻¹).
        origin: UV point the ``radial`` grooves start from (subject's right; mirrored on the left).
    """

    region: str
    kind: str
    depth: float
    angle: float = 0.0
    spacing: float = 0.02
    curvature: float = 0.0
    origin: tuple[float, float] = (0.0, 0.0)


def _both(region: str, **fold) -> tuple[Fold, ...]:
    """The fold on the subject's right region and its mirror on the left."""
    return Fold(f"{region}_right", **fold), Fold(f"{region}_left", **fold)


FOLDS: dict[str, tuple[Fold, ...]] = {
    "AU1": (Fold("forehead_centre", "lines", 0.045, angle=0.0, spacing=0.048, curvature=-3.0),),
    "AU2": _both("forehead_lateral", kind="lines", depth=0.035, angle=-15.0, spacing=0.043, curvature=-4.0),
    "AU4": (
        Fold("glabella", "lines", 0.05, angle=90.0, spacing=0.038),
        Fold("nasion", "lines", 0.03, angle=0.0, spacing=0.029),
    ),
    "AU6": _both("crows_feet", kind="radial", depth=0.035, spacing=20.0, origin=(0.262, 0.622)),
    "AU7": _both("lower_lid", kind="lines", depth=0.02, angle=0.0, spacing=0.029, curvature=6.0),
    "AU9": (Fold("nose_bridge", "lines", 0.035, angle=0.0, spacing=0.029, curvature=4.0),),
    "AU10": _both("nasolabial", kind="furrow", depth=0.05),
    "AU11": _both("nasolabial", kind="furrow", depth=0.22),
    "AU12": _both("nasolabial", kind="furrow", depth=0.09),
    "AU14": _both("mouth_corner", kind="pit", depth=0.22),
    "AU15": _both("below_mouth_corner", kind="lines", depth=0.025, angle=80.0, spacing=0.029),
    "AU17": (
        Fold("chin", "bumps", 0.025),
        Fold("chin", "lines", 0.03, angle=0.0, spacing=0.05, curvature=-5.0),
    ),
    "AU20": _both("mouth_corner", kind="lines", depth=0.03, angle=90.0, spacing=0.029),
    "AU23": (Fold("perioral", "lines", 0.08, angle=90.0, spacing=0.029),),
    "AU24": (Fold("perioral", "lines", 0.05, angle=90.0, spacing=0.031),),
    "AU32": (Fold("chin", "lines", 0.2, angle=0.0, spacing=0.04, curvature=-5.0),),
    "AU38": _both("nose_wing", kind="furrow", depth=0.22),
    "AU39": _both("nose_wing", kind="lines", depth=0.18, angle=90.0, spacing=0.029),
}

# Cells across the UV square of the noise behind chin bumps and pores: fixed, so that one identity has the
# same detail, resampled, at every map size.
BUMP_CELLS = 42
PORE_CELLS = 128

WRINKLE_AUS: tuple[str, ...] = tuple(au for au in MAIN_AUS if au in FOLDS)


@dataclass(frozen=True)
class WrinkleStyle:
    """How one identity wrinkles.

    Attributes:
        depth: ``(27,)`` multiplier of each AU's fold depth (age and skin); 0 for AUs without folds.
        spacing: ``(27,)`` multiplier of groove spacing.
        phase: ``(27,)`` groove phase in [0, 2π).
        static_lines: depth multiplier of resting forehead lines and crow's feet (age), >= 0.
        pore_depth: amplitude of the static micro detail (cm).
        seed: seed of this identity's bump and pore noise.
    """

    depth: torch.Tensor
    spacing: torch.Tensor
    phase: torch.Tensor
    static_lines: float
    pore_depth: float
    seed: int


def neutral_style() -> WrinkleStyle:
    """The average identity: unit depth and spacing, zero phase, no static detail."""
    ones = torch.ones(len(MAIN_AUS))
    return WrinkleStyle(ones, ones, torch.zeros(len(MAIN_AUS)), 0.0, 0.0, 0)


AGE_DEPTH = (0.6, 1.4)
"""Fold depth multiplier of the youngest and the oldest identity."""
FOLD_JITTER = (0.8, 1.2)
"""Per-AU depth multiplier on top of age (skin)."""
STATIC_LINES = 0.6
"""Depth of the resting forehead lines and crow's feet of the oldest identity, in units of their folds'."""
PORE_DEPTH = (0.001, 0.004)
"""Range of the static micro detail's amplitude (cm)."""


def sample_style(generator: torch.Generator) -> WrinkleStyle:
    """Draw an identity's wrinkle style: an age in [0, 1] scales depth and resting lines."""

    def uniform(low: float, high: float, n: int | None = None) -> torch.Tensor:
        return low + (high - low) * torch.rand(n or 1, generator=generator)

    age = float(uniform(0.0, 1.0))
    depth = (AGE_DEPTH[0] + (AGE_DEPTH[1] - AGE_DEPTH[0]) * age) * uniform(*FOLD_JITTER, len(MAIN_AUS))
    return WrinkleStyle(
        depth=depth,
        spacing=uniform(0.85, 1.15, len(MAIN_AUS)),
        phase=uniform(0.0, 2.0 * math.pi, len(MAIN_AUS)),
        static_lines=STATIC_LINES * age,
        pore_depth=float(uniform(*PORE_DEPTH)),
        seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)),
    )


def max_displacement(size: int = 256) -> float:
    """An upper bound of ``|displacement|`` anywhere in the world (cm): every fold of every AU at intensity 1
    on the deepest identity, stacked where regions overlap as if all their grooves lined up, plus the
    deepest resting lines and pores. Decoders' ``max_z`` must cover it (``configs/`` presets are tested
    against it)."""
    deepest = AGE_DEPTH[1] * FOLD_JITTER[1]
    bound = torch.zeros(size, size)
    for au, folds in FOLDS.items():
        for fold in folds:
            bound += fold.depth * deepest * region_mask(fold.region, size, soft=True)
            if au in ("AU1", "AU6"):
                bound += fold.depth * STATIC_LINES * region_mask(fold.region, size, soft=True)
    return float(bound.max()) + PORE_DEPTH[1]


def _groove(x: torch.Tensor) -> torch.Tensor:
    """Periodic groove profile of unit depth: ``-((1 + cos x) / 2)^4``, narrow dips at x = 0 mod 2π."""
    return -(((1.0 + torch.cos(x)) * 0.5) ** 4)


def _smooth_noise(size: int, cells: int, seed: int) -> torch.Tensor:
    """Band-limited noise in about [-1, 1]: a random ``cells``² grid upsampled bicubically to ``size``²."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.randn(1, 1, cells, cells, generator=generator)
    return (
        F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(-2.5, 2.5)
        / 2.5
    )


def fold_pattern(
    fold: Fold, uv: torch.Tensor, spacing: float = 1.0, phase: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """Unit-depth pattern of one fold, masked by its soft region.

    Args:
        fold: the fold.
        uv: ``(S, S, 2)`` texel centres (:func:`texel_centres`).
        spacing: multiplier of the groove period. phase: groove phase (radians). seed: noise seed (bumps).

    Returns:
        ``(S, S)``, in [-1, 1], zero outside the fold's region.
    """
    ellipse = UV_REGIONS[fold.region]
    left = fold.region.endswith("_left")
    sign = -1.0 if left else 1.0
    size = uv.shape[0]
    window = region_window(fold.region, size)
    full_uv, uv = uv, uv[window]
    d = uv - uv.new_tensor(ellipse.centre)
    if fold.kind == "lines":
        theta = math.radians(sign * fold.angle)
        along = d[..., 0] * math.cos(theta) + d[..., 1] * math.sin(theta)
        across = -d[..., 0] * math.sin(theta) + d[..., 1] * math.cos(theta)
        pattern = _groove(
            2.0 * math.pi * (across + fold.curvature * along**2) / (fold.spacing * spacing) + phase
        )
    elif fold.kind == "radial":
        origin = uv.new_tensor(((1.0 - fold.origin[0]) if left else fold.origin[0], fold.origin[1]))
        direction = torch.atan2(uv[..., 1] - origin[1], sign * (uv[..., 0] - origin[0]))
        pattern = _groove(2.0 * math.pi * torch.rad2deg(direction) / (fold.spacing * spacing) + phase)
    elif fold.kind == "furrow":
        theta = math.radians(ellipse.angle)
        across = (-d[..., 0] * math.sin(theta) + d[..., 1] * math.cos(theta)) / ellipse.axes[1]
        pattern = -torch.exp(-((across / 0.35) ** 2))
    elif fold.kind == "pit":
        pattern = -torch.exp(-((ellipse_radius(ellipse, uv) / 0.45) ** 2))
    elif fold.kind == "bumps":
        pattern = _smooth_noise(size, BUMP_CELLS, seed)[window]
    else:
        raise ValueError(f"unknown fold kind {fold.kind!r}")
    out = full_uv.new_zeros(size, size)
    out[window] = pattern * region_mask(fold.region, size, soft=True)[window].to(uv)
    return out


def au_wrinkle_basis(style: WrinkleStyle, size: int) -> torch.Tensor:
    """Displacement of each AU at intensity 1 for one identity: ``(27, S, S)`` cm (zero if it has no fold)."""
    uv = texel_centres(size)
    basis = torch.zeros(len(MAIN_AUS), size, size)
    for k, au in enumerate(MAIN_AUS):
        for n, fold in enumerate(FOLDS.get(au, ())):
            pattern = fold_pattern(
                fold, uv, float(style.spacing[k]), float(style.phase[k]), style.seed + 7919 * n
            )
            basis[k] += fold.depth * float(style.depth[k]) * pattern
    return basis


def static_detail(style: WrinkleStyle, size: int) -> torch.Tensor:
    """Identity detail at rest: pores (fine noise), resting forehead lines and crow's feet: ``(S, S)`` cm."""
    uv = texel_centres(size)
    detail = style.pore_depth * _smooth_noise(size, PORE_CELLS, style.seed + 1)
    for au in ("AU1", "AU6"):
        k = MAIN_AUS.index(au)
        for fold in FOLDS[au]:
            pattern = fold_pattern(fold, uv, float(style.spacing[k]), float(style.phase[k]))
            detail = detail + style.static_lines * fold.depth * pattern
    return detail


def wrinkle_displacement(
    intensities: torch.Tensor, basis: torch.Tensor, static: torch.Tensor
) -> torch.Tensor:
    """UV displacement of a face: ``static + sum_k intensities_k * basis_k``.

    Args:
        intensities: ``(27,)`` or ``(B, 27)`` AU intensities in [0, 1].
        basis: ``(27, S, S)`` from :func:`au_wrinkle_basis`, or ``(B, 27, S, S)``: each face its own.
        static: ``(S, S)`` from :func:`static_detail`, or ``(B, S, S)``.

    Returns:
        ``(1, S, S)`` or ``(B, 1, S, S)``.
    """
    if intensities.shape[-1] != basis.shape[-3]:
        raise ValueError(f"intensities must be (..., {basis.shape[-3]}), got {tuple(intensities.shape)}")
    return (static + torch.einsum("...k,...khw->...hw", intensities, basis)).unsqueeze(-3)

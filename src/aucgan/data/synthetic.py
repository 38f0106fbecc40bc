"""The synthetic AU-wrinkle face world: procedural faces with exact ground truth, deterministic per index.

A sample is an identity (shape code, albedo palette and skin blotches, wrinkle style with age and pores)
× an expression (27 AU intensities from realistic co-occurring sets, sparse random mixes, or neutral)
× jaw and head pose × camera × SH light × background. Geometry comes from the built-in face model's AU
rig; detail is the UV displacement of :mod:`aucgan.data.wrinkles`; the image is rendered with the detail
normals (SH shading × albedo), so wrinkles show as shading.

Sample ``i`` belongs to identity ``i // K`` (K images per identity, DECA's K). Identities are split by
``identity % 10``: 0–7 train, 8 val, 9 test, so splits never share a face. Everything sample ``i`` holds is
a function of ``(seed, i)`` alone: it is generated with its own seeded generators, so it is bit-identical
in any process, order or worker.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from aucgan.au import MAIN_AUS
from aucgan.data.wrinkles import (
    WrinkleStyle,
    au_wrinkle_basis,
    sample_style,
    static_detail,
    wrinkle_displacement,
)
from aucgan.face_model.appearance import Palette, PartMasks, albedo_map, part_masks
from aucgan.face_model.procedural import ProceduralFaceModel
from aucgan.face_model.regions import region_mask
from aucgan.face_model.uv_space import UVSpace
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.render import Rendering, UVLayout, render, texel_visibility
from aucgan.geometry.shading import light_from_direction
from aucgan.nets.coarse_encoder import CoarseCodes

SPLITS = ("train", "val", "test")
_SPLIT_OF_DIGIT = ("train",) * 8 + ("val", "test")

# Expression families and how often they are drawn; each lists (AU, probability it is present).
EXPRESSIONS: dict[str, tuple[float, tuple[tuple[str, float], ...]]] = {
    "neutral": (0.06, ()),
    "smile": (0.10, (("AU6", 1.0), ("AU12", 1.0), ("AU25", 0.5))),
    "surprise": (0.08, (("AU1", 1.0), ("AU2", 1.0), ("AU5", 1.0), ("AU26", 1.0))),
    "frown": (0.08, (("AU4", 1.0), ("AU7", 1.0))),
    "disgust": (0.08, (("AU9", 1.0), ("AU10", 1.0))),
    "sadness": (0.07, (("AU1", 1.0), ("AU4", 1.0), ("AU15", 1.0))),
    "chin_raise": (0.07, (("AU17", 1.0), ("AU24", 0.5))),
    "random": (0.46, ()),
}
# AUs in a "random" mix: between these counts (inclusive), uniformly over the 27. With the family weights
# this gives every AU at least ~6 % of the faces, so that rare AUs have positives to learn and score on.
RANDOM_MIX = (2, 5)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, the same in every process and Python version."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def split_of_identity(identity: int) -> str:
    return _SPLIT_OF_DIGIT[identity % 10]


def identity_in_split(split: str, rank: int) -> int:
    """The ``rank``-th identity (0-based) of ``split``."""
    if split == "train":
        return (rank // 8) * 10 + rank % 8
    if split in ("val", "test"):
        return rank * 10 + (8 if split == "val" else 9)
    raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


@dataclass(frozen=True)
class SyntheticSample:
    """Ground truth of one synthetic face (or a batch: every field then gains a leading ``B``).

    Attributes:
        index: global sample index. identity: identity index (``index // K``).
        image: ``(3, H, W)`` in [0, 1], quantised to 8 bits like a photo.
        mask: ``(1, H, W)`` 1 where the face covers the pixel.
        landmarks: ``(68, 2)`` NDC x, y (x right, y up, [-1, 1] across the image), iBUG-68 order.
        shape: ``(n_shape,)`` identity code.
        expression: ``(27,)`` AU intensities in [0, 1] (OpenGraphAU order).
        au_occurrence: ``(27,)`` bool, intensity > 0.
        pose: ``(6,)`` global + jaw axis-angle (radians). camera: ``(3,)`` (scale, tx, ty).
        light: ``(9, 3)`` SH coefficients.
        uv_displacement: ``(1, S, S)`` cm along the coarse normal.
        uv_detail_normals: ``(3, S, S)`` unit world-space normals of the detailed surface (float16 precision).
        uv_albedo: ``(3, S, S)`` in [0, 1], 8-bit levels.
        uv_visibility: ``(1, S, S)`` 1 where the skin texel is seen in the image (front-facing, unoccluded).
        background: ``(3, H, W)`` the image behind the face.
    """

    index: torch.Tensor
    identity: torch.Tensor
    image: torch.Tensor
    mask: torch.Tensor
    landmarks: torch.Tensor
    shape: torch.Tensor
    expression: torch.Tensor
    au_occurrence: torch.Tensor
    pose: torch.Tensor
    camera: torch.Tensor
    light: torch.Tensor
    uv_displacement: torch.Tensor
    uv_detail_normals: torch.Tensor
    uv_albedo: torch.Tensor
    uv_visibility: torch.Tensor
    background: torch.Tensor

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def coarse_codes(self, n_albedo: int) -> CoarseCodes:
        """The ground-truth coarse codes of a batch of samples. The albedo is a map here, not a code: the
        code is zeros ``(B, n_albedo)``; give ``uv_albedo`` to :meth:`CoarseStage.decode` instead."""
        return CoarseCodes(
            shape=self.shape,
            albedo=self.shape.new_zeros(self.shape.shape[0], n_albedo),
            expression=self.expression,
            pose=self.pose,
            camera=self.camera,
            light=self.light,
        )


def collate(samples: list) -> Any:
    """Stack samples (of one dataclass of tensors: :class:`SyntheticSample` or
    :class:`~aucgan.data.real.RealSample`) into a batch (a ``collate_fn`` for ``DataLoader``)."""
    kind = type(samples[0])
    return kind(**{f.name: torch.stack([getattr(s, f.name) for s in samples]) for f in fields(kind)})


@dataclass(frozen=True)
class Identity:
    """One synthetic person: shape code ``(n_shape,)``, UV albedo ``(3, S, S)``, wrinkle style and the
    wrinkle basis ``(27, S, S)`` and static detail ``(S, S)`` derived from it."""

    shape: torch.Tensor
    albedo: torch.Tensor
    style: WrinkleStyle
    wrinkle_basis: torch.Tensor
    static_detail: torch.Tensor


def _sample_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(stable_seed("aucgan-sample", seed, index))


def drawn_expressions(seed: int, indices: Iterable[int]) -> torch.Tensor:
    """``(N, 27)`` the AU intensities that samples ``indices`` of the world with ``seed`` hold, without
    rendering them (the expression is the first draw of a sample's generator): cheap labels for a sampler."""
    rows = [SyntheticWorld.expression(_sample_generator(seed, int(i))) for i in indices]
    return torch.stack(rows) if rows else torch.zeros(0, len(MAIN_AUS))


def _uniform(generator: torch.Generator, low: float, high: float, *size: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(size or (1,), generator=generator)


def _smooth_field(generator: torch.Generator, channels: int, cells: int, size: int) -> torch.Tensor:
    grid = torch.randn(1, channels, cells, cells, generator=generator)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0]


def _quantise(image: torch.Tensor) -> torch.Tensor:
    return torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0


class SyntheticWorld:
    """Generates synthetic samples; see the module docstring.

    Args:
        seed: world seed; different seeds give different identities.
        image_size: rendered image size (pixels).
        uv_size: UV map size (texels).
        images_per_identity: K, images (expressions) per identity.
        n_identity: identity components of the built-in face model.
    """

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 224,
        uv_size: int = 256,
        images_per_identity: int = 4,
        n_identity: int = 12,
    ) -> None:
        if images_per_identity < 1:
            raise ValueError(f"images_per_identity must be >= 1, got {images_per_identity}")
        self.seed = seed
        self.image_size = image_size
        self.uv_size = uv_size
        self.images_per_identity = images_per_identity
        self.model = ProceduralFaceModel(n_identity=n_identity)
        self.uv_space = UVSpace(self.model, uv_size)
        self.layout: UVLayout = self.uv_space.layout
        self.parts: PartMasks = part_masks(self.model.uvs, self.model.rims, uv_size)
        self.uv_skin = self.uv_space.skin[0]
        self._identity = lru_cache(maxsize=16)(self._make_identity)

    # Identities -----------------------------------------------------------------------------------------

    def identity(self, identity: int) -> Identity:
        """The identity ``identity`` of this world (cached)."""
        return self._identity(identity)

    def identity_albedo(self, identity: int) -> torch.Tensor:
        """The UV albedo ``(3, S, S)`` of identity ``identity`` alone: ``identity(i).albedo`` without the
        cost of its wrinkle basis."""
        g = torch.Generator().manual_seed(stable_seed("aucgan-identity", self.seed, identity))
        return self._shape_and_albedo(g)[1]

    def _make_identity(self, identity: int) -> Identity:
        g = torch.Generator().manual_seed(stable_seed("aucgan-identity", self.seed, identity))
        shape, albedo = self._shape_and_albedo(g)
        style = sample_style(g)
        return Identity(
            shape=shape,
            albedo=albedo,
            style=style,
            wrinkle_basis=au_wrinkle_basis(style, self.uv_size),
            static_detail=static_detail(style, self.uv_size),
        )

    def _shape_and_albedo(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """An identity's first draws from its generator: shape code, then UV albedo."""
        shape = torch.randn(self.model.n_shape, generator=g)
        tone = float(_uniform(g, 0.0, 1.0))
        light_skin, dark_skin = torch.tensor([0.92, 0.76, 0.66]), torch.tensor([0.42, 0.28, 0.20])
        skin = (1 - tone) * light_skin + tone * dark_skin + _uniform(g, -0.03, 0.03, 3)
        lips = skin * torch.tensor([0.85, 0.62, 0.64]) * _uniform(g, 0.9, 1.05)
        hair = torch.tensor([0.30, 0.22, 0.16]) * _uniform(g, 0.3, 1.6) + _uniform(g, 0.0, 0.08)
        iris = [
            torch.tensor([0.25, 0.16, 0.10]),
            torch.tensor([0.25, 0.40, 0.55]),
            torch.tensor([0.30, 0.40, 0.25]),
        ]
        palette = Palette(
            skin=tuple(skin.clamp(0, 1).tolist()),
            lips=tuple(lips.clamp(0, 1).tolist()),
            brows=tuple(hair.clamp(0, 1).tolist()),
            iris=tuple(iris[int(torch.randint(0, 3, (1,), generator=g))].tolist()),
        )
        albedo = albedo_map(self.parts, palette)
        blotches = (
            1.0
            + 0.05 * _smooth_field(g, 1, 10, self.uv_size)
            + 0.012 * _smooth_field(g, 3, 10, self.uv_size)
            + 0.02 * _smooth_field(g, 1, 40, self.uv_size)
        )
        cheeks = torch.zeros(self.uv_size, self.uv_size)
        for name in ("cheek_right", "cheek_left"):
            cheeks = cheeks + region_mask(name, self.uv_size, soft=True)
        redness = (
            1.0 + float(_uniform(g, 0.0, 0.12)) * cheeks * torch.tensor([0.6, -0.5, -0.4])[:, None, None]
        )
        skin_mask = self.parts.skin[None]
        return shape, _quantise(torch.where(skin_mask, albedo * blotches * redness, albedo))

    # Samples --------------------------------------------------------------------------------------------

    @staticmethod
    def expression(generator: torch.Generator) -> torch.Tensor:
        """Draw 27 AU intensities: an expression family (correlated intensities), a sparse mix, or neutral.
        The same prior for every world: no world needs to be built to draw from it."""
        weights = torch.tensor([w for w, _ in EXPRESSIONS.values()])
        family = list(EXPRESSIONS)[int(torch.multinomial(weights, 1, generator=generator))]
        intensities = torch.zeros(len(MAIN_AUS))
        strength = float(_uniform(generator, 0.3, 1.0))
        if family == "random":
            count = int(torch.randint(RANDOM_MIX[0], RANDOM_MIX[1] + 1, (1,), generator=generator))
            chosen = torch.randperm(len(MAIN_AUS), generator=generator)[:count]
            intensities[chosen] = _uniform(generator, 0.3, 1.0, count)
        for au, probability in EXPRESSIONS[family][1]:
            present = float(torch.rand(1, generator=generator)) < probability
            jitter = float(_uniform(generator, 0.8, 1.2))
            if present:
                intensities[MAIN_AUS.index(au)] = min(1.0, strength * jitter)
        return intensities

    def sample(self, index: int, expression: torch.Tensor | None = None) -> SyntheticSample:
        """Generate global sample ``index`` (deterministic in ``(seed, index)``); ``expression (27,)``, if
        given, replaces the sample's drawn AU intensities (everything else stays as drawn)."""
        identity_index = index // self.images_per_identity
        person = self.identity(identity_index)
        g = _sample_generator(self.seed, index)
        drawn = self.expression(g)
        if expression is not None:
            if expression.shape != drawn.shape:
                raise ValueError(f"expression must be {tuple(drawn.shape)}, got {tuple(expression.shape)}")
            drawn = expression.to(drawn.dtype)
        expression = drawn
        degrees = _uniform(g, -1.0, 1.0, 3) * torch.tensor([12.0, 30.0, 8.0])
        jaw = torch.cat([_uniform(g, 0.0, 0.05), torch.zeros(2)])
        pose = torch.cat([torch.deg2rad(degrees), jaw])
        # Scale and shift keep the whole head (about 8 cm above to 12 cm below the origin with the jaw
        # open) inside the frame, as a face detector's crop would.
        camera = torch.cat([_uniform(g, 0.08, 0.095), _uniform(g, -0.5, 0.5), 1.6 + _uniform(g, -0.4, 0.4)])
        direction = torch.cat([_uniform(g, -1.0, 1.0, 2), _uniform(g, 0.3, 1.0)])
        light = light_from_direction(
            direction[None], float(_uniform(g, 0.25, 0.6)), float(_uniform(g, 0.45, 0.75))
        )[0]
        light = (
            light * (1.0 + _uniform(g, -0.06, 0.06, 3))[None]
            + 0.02 * torch.randn(9, 3, generator=g) * (torch.arange(9) >= 4)[:, None]
        )
        grey = _uniform(g, 0.15, 0.85, 1, 2, 2)
        corners = (grey + _uniform(g, -0.15, 0.15, 3, 2, 2)).clamp(0, 1)
        background = F.interpolate(
            corners[None], size=(self.image_size,) * 2, mode="bilinear", align_corners=True
        )[0]
        background = _quantise(background + 0.03 * _smooth_field(g, 3, 16, self.image_size))
        displacement = wrinkle_displacement(expression, person.wrinkle_basis, person.static_detail)
        result = self.render(
            person.shape[None], expression[None], pose[None], camera[None], light[None],
            displacement[None], person.albedo[None], background[None],
        )  # fmt: skip
        return SyntheticSample(
            index=torch.tensor(index),
            identity=torch.tensor(identity_index),
            image=_quantise(result.rendering.image[0]),
            mask=result.rendering.mask[0],
            landmarks=result.landmarks[0],
            shape=person.shape,
            expression=expression,
            au_occurrence=expression > 0,
            pose=pose,
            camera=camera,
            light=light,
            uv_displacement=displacement,
            uv_detail_normals=result.uv_detail_normals[0].half().float(),
            uv_albedo=person.albedo,
            uv_visibility=result.uv_visibility[0],
            background=background,
        )

    def render(
        self,
        shape: torch.Tensor,
        expression: torch.Tensor,
        pose: torch.Tensor,
        camera: torch.Tensor,
        light: torch.Tensor,
        uv_displacement: torch.Tensor,
        uv_albedo: torch.Tensor,
        background: torch.Tensor | None = None,
    ) -> WorldRendering:
        """Render faces of this world from codes and detail (batched; shapes as in :class:`SyntheticSample`
        with a leading ``B``). Used to generate samples and to re-render them from their ground truth."""
        geometry = self.model(shape, expression, pose)
        surface = self.uv_space.surface(geometry.vertices)
        uv_positions = surface.positions
        uv_detail_normals = self.uv_space.detail_normals(surface, uv_displacement)
        model = self.model
        rendering = render(
            geometry.vertices, model.faces, model.uvs, model.uv_faces, camera, light, uv_albedo,
            self.image_size, uv_normal_map=uv_detail_normals, background=background,
            cull_backfaces=True,
        )  # fmt: skip
        visibility = self.uv_visibility(uv_positions, uv_detail_normals, camera, rendering)
        landmarks = orthographic_project(geometry.landmarks, camera)[..., :2]
        return WorldRendering(rendering, uv_detail_normals, visibility, landmarks)

    def uv_visibility(
        self, uv_positions: torch.Tensor, uv_normals: torch.Tensor, camera: torch.Tensor, rendering: Rendering
    ) -> torch.Tensor:
        """``(B, 1, S, S)``: 1 where a skin texel faces the camera and is the surface seen at its pixel."""
        return texel_visibility(uv_positions, uv_normals, camera, rendering.fragments) * self.uv_skin


@dataclass(frozen=True)
class WorldRendering:
    """What :meth:`SyntheticWorld.render` returns: the rendering, ``uv_detail_normals (B, 3, S, S)``,
    ``uv_visibility (B, 1, S, S)`` and ``landmarks (B, 68, 2)`` in NDC."""

    rendering: Rendering
    uv_detail_normals: torch.Tensor
    uv_visibility: torch.Tensor
    landmarks: torch.Tensor


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1], over ``mask`` (broadcast) if given."""
    error = (a - b) ** 2
    if mask is not None:
        mask = mask.expand_as(error)
        mse = float((error * mask).sum() / mask.sum().clamp(min=1))
    else:
        mse = float(error.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)

"""Coarse-stage encoders: a ResNet regresses the face-model codes from one image.

:class:`ResNetEncoder` has the parameter layout of DECA's and EMOCA's encoders, so their published weights
load by name: ``encoder.*`` is a ResNet trunk with torchvision's names (``encoder.conv1.weight`` …
``encoder.layer4.2.bn3.running_var``), its last feature map is averaged over space, and ``layers`` is a
two-layer regression head (``layers.0`` = Linear(C, 1024), ReLU, ``layers.2`` = Linear(1024, N)).

:class:`CoarseEncoder` splits the N regressed numbers into typed :class:`CoarseCodes` following a
:class:`CodeLayout`; :class:`ExpressionEncoder` is EMOCA's second network, which regresses only the
expression code (it replaces the coarse encoder's).

Images are ``(B, 3, H, W)`` RGB in [0, 1] without mean/std normalisation (DECA's convention), nominally
224 x 224; any size of at least 32 x 32 works because the feature map is averaged over all positions
(at 224² that is exactly the 7 x 7 average DECA takes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from aucgan.nets.resnet import build_resnet

if TYPE_CHECKING:
    from aucgan.face_model.base import FaceModel

CODE_NAMES: tuple[str, ...] = ("shape", "albedo", "expression", "pose", "camera", "light")
"""The codes a coarse encoder regresses; DECA calls them shape, tex, exp, pose, cam, light."""

FIXED_SIZES: dict[str, int] = {"pose": 6, "camera": 3, "light": 27}
"""Sizes every layout shares: pose = global + jaw axis-angle, camera = (scale, tx, ty), light = 9 SH x RGB."""

MIN_IMAGE_SIZE = 32


class ResNetEncoder(nn.Module):
    """ResNet trunk → global average pool → Linear(C, 1024) → ReLU → Linear(1024, ``out_features``).

    The layout of DECA's ``ResnetEncoder`` (its ``E_flame`` and ``E_detail``, EMOCA's ``E_expression``):
    state-dict keys ``encoder.<torchvision trunk names>``, ``layers.0.{weight,bias}``,
    ``layers.2.{weight,bias}``. The output is raw: no activation after the last layer.

    Args:
        out_features: number of regressed values N.
        backbone: ``"resnet50"`` (DECA, C = 2048) or ``"resnet18"`` (C = 512).

    Shape:
        input ``images (B, 3, H, W)`` in [0, 1], H, W >= 32; output ``(B, out_features)``.
    """

    hidden_features = 1024

    def __init__(self, out_features: int, backbone: str = "resnet50") -> None:
        super().__init__()
        if out_features < 1:
            raise ValueError(f"out_features must be positive, got {out_features}")
        self.out_features = out_features
        self.encoder = build_resnet(backbone)
        self.layers = nn.Sequential(
            nn.Linear(self.encoder.out_channels, self.hidden_features),
            nn.ReLU(),
            nn.Linear(self.hidden_features, out_features),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled trunk features ``(B, C)`` of ``images (B, 3, H, W)``."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"images must be (B, 3, H, W) with H, W >= {MIN_IMAGE_SIZE}, got {tuple(images.shape)}"
            )
        return self.encoder(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.features(images))


class CodeLayout(Mapping[str, int]):
    """The order and sizes of the codes in a coarse encoder's output vector; an immutable ordered mapping.

    Every layout holds the six names of :data:`CODE_NAMES` (in any order) with ``pose`` 6, ``camera`` 3
    and ``light`` 27; ``shape``, ``albedo`` and ``expression`` sizes depend on the face model.

    Args:
        sizes: ``(name, size)`` pairs, or a mapping, in output order.
    """

    __slots__ = ("_entries",)

    def __init__(self, sizes: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        pairs = sizes.items() if isinstance(sizes, Mapping) else sizes
        entries = tuple((str(name), int(size)) for name, size in pairs)
        names = tuple(name for name, _ in entries)
        if sorted(names) != sorted(CODE_NAMES):
            raise ValueError(f"a code layout needs exactly the codes {', '.join(CODE_NAMES)}; got {names}")
        fixed = {name: size for name, size in entries if name in FIXED_SIZES}
        if fixed != FIXED_SIZES:
            raise ValueError(f"pose, camera and light must have sizes {FIXED_SIZES}, got {fixed}")
        negative = {name: size for name, size in entries if size < 0}
        if negative:
            raise ValueError(f"code sizes must be non-negative, got {negative}")
        object.__setattr__(self, "_entries", entries)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CodeLayout is immutable")

    def __reduce__(self) -> tuple[type[CodeLayout], tuple[tuple[tuple[str, int], ...]]]:
        return (CodeLayout, (self._entries,))

    @classmethod
    def from_sizes(cls, n_shape: int, n_albedo: int, n_expression: int) -> CodeLayout:
        """DECA's order (shape, albedo, expression, pose, camera, light) with the given code sizes."""
        return cls(
            [("shape", n_shape), ("albedo", n_albedo), ("expression", n_expression), *FIXED_SIZES.items()]
        )

    @classmethod
    def flame(cls, n_shape: int = 100, n_tex: int = 50, n_exp: int = 50) -> CodeLayout:
        """The published DECA/EMOCA ``E_flame`` split: shape 100, tex 50, exp 50, pose 6, cam 3, light 27."""
        return cls.from_sizes(n_shape, n_tex, n_exp)

    @classmethod
    def for_face_model(cls, face_model: FaceModel, n_albedo: int) -> CodeLayout:
        """The layout for any :class:`~aucgan.face_model.base.FaceModel`: its ``n_shape`` identity codes,
        its ``n_expression`` codes (27 AU intensities for the built-in model), ``n_albedo`` albedo codes."""
        if face_model.n_pose != FIXED_SIZES["pose"]:
            raise ValueError(f"coarse encoders regress a 6-d pose, the face model has {face_model.n_pose}")
        return cls.from_sizes(face_model.n_shape, n_albedo, face_model.n_expression)

    @property
    def total(self) -> int:
        """Length of the regressed vector (236 for :meth:`flame`)."""
        return sum(size for _, size in self._entries)

    def slice(self, name: str) -> slice:
        """Where code ``name`` lies in the regressed vector."""
        start = 0
        for key, size in self._entries:
            if key == name:
                return slice(start, start + size)
            start += size
        raise KeyError(f"unknown code {name!r}; valid: {', '.join(self)}")

    def split(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``codes (B, total)`` into ``{name: (B, size)}`` views, in layout order."""
        if codes.ndim != 2 or codes.shape[1] != self.total:
            raise ValueError(f"codes must be (B, {self.total}), got {tuple(codes.shape)}")
        return dict(zip(self, torch.split(codes, list(self.values()), dim=1), strict=True))

    def join(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split`: concatenate ``{name: (B, size)}`` to ``(B, total)`` in layout order."""
        batch = next(iter(parts.values())).shape[0] if parts else 0
        for name, size in self.items():
            if name not in parts or tuple(parts[name].shape) != (batch, size):
                got = tuple(parts[name].shape) if name in parts else "missing"
                raise ValueError(f"code {name!r} must be ({batch}, {size}), got {got}")
        return torch.cat([parts[name] for name in self], dim=1)

    def __getitem__(self, name: str) -> int:
        for key, size in self._entries:
            if key == name:
                return size
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CodeLayout):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={size}" for name, size in self._entries)
        return f"CodeLayout({inner})"


@dataclass(frozen=True)
class CoarseCodes:
    """The codes of a coarse encoder, raw (DECA applies no activation to any of them).

    Attributes:
        shape: ``(B, n_shape)`` identity shape code.
        albedo: ``(B, n_albedo)`` albedo (texture) code; DECA's ``tex``.
        expression: ``(B, n_expression)`` expression code; DECA's ``exp``.
        pose: ``(B, 6)`` global rotation ``pose[:, :3]`` and jaw rotation ``pose[:, 3:]``, axis-angle in
            radians.
        camera: ``(B, 3)`` orthographic camera (scale, tx, ty); see :mod:`aucgan.geometry.camera`.
        light: ``(B, 9, 3)`` SH coefficients: 9 SH bands x RGB. The regressed 27 values are reshaped
            row-major as DECA does, so ``light[b, k, c] = flat[b, 3 * k + c]`` (the 3 colours of one SH
            coefficient are adjacent in the flat vector).
    """

    shape: torch.Tensor
    albedo: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    camera: torch.Tensor
    light: torch.Tensor

    @property
    def global_pose(self) -> torch.Tensor:
        """``(B, 3)`` global head rotation, axis-angle."""
        return self.pose[:, :3]

    @property
    def jaw_pose(self) -> torch.Tensor:
        """``(B, 3)`` jaw rotation, axis-angle (the detail decoder's conditioning)."""
        return self.pose[:, 3:]

    @classmethod
    def from_flat(cls, codes: torch.Tensor, layout: CodeLayout) -> CoarseCodes:
        """Split a regressed vector ``codes (B, layout.total)`` into typed codes."""
        parts = layout.split(codes)
        light = parts.pop("light")
        return cls(**parts, light=light.reshape(light.shape[0], 9, 3))

    def to_flat(self, layout: CodeLayout) -> torch.Tensor:
        """Inverse of :meth:`from_flat`: ``(B, layout.total)``."""
        parts = {name: getattr(self, name) for name in CODE_NAMES}
        parts["light"] = self.light.reshape(self.light.shape[0], 27)
        return layout.join(parts)


class CoarseEncoder(nn.Module):
    """A :class:`ResNetEncoder` regressing ``layout.total`` numbers, returned as :class:`CoarseCodes`.

    The wrapped network is :attr:`network`; ``network.state_dict()`` has DECA's ``E_flame`` layout.

    Args:
        layout: the codes to regress, e.g. :meth:`CodeLayout.flame` (236 values).
        backbone: ``"resnet50"`` (DECA) or ``"resnet18"``.

    Shape:
        input ``images (B, 3, H, W)`` in [0, 1] (nominally 224²); output :class:`CoarseCodes`.
    """

    def __init__(self, layout: CodeLayout, backbone: str = "resnet50") -> None:
        super().__init__()
        self.layout = layout
        self.network = ResNetEncoder(layout.total, backbone)

    def forward(self, images: torch.Tensor) -> CoarseCodes:
        return CoarseCodes.from_flat(self.network(images), self.layout)


class ExpressionEncoder(ResNetEncoder):
    """EMOCA's expression encoder: a second ResNet-50 regressing ``n_exp`` expression coefficients.

    Same layout as :class:`ResNetEncoder` (EMOCA's ``E_expression``). Its output replaces the coarse
    encoder's expression: ``dataclasses.replace(codes, expression=expression_encoder(images))``.

    Shape:
        input ``images (B, 3, H, W)`` in [0, 1]; output ``(B, n_exp)``.
    """

    def __init__(self, n_exp: int = 50, backbone: str = "resnet50") -> None:
        super().__init__(n_exp, backbone)

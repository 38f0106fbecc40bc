"""The detail stage: image + coarse output (+ AU condition) → UV displacement → detail normals → shading.

The displacement decoder's latent is ``[jaw pose (3), expression, detail code]`` (DECA's order); the
condition is what the frozen AU net reads from the image (:class:`~aucgan.nets.detail_decoder.AUCondition`).
The stage never imports training code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aucgan.au import MAIN_AUS
from aucgan.face_model.uv_space import UVSpace
from aucgan.geometry.raster import Fragments
from aucgan.geometry.render import image_to_uv, texel_visibility
from aucgan.geometry.shading import sh_shading
from aucgan.nets.au_net import MEFARG, AUOutput
from aucgan.nets.coarse_encoder import CoarseCodes
from aucgan.nets.detail_decoder import AUCondition, DetailDecoder
from aucgan.stages.coarse import CoarseOutput, CoarseStage


@dataclass(frozen=True)
class DetailOutput:
    """The detail of a batch of faces, in the face model's UV space (S × S texels).

    Attributes:
        detail_code: ``(B, n_detail)``.
        uv_displacement: ``(B, 1, S, S)`` along the coarse normal, face-model units, 0 off the skin.
        uv_detail_normals: ``(B, 3, S, S)`` unit world-space normals of the displaced surface.
        uv_shading: ``(B, 3, S, S)`` SH irradiance of the detail normals under the coarse light.
        uv_texture: ``(B, 3, S, S)`` albedo × detail shading: what the photo should look like in UV space.
    """

    detail_code: torch.Tensor
    uv_displacement: torch.Tensor
    uv_detail_normals: torch.Tensor
    uv_shading: torch.Tensor
    uv_texture: torch.Tensor


PHOTO_CHANNELS = 14
"""Channels of :func:`photo_maps`."""
RATIO_GAIN = 10.0
""":func:`photo_maps` scales the photo's relative shading difference by this: folds change the shading by
a few per cent, and the network reads inputs of order one best."""


@dataclass(frozen=True)
class UVEvidence:
    """What one photo shows of each texel, read through the coarse fit it was sampled with. An edit keeps it:
    the photo does not change when the AUs do.

    Attributes:
        photo: ``(B, 3, S, S)`` the photo sampled into UV at the coarse surface's texels, [0, 1].
        visibility: ``(B, 1, S, S)`` 1 on skin texels seen in the photo, else 0.
        normals: ``(B, 3, S, S)`` the coarse fit's smooth unit normals.
        flat: ``(B, 3, S, S)`` the coarse fit's rendering in UV: albedo × SH shading of ``normals``.
        light: ``(B, 9, 3)`` the coarse fit's SH light.
    """

    photo: torch.Tensor
    visibility: torch.Tensor
    normals: torch.Tensor
    flat: torch.Tensor
    light: torch.Tensor


def uv_evidence(images: torch.Tensor, coarse: CoarseOutput, visibility: torch.Tensor) -> UVEvidence:
    """The :class:`UVEvidence` of ``images (B, 3, H, W)`` under their coarse fit; ``visibility (B, 1, S, S)``
    (skin texels seen, e.g. :func:`aucgan.geometry.render.texel_visibility` × skin)."""
    flat = coarse.uv_albedo * sh_shading(coarse.surface.normals, coarse.codes.light)
    photo = photo_in_uv(images, coarse).clamp(0, 1)
    return UVEvidence(photo * visibility, visibility, coarse.surface.normals, flat, coarse.codes.light)


def read_photo(
    coarse_stage: CoarseStage, images: torch.Tensor, coarse: CoarseOutput
) -> tuple[UVEvidence, Fragments]:
    """The :class:`UVEvidence` of ``images (B, 3, H, W)`` under their coarse fit ``coarse``: the coarse faces
    are rasterised once to find the skin texels seen (:func:`~aucgan.geometry.render.texel_visibility`);
    the fragments are returned for reuse by a later rendering of the same geometry."""
    fragments = coarse_stage.render(coarse).fragments
    surface = coarse.surface
    skin = coarse_stage.uv_space.to(images.device).skin
    seen = texel_visibility(surface.positions, surface.normals, coarse.codes.camera, fragments) * skin
    return uv_evidence(images, coarse, seen), fragments


def photo_maps(evidence: UVEvidence) -> torch.Tensor:
    """``(B, 14, S, S)`` what a decoder that reads the photo takes: the photo (3) and the flat rendering (3)
    on the visible skin, the relative difference of their grey levels (1, times :data:`RATIO_GAIN`,
    clamped to ±2: the detail's shading as the photo shows it), the coarse normals (3), the visibility (1)
    and the light's direction (3, the first-order SH over the constant term, the same at every texel)."""
    seen = evidence.visibility
    grey_photo = evidence.photo.mean(1, keepdim=True)
    grey_flat = evidence.flat.mean(1, keepdim=True)
    ratio = (RATIO_GAIN * (grey_photo / grey_flat.clamp(min=0.05) - 1.0) * seen).clamp(-2.0, 2.0)
    light = evidence.light.mean(-1)
    direction = light[:, 1:4] / light[:, :1].abs().clamp(min=1e-3)
    size = seen.shape[-2:]
    return torch.cat(
        [
            evidence.photo * seen,
            evidence.flat * seen,
            ratio,
            evidence.normals,
            seen,
            direction[..., None, None].expand(-1, -1, *size),
        ],
        dim=1,
    )


def au_condition(output: AUOutput) -> AUCondition:
    """The detail stage's condition from an AU net's output: per-AU features and the 27 main scores."""
    return AUCondition(features=output.features, intensities=output.scores[:, : len(MAIN_AUS)])


def resample_displacement(displacement: torch.Tensor, size: int) -> torch.Tensor:
    """Resample a decoder's ``(B, 1, N, N)`` displacement to ``size``² (area average when shrinking)."""
    if displacement.shape[-1] == size:
        return displacement
    if displacement.shape[-1] > size:
        return F.interpolate(displacement, size=(size, size), mode="area")
    return F.interpolate(displacement, size=(size, size), mode="bilinear", align_corners=False)


class DetailStage(nn.Module):
    """Detail encoder + displacement decoder, with the frozen AU net that conditions them.

    Args:
        encoder: image ``(B, 3, H, W)`` → ``detail_code (B, n_detail)``.
        decoder: latent ``(B, 3 + n_expression + n_detail)`` (+ condition) → ``(B, 1, 256, 256)``.
        uv_space: the face model's UV space (the displacement is resampled to its size).
        au_net: the AU recogniser, frozen here (eval mode for good, no parameter gradients); ``None`` only
            with an unconditioned decoder.
    """

    def __init__(
        self, encoder: nn.Module, decoder: DetailDecoder, uv_space: UVSpace, au_net: MEFARG | None = None
    ) -> None:
        super().__init__()
        if decoder.conditioned and au_net is None:
            raise ValueError("an AU-conditioned decoder needs the AU net")
        self.encoder = encoder
        self.decoder = decoder
        self.uv_space = uv_space
        self.au_net = au_net.freeze() if au_net is not None else None

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The generator's parameters: detail encoder and displacement decoder (never the AU net's)."""
        yield from self.encoder.parameters()
        yield from self.decoder.parameters()

    def read_aus(self, images: torch.Tensor) -> AUOutput:
        """The frozen AU net on ``images (B, 3, H, W)`` in [0, 1] (normalised inside); gradients reach the
        images, never the AU net."""
        if self.au_net is None:
            raise ValueError("this detail stage has no AU net")
        return self.au_net(images)

    def latent(self, codes: CoarseCodes, detail_code: torch.Tensor) -> torch.Tensor:
        """``(B, 3 + n_expression + n_detail)``: jaw pose, expression, detail code."""
        return torch.cat([codes.jaw_pose, codes.expression, detail_code], dim=1)

    @property
    def reads_photo(self) -> bool:
        """Whether the decoder reads the photo in UV (:meth:`decode` then needs an :class:`UVEvidence`)."""
        return self.decoder.reads_photo

    def decode(
        self,
        coarse: CoarseOutput,
        detail_code: torch.Tensor,
        condition: AUCondition | None,
        evidence: UVEvidence | None = None,
    ) -> DetailOutput:
        """Displacement, detail normals, shading and texture from a detail code and a condition (and, for a
        decoder that reads the photo, the photo's ``evidence``, e.g. from before an edit)."""
        return self.from_displacement(
            coarse, detail_code, self.displacement(coarse, detail_code, condition, evidence)
        )

    def displacement(
        self,
        coarse: CoarseOutput,
        detail_code: torch.Tensor,
        condition: AUCondition | None,
        evidence: UVEvidence | None = None,
        maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, 1, S, S)`` the decoder's displacement at the UV space's size (what :meth:`decode` turns into
        normals); ``maps``, :func:`photo_maps` of ``evidence`` computed once, spare recomputing them."""
        uv_space = self.uv_space.to(detail_code.device)
        latent = self.latent(coarse.codes, detail_code)
        if self.decoder.reads_photo:
            if maps is None and evidence is None:
                raise ValueError("this detail decoder reads the photo in UV: give decode() its UVEvidence")
            raw = self.decoder(latent, condition, photo_maps(evidence) if maps is None else maps)
        else:
            raw = self.decoder(latent, condition)
        return resample_displacement(raw, uv_space.size)

    def from_displacement(
        self, coarse: CoarseOutput, detail_code: torch.Tensor, displacement: torch.Tensor
    ) -> DetailOutput:
        """The :class:`DetailOutput` of a UV ``displacement (B, 1, S, S)`` on ``coarse`` (kept on the skin):
        its normals, their shading under the coarse light and the texture."""
        uv_space = self.uv_space.to(displacement.device)
        displacement = displacement * uv_space.skin
        normals = uv_space.detail_normals(coarse.surface, displacement)
        shading = sh_shading(normals, coarse.codes.light)
        return DetailOutput(
            detail_code=detail_code,
            uv_displacement=displacement,
            uv_detail_normals=normals,
            uv_shading=shading,
            uv_texture=coarse.uv_albedo * shading,
        )

    def forward(
        self,
        images: torch.Tensor,
        coarse: CoarseOutput,
        condition: AUCondition | None = None,
        visibility: torch.Tensor | None = None,
    ) -> DetailOutput:
        """Encode ``images (B, 3, H, W)`` and decode; the condition is read from the images unless given. A
        decoder that reads the photo needs ``visibility (B, 1, S, S)`` of the skin texels."""
        if condition is None and self.decoder.conditioned:
            condition = au_condition(self.read_aus(images))
        evidence = None
        if self.decoder.reads_photo:
            if visibility is None:
                raise ValueError(
                    "this detail decoder reads the photo in UV: give forward() the texel visibility"
                )
            evidence = uv_evidence(images, coarse, visibility)
        return self.decode(coarse, self.encoder(images), condition, evidence)


def photo_in_uv(images: torch.Tensor, coarse: CoarseOutput) -> torch.Tensor:
    """``(B, 3, S, S)``: the photo sampled into UV space at the coarse surface's projected texels."""
    return image_to_uv(images, coarse.surface.positions, coarse.codes.camera)

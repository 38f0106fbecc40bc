"""AU-conditioned discriminators: (image, AU condition) → real/fake logits.

Every discriminator has the same interface::

    logits = discriminator(images, condition)

* ``images`` ``(B, 3, H, W)``: real photos or rendered detail images, RGB in [0, 1] (224² in the FLAME
  pipeline).
* ``condition``: an :class:`~aucgan.nets.detail_decoder.AUCondition` (per-AU features ``(B, K, C)`` and
  intensities ``(B, K)``) of the *input* face.
* ``logits``: raw scores, larger = "real", before any sigmoid. The reference ended its discriminator with
  a sigmoid and trained it with ``BCELoss``; we return logits so that the loss owns the link function
  (``binary_cross_entropy_with_logits`` is numerically stable where log(sigmoid) is not, and a hinge or
  non-saturating loss needs logits anyway).

The variants, selected by name through :func:`build_discriminator`:

* ``"reference-3x9"`` — :class:`Reference3x9Discriminator`: the reference design, kept measurable.
* ``"projection"`` — :class:`ProjectionDiscriminator`: a projection discriminator (Miyato & Koyama 2018)
  over AU tokens, ``mode="patch"`` or ``"global"``.
* ``"uv-projection"`` — :class:`UVProjectionDiscriminator`: the same projection discriminator on UV maps
  (the photo sampled into UV against the detail texture, both on the visible skin), with the texel's UV
  coordinates as input: it judges detail where it lives, and knows where each patch is.

Each class has ``space``: ``"image"`` (it judges photos and renderings) or ``"uv"`` (UV textures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from aucgan.nets.detail_decoder import AUCondition, AUTokenEmbedding


def _check_inputs(
    images: torch.Tensor, condition: AUCondition, n_aus: int, feature_dim: int, owner: str
) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{owner}: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not isinstance(condition, AUCondition):
        raise ValueError(f"{owner} needs an AUCondition, got {type(condition).__name__}")
    expected = (images.shape[0], n_aus, feature_dim)
    if tuple(condition.features.shape) != expected:
        raise ValueError(
            f"{owner}: AU features must be (B, K, C) = {expected}, got {tuple(condition.features.shape)}"
        )


def reference_condition_image(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference's AU "condition image": features viewed as 3 channels of a ``K/3 × C`` picture.

    ``features`` ``(B, K, C)`` (``K`` divisible by 3) is viewed as ``(B, 3, K/3, C)``: channel ``c``, row
    ``r``, column ``j`` holds feature ``j`` of AU ``c·K/3 + r``. That picture is bilinearly resized
    (``align_corners=False``) to ``height × width``.

    Returns:
        ``(B, 3, height, width)``.
    """
    b, k, c = features.shape
    if k % 3:
        raise ValueError(f"the 3 × (K/3) view needs K divisible by 3, got features {tuple(features.shape)}")
    picture = features.reshape(b, 3, k // 3, c)
    return F.interpolate(picture, size=(height, width), mode="bilinear", align_corners=False)


class Reference3x9Discriminator(nn.Module):
    """The reference AUCGAN discriminator: AU features painted as an image beside the photo (PatchGAN).

    The features ``(B, 27, 512)`` become a 3-channel ``9 × 512`` picture resized to the image size
    (:func:`reference_condition_image`) and concatenated after the image (6 channels). A PatchGAN trunk
    follows: conv 6→64 (stride 2), LeakyReLU 0.2; conv 64→128 (s2), InstanceNorm, LReLU; conv 128→256 (s2),
    IN, LReLU; conv 256→512 (s1), IN, LReLU; conv 512→1 (s1). The SPEC gives only channels and strides; we
    choose kernel 4, padding 1 for the stride-2 convs and kernel 3, padding 1 for the stride-1 convs, so
    224² → 112² → 56² → 28² → 28² → 28²: a 28 × 28 map of patch logits. InstanceNorm has ``affine=False``
    (PyTorch's default; the SPEC does not say otherwise).

    Why the 3 × 9 picture means nothing: the reshape puts the first nine AUs of :data:`aucgan.au.MAIN_AUS`
    (AU1 … AU11) in channel 0, the next nine in channel 1 and the last nine in channel 2, one AU per *row*,
    with the 512 feature dimensions along the *columns*. Bilinear resizing then blends neighbouring AUs
    (whose order is arbitrary) into each other and averages adjacent feature dimensions (which have no
    order at all), and the result lies over the image pixels with no relation to where on the face each AU
    acts. The convolutions see a smeared, position-meaningless pattern; this class exists only so the
    reference design stays measurable.

    Intensities are not read. Returns logits, not the reference's sigmoid (see the module docstring).

    Shape:
        images ``(B, 3, H, W)``, condition features ``(B, n_aus, feature_dim)`` → ``(B, 1, H/8, W/8)``.
    """

    space = "image"

    def __init__(self, n_aus: int = 27, feature_dim: int = 512) -> None:
        super().__init__()
        if n_aus % 3:
            raise ValueError(f"n_aus must be divisible by 3 for the 3 × (K/3) view, got {n_aus}")
        self.n_aus, self.feature_dim = n_aus, feature_dim
        self.trunk = nn.Sequential(
            nn.Conv2d(6, 64, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.InstanceNorm2d(128),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(128, 256, 4, 2, 1),
            nn.InstanceNorm2d(256),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(256, 512, 3, 1, 1),
            nn.InstanceNorm2d(512),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(512, 1, 3, 1, 1),
        )

    def forward(self, images: torch.Tensor, condition: AUCondition) -> torch.Tensor:
        """``images (B, 3, H, W)`` and a condition → patch logits ``(B, 1, H/8, W/8)``."""
        _check_inputs(images, condition, self.n_aus, self.feature_dim, type(self).__name__)
        painted = reference_condition_image(condition.features, images.shape[2], images.shape[3])
        return self.trunk(torch.cat([images, painted.to(images.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama, ICLR 2018) with the AUs as a multi-label condition.

    ``φ`` is a convolutional trunk, every layer spectrally normalised
    (:func:`torch.nn.utils.parametrizations.spectral_norm`): conv 3→64, 64→128, 128→256 (kernel 4,
    stride 2, padding 1) and 256→512 (kernel 3, stride 1, padding 1), each followed by LeakyReLU 0.2, so
    224² gives a ``512 × 28 × 28`` feature map (the reference's patch grid). The AU condition becomes
    tokens ``t_k = LayerNorm(W_f f_k) + s_k e_k + p_k``
    (:class:`~aucgan.nets.detail_decoder.AUTokenEmbedding`, the same construction as the token decoder's),
    and a spectrally normalised linear map ``W`` projects them into φ's space. The logit is

        ``ψ(φ) + Σ_k ⟨W t_k, φ⟩``

    with ``ψ`` a spectrally normalised linear map to one value: the unconditional realism term plus the
    agreement between the image features and each AU's token. The intensities enter through
    ``Σ_k s_k W e_k``, a learned linear function of the AU intensity vector, i.e. the multi-label form of
    the class projection ``yᵀVφ``.

    Modes:
        ``"patch"``: the formula at every location of φ → ``(B, 1, h, w)``.
        ``"global"``: the formula on φ averaged over space → ``(B, 1)``. (Miyato sums; the mean keeps the
        scale independent of the image size.) Because ψ and the projection are linear in φ, the global
        logit equals the spatial mean of the patch logits; the modes differ in what the loss sees.

    Shape:
        images ``(B, 3, H, W)``, condition features ``(B, n_aus, feature_dim)``, intensities
        ``(B, n_aus)`` → ``(B, 1, H/8, W/8)`` (patch) or ``(B, 1)`` (global).
    """

    space = "image"

    def __init__(
        self,
        n_aus: int = 27,
        feature_dim: int = 512,
        mode: str = "patch",
        token_dim: int = 128,
        channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if mode not in ("patch", "global"):
            raise ValueError(f"mode must be 'patch' or 'global', got {mode!r}")
        self.n_aus, self.feature_dim, self.mode = n_aus, feature_dim, mode
        layers: list[nn.Module] = []
        c_in = in_channels
        for index, c_out in enumerate(channels):
            kernel, stride = (3, 1) if index == len(channels) - 1 else (4, 2)
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.out_channels = c_in
        self.unconditional = spectral_norm(nn.Linear(c_in, 1))
        self.tokens = AUTokenEmbedding(n_aus, feature_dim, token_dim)
        self.projection = spectral_norm(nn.Linear(token_dim, c_in, bias=False))

    def trunk_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the trunk reads: the images themselves."""
        return images

    def condition_embedding(self, condition: AUCondition) -> torch.Tensor:
        """``Σ_k W t_k`` ``(B, out_channels)``: the vector φ is compared with."""
        return self.projection(self.tokens(condition)).sum(dim=1)

    def forward(self, images: torch.Tensor, condition: AUCondition) -> torch.Tensor:
        """``images (B, 3, H, W)`` and a condition → ``(B, 1, H/8, W/8)`` or ``(B, 1)`` logits."""
        _check_inputs(images, condition, self.n_aus, self.feature_dim, type(self).__name__)
        features = self.trunk(self.trunk_input(images))
        embedding = self.condition_embedding(condition)
        if self.mode == "global":
            pooled = features.mean(dim=(2, 3))
            return self.unconditional(pooled) + (embedding * pooled).sum(dim=1, keepdim=True)
        per_location = features.movedim(1, -1)
        realism = self.unconditional(per_location).movedim(-1, 1)
        return realism + torch.einsum("bc,bchw->bhw", embedding, features)[:, None]


class UVProjectionDiscriminator(ProjectionDiscriminator):
    """:class:`ProjectionDiscriminator` on UV maps: it judges the detail texture (albedo × detail shading)
    against the photo sampled into UV, both on the visible skin, where wrinkles live and have the same
    place on every face. The trunk reads the map and the texel's ``(u, v)`` (two more channels, in
    [-1, 1]), so a patch's realism and its agreement with each AU token can depend on where it is: folds of
    AU12 belong beside the nose, not on the forehead.

    Shape:
        uv maps ``(B, 3, S, S)``, condition as :class:`ProjectionDiscriminator` → ``(B, 1, S/8, S/8)``
        (patch) or ``(B, 1)`` (global).
    """

    space = "uv"

    def __init__(self, n_aus: int = 27, feature_dim: int = 512, **options: object) -> None:
        super().__init__(n_aus, feature_dim, in_channels=5, **options)

    def trunk_input(self, images: torch.Tensor) -> torch.Tensor:
        """The maps and the UV coordinates of their texels (row 0 at v ≈ 1)."""
        b, _, h, w = images.shape
        u = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) / w
        v = 1.0 - (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) / h
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        coordinates = torch.stack([uu, vv])[None].expand(b, -1, -1, -1) * 2 - 1
        return torch.cat([images, coordinates], dim=1)


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "reference-3x9": Reference3x9Discriminator,
    "projection": ProjectionDiscriminator,
    "uv-projection": UVProjectionDiscriminator,
}
"""Discriminator classes by conditioning kind."""


def build_discriminator(kind: str, n_aus: int = 27, feature_dim: int = 512, **options: object) -> nn.Module:
    """Build the discriminator of a conditioning ``kind`` (a key of :data:`DISCRIMINATORS`).

    Args:
        kind: ``"reference-3x9"``, ``"projection"`` or ``"uv-projection"``.
        n_aus, feature_dim: condition size ``(K, C)``.
        options: further keyword arguments of the chosen class (e.g. ``mode="global"`` for projection).
    """
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator kind {kind!r}; valid: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[kind](n_aus=n_aus, feature_dim=feature_dim, **options)

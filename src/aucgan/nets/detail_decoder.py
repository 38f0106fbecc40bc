"""Detail decoders: a latent code and an AU condition → a UV displacement map.

Every decoder has the same interface::

    uv_displacement = decoder(latent, condition)

* ``latent`` ``(B, latent_dim)``: what the detail stage knows about this face, not noise. For FLAME it is
  ``[jaw pose (3), expression (50), detail code (128)]`` = 181 values, in that order (DECA's layout).
* ``condition``: an :class:`AUCondition` (the frozen AU net's per-AU features and AU intensities), or
  ``None`` for the unconditioned decoder.
* ``uv_displacement`` ``(B, 1, 256, 256)``: displacement along the coarse surface normal in model units
  (metres for FLAME), ``tanh(·) × max_z``, so always within ``±max_z``. A UV map in the layout of
  :mod:`aucgan.geometry`: row 0 is the largest v.

The variants, selected by name through :func:`build_detail_decoder`:

* ``"none"`` — :class:`DecaDetailDecoder`: DECA's decoder; ignores the condition; loads DECA's weights.
* ``"concat-1x1"`` — :class:`ReferenceConcatDecoder`: the reference AUCGAN generator; the flattened AU
  features are squeezed by a 1×1 conv and concatenated to the latent at 1 × 1.
* ``"token-attention"`` — :class:`AUTokenDecoder`: the AUs stay tokens (features + editable intensity +
  identity); UV positions attend to them at coarse resolutions.
* ``"uv-unet"`` — :class:`UVUNetDecoder`: each fold from where its information is. The AUs are placed in
  UV (a learned map per AU, weighted by its intensity and modulated by its features) and say which folds
  and where; the photo, sampled into UV through the coarse fit, says their phase and the identity's own
  lines, through a U-Net with skip connections at UV resolution. It alone reads ``uv_inputs`` (its class
  attribute ``reads_photo``) and works at the face model's UV size.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

UV_SIZE = 256
"""Side of the UV displacement map every decoder produces, in texels."""


@dataclass(frozen=True, eq=False)
class AUCondition:
    """What the frozen AU recogniser says about a face: the detail stage's condition.

    Attributes:
        features: ``(B, K, C)`` per-AU node features of the AU net (the notes' ``afn``); ``K = 27`` main AUs
            in :data:`aucgan.au.MAIN_AUS` order, ``C = 512`` for OpenGraphAU's MEFARG. Unbounded floats.
        intensities: ``(B, K)`` AU intensities in [0, 1], same AU order (MEFARG's 27 main scores). These are
            the values a user edits (see :meth:`with_intensities`); decoders that read them react to edits.

    Raises:
        ValueError: if the shapes are not ``(B, K, C)`` and ``(B, K)`` with matching ``B`` and ``K``.
    """

    features: torch.Tensor
    intensities: torch.Tensor

    def __post_init__(self) -> None:
        features, intensities = self.features, self.intensities
        if features.ndim != 3:
            raise ValueError(f"AU features must be (B, K, C), got {tuple(features.shape)}")
        if intensities.shape != features.shape[:2]:
            raise ValueError(
                f"AU intensities must be (B, K) = {tuple(features.shape[:2])} to match features "
                f"{tuple(features.shape)}, got {tuple(intensities.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @property
    def n_aus(self) -> int:
        return self.features.shape[1]

    def with_intensities(self, intensities: torch.Tensor) -> AUCondition:
        """The same features with new AU intensities ``(B, K)`` (an edit); this condition is unchanged."""
        return dataclasses.replace(self, intensities=intensities)


class ScaledTanh(nn.Module):
    """``tanh(gain · x)``: a decoder's last activation. ``gain`` sets which pre-activation is a typical
    displacement: with ``max_z`` far above the typical fold (the built-in face's world needs 1 cm of room
    for folds of about 0.5 mm), gain 1 asks the output convolution for weights of about 1/20 of their
    usual size, which Adam's steps of a fixed size overshoot. No parameters: DECA's weights load as before
    and, at gain 1, give DECA's output."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gain * x)

    def extra_repr(self) -> str:
        return f"gain={self.gain:g}"


def _check_latent(latent: torch.Tensor, latent_dim: int) -> None:
    if latent.ndim != 2 or latent.shape[1] != latent_dim:
        raise ValueError(f"latent must be (B, {latent_dim}), got {tuple(latent.shape)}")


def _check_condition(
    condition: AUCondition | None, batch_size: int, n_aus: int, feature_dim: int, owner: str
) -> AUCondition:
    if condition is None:
        raise ValueError(
            f"{owner} is AU-conditioned and needs an AUCondition, got None; use kind 'none' "
            "(DecaDetailDecoder) for an unconditioned decoder"
        )
    expected = (batch_size, n_aus, feature_dim)
    if tuple(condition.features.shape) != expected:
        raise ValueError(
            f"{owner}: AU features must be (B, K, C) = {expected}, got {tuple(condition.features.shape)}"
        )
    return condition


class DetailDecoder(nn.Module):
    """Common base: attributes shared by every decoder.

    Attributes:
        latent_dim: length of the latent code.
        max_z: bound of the output displacement, model units.
        uv_size: side of the output map (256).
        conditioned: whether :meth:`forward` reads the :class:`AUCondition` (``False`` only for ``"none"``).
        reads_photo: whether :meth:`forward` takes a third argument, ``uv_inputs (B, C, S, S)``: what the
            photo says in UV space (:func:`aucgan.stages.detail.photo_maps`).
    """

    conditioned: bool = True
    reads_photo: bool = False

    def __init__(self, latent_dim: int, max_z: float) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if not max_z > 0:
            raise ValueError(f"max_z must be positive, got {max_z}")
        self.latent_dim = latent_dim
        self.max_z = float(max_z)
        self.uv_size = UV_SIZE

    def with_output_gain(self, gain: float) -> DetailDecoder:
        """Set the gain of the last activation, ``max_z · tanh(gain · x)`` (:class:`ScaledTanh`). Returns
        ``self``."""
        if not gain > 0:
            raise ValueError(f"output gain must be positive, got {gain}")
        for module in self.modules():
            if isinstance(module, ScaledTanh):
                module.gain = float(gain)
        return self

    def start_flat(self) -> DetailDecoder:
        """Zero the output convolution (the last 1-channel conv), so that a fresh decoder predicts no
        displacement — the flat baseline — and training moves away from it only as the losses ask;
        its weights still get gradients from the first step. Returns ``self``."""
        output = [m for m in self.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1][-1]
        with torch.no_grad():
            output.weight.zero_()
            if output.bias is not None:
                output.bias.zero_()
        return self


class DecaDetailDecoder(DetailDecoder):
    """DECA's detail decoder, laid out so that DECA's published ``D_detail`` weights load strictly.

    ``l1`` maps the latent to a 128 × 8 × 8 map; ``conv_blocks`` is BatchNorm, then five blocks of
    (bilinear up-sampling ×2, conv 3×3, BatchNorm, LeakyReLU 0.2) with channels 128, 128, 64, 64, 32, 16
    (8² → 256²), then conv 3×3 → 1 channel and tanh; the result is scaled by ``max_z``. All five
    up-samplings are bilinear (``align_corners=False``), as SPEC §5 states.

    The block BatchNorms are built as ``BatchNorm2d(c, 0.8)``: the second positional argument is ``eps``,
    so their epsilon is 0.8, not a momentum. That is DECA's slip, kept because the published weights were
    trained with it and reproduce DECA's output only with it.

    The condition is ignored (pass ``None`` or anything): DECA has no AU conditioning.

    Shape:
        latent ``(B, latent_dim)`` → uv_displacement ``(B, 1, 256, 256)`` within ``±max_z``.
    """

    conditioned = False

    def __init__(self, latent_dim: int = 181, max_z: float = 0.01) -> None:
        super().__init__(latent_dim, max_z)
        self.start_channels, self.start_size = 128, 8
        self.l1 = nn.Sequential(nn.Linear(latent_dim, self.start_channels * self.start_size**2))
        widths = (128, 128, 64, 64, 32, 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0])]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.BatchNorm2d(c_out, 0.8),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(widths[-1], 1, 3, 1, 1), ScaledTanh()]
        self.conv_blocks = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor, condition: AUCondition | None = None) -> torch.Tensor:
        """``latent (B, latent_dim)`` → ``(B, 1, 256, 256)``; ``condition`` is accepted and ignored."""
        _check_latent(latent, self.latent_dim)
        start = self.l1(latent).view(-1, self.start_channels, self.start_size, self.start_size)
        return self.conv_blocks(start) * self.max_z


class ReferenceConcatDecoder(DetailDecoder):
    """The reference AUCGAN generator ("Generator3"), faithful except that its output is scaled by max_z.

    Mechanism: the AU features ``(B, K, C)`` are flattened to ``K·C`` (13 824) channels at 1 × 1, squeezed
    to ``condition_channels`` (41) by a 1×1 conv (``condition_proj``), and concatenated after the latent
    (181 + 41 = 222 channels at 1 × 1). Eight blocks of (nearest up-sampling ×2, conv 3×3, InstanceNorm,
    LeakyReLU 0.2) with channels 222 → 256 → 512 → 256 → 128 → 64 → 32 → 16 → 8 grow it to 256², then
    conv 3×3 → 1 channel, tanh (``to_displacement``).

    InstanceNorm is built as ``nn.InstanceNorm2d(c)``, i.e. ``affine=False`` (no parameters), as the
    reference did.

    Differences from the reference: the output is multiplied by ``max_z`` (the reference left it in
    [-1, 1], a SPEC §4 defect), and the latent is called a latent, not noise.

    Only the features are read, not the intensities: editing an AU through this decoder has to change the
    features; :meth:`AUCondition.with_intensities` has no effect on it.

    Shape:
        latent ``(B, latent_dim)``, condition features ``(B, n_aus, feature_dim)`` →
        ``(B, 1, 256, 256)`` within ``±max_z``.
    """

    def __init__(
        self,
        latent_dim: int = 181,
        max_z: float = 0.01,
        n_aus: int = 27,
        feature_dim: int = 512,
        condition_channels: int = 41,
    ) -> None:
        super().__init__(latent_dim, max_z)
        self.n_aus, self.feature_dim = n_aus, feature_dim
        self.condition_proj = nn.Conv2d(n_aus * feature_dim, condition_channels, 1)
        widths = (latent_dim + condition_channels, 256, 512, 256, 128, 64, 32, 16, 8)
        blocks: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.InstanceNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.to_displacement = nn.Sequential(nn.Conv2d(widths[-1], 1, 3, 1, 1), ScaledTanh())

    def forward(self, latent: torch.Tensor, condition: AUCondition | None) -> torch.Tensor:
        """``latent (B, latent_dim)`` and a condition → ``(B, 1, 256, 256)``."""
        _check_latent(latent, self.latent_dim)
        condition = _check_condition(
            condition, latent.shape[0], self.n_aus, self.feature_dim, type(self).__name__
        )
        squeezed = self.condition_proj(condition.features.reshape(latent.shape[0], -1, 1, 1))
        start = torch.cat([latent[:, :, None, None], squeezed], dim=1)
        return self.to_displacement(self.blocks(start)) * self.max_z


def uv_fourier_features(
    height: int,
    width: int,
    n_frequencies: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fourier features of the texel centres of a ``height × width`` UV map.

    Texel ``(i, j)`` (row 0 at the top) has centre ``u = (j + 0.5) / width``, ``v = 1 - (i + 0.5) / height``
    (the :mod:`aucgan.geometry` UV layout). Its features are ``[2u - 1, 2v - 1]`` followed, for
    ``f = 0 .. n_frequencies - 1``, by ``sin(2^f π u), cos(2^f π u), sin(2^f π v), cos(2^f π v)``.

    Returns:
        ``(height * width, 2 + 4 * n_frequencies)``, rows in row-major texel order.
    """
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    v = 1 - (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    uv = torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=-1)
    parts = [2 * uv - 1]
    for f in range(n_frequencies):
        angle = uv * (math.pi * 2**f)
        parts.append(torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(-1, 4))
    return torch.cat(parts, dim=-1)


class AUTokenEmbedding(nn.Module):
    """One token per AU: ``t_k = LayerNorm(W_f f_k) + s_k e_k + p_k``.

    ``f_k`` is AU k's feature vector, ``s_k`` its intensity, ``W_f`` a linear map shared by all AUs, ``e_k``
    a learned per-AU *intensity direction* and ``p_k`` a learned AU-identity embedding. An edited intensity
    moves the token along its own direction ``e_k``; ``p_k`` tells the consumer which AU a token is, so the
    tokens are not an unordered bag.

    Shape:
        condition features ``(B, n_aus, feature_dim)``, intensities ``(B, n_aus)`` →
        tokens ``(B, n_aus, token_dim)``.
    """

    def __init__(self, n_aus: int = 27, feature_dim: int = 512, token_dim: int = 128) -> None:
        super().__init__()
        self.n_aus, self.feature_dim, self.token_dim = n_aus, feature_dim, token_dim
        self.feature_proj = nn.Linear(feature_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.intensity_directions = nn.Parameter(torch.randn(n_aus, token_dim))
        self.identity = nn.Parameter(torch.randn(n_aus, token_dim))

    def forward(self, condition: AUCondition) -> torch.Tensor:
        """An :class:`AUCondition` with ``(B, n_aus, feature_dim)`` features → ``(B, n_aus, token_dim)``."""
        _check_condition(condition, condition.batch_size, self.n_aus, self.feature_dim, type(self).__name__)
        features = self.norm(self.feature_proj(condition.features))
        return features + condition.intensities[..., None] * self.intensity_directions + self.identity


class UVCrossAttention(nn.Module):
    """Every position of a UV feature map attends to the AU tokens; the result is added residually.

    Queries are the pre-normalised (LayerNorm over channels) features plus a learned projection of the
    texel's :func:`uv_fourier_features`, so attention can depend on *where* in UV a texel lies (which AU
    folds skin there); keys and values are the AU tokens. Multi-head attention, ``channels`` wide.

    Shape:
        maps ``(B, C, H, W)``, tokens ``(B, K, token_dim)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, token_dim: int, n_heads: int = 4, n_frequencies: int = 4) -> None:
        super().__init__()
        self.n_frequencies = n_frequencies
        self.norm = nn.LayerNorm(channels)
        self.position = nn.Linear(2 + 4 * n_frequencies, channels)
        self.attention = nn.MultiheadAttention(
            channels, n_heads, kdim=token_dim, vdim=token_dim, batch_first=True
        )

    def forward(self, maps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = maps.shape
        positions = uv_fourier_features(h, w, self.n_frequencies, device=maps.device, dtype=maps.dtype)
        queries = self.norm(maps.flatten(2).transpose(1, 2)) + self.position(positions)
        attended, _ = self.attention(queries, tokens, tokens, need_weights=False)
        return maps + attended.transpose(1, 2).reshape(b, c, h, w)


def _up_block(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, 1, 1),
        nn.GroupNorm(groups, c_out),
        nn.LeakyReLU(0.2, inplace=True),
    )


class AUTokenDecoder(DetailDecoder):
    """AU-token cross-attention decoder: the 27 AUs stay separate tokens that UV positions attend to.

    Mechanism:

    1. **Tokens.** :class:`AUTokenEmbedding` turns the condition into one token per AU,
       ``t_k = LayerNorm(W_f f_k) + s_k e_k + p_k`` (features ``f_k``, intensity ``s_k``, learned
       intensity direction ``e_k``, learned AU identity ``p_k``). The reference squeezes all 27 × 512
       features into 41 numbers at a single 1 × 1 location, before any spatial structure exists, and never
       reads the intensities; here each AU stays a separate token, and an edited intensity moves token k
       along its own direction, so the network can learn to switch an AU off at ``s_k = 0`` and to deepen
       its folds as ``s_k`` grows.
    2. **Start map.** The latent (jaw pose, expression, detail code) goes through a Linear to a
       ``channels[0] × 8 × 8`` map (GroupNorm, LeakyReLU 0.2), as in DECA.
    3. **Up-sampling.** Five blocks of (nearest ×2, conv 3×3, GroupNorm, LeakyReLU 0.2) grow it to 256²;
       ``channels`` are the widths at 8², 16², …, 256² (default 128, 128, 64, 32, 16, 8: about the
       reference generator's cost, with 8 channels at 256² like it). GroupNorm does not depend on the batch,
       so batch-1 inference behaves as in training.
    4. **Cross-attention.** At the coarse resolutions in ``attention_sizes`` (8², 16², 32²) a
       :class:`UVCrossAttention` block lets every UV position (query, with a Fourier encoding of its
       (u, v)) attend to the AU tokens (keys/values), added residually: the decoder learns *where* in UV
       each AU folds the skin, and *how much* from the token. The fine resolutions only sharpen.
    5. **Output.** conv 3×3 → 1 channel, ``tanh × max_z``.

    A condition is required (``None`` raises ValueError).

    Shape:
        latent ``(B, latent_dim)``, condition features ``(B, n_aus, feature_dim)`` and intensities
        ``(B, n_aus)`` → ``(B, 1, 256, 256)`` within ``±max_z``.
    """

    def __init__(
        self,
        latent_dim: int = 181,
        max_z: float = 0.01,
        n_aus: int = 27,
        feature_dim: int = 512,
        token_dim: int = 128,
        channels: tuple[int, ...] = (128, 128, 64, 32, 16, 8),
        attention_sizes: tuple[int, ...] = (8, 16, 32),
        n_heads: int = 4,
        n_frequencies: int = 4,
        groups: int = 8,
    ) -> None:
        super().__init__(latent_dim, max_z)
        n_up = round(math.log2(UV_SIZE // 8))
        if len(channels) != n_up + 1:
            raise ValueError(f"channels must list {n_up + 1} widths (8² … 256²), got {len(channels)}")
        if any(c % groups or c % n_heads for c in channels):
            raise ValueError(f"every width in {channels} must be divisible by groups={groups} and n_heads")
        sizes = [8 * 2**i for i in range(n_up + 1)]
        if not set(attention_sizes) <= set(sizes):
            raise ValueError(f"attention_sizes must be among {sizes}, got {attention_sizes}")
        self.n_aus, self.feature_dim = n_aus, feature_dim
        self.start_channels = channels[0]
        self.tokens = AUTokenEmbedding(n_aus, feature_dim, token_dim)
        self.latent_to_map = nn.Linear(latent_dim, channels[0] * 8 * 8)
        self.start = nn.Sequential(nn.GroupNorm(groups, channels[0]), nn.LeakyReLU(0.2, inplace=True))
        self.up_blocks = nn.ModuleList(
            _up_block(c_in, c_out, groups) for c_in, c_out in itertools.pairwise(channels)
        )
        self.attention = nn.ModuleDict(
            {
                str(size): UVCrossAttention(width, token_dim, n_heads, n_frequencies)
                for size, width in zip(sizes, channels, strict=True)
                if size in attention_sizes
            }
        )
        self.to_displacement = nn.Sequential(nn.Conv2d(channels[-1], 1, 3, 1, 1), ScaledTanh())

    def forward(self, latent: torch.Tensor, condition: AUCondition | None) -> torch.Tensor:
        """``latent (B, latent_dim)`` and a condition → ``(B, 1, 256, 256)``."""
        _check_latent(latent, self.latent_dim)
        condition = _check_condition(
            condition, latent.shape[0], self.n_aus, self.feature_dim, type(self).__name__
        )
        tokens = self.tokens(condition)
        maps = self.start(self.latent_to_map(latent).view(-1, self.start_channels, 8, 8))
        for index in range(len(self.up_blocks) + 1):
            if index > 0:
                maps = self.up_blocks[index - 1](maps)
            key = str(maps.shape[-1])
            if key in self.attention:
                maps = self.attention[key](maps, tokens)
        return self.to_displacement(maps) * self.max_z


UV_PATHS = ("photo", "au", "latent")
"""The information paths of :class:`UVUNetDecoder`; each can be switched off for an ablation."""


class TexelNorm(nn.Module):
    """Each texel's channels normalised on their own (a LayerNorm over the channels of every position) with a
    learned scale and shift per channel: unlike GroupNorm, whose statistics pool the whole map, a change in
    one place of the input moves nothing elsewhere through the normalisation."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        variance = (x - mean).square().mean(dim=1, keepdim=True)
        normalised = (x - mean) * torch.rsqrt(variance + self.eps)
        return normalised * self.weight[:, None, None] + self.bias[:, None, None]


UV_NORMS = ("group", "texel")
"""The uv-unet's normalisations: GroupNorm, or :class:`TexelNorm`."""


def _conv_norm(c_in: int, c_out: int, groups: int, stride: int = 1, norm: str = "group") -> nn.Sequential:
    layer = nn.GroupNorm(groups, c_out) if norm == "group" else TexelNorm(c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), layer, nn.LeakyReLU(0.2, inplace=True))


class UVUNetDecoder(DetailDecoder):
    """Each fold from where its information is: AUs placed in UV, the photo read in UV, one U-Net.

    Mechanism:

    1. **AU maps (path ``"au"``).** A learned map per AU, ``P_k`` ``(au_channels, m, m)`` over the UV
       square, weighted by the AU's intensity ``s_k`` and modulated per channel by its features ``f_k``:
       ``A = sum_k s_k (1 + tanh(W f_k)) P_k``, up-sampled to every level of the U-Net. The AUs say *which*
       folds and *where*; an edited intensity scales exactly its own map, so an edit can only act where that
       AU's map lives, and at ``s_k = 0`` the AU contributes nothing.
    2. **Photo (path ``"photo"``).** ``uv_inputs`` — the photo sampled into UV through the coarse fit,
       texel visibility, the coarse normals, the coarse (flat) rendering and the light
       (:func:`aucgan.stages.detail.photo_maps`) — enter at full UV resolution. The photo says the *phase*
       of the folds and the identity's own lines.
    3. **U-Net.** Levels at S, S/2, … (``channels``), two conv 3×3 + norm + LeakyReLU(0.2) each (``norm``:
       GroupNorm, whose statistics pool the whole map, so an edit in one region shifts every texel a
       little, or :class:`TexelNorm`, each texel alone),
       stride-2 down-sampling; the decoder up-samples (bilinear ×2) and concatenates the encoder's level
       (skip connections at UV resolution) and the AU maps at that level. The UV coordinates are always an
       input, so positions are known even with both paths off.
    4. **Latent (path ``"latent"``).** The latent (jaw, expression, detail code) scales and shifts the
       bottleneck's channels (FiLM, zero-initialised).
    5. **Output.** conv 3×3 → 1 channel, ``tanh × max_z``, at ``uv_size``² (the face model's UV size:
       nothing is resampled).

    Shape:
        latent ``(B, latent_dim)``, condition features ``(B, n_aus, feature_dim)`` and intensities
        ``(B, n_aus)``, uv_inputs ``(B, photo_channels, uv_size, uv_size)`` (``None`` without the photo
        path) → ``(B, 1, uv_size, uv_size)`` within ``±max_z``.
    """

    def __init__(
        self,
        latent_dim: int = 181,
        max_z: float = 0.01,
        n_aus: int = 27,
        feature_dim: int = 512,
        uv_size: int = UV_SIZE,
        photo_channels: int = 14,
        paths: tuple[str, ...] = UV_PATHS,
        channels: tuple[int, ...] = (16, 32, 48, 64, 96),
        au_channels: int = 8,
        au_map_size: int = 0,
        groups: int = 4,
        norm: str = "group",
    ) -> None:
        super().__init__(latent_dim, max_z)
        if norm not in UV_NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(UV_NORMS)}")
        unknown = set(paths) - set(UV_PATHS)
        if unknown:
            raise ValueError(f"unknown paths {sorted(unknown)}; valid: {', '.join(UV_PATHS)}")
        if uv_size % 2 ** (len(channels) - 1):
            raise ValueError(
                f"uv_size {uv_size} must be divisible by 2^{len(channels) - 1} (the U-Net's levels)"
            )
        if any(c % groups for c in channels):
            raise ValueError(f"every width in {channels} must be divisible by groups={groups}")
        self.uv_size, self.n_aus, self.feature_dim = uv_size, n_aus, feature_dim
        self.paths = tuple(path for path in UV_PATHS if path in paths)
        self.reads_photo = "photo" in self.paths
        self.conditioned = "au" in self.paths
        self.photo_channels = photo_channels
        au_width = au_channels if self.conditioned else 0
        if self.conditioned:
            size = au_map_size or uv_size // 4
            self.au_maps = nn.Parameter(0.01 * torch.randn(n_aus, au_channels, size, size))
            self.au_feature_gain = nn.Linear(feature_dim, au_channels)
            nn.init.zeros_(self.au_feature_gain.weight)
            nn.init.zeros_(self.au_feature_gain.bias)
        u = (torch.arange(uv_size) + 0.5) / uv_size
        v, u = torch.meshgrid(1.0 - u, u, indexing="ij")
        self.register_buffer("uv_coordinates", torch.stack([u, v])[None] * 2 - 1, persistent=False)
        c_in = 2 + (photo_channels if self.reads_photo else 0) + au_width
        self.down = nn.ModuleList()
        for level, width in enumerate(channels):
            start = c_in if level == 0 else channels[level - 1]
            self.down.append(
                nn.Sequential(
                    _conv_norm(start, width, groups, stride=1 if level == 0 else 2, norm=norm),
                    _conv_norm(width, width, groups, norm=norm),
                )
            )
        if "latent" in self.paths:
            self.film = nn.Linear(latent_dim, 2 * channels[-1])
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.up = nn.ModuleList(
            nn.Sequential(
                _conv_norm(
                    channels[level + 1] + channels[level] + au_width, channels[level], groups, norm=norm
                ),
                _conv_norm(channels[level], channels[level], groups, norm=norm),
            )
            for level in range(len(channels) - 1)
        )
        self.to_displacement = nn.Sequential(nn.Conv2d(channels[0], 1, 3, 1, 1), ScaledTanh())

    def au_map(self, condition: AUCondition) -> torch.Tensor:
        """``(B, au_channels, m, m)``: the AU maps weighted by intensity and modulated by the features."""
        gain = 1.0 + torch.tanh(self.au_feature_gain(condition.features))
        return torch.einsum("bk,bkc,kchw->bchw", condition.intensities, gain, self.au_maps)

    def forward(
        self, latent: torch.Tensor, condition: AUCondition | None, uv_inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``latent (B, latent_dim)``, a condition (path ``au``) and ``uv_inputs`` (path ``photo``) →
        ``(B, 1, uv_size, uv_size)``."""
        _check_latent(latent, self.latent_dim)
        batch, size = latent.shape[0], self.uv_size
        inputs = [self.uv_coordinates.expand(batch, -1, -1, -1).to(latent.dtype)]
        if self.reads_photo:
            expected = (batch, self.photo_channels, size, size)
            if uv_inputs is None or tuple(uv_inputs.shape) != expected:
                got = None if uv_inputs is None else tuple(uv_inputs.shape)
                raise ValueError(
                    f"{type(self).__name__} reads the photo: uv_inputs must be {expected}, got {got}"
                )
            inputs.append(uv_inputs)
        au = None
        if self.conditioned:
            condition = _check_condition(condition, batch, self.n_aus, self.feature_dim, type(self).__name__)
            au = self.au_map(condition)
            inputs.append(
                nn.functional.interpolate(au, size=(size, size), mode="bilinear", align_corners=False)
            )
        x = torch.cat(inputs, dim=1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        if "latent" in self.paths:
            scale, shift = self.film(latent)[..., None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        for level in reversed(range(len(self.up))):
            skip = skips[level]
            parts = [
                nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                skip,
            ]
            if au is not None:
                parts.append(
                    nn.functional.interpolate(au, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                )
            x = self.up[level](torch.cat(parts, dim=1))
        return self.to_displacement(x) * self.max_z


DETAIL_DECODERS: dict[str, type[DetailDecoder]] = {
    "none": DecaDetailDecoder,
    "concat-1x1": ReferenceConcatDecoder,
    "token-attention": AUTokenDecoder,
    "uv-unet": UVUNetDecoder,
}
"""Decoder classes by conditioning kind."""


def build_detail_decoder(
    kind: str,
    latent_dim: int = 181,
    max_z: float = 0.01,
    n_aus: int = 27,
    feature_dim: int = 512,
    **options: object,
) -> DetailDecoder:
    """Build the detail decoder of a conditioning ``kind`` (a key of :data:`DETAIL_DECODERS`).

    Args:
        kind: ``"none"`` (DECA), ``"concat-1x1"`` (the reference generator) or ``"token-attention"``.
        latent_dim: latent length (181 for FLAME: jaw 3 + expression 50 + detail 128).
        max_z: output bound in model units (0.01 m for FLAME).
        n_aus, feature_dim: condition size ``(K, C)``; not passed to ``"none"``.
        options: further keyword arguments of the chosen class (e.g. ``token_dim`` for token-attention).
    """
    if kind not in DETAIL_DECODERS:
        raise ValueError(f"unknown detail decoder kind {kind!r}; valid: {', '.join(DETAIL_DECODERS)}")
    cls = DETAIL_DECODERS[kind]
    if cls is UVUNetDecoder:
        return cls(latent_dim, max_z, n_aus=n_aus, feature_dim=feature_dim, **options)
    if not cls.conditioned:
        return cls(latent_dim, max_z, **options)
    return cls(latent_dim, max_z, n_aus=n_aus, feature_dim=feature_dim, **options)

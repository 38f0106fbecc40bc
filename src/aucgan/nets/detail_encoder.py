"""Detail-stage encoders: one image → a ``detail_code`` (B, n_detail) describing fine skin detail.

Three designs, each returning ``detail_code`` of shape ``(B, n_detail)``:

* :class:`ConvDetailEncoder`, the reference AUCGAN encoder: eight strided 3x3 convolutions take a 256²
  image down to 1 x 1 x 128;
* :class:`ResNetDetailEncoder`, DECA's ``E_detail``: a ResNet-50 with a two-layer head, parameter names
  as DECA's published weights (see :class:`~aucgan.nets.coarse_encoder.ResNetEncoder`);
* :class:`NoDetailCode`: no encoder, a code of zeros, for a decoder that reads the photo itself (the
  ``uv-unet``, which samples it into UV).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from aucgan.nets.coarse_encoder import ResNetEncoder

CONV_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 512, 256, 128)
"""Output channels of the reference encoder's eight convolutions."""

INPUT_SIZE = 256
NEGATIVE_SLOPE = 0.2
INSTANCE_NORM_EPS = 1e-5


class ConvDetailEncoder(nn.Module):
    """The reference AUCGAN detail encoder: eight 3x3 stride-2 convolutions, 256² → 1², to ``detail_code``.

    Layers (``convs.0`` … ``convs.7``, each 3x3, stride 2, padding 1, with bias), channels
    64, 128, 256, 512, 1024, 512, 256, ``n_detail``:

    * conv1 → ReLU;
    * conv2 … conv7 → InstanceNorm (no affine parameters, eps 1e-5) → LeakyReLU(0.2);
    * conv8 → LeakyReLU(0.2) → flatten.

    Images of any other size are first resized to 256² with ``F.interpolate`` (``resize_mode``; the
    reference called ``F.interpolate`` with its default, ``"nearest"``).

    Args:
        n_detail: size of the detail code (channels of conv8).
        resize_mode: interpolation mode used when the input is not 256².

    Shape:
        input ``images (B, 3, H, W)`` in [0, 1]; output ``detail_code (B, n_detail)``.
    """

    def __init__(self, n_detail: int = 128, resize_mode: str = "bilinear") -> None:
        super().__init__()
        if n_detail < 1:
            raise ValueError(f"n_detail must be positive, got {n_detail}")
        if resize_mode not in ("bilinear", "bicubic", "nearest", "area"):
            raise ValueError(f"unknown resize_mode {resize_mode!r}; valid: bilinear, bicubic, nearest, area")
        self.n_detail = n_detail
        self.resize_mode = resize_mode
        channels = (3, *CONV_CHANNELS[:-1], n_detail)
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1) for cin, cout in itertools.pairwise(channels)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images
        if tuple(x.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            corners = False if self.resize_mode in ("bilinear", "bicubic") else None
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode=self.resize_mode, align_corners=corners)
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index == 0:
                x = F.relu(x)
            elif index < last:
                x = F.leaky_relu(F.instance_norm(x, eps=INSTANCE_NORM_EPS), NEGATIVE_SLOPE)
            else:
                x = F.leaky_relu(x, NEGATIVE_SLOPE)
        return x.flatten(1)


class ResNetDetailEncoder(ResNetEncoder):
    """DECA's detail encoder ``E_detail``: ResNet-50 → pool → Linear(2048, 1024) → ReLU → Linear(1024, N).

    N = ``n_detail``. Parameter names as DECA's published ``E_detail`` (``encoder.*``, ``layers.0.*``,
    ``layers.2.*``).

    Shape:
        input ``images (B, 3, H, W)`` in [0, 1], H, W >= 32 (nominally 224²); output
        ``detail_code (B, n_detail)``, raw.
    """

    def __init__(self, n_detail: int = 128, backbone: str = "resnet50") -> None:
        super().__init__(n_detail, backbone)
        self.n_detail = n_detail


class NoDetailCode(nn.Module):
    """No detail encoder: ``detail_code`` is all zeros, whatever the image (no parameters, no compute).

    For a decoder that reads the photo itself (:class:`~aucgan.nets.detail_decoder.UVUNetDecoder`); the
    decoder's latent keeps its layout (jaw, expression, then ``n_detail`` zeros).

    Shape:
        input ``images (B, 3, H, W)``; output ``detail_code (B, n_detail)`` of zeros, in the images' dtype.
    """

    def __init__(self, n_detail: int = 128) -> None:
        super().__init__()
        if n_detail < 1:
            raise ValueError(f"n_detail must be positive, got {n_detail}")
        self.n_detail = n_detail

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        return images.new_zeros(images.shape[0], self.n_detail)

    def extra_repr(self) -> str:
        return f"n_detail={self.n_detail}"

"""The convolutional trunk of VGG19 with torchvision's parameter names, a frozen feature extractor.

VGG19 (configuration "E" of Simonyan & Zisserman) is the feature network of the ID-MRF content loss
(:mod:`aucgan.losses.mrf`). Its ImageNet weights are neither shipped nor downloaded: users point the
config at torchvision's ``vgg19-dcbfe4e9.pth`` (a plain ``torch.save`` of a state dict with keys
``features.{i}.weight/bias`` and ``classifier.{0,3,6}.weight/bias``) and :func:`load_vgg19` reads it
without executing any pickle.

Layers are named as in the VGG papers: block ``b`` (1..5) holds ``conv{b}_{k}`` followed by
``relu{b}_{k}`` and ends with ``pool{b}``. :data:`VGG19_LAYER_NAMES` lists them in the order of
``features``, so ``features[i]`` is the layer named ``VGG19_LAYER_NAMES[i]`` (e.g. ``features.12`` is
``conv3_2`` and ``features.34`` is ``conv5_4``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from aucgan.loaders.common import CheckpointError, load_strict, read_checkpoint

#: Configuration "E": output channels of each 3x3 convolution, ``"M"`` for a 2x2 max-pool.
VGG19_CONFIGURATION: tuple[int | str, ...] = (
    *(64, 64, "M"),
    *(128, 128, "M"),
    *(256, 256, 256, 256, "M"),
    *(512, 512, 512, 512, "M"),
    *(512, 512, 512, 512, "M"),
)

#: Layers of the ID-MRF loss (DECA's ``photo_detail_mrf``).
DEFAULT_LAYERS: tuple[str, ...] = ("relu3_2", "relu4_2")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names(configuration: Iterable[int | str]) -> tuple[str, ...]:
    names, block, conv = [], 1, 1
    for entry in configuration:
        if entry == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return tuple(names)


#: Name of ``features[i]`` for every index ``i`` of the full trunk (37 layers, ``conv1_1`` .. ``pool5``).
VGG19_LAYER_NAMES: tuple[str, ...] = _layer_names(VGG19_CONFIGURATION)


def _build_features(depth: int) -> nn.Sequential:
    """``features[0 .. depth - 1]`` of VGG19, with non-in-place ReLUs."""
    layers: list[nn.Module] = []
    channels = 3
    for entry in VGG19_CONFIGURATION:
        if len(layers) >= depth:
            break
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(entry), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(entry)
    return nn.Sequential(*layers[:depth])


class VGG19Features(nn.Module):
    """VGG19's convolutional trunk up to the deepest requested layer; returns the requested feature maps.

    The layers live in ``self.features`` (an ``nn.Sequential``) exactly as in torchvision, so the parameter
    names are torchvision's (``features.0.weight`` .. ``features.34.bias``) however deep the trunk is
    built. ImageNet mean/std normalisation is applied inside; the statistics are non-persistent buffers
    (not in the state dict). Weights are randomly initialised until loaded (see :func:`load_vgg19`).

    Args:
        layers: names of the feature maps :meth:`forward` returns, from :data:`VGG19_LAYER_NAMES`
            (``"relu1_2"``, ``"conv3_2"``, ``"pool4"``, ``"relu5_4"``, ...); the trunk ends at the
            deepest of them.

    Shape:
        input ``(B, 3, H, W)`` RGB in [0, 1]; output ``{name: (B, C, H / 2^p, W / 2^p)}`` with ``p`` the
        number of pools before the layer (``relu3_2``: ``C = 256``, ``p = 2``; ``relu4_2``: ``C = 512``,
        ``p = 3``).
    """

    def __init__(self, layers: Iterable[str] = DEFAULT_LAYERS) -> None:
        super().__init__()
        if isinstance(layers, str):
            raise ValueError(f"layers must be a sequence of layer names, got the string {layers!r}")
        requested = tuple(dict.fromkeys(layers))
        if not requested:
            raise ValueError("layers must name at least one layer")
        unknown = [name for name in requested if name not in VGG19_LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; valid: {', '.join(VGG19_LAYER_NAMES)}")
        self.layers = requested
        self._indices = {VGG19_LAYER_NAMES.index(name): name for name in requested}
        self.features = _build_features(max(self._indices) + 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._frozen = False

    @property
    def deepest(self) -> str:
        """Name of the last layer built."""
        return VGG19_LAYER_NAMES[len(self.features) - 1]

    def freeze(self) -> VGG19Features:
        """Turn into a fixed feature extractor: eval mode for good, no parameter requires grad.

        Gradients still flow to the input images (the loss needs them). Returns ``self``.
        """
        self._frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> VGG19Features:
        """As :meth:`nn.Module.train`, except that a frozen network stays in eval mode."""
        return super().train(mode and not self._frozen)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of ``images``.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1] (normalised with ImageNet statistics inside).

        Returns:
            ``{name: (B, C, h, w)}`` for every name in :attr:`layers`, in that order.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        found: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._indices:
                found[self._indices[index]] = x
        return {name: found[name] for name in self.layers}


def _vgg19_parameter_keys() -> frozenset[str]:
    keys = set()
    for index, name in enumerate(VGG19_LAYER_NAMES):
        if name.startswith("conv"):
            keys |= {f"features.{index}.weight", f"features.{index}.bias"}
    return frozenset(keys)


def load_vgg19(path: str | os.PathLike[str], layers: Iterable[str] = DEFAULT_LAYERS) -> VGG19Features:
    """Build :class:`VGG19Features` for ``layers`` and load torchvision's ImageNet weights into it.

    The file (torchvision's ``vgg19-dcbfe4e9.pth``) is read with
    :func:`~aucgan.loaders.common.read_checkpoint` (no pickle is executed); it may be a bare state dict
    or ``{'state_dict': {...}}``. The classifier (``classifier.*``) and the convolutions deeper than the
    trunk needs are expected and ignored; every other key must match the trunk by name and shape.

    Args:
        path: the state dict file.
        layers: as in :class:`VGG19Features`.

    Returns:
        The frozen network (eval mode, no gradients to its parameters), on the CPU, float32.

    Raises:
        CheckpointError: one line naming the file, for an unreadable file or missing, unexpected or
            mis-shaped keys.
    """
    net = VGG19Features(layers)
    source = str(path)
    data = read_checkpoint(path)
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")
    own = set(net.state_dict())
    ignored = _vgg19_parameter_keys() - own
    kept = {k: v for k, v in state.items() if k not in ignored and not str(k).startswith("classifier.")}
    load_strict(net, kept, f"{source} [VGG19 features up to {net.deepest}]")
    return net.freeze()

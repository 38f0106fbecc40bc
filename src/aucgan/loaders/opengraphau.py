"""Load published OpenGraphAU checkpoints (``OpenGprahAU-ResNet50_first_stage.pth`` and the like) strictly.

The released files are ``torch.save`` dicts ``{'state_dict': {...}}`` whose keys carry DataParallel's
``module.`` prefix. The stage and the backbone are read off the keys, never guessed from the file name:

* stage 2 (MEFL) has ``head.edge_extractor.*`` and ``head.gnn.graph_layers.*``; stage 1 (ANFL) has
  ``head.gnn.U.*`` and no edge extractor;
* a ResNet backbone has ``backbone.conv1.weight``; bottleneck blocks (``backbone.layer1.0.conv3.weight``)
  with 3, 4, 6, 3 blocks per stage make a ResNet-50, basic blocks with 2, 2, 2, 2 a ResNet-18.

Swin Transformer (and any other) backbones are refused with a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from aucgan.loaders.common import CheckpointError, load_strict, read_checkpoint, strip_prefix
from aucgan.nets.au_net import BACKBONES, MEFARG

TRAINED_PREFIX = "net."
"""Where ``aucgan train au`` keeps the AU net in its checkpoints' ``state_dict``."""

_RESNETS = {("bottleneck", (3, 4, 6, 3)): "resnet50", ("basic", (2, 2, 2, 2)): "resnet18"}
_OTHER_RESNETS = {
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


def _state_dict(data: Mapping, source: str) -> dict[str, torch.Tensor]:
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")
    if "aucgan" in data:
        stripped = strip_prefix(state, TRAINED_PREFIX)
        if not stripped:
            raise CheckpointError(
                f"{source}: a checkpoint of `aucgan train` but not of the AU net (no '{TRAINED_PREFIX}*' "
                f"keys; found top-level keys: {_describe_keys(state) or 'none'}); give `aucgan train au`'s "
                "last.ckpt"
            )
        return stripped
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _weights_file_au_net(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], int]:
    from aucgan.weights import read_weights

    weights = read_weights(Path(path))
    state = strip_prefix(weights.states.get("detail", {}), "au_net.")
    if not state:
        raise CheckpointError(
            f"{path}: a weights file without an AU net (no 'au_net.*' keys in its detail stage)"
        )
    floats = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    return floats, weights.config.model.au_input_size


def _recorded_input_size(data: Mapping) -> int:
    """The ``model.au_input_size`` a checkpoint of ``aucgan train`` records (0 for other files, and for
    checkpoints written before the setting existed)."""
    recorded = data.get("aucgan", {})
    for section in ("config", "model"):
        recorded = recorded.get(section, {}) if isinstance(recorded, Mapping) else {}
    size = recorded.get("au_input_size", 0) if isinstance(recorded, Mapping) else 0
    return size if isinstance(size, int) else 0


def _describe_keys(state: Mapping) -> str:
    names = sorted({str(k).split(".")[0] for k in state})
    return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")


def detect_architecture(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> tuple[str, int]:
    """``(backbone, stage)`` of a MEFARG state dict without the ``module.`` prefix.

    Raises:
        CheckpointError: not a MEFARG state dict, or a backbone other than ResNet-18/50.
    """
    if "head.main_sc" not in state or not any(k.startswith("backbone.") for k in state):
        raise CheckpointError(
            f"{source}: not an OpenGraphAU MEFARG checkpoint (no 'backbone.*' and 'head.main_sc' keys; "
            f"found top-level keys: {_describe_keys(state)})"
        )
    supported = ", ".join(BACKBONES)
    if "backbone.conv1.weight" not in state:
        kind = (
            "Swin Transformer" if any(k.startswith("backbone.patch_embed.") for k in state) else "non-ResNet"
        )
        raise CheckpointError(f"{source}: {kind} backbone is not supported; supported backbones: {supported}")
    block = "bottleneck" if "backbone.layer1.0.conv3.weight" in state else "basic"
    counts = []
    for layer in range(1, 5):
        pattern = re.compile(rf"backbone\.layer{layer}\.(\d+)\.")
        indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        counts.append(max(indices) + 1 if indices else 0)
    key = (block, tuple(counts))
    if key not in _RESNETS:
        name = _OTHER_RESNETS.get(key, f"ResNet with {block} blocks {tuple(counts)}")
        raise CheckpointError(f"{source}: backbone {name} is not supported; supported backbones: {supported}")
    if any(k.startswith(("head.edge_extractor.", "head.gnn.graph_layers.")) for k in state):
        stage = 2
    elif "head.gnn.U.weight" in state:
        stage = 1
    else:
        raise CheckpointError(
            f"{source}: unknown MEFARG head (neither 'head.gnn.graph_layers.*' of stage 2 "
            "nor 'head.gnn.U.weight' of stage 1)"
        )
    return _RESNETS[key], stage


def save_au_net(net: MEFARG, path: str | os.PathLike[str]) -> Path:
    """Write ``net`` in the layout of an ``aucgan train au`` checkpoint (its state dict under
    :data:`TRAINED_PREFIX` and its input size in the recorded config), which :func:`load_au_net` reads back
    to the same network; returns the path."""
    from aucgan.atomic import atomic_torch_save

    state = {TRAINED_PREFIX + key: value for key, value in net.state_dict().items()}
    recorded = {"config": {"model": {"au_input_size": net.input_size}}}
    atomic_torch_save({"state_dict": state, "aucgan": recorded}, path)
    return Path(path)


def load_au_net(path: str | os.PathLike[str], strict: bool = True) -> MEFARG:
    """Build the :class:`~aucgan.nets.au_net.MEFARG` an OpenGraphAU file describes, load it, freeze it.

    Accepts ``{'state_dict': {...}}`` with or without ``module.`` prefixes, a bare state dict, a
    checkpoint of ``aucgan train au`` (its ``last.ckpt`` / ``best.ckpt``), or a weights file of
    ``aucgan pack`` (``.safetensors``, e.g. the shipped one: its detail stage's AU net).

    Args:
        strict: refuse missing or unexpected keys (mis-shaped tensors are always refused).

    Returns:
        the network in frozen mode (eval, no parameter gradients; see :meth:`MEFARG.freeze`), reading
        images at the ``model.au_input_size`` the file records (ours), or as they come (OpenGraphAU's).

    Raises:
        CheckpointError: one line naming the file and the problem (unreadable file, wrong architecture,
            unsupported backbone, missing/unexpected/mis-shaped keys).
    """
    source = str(path)
    if str(path).lower().endswith(".safetensors"):
        state, input_size = _weights_file_au_net(path)
    else:
        data = read_checkpoint(path)
        state, input_size = _state_dict(data, source), _recorded_input_size(data)
    backbone, stage = detect_architecture(state, source)
    net = MEFARG(backbone=backbone, stage=stage, input_size=input_size)
    load_strict(net, state, f"{source} [state_dict, {backbone} stage {stage}]", strict=strict)
    return net.freeze()

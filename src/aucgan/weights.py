"""aucgan's own weights files: one safetensors file holding every stage that inference needs.

A weights file is written by ``aucgan pack`` from a checkpoint of ``aucgan train detail`` (which carries the
frozen coarse stage and AU net beside the detail generator). It holds the state dicts of the coarse stage
(``coarse.*``) and of the detail stage with its AU net (``detail.*``), and in its metadata the config that
builds their architecture, the aucgan version and free-text provenance (how the weights were made).

Network parameters may be stored as float16 (half the size; loaded back as float32); buffers — the face
model, the albedo model, normalisation statistics — always keep their dtype. Reading never executes code
(safetensors holds tensors only), and loading is strict: a missing, unexpected or misshapen key is refused
by name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aucgan import __version__
from aucgan.atomic import atomic_path
from aucgan.config import Config, ConfigError, config_from_yaml, config_to_yaml
from aucgan.loaders.common import CheckpointError, describe_bytes, is_html, load_strict, strip_prefix

FORMAT = "aucgan-weights/1"
PARTS = ("coarse", "detail")
"""The stages a weights file holds, each under ``<part>.`` in the file."""


@dataclass(frozen=True)
class WeightsFile:
    """What a weights file holds: per-part state dicts, the config that builds them, and provenance."""

    states: dict[str, dict[str, torch.Tensor]]
    config: Config
    provenance: str
    version: str


def _half_names(modules: Mapping[str, nn.Module]) -> set[str]:
    return {f"{part}.{name}" for part, module in modules.items() for name, _ in module.named_parameters()}


def save_weights(
    path: str | os.PathLike[str],
    modules: Mapping[str, nn.Module],
    cfg: Config,
    provenance: str = "",
    half: bool = True,
) -> Path:
    """Write ``modules`` (``{"coarse": CoarseStage, "detail": DetailStage}``) to a safetensors file.

    Args:
        half: store floating-point *parameters* as float16; buffers keep their dtype.

    Returns:
        The path written (atomically: a temporary file beside it, then renamed).
    """
    from safetensors.torch import save_file

    if set(modules) != set(PARTS):
        raise ValueError(f"a weights file holds exactly {PARTS}, got {tuple(modules)}")
    halve = _half_names(modules) if half else set()
    tensors: dict[str, torch.Tensor] = {}
    for part, module in modules.items():
        for name, tensor in module.state_dict().items():
            key = f"{part}.{name}"
            tensor = tensor.detach().cpu()
            if key in halve and tensor.is_floating_point():
                tensor = tensor.half()
            tensors[key] = tensor.contiguous().clone()
    metadata = {
        "format": FORMAT,
        "aucgan_version": __version__,
        "config": config_to_yaml(cfg),
        "provenance": provenance,
    }
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return Path(path)


def stored_config_yaml(path: str | os.PathLike[str]) -> str:
    """The config YAML a weights file carries in its metadata (the tensors are not read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors weights file ({error})") from None
    if "config" not in metadata:
        raise CheckpointError(f"{path}: holds no config; write it with `aucgan pack`")
    return metadata["config"]


def read_weights(path: str | os.PathLike[str]) -> WeightsFile:
    """Read a weights file (tensors only; nothing is executed).

    Raises:
        CheckpointError: missing, not a safetensors file, truncated, or not an aucgan weights file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        head = b"?"
        with contextlib.suppress(OSError), open(path, "rb") as stream:
            head = stream.read(512)
        if not head or is_html(head):
            raise CheckpointError(
                f"{path}: {describe_bytes(head, 'weights file')}; give one written by `aucgan pack`"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable safetensors weights file ({first}); write one with `aucgan pack`"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a safetensors file but not aucgan weights (no '{FORMAT}' metadata); "
            "give a weights file written by `aucgan pack`"
        )
    try:
        cfg = config_from_yaml(Config, metadata.get("config", ""), f"{path} [config]")
    except ConfigError as error:
        raise CheckpointError(f"{path}: its stored config does not load: {error}") from None
    states = {part: strip_prefix(tensors, f"{part}.") for part in PARTS}
    unknown = sorted(key for key in tensors if key.split(".", 1)[0] not in PARTS)
    if unknown:
        raise CheckpointError(f"{path}: unexpected tensors outside {PARTS}: {', '.join(unknown[:5])}")
    return WeightsFile(states, cfg, metadata.get("provenance", ""), metadata.get("aucgan_version", "?"))


def load_part(module: nn.Module, weights: WeightsFile, part: str, source: str) -> nn.Module:
    """Load ``weights.states[part]`` into ``module`` strictly, casting each tensor to the module's dtype."""
    own = module.state_dict()
    state = {
        name: tensor.to(own[name].dtype) if name in own and tensor.is_floating_point() else tensor
        for name, tensor in weights.states[part].items()
    }
    load_strict(module, state, f"{source} [{part}]")
    return module


def detail_checkpoint_states(
    data: Mapping, path: str | os.PathLike[str]
) -> dict[str, dict[str, torch.Tensor]]:
    """The coarse and detail stages' state dicts inside ``data``, a checkpoint of ``aucgan train detail``
    read from ``path`` (named in errors) with :func:`~aucgan.loaders.common.read_checkpoint`."""
    if "aucgan" not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a checkpoint of `aucgan train detail`")
    state = data["state_dict"]
    parts = {part: strip_prefix(state, f"{part}.") for part in PARTS}
    if not all(parts.values()):
        raise CheckpointError(f"{path}: holds no coarse and detail stages; is it from `aucgan train detail`?")
    return parts

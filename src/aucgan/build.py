"""Build the stages and networks a config describes (networks themselves never read a config).

The built-in face's linear albedo model is fitted to the synthetic world's training identities (a pure
function of the world's seed and sizes); it travels inside every coarse checkpoint, so inference reads it
back rather than refitting.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aucgan.config import Config, ConfigError
from aucgan.data.shards import WorldParameters
from aucgan.data.synthetic import SyntheticWorld, identity_in_split
from aucgan.face_model.albedo import LinearAlbedo, fit_linear_albedo
from aucgan.face_model.procedural import ProceduralFaceModel
from aucgan.face_model.uv_space import UVSpace
from aucgan.loaders.common import CheckpointError, load_strict, read_checkpoint, strip_prefix
from aucgan.loaders.opengraphau import load_au_net
from aucgan.nets.au_net import MEFARG
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout
from aucgan.nets.detail_decoder import build_detail_decoder
from aucgan.nets.detail_encoder import ConvDetailEncoder, ResNetDetailEncoder
from aucgan.nets.discriminator import build_discriminator
from aucgan.stages.coarse import CoarseStage
from aucgan.stages.detail import DetailStage

ALBEDO_EXAMPLES = 96
"""Training identities the built-in face's albedo model is fitted to."""

COARSE_PREFIX = "stage."
"""Where ``aucgan train coarse`` keeps the coarse stage in its checkpoints' ``state_dict``."""


def world_parameters(cfg: Config) -> WorldParameters:
    return WorldParameters(
        seed=cfg.seed,
        image_size=cfg.render.image_size,
        uv_size=cfg.render.uv_size,
        images_per_identity=cfg.synth.images_per_identity,
        n_identity=cfg.face_model.n_identity,
    )


def face_model(cfg: Config) -> ProceduralFaceModel:
    return ProceduralFaceModel(n_identity=cfg.face_model.n_identity)


def world_albedo(world: SyntheticWorld, n_components: int, n_examples: int = ALBEDO_EXAMPLES) -> LinearAlbedo:
    """PCA albedo model of ``n_examples`` training identities of ``world``."""
    maps = torch.stack([world.identity_albedo(identity_in_split("train", i)) for i in range(n_examples)])
    return fit_linear_albedo(maps, n_components)


def coarse_stage(cfg: Config, with_encoder: bool = True) -> CoarseStage:
    """A coarse stage for ``cfg``: the face model, its albedo model fitted to the synthetic world, and a
    freshly initialised encoder (load weights with :func:`load_coarse`)."""
    world = world_parameters(cfg).world()
    albedo = world_albedo(world, cfg.model.n_albedo)
    layout = CodeLayout.for_face_model(world.model, cfg.model.n_albedo)
    encoder = CoarseEncoder(layout, cfg.model.coarse_backbone) if with_encoder else None
    return CoarseStage(world.model, albedo, world.uv_space, encoder, cfg.render.image_size)


def load_coarse(stage: CoarseStage, path: str | Path) -> CoarseStage:
    """Load a checkpoint of ``aucgan train coarse`` into ``stage`` (strict; one-line CheckpointError)."""
    data = read_checkpoint(path)
    if "aucgan" not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a checkpoint of `aucgan train coarse`")
    load_strict(stage, strip_prefix(data["state_dict"], COARSE_PREFIX), f"{path} [coarse stage]")
    return stage


def au_net(cfg: Config) -> MEFARG:
    """The AU net named by ``assets.au_net`` (ours or OpenGraphAU's), frozen; a fresh one if none."""
    if cfg.assets.au_net:
        return load_au_net(cfg.assets.au_net)
    return MEFARG(cfg.model.au_backbone, cfg.model.au_stage)


def require_asset(cfg: Config, key: str, how: str) -> str:
    path = getattr(cfg.assets, key)
    if not path:
        raise ConfigError(f"assets.{key} is not set: {how}")
    if not Path(path).is_file():
        raise ConfigError(f"assets.{key}={path}: no such file; {how}")
    return path


def detail_encoder(kind: str, n_detail: int) -> nn.Module:
    if kind == "conv":
        return ConvDetailEncoder(n_detail)
    return ResNetDetailEncoder(n_detail, kind)


def detail_stage(cfg: Config, uv_space: UVSpace, au: MEFARG | None, n_expression: int) -> DetailStage:
    """Detail encoder + decoder of ``cfg.model`` around a (frozen) AU net."""
    feature_dim = au.channels if au is not None else 512
    decoder = build_detail_decoder(
        cfg.model.detail_decoder,
        3 + n_expression + cfg.model.n_detail,
        cfg.model.max_z,
        feature_dim=feature_dim,
    )
    encoder = detail_encoder(cfg.model.detail_encoder, cfg.model.n_detail)
    return DetailStage(encoder, decoder, uv_space, au)


def discriminator(cfg: Config, feature_dim: int) -> nn.Module:
    kind = cfg.model.discriminator
    if kind == "projection-global":
        return build_discriminator("projection", feature_dim=feature_dim, mode="global")
    return build_discriminator(kind, feature_dim=feature_dim)

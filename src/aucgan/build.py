"""Build the stages and networks a config describes (networks themselves never read a config).

The built-in face's linear albedo model is fitted to the synthetic world's training identities (a pure
function of the world's seed and sizes); it travels inside every coarse checkpoint, so inference reads it
back rather than refitting.

With ``face_model.kind=flame`` the face model, its albedo model and (optionally) DECA's networks are read
from the user's files named under ``assets.*``; FLAME's data and FLAMETex stay out of every state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aucgan.config import Config, ConfigError
from aucgan.data.shards import WorldParameters
from aucgan.data.synthetic import SyntheticWorld, identity_in_split
from aucgan.face_model.albedo import LinearAlbedo, fit_linear_albedo
from aucgan.face_model.base import FaceModel
from aucgan.face_model.flame import FlameFaceModel, load_flame_face_model
from aucgan.face_model.flame_texture import load_flame_albedo
from aucgan.face_model.procedural import ProceduralFaceModel
from aucgan.face_model.uv_space import UVSpace
from aucgan.loaders.common import CheckpointError, load_strict, read_checkpoint, strip_prefix
from aucgan.loaders.deca import DecaWeights, load_deca
from aucgan.loaders.opengraphau import load_au_net
from aucgan.nets.au_net import MEFARG
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout
from aucgan.nets.detail_decoder import build_detail_decoder
from aucgan.nets.detail_encoder import ConvDetailEncoder, NoDetailCode, ResNetDetailEncoder
from aucgan.nets.discriminator import build_discriminator
from aucgan.stages.coarse import CoarseStage
from aucgan.stages.detail import PHOTO_CHANNELS, DetailStage

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


def face_model(cfg: Config) -> FaceModel:
    """The face model ``cfg.face_model`` names (FLAME reads its files from ``cfg.assets``)."""
    if cfg.face_model.kind == "flame":
        return flame_face_model(cfg)
    return ProceduralFaceModel(n_identity=cfg.face_model.n_identity)


def world_albedo(world: SyntheticWorld, n_components: int, n_examples: int = ALBEDO_EXAMPLES) -> LinearAlbedo:
    """PCA albedo model of ``n_examples`` training identities of ``world``."""
    maps = torch.stack([world.identity_albedo(identity_in_split("train", i)) for i in range(n_examples)])
    return fit_linear_albedo(maps, n_components)


def coarse_stage(cfg: Config, with_encoder: bool = True) -> CoarseStage:
    """A coarse stage for ``cfg``: the face model, its albedo model fitted to the synthetic world, and a
    freshly initialised encoder (load weights with :func:`load_coarse`).

    With ``face_model.kind=flame``: FLAME, FLAMETex (``assets.flame_albedo``) and, when ``assets.deca`` is
    set, DECA's ``E_flame`` as the encoder (a fresh encoder otherwise)."""
    if cfg.face_model.kind == "flame":
        deca = ("deca",) if with_encoder and cfg.assets.deca else ()
        require_assets(cfg, (*FLAME_ASSETS, "flame_albedo", *deca), "face_model.kind=flame")
        encoder = None
        if with_encoder:
            encoder = deca_weights(cfg).coarse_encoder if cfg.assets.deca else flame_encoder(cfg)
        return flame_coarse_stage(cfg, encoder)
    world = world_parameters(cfg).world()
    albedo = world_albedo(world, cfg.model.n_albedo)
    layout = CodeLayout.for_face_model(world.model, cfg.model.n_albedo)
    encoder = CoarseEncoder(layout, cfg.model.coarse_backbone) if with_encoder else None
    return CoarseStage(world.model, albedo, world.uv_space, encoder, cfg.render.image_size)


def _coarse_checkpoint_state(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """The coarse stage's state dict inside a checkpoint of ``aucgan train coarse`` (``where`` names the
    file in errors)."""
    data = read_checkpoint(path)
    if "aucgan" not in data or "state_dict" not in data:
        raise CheckpointError(f"{where}: not a checkpoint of `aucgan train coarse`")
    return strip_prefix(data["state_dict"], COARSE_PREFIX)


def load_coarse(stage: CoarseStage, path: str | Path) -> CoarseStage:
    """Load a checkpoint of ``aucgan train coarse`` into ``stage`` (strict; one-line CheckpointError)."""
    load_strict(stage, _coarse_checkpoint_state(path, str(path)), f"{path} [coarse stage]")
    return stage


def load_coarse_encoder(stage: CoarseStage, path: str | Path, source: str) -> CoarseStage:
    """Load only the encoder of a checkpoint of ``aucgan train coarse`` into ``stage`` (strict), keeping
    ``stage``'s own face and albedo models: a run that fine-tunes a coarse encoder on a changed world."""
    where = f"{path} [{source}]"
    state = strip_prefix(_coarse_checkpoint_state(path, where), "encoder.")
    if not state:
        raise CheckpointError(f"{where}: holds no coarse encoder; give an `aucgan train coarse` checkpoint")
    load_strict(stage.encoder, state, where)
    return stage


def new_au_net(cfg: Config) -> MEFARG:
    """A freshly initialised AU net of the architecture and input size ``cfg.model`` names."""
    return MEFARG(cfg.model.au_backbone, cfg.model.au_stage, input_size=cfg.model.au_input_size)


def au_net(cfg: Config) -> MEFARG:
    """The AU net named by ``assets.au_net`` (ours or OpenGraphAU's), frozen; a fresh one if none.

    Raises:
        ConfigError: the file's AU net was trained at another ``model.au_input_size`` than ``cfg``'s (a
            detail stage trained with it would record the wrong size).
    """
    if not cfg.assets.au_net:
        return new_au_net(cfg)
    net = load_au_net(cfg.assets.au_net)
    if net.input_size != cfg.model.au_input_size:
        raise ConfigError(
            f"{cfg.assets.au_net} [assets.au_net]: an AU net that reads images at "
            f"model.au_input_size={net.input_size}, the config says {cfg.model.au_input_size}; set "
            f"model.au_input_size={net.input_size}"
        )
    return net


DECA_MAX_Z = 0.01
"""DECA's D_detail scales its tanh output by this (metres)."""

FLAME_ASSETS = ("flame_model", "flame_landmarks", "head_template", "uv_face_mask")
"""The files FLAME's face model is built from."""


def require_assets(cfg: Config, keys: tuple[str, ...], purpose: str) -> dict[str, str]:
    """The paths of ``assets.<key>`` for every key, or one ConfigError line naming every key that is not
    set or names no file, with what it is and where it comes from."""
    from aucgan.assets import asset_spec

    problems = []
    for key in keys:
        path = getattr(cfg.assets, key)
        if not path or not Path(path).is_file():
            state = f"assets.{key} is not set" if not path else f"assets.{key}={path}: no such file"
            spec = asset_spec(key)
            problems.append(f"{state} ({spec.what}, {spec.file}: {spec.obtain})")
    if problems:
        raise ConfigError(
            f"{purpose} needs: " + "; ".join(problems) + "; check with `aucgan doctor --config CONFIG`"
        )
    return {key: getattr(cfg.assets, key) for key in keys}


def flame_face_model(cfg: Config) -> FlameFaceModel:
    """FLAME with DECA's UV template, from ``assets.flame_model``, ``assets.flame_landmarks``,
    ``assets.head_template`` and ``assets.uv_face_mask``; ``face_model.n_shape`` / ``n_expression``
    components."""
    paths = require_assets(cfg, FLAME_ASSETS, "face_model.kind=flame")
    return load_flame_face_model(
        paths["flame_model"],
        paths["flame_landmarks"],
        paths["head_template"],
        paths["uv_face_mask"],
        n_shape=cfg.face_model.n_shape,
        n_exp=cfg.face_model.n_expression,
    )


def flame_albedo(cfg: Config) -> LinearAlbedo:
    """FLAMETex from ``assets.flame_albedo``: ``model.n_albedo`` components at ``render.uv_size``²."""
    path = require_assets(cfg, ("flame_albedo",), "FLAME's albedo")["flame_albedo"]
    return load_flame_albedo(path, cfg.model.n_albedo, cfg.render.uv_size)


def flame_layout(cfg: Config) -> CodeLayout:
    """The coarse codes of the FLAME setting: DECA's order with ``face_model.n_shape``,
    ``model.n_albedo`` and ``face_model.n_expression`` (DECA: 100, 50, 50)."""
    return CodeLayout.flame(cfg.face_model.n_shape, cfg.model.n_albedo, cfg.face_model.n_expression)


def flame_encoder(cfg: Config) -> CoarseEncoder:
    """A freshly initialised coarse encoder for the FLAME setting (``model.coarse_backbone``)."""
    return CoarseEncoder(flame_layout(cfg), cfg.model.coarse_backbone)


def deca_weights(cfg: Config) -> DecaWeights:
    """DECA's networks from ``assets.deca``, for the code sizes of ``cfg`` (DECA: 100, 50, 50).

    Raises:
        ConfigError: ``assets.deca`` missing, or ``model.coarse_backbone`` is not DECA's resnet50.
        CheckpointError: the file does not fit (one line naming it).
    """
    path = require_assets(cfg, ("deca",), "DECA's networks")["deca"]
    if cfg.model.coarse_backbone != "resnet50":
        raise ConfigError(
            f"assets.deca holds DECA's ResNet-50 E_flame; set model.coarse_backbone=resnet50 "
            f"(got {cfg.model.coarse_backbone})"
        )
    return load_deca(
        path, n_shape=cfg.face_model.n_shape, n_tex=cfg.model.n_albedo, n_exp=cfg.face_model.n_expression
    )


def flame_coarse_stage(cfg: Config, encoder: CoarseEncoder | None = None) -> CoarseStage:
    """FLAME + FLAMETex + ``encoder`` (``None``: decode only) at ``render.uv_size`` /
    ``render.image_size``."""
    model = flame_face_model(cfg)
    uv_space = UVSpace(model, cfg.render.uv_size)
    return CoarseStage(model, flame_albedo(cfg), uv_space, encoder, cfg.render.image_size)


def deca_detail_stage(deca: DecaWeights, uv_space: UVSpace, au: MEFARG | None) -> DetailStage:
    """DECA's own detail networks (``E_detail`` + ``D_detail``, decoder kind ``none``) around ``au``.

    Raises:
        CheckpointError: the DECA file had no ``D_detail``.
    """
    if deca.detail_decoder is None:
        raise CheckpointError("the DECA file holds no D_detail; set model.detail_decoder to one of aucgan's")
    return DetailStage(deca.detail_encoder, deca.detail_decoder, uv_space, au)


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
    if kind == "none":
        return NoDetailCode(n_detail)
    return ResNetDetailEncoder(n_detail, kind)


def detail_stage(cfg: Config, uv_space: UVSpace, au: MEFARG | None, n_expression: int) -> DetailStage:
    """Detail encoder + decoder of ``cfg.model`` around a (frozen) AU net.

    Raises:
        ConfigError: ``model.detail_encoder=none`` with a decoder that does not read the photo itself (the
            detail would not depend on the image at all).
    """
    model = cfg.model
    if model.detail_encoder == "none" and (
        model.detail_decoder != "uv-unet" or "photo" not in model.detail_paths
    ):
        blind = f"model.detail_paths={list(model.detail_paths)}" if model.detail_decoder == "uv-unet" else ""
        raise ConfigError(
            f"model.detail_encoder=none with model.detail_decoder={model.detail_decoder} {blind}".rstrip()
            + ": the detail would not see the photo; use the uv-unet with its photo path, or set "
            "model.detail_encoder=conv"
        )
    feature_dim = au.channels if au is not None else 512
    options = {}
    if cfg.model.detail_decoder == "uv-unet":
        options = {
            "uv_size": uv_space.size,
            "photo_channels": PHOTO_CHANNELS,
            "paths": tuple(cfg.model.detail_paths),
            "norm": cfg.model.detail_norm,
        }
    decoder = build_detail_decoder(
        cfg.model.detail_decoder,
        3 + n_expression + cfg.model.n_detail,
        cfg.model.max_z,
        feature_dim=feature_dim,
        **options,
    )
    decoder.with_output_gain(cfg.model.detail_output_gain)
    if cfg.model.detail_init == "flat":
        decoder.start_flat()
    encoder = detail_encoder(cfg.model.detail_encoder, cfg.model.n_detail)
    return DetailStage(encoder, decoder, uv_space, au)


def discriminator(cfg: Config, feature_dim: int) -> nn.Module:
    kind = cfg.model.discriminator
    if kind == "projection-global":
        return build_discriminator("projection", feature_dim=feature_dim, mode="global")
    return build_discriminator(kind, feature_dim=feature_dim)

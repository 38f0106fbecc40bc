"""The config's augmentation section as :class:`~aucgan.data.augment.FaceAugmentation` settings."""

from __future__ import annotations

from aucgan.config import AugmentConfig
from aucgan.data.augment import AugmentSettings, FaceAugmentation


def augment_settings(cfg: AugmentConfig) -> AugmentSettings:
    return AugmentSettings(
        rotation_degrees=cfg.rotation_degrees,
        scale=tuple(cfg.scale),
        translate=cfg.translate,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
        enabled=cfg.enabled,
    )


def face_augmentation(cfg: AugmentConfig, geometric: bool = True) -> FaceAugmentation:
    """The augmentation of ``cfg``; colour only when ``geometric`` is ``False``."""
    settings = augment_settings(cfg)
    return FaceAugmentation(settings if geometric else settings.without_geometry())

"""Real-photo datasets for ``aucgan train detail`` with ``coarse.backend=mediapipe``."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aucgan import build
from aucgan.config import AugmentConfig, CoarseConfig, Config, RefineConfig, load_config, preset_path
from aucgan.data import real
from aucgan.data.images import collect_inputs
from aucgan.data.real import (
    RealFaces,
    RealSample,
    RealSettings,
    augmented_copy,
    build_real_cache,
    split_identities,
)
from aucgan.data.shards import DatasetError
from aucgan.data.synthetic import collate

TINY_CONFIG = preset_path("synthetic-tiny")


def test_augmented_copy_is_a_function_of_its_seed_and_changes_the_photo():
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    augment = AugmentConfig()
    first, again = augmented_copy(image, augment, 7), augmented_copy(image, augment, 7)
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, augmented_copy(image, augment, 8))


def test_augmented_copy_with_no_range_is_the_photo_or_its_mirror():
    image = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    still = AugmentConfig(
        rotation_degrees=0.0, scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0, saturation=0.0
    )
    for seed in range(6):
        copy = augmented_copy(image, still, seed).astype(int)
        assert min(np.abs(copy - image).max(), np.abs(copy - image[:, ::-1]).max()) <= 1


def test_split_holds_out_whole_identities_from_ten_on():
    few = [f"photo{i}" for i in range(4)]
    assert split_identities(few, "train") == split_identities(few, "val") == [0, 1, 2, 3]
    many = [f"photo{i}" for i in range(60)]
    train, val = set(split_identities(many, "train")), set(split_identities(many, "val"))
    assert train and val and not train & val and train | val == set(range(60))
    with pytest.raises(ValueError, match="train and val"):
        split_identities(many, "test")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY_CONFIG)


@pytest.fixture(scope="module")
def stage(cfg):
    return build.coarse_stage(cfg, with_encoder=False)


def settings_for(cfg: Config, source: Path, cache: Path) -> RealSettings:
    return RealSettings(
        source=str(source), cache=cache, image_size=cfg.render.image_size,
        images_per_identity=cfg.synth.images_per_identity, coarse=CoarseConfig(backend="mediapipe"),
        augment=cfg.augment, seed=0,
    )  # fmt: skip


def test_cache_holds_k_fitted_views_per_photo_and_is_reused(
    mediapipe_installed, real_photos, cfg, stage, tmp_path
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in real_photos.values():
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not a photo")
    settings = settings_for(cfg, folder, tmp_path / "cache.npz")
    cache = build_real_cache(settings, stage)
    faces = RealFaces(cache, "train", cfg.synth.images_per_identity)
    k = cfg.synth.images_per_identity
    assert len(faces) == 2 * k and sorted(faces.names) == ["astronaut", "grace_hopper"]
    batch = collate([faces[i] for i in range(len(faces))])
    assert isinstance(batch, RealSample) and batch.image.shape == (2 * k, 3, 64, 64)
    assert torch.equal(batch.identity, torch.arange(2).repeat_interleave(k))
    assert not torch.equal(batch.image[0], batch.image[1]), "the second view is an augmented copy"
    codes = batch.coarse_codes(stage.albedo.n_albedo)
    coarse = stage.decode(codes)
    from aucgan.stages.landmark_fit import relative_landmark_error

    assert relative_landmark_error(coarse.vertices, codes.camera, batch.landmarks).max() < 0.03
    stamp = os.stat(cache).st_mtime_ns
    build_real_cache(settings, stage)
    assert os.stat(cache).st_mtime_ns == stamp, "an unchanged folder is not refitted"
    Image.open(real_photos["grace_hopper"]).save(folder / "grace_hopper.jpg", quality=70)
    build_real_cache(settings, stage)
    assert os.stat(cache).st_mtime_ns != stamp, "a changed photo is refitted"


def test_a_folder_without_faces_is_one_line(mediapipe_installed, cfg, stage, tmp_path):
    folder = tmp_path / "walls"
    folder.mkdir()
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "wall.png")
    with pytest.raises(DatasetError, match=r"no photo with a face MediaPipe can find \(.*wall\.png"):
        build_real_cache(settings_for(cfg, folder, tmp_path / "c.npz"), stage)


def test_a_list_file_names_the_photos(mediapipe_installed, real_photos, cfg, stage, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text("# my photos\n" + "\n".join(str(path) for path in real_photos.values()) + "\n")
    cache = build_real_cache(settings_for(cfg, listing, tmp_path / "cache.npz"), stage)
    assert sorted(RealFaces(cache, "val", cfg.synth.images_per_identity).names) == [
        "astronaut",
        "grace_hopper",
    ]


def unaugmented_photo(cfg, stage, real_photos, tmp_path) -> RealFaces:
    """The training faces of a cache of grace_hopper alone, its K copies not augmented."""
    import dataclasses

    settings = dataclasses.replace(
        settings_for(cfg, real_photos["grace_hopper"], tmp_path / "cache.npz"),
        augment=dataclasses.replace(cfg.augment, enabled=False),
    )
    return RealFaces(build_real_cache(settings, stage), "train", cfg.synth.images_per_identity)


def test_without_augmentation_the_k_images_are_the_photo(
    mediapipe_installed, real_photos, cfg, stage, tmp_path
):
    faces = unaugmented_photo(cfg, stage, real_photos, tmp_path)
    assert len(faces) == cfg.synth.images_per_identity
    assert all(torch.equal(faces[0].image, faces[i].image) for i in range(len(faces)))


def test_frames_of_one_source_stay_on_one_side_of_the_split():
    sources = [f"video{i // 5}.mp4" for i in range(60)]  # 12 videos x 5 frames
    val = split_identities(sources, "val")
    assert val and {sources[i] for i in val}.isdisjoint(
        {sources[i] for i in split_identities(sources, "train")}
    )


def test_animation_frames_are_faces_of_one_source(mediapipe_installed, real_photos, cfg, stage, tmp_path):
    photo = Image.open(real_photos["grace_hopper"]).convert("RGB")
    frames = [photo.rotate(angle, resample=Image.Resampling.BILINEAR) for angle in (0, 5, -5)]
    clip = tmp_path / "clip.gif"
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100, loop=0)
    cache = build_real_cache(settings_for(cfg, clip, tmp_path / "cache.npz"), stage)
    with np.load(cache) as data:
        assert len(data["names"]) == 3 and set(data["sources"]) == {str(clip)}


# Refined targets (self-distillation) -------------------------------------------------------------------


def test_refined_key_changes_with_every_refine_setting_and_the_uv_size_not_the_fits_key(cfg, tmp_path):
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "face.png")
    items = collect_inputs(str(tmp_path / "face.png"))
    plain = settings_for(cfg, tmp_path / "face.png", tmp_path / "c.npz")
    settings = dataclasses.replace(plain, refine=RefineConfig())
    assert settings.key(items) == plain.key(items), "refining needs no refit"
    key = settings.refined_key("fits", 64)
    assert len(key) == 64 and key == settings.refined_key("fits", 64)
    assert key != settings.refined_key("other fits", 64)
    assert key != settings.refined_key("fits", 128)
    for name, value in (("steps", 7), ("lr", 0.01), ("smoothness", 1.0), ("compare", "uv"), ("band", 0.0)):
        changed = dataclasses.replace(settings, refine=dataclasses.replace(RefineConfig(), **{name: value}))
        assert changed.refined_key("fits", 64) != key, name
    # the coarse and AU fits do not make the targets
    for name, value in (("au_steps", 3), ("au_lr", 0.5), ("coarse_steps", 7), ("coarse_lr", 0.5)):
        changed = dataclasses.replace(settings, refine=dataclasses.replace(RefineConfig(), **{name: value}))
        assert changed.refined_key("fits", 64) == key, name
    with pytest.raises(ValueError, match="no refined targets"):
        plain.refined_key("fits", 64)


def test_cache_holds_targets_refined_from_flat_on_the_skin_resumes_and_follows_the_settings(
    mediapipe_installed, real_photos, cfg, stage, tmp_path, monkeypatch
):
    from aucgan.stages import refine as refine_module

    k = cfg.synth.images_per_identity
    cache = tmp_path / "cache.npz"
    settings = dataclasses.replace(
        settings_for(cfg, real_photos["grace_hopper"], cache), refine=RefineConfig(steps=8)
    )
    monkeypatch.setattr(real, "REFINE_BATCH", 1)  # K batches, to interrupt after the first
    original, starts = refine_module.refine_faces, []

    def interrupted_on_the_second(*args, **kwargs):
        starts.append(args[3])
        if len(starts) == 2:
            raise RuntimeError("interrupted")
        return original(*args, **kwargs)

    monkeypatch.setattr(refine_module, "refine_faces", interrupted_on_the_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_real_cache(settings, stage)
    parts = tmp_path / "cache.npz.refined-parts"
    assert len(list(parts.glob("*.npy"))) == 1
    with np.load(cache) as data:
        assert "images" in data.files and "refined" not in data.files, "the fits are kept"
    assert all(torch.equal(start, torch.zeros_like(start)) for start in starts), "refined from flat"

    def no_refit(*args):
        raise AssertionError("the faces were fitted again")

    monkeypatch.setattr(real, "_fit_faces", no_refit)
    monkeypatch.setattr(
        refine_module, "refine_faces", lambda *a, **kw: starts.append(a[3]) or original(*a, **kw)
    )
    starts.clear()
    build_real_cache(settings, stage)
    assert len(starts) == k - 1, "the refined batch on disk is reused"
    assert not parts.exists()
    faces = RealFaces(cache, "train", k)
    batch = collate([faces[i] for i in range(len(faces))])
    size = stage.uv_space.size
    refined = batch.refined_displacement
    assert refined.shape == (k, 1, size, size) and refined.dtype == torch.float32
    skin = stage.uv_space.skin.expand_as(refined) > 0
    assert float(refined[~skin].abs().max()) == 0.0
    moved = (refined[skin].abs() > 1e-4 * cfg.model.max_z).float().mean()
    assert float(moved) > 0.2, "the refinement draws detail on the skin"
    assert float(refined.abs().max()) < cfg.model.max_z

    starts.clear()
    build_real_cache(settings, stage)
    assert not starts, "current targets are not refined again"
    changed = dataclasses.replace(settings, refine=RefineConfig(steps=4))
    build_real_cache(changed, stage)
    assert len(starts) == k, "other refine settings refine again"
    again = collate([RealFaces(cache, "train", k)[i] for i in range(k)])
    assert not torch.allclose(again.refined_displacement, refined, atol=1e-6)
    torch.testing.assert_close(again.image, batch.image, rtol=0, atol=0)


def test_a_cache_without_refined_targets_gives_empty_ones(
    mediapipe_installed, real_photos, cfg, stage, tmp_path
):
    faces = unaugmented_photo(cfg, stage, real_photos, tmp_path)
    batch = collate([faces[i] for i in range(len(faces))])
    assert batch.refined_displacement.shape == (len(faces), 0)

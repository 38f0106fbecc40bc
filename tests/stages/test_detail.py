"""Tests of aucgan.stages.detail.

The key correctness test: decoding a synthetic sample's ground-truth codes and displacement through the
stages reproduces the world's detail normals, and the resulting UV texture (albedo × SH shading) is what
the photo shows when sampled into UV space — while a wrong light or a shifted camera does not fit. Then the
detail stage's plumbing: shapes, bounds, the frozen AU net, gradients and the trainable parameters.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aucgan import build
from aucgan.au import MAIN_AUS
from aucgan.config import Config, load_config
from aucgan.data.synthetic import SyntheticSample, collate
from aucgan.geometry.render import image_to_uv, texel_visibility
from aucgan.geometry.shading import sh_shading
from aucgan.nets.au_net import MEFARG
from aucgan.nets.detail_decoder import UV_SIZE
from aucgan.stages.coarse import CoarseOutput, CoarseStage
from aucgan.stages.detail import (
    PHOTO_CHANNELS,
    DetailOutput,
    DetailStage,
    au_condition,
    photo_in_uv,
    photo_maps,
    read_photo,
    resample_displacement,
)

SIZE = 64  # image and UV side
N_SAMPLES = 6
N_DETAIL = 16
PIXEL = 2.0 / SIZE  # one pixel in NDC

# Texture vs photo in UV space, per sample, on visible skin texels (image 64, UV 64). The photo went UV →
# image (bilinear at each pixel's UV, 8-bit quantised) and comes back image → UV (bilinear at each texel's
# projection), so it is the texture blurred by two bilinear resamplings, not the texture itself.
# Measured on samples 0-11: per-sample median 0.0020-0.0051 (8-bit quantisation alone is about 0.001);
# 90th percentile on interior texels (visibility eroded by one texel, away from the silhouette and the eye
# and mouth rims, where bilinear sampling mixes in other surfaces) 0.009-0.026. Against that, medians with
# another sample's light are 0.04-0.15 (samples 0-5), with the camera shifted by 2 pixels 0.010-0.048 and
# by half a pixel 0.0034-0.014, always above the true camera's.
MEDIAN_TOLERANCE = 0.01
INTERIOR_Q90_TOLERANCE = 0.035


@pytest.fixture(scope="module")
def cfg() -> Config:
    # A random decoder (not the default flat start, whose zero output layer passes no gradient upstream at
    # first): these tests look at what flows through the stage.
    overrides = [f"render.image_size={SIZE}", f"render.uv_size={SIZE}", f"model.n_detail={N_DETAIL}"]
    return load_config(Config, None, [*overrides, "model.detail_init=random"])


def decode(
    stage: CoarseStage,
    batch: SyntheticSample,
    light: torch.Tensor | None = None,
    camera: torch.Tensor | None = None,
) -> CoarseOutput:
    """The coarse output of the sample's ground-truth codes (optionally with another light or camera)."""
    codes = batch.coarse_codes(stage.albedo.n_albedo)
    if light is not None:
        codes = dataclasses.replace(codes, light=light)
    if camera is not None:
        codes = dataclasses.replace(codes, camera=camera)
    return stage.decode(codes, uv_albedo=batch.uv_albedo)


def shifted_camera(camera: torch.Tensor, dx_pixels: float, dy_pixels: float) -> torch.Tensor:
    """``camera (B, 3)`` moving the projection by the given pixels (x right, y up): s (p + t) moves by
    s * dt, so the translation changes by the NDC shift over the scale."""
    moved = camera.clone()
    moved[:, 1] += dx_pixels * PIXEL / camera[:, 0]
    moved[:, 2] += dy_pixels * PIXEL / camera[:, 0]
    return moved


def uv_texture(coarse: CoarseOutput, normals: torch.Tensor) -> torch.Tensor:
    return coarse.uv_albedo * sh_shading(normals, coarse.codes.light)


def texel_errors(texture: torch.Tensor, photo: torch.Tensor, where: torch.Tensor) -> list[torch.Tensor]:
    """Per sample, the channel-mean absolute error on the texels of ``where (B, 1, S, S)``."""
    error = (texture - photo).abs().mean(1)
    return [error[b][where[b, 0] > 0] for b in range(error.shape[0])]


def medians(errors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([e.median() for e in errors])


@pytest.fixture(scope="module")
def ground_truth(coarse_stage, batch):
    """Coarse output, detail normals and visible skin texels of the samples' ground truth."""
    coarse = decode(coarse_stage, batch)
    normals = coarse_stage.uv_space.detail_normals(coarse.surface, batch.uv_displacement)
    rendering = coarse_stage.render(coarse, uv_normals=normals)
    visible = texel_visibility(coarse.surface.positions, normals, batch.camera, rendering.fragments)
    return coarse, normals, visible * coarse_stage.uv_space.skin


# The key correctness test --------------------------------------------------------------------------------


def test_detail_normals_of_the_ground_truth_are_the_samples(coarse_stage, batch, ground_truth):
    _, normals, _ = ground_truth
    # The sample stores its normals at float16 precision (relative 2^-11).
    torch.testing.assert_close(normals, batch.uv_detail_normals, atol=1e-3, rtol=0.0)
    # Without the displacement the skin's normals are clearly different: the test sees the wrinkles.
    coarse, _, _ = ground_truth
    smooth = coarse_stage.uv_space.detail_normals(coarse.surface, torch.zeros_like(batch.uv_displacement))
    skin = coarse_stage.uv_space.skin[0, 0] > 0
    difference = (smooth - batch.uv_detail_normals)[:, :, skin].abs().amax(dim=(1, 2))
    assert (difference > 0.01).all()  # measured 0.017-0.051 per sample, ten times the tolerance


def test_visible_skin_texels_are_the_samples(batch, ground_truth):
    _, _, visible = ground_truth
    torch.testing.assert_close(visible, batch.uv_visibility)
    assert (visible.sum(dim=(1, 2, 3)) > 0.25 * SIZE * SIZE).all()


def test_uv_texture_matches_the_photo_in_uv_on_visible_skin(batch, ground_truth):
    coarse, normals, visible = ground_truth
    photo = photo_in_uv(batch.image, coarse)
    torch.testing.assert_close(photo, image_to_uv(batch.image, coarse.surface.positions, batch.camera))
    texture = uv_texture(coarse, normals)
    assert (medians(texel_errors(texture, photo, visible)) < MEDIAN_TOLERANCE).all()
    interior = -F.max_pool2d(-visible, 3, stride=1, padding=1)
    for error in texel_errors(texture, photo, interior):
        assert error.quantile(0.9) < INTERIOR_Q90_TOLERANCE


def test_a_wrong_light_does_not_match_the_photo(coarse_stage, batch, ground_truth):
    coarse, normals, visible = ground_truth
    photo = photo_in_uv(batch.image, coarse)
    wrong = decode(coarse_stage, batch, light=batch.light.roll(1, dims=0))  # another sample's light
    errors = medians(texel_errors(uv_texture(wrong, normals), photo, visible))
    assert (errors > 2.0 * MEDIAN_TOLERANCE).all()


def test_a_shifted_camera_does_not_match_the_photo(coarse_stage, batch, ground_truth):
    coarse, normals, visible = ground_truth
    texture = uv_texture(coarse, normals)
    right = medians(texel_errors(texture, photo_in_uv(batch.image, coarse), visible))
    for dx, dy in ((2.0, 0.0), (0.0, -2.0)):
        shifted = decode(coarse_stage, batch, camera=shifted_camera(batch.camera, dx, dy))
        wrong = medians(texel_errors(texture, photo_in_uv(batch.image, shifted), visible))
        assert (wrong > 2.0 * right).all() and wrong.median() > MEDIAN_TOLERANCE, (dx, dy)


def test_the_photo_fits_best_without_a_half_pixel_offset(coarse_stage, batch, ground_truth):
    """A pixel-centre convention off by half a pixel between the renderer and image_to_uv would make a
    shifted camera fit better than the true one."""
    coarse, normals, visible = ground_truth
    texture = uv_texture(coarse, normals)
    right = medians(texel_errors(texture, photo_in_uv(batch.image, coarse), visible))
    for dx, dy in ((0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5)):
        shifted = decode(coarse_stage, batch, camera=shifted_camera(batch.camera, dx, dy))
        wrong = medians(texel_errors(texture, photo_in_uv(batch.image, shifted), visible))
        assert (wrong > right).all(), (dx, dy)


# The detail stage ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def au_net(cfg) -> MEFARG:
    return build.au_net(cfg)


@pytest.fixture(scope="module")
def detail_stage(cfg, coarse_stage, au_net) -> DetailStage:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build.detail_stage(cfg, coarse_stage.uv_space, au_net, coarse_stage.face_model.n_expression)


@pytest.fixture(scope="module")
def small_batch(batch) -> SyntheticSample:
    return SyntheticSample(**{name: value[:2] for name, value in batch.to_dict().items()})


@pytest.fixture(scope="module")
def evaluated(coarse_stage, detail_stage, small_batch):
    """The detail stage in eval mode on two samples: its coarse input, AU net output and detail output."""
    coarse = decode(coarse_stage, small_batch)
    detail_stage.eval()
    with torch.no_grad():
        aus = detail_stage.read_aus(small_batch.image)
        out = detail_stage(small_batch.image, coarse)
    return coarse, aus, out


def test_detail_output_shapes_bounds_and_shading(cfg, coarse_stage, evaluated):
    coarse, _, out = evaluated
    assert isinstance(out, DetailOutput)
    assert out.detail_code.shape == (2, N_DETAIL)
    assert out.uv_displacement.shape == (2, 1, SIZE, SIZE)
    for name in ("uv_detail_normals", "uv_shading", "uv_texture"):
        assert getattr(out, name).shape == (2, 3, SIZE, SIZE), name
    max_z = cfg.model.max_z
    assert 0 < out.uv_displacement.abs().max() <= max_z
    skin = coarse_stage.uv_space.skin
    assert (out.uv_displacement * (1 - skin) == 0).all()
    normals = coarse_stage.uv_space.detail_normals(coarse.surface, out.uv_displacement)
    torch.testing.assert_close(out.uv_detail_normals, normals)
    torch.testing.assert_close(out.uv_shading, sh_shading(out.uv_detail_normals, coarse.codes.light))
    torch.testing.assert_close(out.uv_texture, coarse.uv_albedo * out.uv_shading)


def test_au_condition_takes_the_features_and_the_main_scores(evaluated):
    _, aus, _ = evaluated
    condition = au_condition(aus)
    assert condition.features is aus.features
    assert condition.intensities.shape == (2, len(MAIN_AUS))
    torch.testing.assert_close(condition.intensities, aus.scores[:, : len(MAIN_AUS)])


def test_forward_reads_the_condition_from_the_images(detail_stage, evaluated):
    coarse, aus, implicit = evaluated
    condition = au_condition(aus)
    detail_stage.eval()
    with torch.no_grad():
        explicit = detail_stage.decode(coarse, implicit.detail_code, condition)
        edited = detail_stage.decode(
            coarse, implicit.detail_code, condition.with_intensities(1.0 - condition.intensities)
        )
    torch.testing.assert_close(implicit.uv_displacement, explicit.uv_displacement)
    assert (edited.uv_displacement - explicit.uv_displacement).abs().max() > 0


def batch_norm_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in module.named_buffers()
        if "running" in name or "num_batches_tracked" in name
    }


def test_the_au_net_stays_frozen_and_gradients_reach_only_encoder_and_decoder(
    coarse_stage, detail_stage, small_batch
):
    au = detail_stage.au_net
    statistics = batch_norm_state(au)
    assert statistics  # the AU net has BatchNorm layers to watch
    detail_stage.train()
    assert detail_stage.encoder.training and detail_stage.decoder.training
    assert not any(module.training for module in au.modules())
    assert not any(p.requires_grad for p in au.parameters())
    detail_stage.zero_grad(set_to_none=True)
    coarse = decode(coarse_stage, small_batch)
    out = detail_stage(small_batch.image, coarse)
    (out.uv_texture.sum() + out.uv_displacement.abs().sum()).backward()
    after = batch_norm_state(au)
    assert all(torch.equal(statistics[name], after[name]) for name in statistics)
    assert all(p.grad is None for p in au.parameters())
    for part in (detail_stage.encoder, detail_stage.decoder):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    detail_stage.zero_grad(set_to_none=True)


def test_trainable_parameters_are_exactly_the_encoder_and_decoder(detail_stage):
    trainable = list(detail_stage.trainable_parameters())
    ids = [id(p) for p in trainable]
    assert len(ids) == len(set(ids))
    expected = {id(p) for p in detail_stage.encoder.parameters()} | {
        id(p) for p in detail_stage.decoder.parameters()
    }
    assert set(ids) == expected
    au_ids = {id(p) for p in detail_stage.au_net.parameters()}
    assert not set(ids) & au_ids
    assert set(ids) | au_ids == {id(p) for p in detail_stage.parameters()}


def test_an_unconditioned_decoder_works_without_an_au_net(cfg, coarse_stage, small_batch):
    plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, detail_decoder="none"))
    stage = build.detail_stage(plain, coarse_stage.uv_space, None, coarse_stage.face_model.n_expression)
    assert stage.au_net is None and not stage.decoder.conditioned
    coarse = decode(coarse_stage, small_batch)
    with torch.no_grad():
        out = stage(small_batch.image, coarse)
    assert out.uv_displacement.shape == (2, 1, SIZE, SIZE)
    assert out.uv_displacement.abs().max() <= plain.model.max_z
    with pytest.raises(ValueError, match="no AU net"):
        stage.read_aus(small_batch.image)


def test_a_conditioned_decoder_needs_the_au_net(coarse_stage, detail_stage):
    with pytest.raises(ValueError, match="AU net"):
        DetailStage(detail_stage.encoder, detail_stage.decoder, coarse_stage.uv_space, None)


def test_resample_displacement_area_averages_when_shrinking():
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(2, 1, UV_SIZE, UV_SIZE, generator=generator)
    torch.testing.assert_close(resample_displacement(full, 64), F.avg_pool2d(full, 4))
    blocks = full.reshape(2, 1, 64, 4, 64, 4).mean(dim=(3, 5))
    torch.testing.assert_close(resample_displacement(full, 64), blocks)
    assert resample_displacement(full, UV_SIZE) is full


def test_resample_displacement_enlarges_smoothly():
    ramp = torch.linspace(-1.0, 1.0, 32, dtype=torch.float64).expand(1, 1, 32, 32)
    enlarged = resample_displacement(ramp, 64)
    assert enlarged.shape == (1, 1, 64, 64)
    constant = torch.full((1, 1, 32, 32), 0.3)
    torch.testing.assert_close(resample_displacement(constant, 64), torch.full((1, 1, 64, 64), 0.3))
    # Bilinear enlargement keeps a linear ramp linear away from the borders (texel centres map exactly).
    inner = enlarged[0, 0, 0, 1:-1]
    torch.testing.assert_close(
        inner[1:] - inner[:-1], torch.full_like(inner[1:], float(ramp[0, 0, 0, 1] - ramp[0, 0, 0, 0]) / 2)
    )


# Reading the photo in UV (the uv-unet decoder) -------------------------------------------------------------


def test_read_photo_sees_the_visible_skin(coarse_stage, batch, ground_truth):
    coarse, _, _ = ground_truth
    evidence, fragments = read_photo(coarse_stage, batch.image, coarse)
    assert fragments.depth.shape[-1] == SIZE
    # The world's visibility uses the detail normals' facing test, ours the coarse ones': nearly the same.
    assert (evidence.visibility == batch.uv_visibility).float().mean() > 0.98
    torch.testing.assert_close(
        evidence.photo, photo_in_uv(batch.image, coarse).clamp(0, 1) * evidence.visibility
    )
    assert photo_maps(evidence).shape == (N_SAMPLES, PHOTO_CHANNELS, SIZE, SIZE)


def test_the_photo_maps_carry_the_wrinkles_shading_at_the_cpu_presets_resolution():
    """Channel 6 of :func:`photo_maps` is the photo's grey level over the flat rendering's, minus 1: the
    wrinkles' shading as the photo shows it. At 160 px (the synthetic preset) it follows the true detail
    shading over the smooth shading where there are folds (measured correlation 0.82 on 6 samples; at 64 px
    the folds are below the sampling limit and it is 0.09)."""
    size = 160
    cfg160 = load_config(Config, None, [f"render.image_size={size}", f"render.uv_size={size}"])
    stage = build.coarse_stage(cfg160, with_encoder=False)
    world = build.world_parameters(cfg160).world()
    samples = collate([world.sample(i) for i in range(4)])
    coarse = decode(stage, samples)
    normals = stage.uv_space.detail_normals(coarse.surface, samples.uv_displacement)
    evidence, _ = read_photo(stage, samples.image, coarse)
    light = coarse.codes.light
    smooth = sh_shading(coarse.surface.normals, light).mean(1)
    true_ratio = (sh_shading(normals, light).mean(1) / smooth - 1)[:, None]
    folds = (evidence.visibility > 0) & (samples.uv_displacement.abs() > 0.005)
    assert folds.sum() > 300
    a, b = photo_maps(evidence)[:, 6:7][folds], true_ratio[folds]
    correlation = float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))
    assert correlation > 0.7


def test_a_decoder_that_reads_the_photo_needs_its_evidence(cfg, coarse_stage, au_net, small_batch):
    uv_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, detail_decoder="uv-unet"))
    torch.manual_seed(0)
    stage = build.detail_stage(uv_cfg, coarse_stage.uv_space, au_net, coarse_stage.face_model.n_expression)
    assert stage.reads_photo
    coarse = decode(coarse_stage, small_batch)
    condition = au_condition(stage.read_aus(small_batch.image))
    code = stage.encoder(small_batch.image)
    with pytest.raises(ValueError, match="UVEvidence"):
        stage.decode(coarse, code, condition)
    with pytest.raises(ValueError, match="visibility"):
        stage(small_batch.image, coarse)
    evidence, _ = read_photo(coarse_stage, small_batch.image, coarse)
    out = stage.decode(coarse, code, condition, evidence)
    assert out.uv_displacement.shape == (2, 1, SIZE, SIZE)
    assert out.uv_displacement.abs().max() <= uv_cfg.model.max_z
    torch.testing.assert_close(
        stage(small_batch.image, coarse, visibility=evidence.visibility).uv_displacement, out.uv_displacement
    )

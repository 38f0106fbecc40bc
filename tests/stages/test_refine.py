"""Tests of aucgan.stages.refine: the photometric refinement of the detail (shape from shading in UV space).

Where the truth is known (the synthetic world, read through its true coarse fit), refinement from flat must
recover part of each face's wrinkles and must keep a true displacement it starts from; the residual it
reports falls; its filters and masks do what they say. The AU fit, given a decoder that draws the world's own
folds, finds the intensities the photo shows.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aucgan.au import MAIN_AUS
from aucgan.build import coarse_stage
from aucgan.config import Config, ConfigError, RefineConfig, load_config
from aucgan.data.synthetic import SyntheticWorld, collate, identity_in_split
from aucgan.face_model.regions import active_region_mask
from aucgan.face_model.uv_space import UVSurface
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.uv import angle_degrees
from aucgan.nets.detail_decoder import AUCondition, DetailDecoder
from aucgan.stages.detail import DetailStage, read_photo
from aucgan.stages.refine import (
    excluded_parts,
    fit_coarse,
    fit_intensities,
    fit_mask,
    gaussian_blur,
    high_frequency_residual,
    masked_blur,
    refine_faces,
    texel_length,
)

SIZE = 128  # image and UV side: the world's folds are resolved, the test stays fast
STEPS = 60


@pytest.fixture(scope="module")
def world_batch():
    cfg = load_config(Config, None, [f"render.image_size={SIZE}", f"render.uv_size={SIZE}"])
    stage = coarse_stage(cfg, with_encoder=False)
    world = SyntheticWorld(seed=0, image_size=SIZE, uv_size=SIZE)
    # test identities with a broad fold each (AU12, nasolabial; AU4, between the brows) at full intensity
    expression = torch.zeros(27)
    expression[[MAIN_AUS.index("AU4"), MAIN_AUS.index("AU12")]] = 1.0
    samples = [world.sample(identity_in_split("test", rank) * 4, expression) for rank in range(2)]
    batch = collate(samples)
    with torch.no_grad():
        coarse = stage.decode(batch.coarse_codes(stage.albedo.n_albedo), uv_albedo=batch.uv_albedo)
    return cfg, stage, batch, coarse


class WorldFolds(DetailDecoder):
    """A decoder that draws each face's folds as the world does: its static detail plus each AU's
    intensity times that identity's fold of the AU (the latent is ignored)."""

    def __init__(self, basis: torch.Tensor, static: torch.Tensor) -> None:
        super().__init__(latent_dim=1, max_z=1.0)
        self.uv_size = basis.shape[-1]
        self.register_buffer("basis", basis)  # (B, 27, S, S)
        self.register_buffer("static", static)  # (B, 1, S, S)

    def forward(self, latent: torch.Tensor, condition: AUCondition | None) -> torch.Tensor:
        return self.static + torch.einsum("bk,bkhw->bhw", condition.intensities, self.basis)[:, None]


def _world_folds_stage(batch, stage) -> DetailStage:
    world = SyntheticWorld(seed=0, image_size=SIZE, uv_size=SIZE)
    people = [world.identity(int(i)) for i in batch.identity]
    decoder = WorldFolds(
        torch.stack([p.wrinkle_basis for p in people]),
        torch.stack([p.static_detail for p in people])[:, None],
    )
    return DetailStage(torch.nn.Identity(), decoder, stage.uv_space, au_net=_NoAUNet())


class _NoAUNet(torch.nn.Identity):
    """Stands in for the AU net, which the fit never runs (the condition is given)."""

    def freeze(self) -> _NoAUNet:
        return self


def test_fitting_the_au_intensities_finds_the_folds_the_photo_shows(world_batch):
    cfg, stage, batch, coarse = world_batch
    detail = _world_folds_stage(batch, stage)
    evidence, _ = read_photo(stage, batch.image, coarse)
    code = torch.zeros(2, 1)
    condition = AUCondition(torch.zeros(2, 27, 4), torch.zeros(2, 27))
    before = [float(v) for v in condition.intensities.flatten()[:3]]
    # from zero (not the default's start near the answer) the fit needs more than the default 5 steps
    settings = dataclasses.replace(cfg.refine, au_steps=30)
    fitted = fit_intensities(stage, detail, coarse, evidence, code, condition, settings, from_zero=True)
    assert [float(v) for v in condition.intensities.flatten()[:3]] == before  # the input is left alone
    assert fitted.shape == (2, 27) and float(fitted.min()) >= 0.0 and float(fitted.max()) <= 1.0
    drawn = detail.decode(coarse, code, AUCondition(condition.features, fitted))
    flat = _active_error(coarse.surface.normals, batch, stage)
    error = _active_error(drawn.uv_detail_normals, batch, stage)
    assert error < 0.6 * flat, (error, flat)
    # AU4 (at intensity 1) is the only AU that folds the glabella; AU12's furrow is also drawn by AU10/AU11
    assert float(fitted[:, MAIN_AUS.index("AU4")].min()) > 0.5, fitted
    # no free displacement: the decoder's parameters (here its fold maps) are never changed
    torch.testing.assert_close(detail.decoder.basis, _world_folds_stage(batch, stage).decoder.basis)


def _perturbed(stage, batch, coarse):
    """The faces' true coarse codes with a shape and an expression error of the coarse network's size (shape
    code off by about 3 in norm, expression off by 0.1 per AU), decoded with the albedo map blurred (what an
    albedo model holds: no fine blotches)."""
    g = torch.Generator().manual_seed(5)
    codes = coarse.codes
    direction = torch.nn.functional.normalize(torch.randn(codes.shape.shape, generator=g), dim=1)
    shape = codes.shape + 3.0 * direction
    expression = (codes.expression + 0.1 * torch.randn(codes.expression.shape, generator=g)).clamp(0, 1)
    albedo = masked_blur(batch.uv_albedo, stage.uv_space.skin.expand(2, 1, -1, -1), 4.0)
    albedo = torch.where(stage.uv_space.skin > 0, albedo, batch.uv_albedo)
    with torch.no_grad():
        return stage.decode(dataclasses.replace(codes, shape=shape, expression=expression), uv_albedo=albedo)


def _surface_error(coarse, truth, stage) -> float:
    """Mean angle (degrees) between two coarse surfaces' smooth normals over the skin."""
    skin = stage.uv_space.skin
    errors = angle_degrees(coarse.surface.normals, truth.surface.normals)
    return float((errors * skin).sum() / (skin.sum() * errors.shape[0]))


@pytest.mark.parametrize("coarse_uv", [0, SIZE // 2])
def test_the_coarse_fit_moves_a_wrong_shape_towards_the_one_the_photo_shows(world_batch, coarse_uv):
    """At the face model's UV size and in a UV map half as fine (``refine.coarse_uv``), whose fitted albedo
    is still returned at the UV size."""
    cfg, stage, batch, coarse = world_batch
    start = _perturbed(stage, batch, coarse)
    before = (start.codes.shape.clone(), start.uv_albedo.clone(), batch.image.clone())
    settings = dataclasses.replace(cfg.refine, coarse_steps=60, coarse_uv=coarse_uv)
    fitted = fit_coarse(stage, start, batch.image, settings)
    for old, new in zip(before, (start.codes.shape, start.uv_albedo, batch.image), strict=True):
        assert torch.equal(old, new)  # the inputs are left alone
    wrong, refitted = _surface_error(start, coarse, stage), _surface_error(fitted, coarse, stage)
    assert refitted < 0.8 * wrong, (refitted, wrong)
    shape_error = (fitted.codes.shape - coarse.codes.shape).norm(dim=1)
    assert bool((shape_error < (start.codes.shape - coarse.codes.shape).norm(dim=1)).all()), shape_error
    expression = fitted.codes.expression  # the built-in face's expression is its AU rig: kept in [0, 1]
    assert float(expression.min()) >= 0.0 and float(expression.max()) <= 1.0
    assert fitted.vertices.shape == coarse.vertices.shape and fitted.uv_albedo.shape == coarse.uv_albedo.shape
    unchanged = fit_coarse(stage, start, batch.image, dataclasses.replace(settings, coarse_steps=0))
    torch.testing.assert_close(unchanged.vertices, start.vertices)


def test_the_coarse_fit_keeps_to_the_landmarks_it_is_given(world_batch):
    cfg, stage, batch, coarse = world_batch
    start = _perturbed(stage, batch, coarse)
    # landmarks where the perturbed start projects: the photo says otherwise, the landmarks hold the fit
    landmarks = orthographic_project(start.vertices, start.codes.camera)
    settings = dataclasses.replace(cfg.refine, coarse_steps=60)

    def drift(fitted) -> float:
        projected = orthographic_project(fitted.vertices, fitted.codes.camera)[..., :2]
        return float((projected - landmarks[..., :2]).norm(dim=-1).mean())

    held = drift(fit_coarse(stage, start, batch.image, settings, landmarks))
    free = drift(fit_coarse(stage, start, batch.image, settings))
    assert held < 0.5 * free, (held, free)


def _active_error(normals: torch.Tensor, batch, stage) -> float:
    regions = active_region_mask(batch.au_occurrence, SIZE) * stage.uv_space.skin * batch.uv_visibility
    errors = angle_degrees(normals, batch.uv_detail_normals.float())
    return float((errors * regions).sum() / regions.sum())


def test_refinement_from_flat_recovers_the_folds_the_photo_shows(world_batch):
    cfg, stage, batch, coarse = world_batch
    settings = dataclasses.replace(cfg.refine, steps=STEPS)
    refinement = refine_faces(stage, coarse, batch.image, torch.zeros(2, 1, SIZE, SIZE), settings)
    flat = _active_error(coarse.surface.normals, batch, stage)
    refined = _active_error(refinement.uv_detail_normals, batch, stage)
    assert refined < 0.8 * flat, (refined, flat)
    assert refinement.uv_displacement.shape == (2, 1, SIZE, SIZE)
    assert float((refinement.uv_displacement * (1 - stage.uv_space.skin)).abs().max()) == 0.0
    # the albedo changes only by a smooth gain: its ratio to the start has no fine structure
    gain = refinement.uv_albedo / coarse.uv_albedo.clamp(min=1e-3)
    skin = stage.uv_space.skin.expand(2, 3, -1, -1)
    fine = (gain - masked_blur(gain, stage.uv_space.skin.expand(2, 1, -1, -1), 2.0)) * skin
    assert float(fine.abs().amax()) < 0.02


def test_refinement_started_at_the_truth_keeps_it(world_batch):
    cfg, stage, batch, coarse = world_batch
    settings = dataclasses.replace(cfg.refine, steps=STEPS)
    refinement = refine_faces(stage, coarse, batch.image, batch.uv_displacement, settings)
    flat = _active_error(coarse.surface.normals, batch, stage)
    kept = _active_error(refinement.uv_detail_normals, batch, stage)
    truth = _active_error(stage.uv_space.detail_normals(coarse.surface, batch.uv_displacement), batch, stage)
    assert truth < 0.1 * flat
    assert kept < 0.5 * flat, (kept, truth, flat)


def test_the_default_pull_keeps_a_good_start_that_a_smooth_albedo_cannot_explain(world_batch):
    """With a smooth albedo (what a fit of a photo knows), the photo's fine blotches look like relief: the
    default ``refine.magnitude`` keeps the displacement near a start that is right, where a weak pull
    copies the blotches into it (started at the truth: 3.0 deg against 8.3 deg of flat's 11.0, measured)."""
    cfg, stage, batch, coarse = world_batch
    skin = stage.uv_space.skin
    albedo = masked_blur(batch.uv_albedo, skin.expand(2, 1, -1, -1), 4.0)
    smooth = dataclasses.replace(coarse, uv_albedo=torch.where(skin > 0, albedo, batch.uv_albedo))

    def error(magnitude: float) -> float:
        settings = dataclasses.replace(cfg.refine, magnitude=magnitude)
        refined = refine_faces(stage, smooth, batch.image, batch.uv_displacement, settings)
        return _active_error(refined.uv_detail_normals, batch, stage)

    flat = _active_error(coarse.surface.normals, batch, stage)
    kept, weak = error(cfg.refine.magnitude), error(0.05)
    assert kept < 0.4 * flat, (kept, flat)
    assert kept < 0.5 * weak, (kept, weak)


def test_refinement_does_not_touch_its_inputs_and_records_its_start(world_batch):
    cfg, stage, batch, coarse = world_batch
    start = 0.01 * torch.ones(2, 1, SIZE, SIZE)
    before = (start.clone(), batch.image.clone(), coarse.uv_albedo.clone(), coarse.codes.light.clone())
    refinement = refine_faces(stage, coarse, batch.image, start, dataclasses.replace(cfg.refine, steps=2))
    for old, new in zip(before, (start, batch.image, coarse.uv_albedo, coarse.codes.light), strict=True):
        assert torch.equal(old, new)
    torch.testing.assert_close(refinement.start, start * stage.uv_space.skin, rtol=1e-5, atol=1e-7)


def test_texel_length_of_a_plane_is_its_spacing():
    size, side = 16, 3.0
    rows = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(1.0 - rows, rows, indexing="ij")
    positions = torch.stack([u * side, v * side, torch.zeros_like(u)])[None]
    normals = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, size, size)
    length = texel_length(UVSurface(positions, normals), torch.ones(1, 1, size, size))
    torch.testing.assert_close(length.flatten(), torch.tensor([side / size]))


def test_high_frequency_residual_is_zero_for_a_perfect_or_smoothly_wrong_rendering_not_for_a_grooved_one():
    size = 64
    photo = 0.5 + 0.1 * torch.linspace(0, 1, size).view(1, 1, 1, size).expand(1, 3, size, size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., 8:56, 8:56] = 1.0
    assert float(high_frequency_residual(photo, photo, mask)) == 0.0
    smoothly_wrong = photo * 1.05
    assert float(high_frequency_residual(photo, smoothly_wrong, mask, sigma=2.0)) < 2e-3
    grooves = photo + 0.05 * torch.sin(torch.arange(size) * 2.0).view(1, 1, size, 1)
    assert float(high_frequency_residual(grooves, photo, mask, sigma=2.0)) > 0.03  # all of 0.05 / sqrt 2


def test_masked_blur_ignores_what_lies_outside_the_mask():
    values = torch.full((1, 1, 32, 32), 2.0)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, :16] = 1.0
    values[..., :, 16:] = 100.0  # outside the mask: must not leak in
    blurred = masked_blur(values, mask, 3.0)
    torch.testing.assert_close(blurred[..., :, :16], torch.full((1, 1, 32, 16), 2.0))
    kernel_sum = gaussian_blur(torch.ones(1, 1, 64, 64), 2.0)[..., 32, 32]
    torch.testing.assert_close(kernel_sum, torch.tensor([[1.0]]))


def test_fit_mask_keeps_seen_skin_facing_the_camera_outside_the_excluded_parts(world_batch):
    _, stage, batch, coarse = world_batch
    skin = stage.uv_space.skin
    excluded = excluded_parts(stage.face_model, SIZE)
    assert excluded.shape == (1, 1, SIZE, SIZE) and 0 < float(excluded.mean()) < 0.3
    mask = fit_mask(skin, batch.uv_visibility, coarse.surface.normals, excluded)
    assert float((mask * (1 - skin)).sum()) == 0.0
    assert float((mask * excluded).sum()) == 0.0
    assert float((mask * (1 - batch.uv_visibility)).sum()) == 0.0
    assert float((mask * (coarse.surface.normals[:, 2:3] <= 0.3)).sum()) == 0.0
    assert float(mask.mean()) > 0.2


def test_a_face_model_without_part_outlines_excludes_nothing():
    class Plain:
        pass

    assert float(excluded_parts(Plain(), 32).abs().sum()) == 0.0


def test_refine_settings_load_and_reject_bad_values():
    cfg = load_config(Config, None, ["refine.mode=always", "refine.steps=7", "refine.compare=uv"])
    assert (cfg.refine.mode, cfg.refine.steps, cfg.refine.compare) == ("always", 7, "uv")
    assert RefineConfig().mode == "auto"
    with pytest.raises(ConfigError):
        load_config(Config, None, ["refine.compare=somewhere"])
    assert load_config(Config, None, ["refine.steps=0", "refine.au_steps=0"]).refine.steps == 0
    assert load_config(Config, None, ["refine.au_start=au-net"]).refine.au_start == "au-net"
    assert RefineConfig().au_start == "auto"
    bad_values = ("refine.steps=-1", "refine.au_steps=-1", "refine.au_lr=0", "refine.coarse_steps=-1")
    for bad in (*bad_values, "refine.au_start=landmarks"):
        with pytest.raises(ConfigError):
            load_config(Config, None, [bad])

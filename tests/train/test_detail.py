"""Tests of the detail GAN's training module (:mod:`aucgan.train.detail`).

The code swap among the K images of an identity and the normal-angle metric against plain references;
then one training step of the tiny config, emulated by hand without a Trainer: the discriminator phase
reaches no generator parameter, the generator phase reaches the detail encoder and decoder and never the
frozen AU net or coarse stage, whose parameters, BatchNorm statistics and buffers stay as loaded, in eval
mode whatever ``train()`` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aucgan.au import MAIN_AUS
from aucgan.build import world_parameters
from aucgan.config import Config, ConfigError, load_config, preset_path
from aucgan.data.real import RealSample
from aucgan.data.shards import ShardedFaces, SyntheticFaces, write_dataset
from aucgan.data.synthetic import collate
from aucgan.data.wrinkles import wrinkle_displacement
from aucgan.face_model.regions import AU_WRINKLE_REGIONS, au_region_mask
from aucgan.losses.truth import change_error, displacement_error, displacement_gradient_error
from aucgan.nets.detail_decoder import AUCondition
from aucgan.train import au as au_training
from aucgan.train import detail as detail_training
from aucgan.train.au import AUTraining
from aucgan.train.callbacks import image_grid
from aucgan.train.checkpointing import atomic_torch_save
from aucgan.train.detail import DetailTraining, SingleAUEdit, normal_angle_degrees, swap_within_groups

TINY = preset_path("synthetic-tiny")
GENERATOR_TERMS = (
    "photo_detail",
    "mrf",
    "z_reg",
    "z_diff",
    "z_sym",
    "detail_consistency",
    "au_score",
    "au_feature",
    "adversarial",
)
"""The detail stage's generator loss terms, each named after its weight in ``cfg.loss``."""
MRF_OFF = "ID-MRF"


# swap_within_groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "group_size"), [(4, 2), (6, 3), (8, 4), (5, 5)])
def test_swap_takes_another_image_of_the_same_identity(batch, group_size):
    codes = torch.randn(batch, 7, generator=torch.Generator().manual_seed(batch))
    swapped = swap_within_groups(codes, group_size)
    assert swapped.shape == codes.shape
    sources = []
    for i in range(batch):
        (matches,) = [j for j in range(batch) if torch.equal(swapped[i], codes[j])]
        assert matches // group_size == i // group_size and matches != i
        sources.append(matches)
    assert sorted(sources) == list(range(batch))
    for i in range(batch):
        start = i - i % group_size
        assert sources[i] == start + (i - start + 1) % group_size


def test_swap_with_groups_of_one_is_the_identity():
    codes = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(swap_within_groups(codes, 1), codes)


@pytest.mark.parametrize(("batch", "group_size"), [(5, 2), (4, 3), (1, 2)])
def test_swap_refuses_a_batch_of_partial_groups(batch, group_size):
    with pytest.raises(ValueError, match=f"batch of {batch}.*groups of {group_size}"):
        swap_within_groups(torch.zeros(batch, 3), group_size)


# normal_angle_degrees -------------------------------------------------------------------------------


def unit_normals(*shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    normals = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (normals / normals.norm(dim=1, keepdim=True)).to(dtype)


def reference_angle(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    total = weight = 0.0
    batch, _, height, width = predicted.shape
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                m = float(mask[b if mask.shape[0] > 1 else 0, 0, y, x])
                dot = sum(float(predicted[b, c, y, x]) * float(target[b, c, y, x]) for c in range(3))
                total += m * math.degrees(math.acos(max(-1.0, min(1.0, dot))))
                weight += m
    return total / max(weight, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_batch", [1, 2])
def test_normal_angle_matches_a_plain_loop(dtype, mask_batch):
    predicted, target = (
        unit_normals(2, 3, 5, 6, seed=1, dtype=dtype),
        unit_normals(2, 3, 5, 6, seed=2, dtype=dtype),
    )
    mask = (torch.rand(mask_batch, 1, 5, 6, generator=torch.Generator().manual_seed(3)) > 0.4).to(dtype)
    mask[..., 0, 0] = 0.5
    angle = normal_angle_degrees(predicted, target, mask)
    assert angle.shape == () and angle.dtype == dtype
    assert float(angle) == pytest.approx(reference_angle(predicted, target, mask), rel=1e-5)


def test_normal_angle_of_known_pairs():
    up = torch.zeros(1, 3, 2, 2)
    up[:, 2] = 1
    side = torch.zeros(1, 3, 2, 2)
    side[:, 0] = 1
    ones = torch.ones(1, 1, 2, 2)
    assert float(normal_angle_degrees(up, up, ones)) == 0
    assert float(normal_angle_degrees(up, side, ones)) == pytest.approx(90)
    assert float(normal_angle_degrees(up, -up, ones)) == pytest.approx(180)
    assert float(normal_angle_degrees(up, side, torch.zeros(1, 1, 2, 2))) == 0


# One training step of the tiny config, by hand -------------------------------------------------------


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def build_counting_messages(cfg: Config) -> tuple[DetailTraining, list[str]]:
    """Build a DetailTraining; the warnings and log records it emitted on the way."""
    handler = Messages()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = DetailTraining(cfg)
    finally:
        root.removeHandler(handler)
    return module, [str(w.message) for w in caught] + handler.records


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny config with ground-truth coarse codes, an AU-net checkpoint of ``aucgan train au``'s
    layout (with non-default BatchNorm statistics, to see them loaded), and the detail module built on it."""
    base = load_config(Config, TINY, ["model.coarse_source=ground-truth"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(au_training, "au_frequencies", lambda cfg: torch.full((27,), 0.2))
        au = AUTraining(base)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in au.net.modules():
            if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
                layer.running_mean.normal_(0.0, 0.1, generator=generator)
                layer.running_var.uniform_(0.5, 1.5, generator=generator)
                layer.num_batches_tracked.fill_(7)
    checkpoint = {"state_dict": au.state_dict()}
    au.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("au") / "last.ckpt"
    atomic_torch_save(checkpoint, path)

    cfg = load_config(Config, TINY, ["model.coarse_source=ground-truth", f"assets.au_net={path}"])
    module, messages = build_counting_messages(cfg)
    saved_au = {name[len("net.") :]: value for name, value in checkpoint["state_dict"].items()}
    return SimpleNamespace(cfg=cfg, module=module, messages=messages, saved_au=saved_au)


def parameters_of(*modules: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(f"{i}.{name}", p) for i, m in enumerate(modules) for name, p in m.named_parameters()]


@pytest.fixture(scope="module")
def step(world):
    """One step as ``DetailTraining.training_step`` makes it, with the gradients of each phase kept."""
    module, cfg = world.module, world.cfg
    k = cfg.synth.images_per_identity
    dataset = SyntheticFaces(world_parameters(cfg), "train", cfg.data.identities_per_batch * k)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert (batch.identity.view(-1, k) == batch.identity.view(-1, k)[:, :1]).all()

    au_before, coarse_before = state_copy(module.detail.au_net), state_copy(module.coarse)
    module.train()
    modes = {name: m.training for name, m in module.named_modules()}
    generator = parameters_of(module.detail.encoder, module.detail.decoder)
    frozen = parameters_of(module.detail.au_net, module.coarse)
    critic = parameters_of(module.discriminator)

    def grads(named):
        return {name: None if p.grad is None else p.grad.clone() for name, p in named}

    with module.step_randomness():
        coarse, aus, condition, detail, rendering, _ = module.run_detail(batch, batch.image)
        condition = AUCondition(condition.features.detach(), condition.intensities.detach())
        d_losses = module.discriminator_losses(batch.image, rendering.image, condition)
        # retain_graph: had the fakes not been detached, the generator's grads show it (not a freed graph)
        sum(d_losses.values()).backward(retain_graph=True)
        d_grads = SimpleNamespace(generator=grads(generator), frozen=grads(frozen), critic=grads(critic))
        module.zero_grad(set_to_none=True)
        g_losses = module.generator_losses(batch.image, coarse, aus, condition, detail, rendering)
        sum(g_losses.values()).backward()
        g_grads = SimpleNamespace(generator=grads(generator), frozen=grads(frozen), critic=grads(critic))
    module.zero_grad(set_to_none=True)
    return SimpleNamespace(
        batch=batch,
        outputs=(coarse, aus, condition, detail, rendering),
        d_losses=d_losses,
        g_losses=g_losses,
        d_grads=d_grads,
        g_grads=g_grads,
        modes=modes,
        au_before=au_before,
        coarse_before=coarse_before,
    )


def expected_generator_losses(cfg: Config, vgg: bool) -> set[str]:
    names = {name for name in GENERATOR_TERMS if getattr(cfg.loss, name) > 0}
    if not vgg:
        names.discard("mrf")
    if cfg.synth.images_per_identity == 1:
        names.discard("detail_consistency")
    return names


def test_mrf_off_warning_once_when_no_vgg19(world):
    assert world.cfg.loss.mrf > 0 and world.cfg.assets.vgg19 == ""
    assert world.module.vgg is None
    assert sum(MRF_OFF in message for message in world.messages) == 1


def test_no_mrf_warning_when_mrf_is_off(world, monkeypatch):
    monkeypatch.setattr(detail_training, "coarse_stage", lambda cfg, with_encoder: world.module.coarse)
    cfg = dataclasses.replace(world.cfg, loss=dataclasses.replace(world.cfg.loss, mrf=0.0))
    _, messages = build_counting_messages(cfg)
    assert not any(MRF_OFF in message for message in messages)


def test_au_net_is_the_checkpoint_frozen(world):
    au = world.module.detail.au_net
    assert_same_state(state_copy(au), world.saved_au)
    assert not any(p.requires_grad for p in au.parameters())
    assert not any(p.requires_grad for p in world.module.coarse.parameters())


def test_discriminator_phase_reaches_no_generator_parameter(step):
    assert set(step.d_losses) == {"d_adversarial"}
    assert all(torch.isfinite(v) for v in step.d_losses.values())
    assert step.d_grads.generator and all(g is None for g in step.d_grads.generator.values())
    assert all(g is None for g in step.d_grads.frozen.values())
    assert all(g is not None for g in step.d_grads.critic.values())


def test_generator_phase_reaches_encoder_and_decoder_only(step):
    assert all(g is not None for g in step.g_grads.generator.values())
    assert any(g.abs().sum() > 0 for g in step.g_grads.generator.values())
    assert all(torch.isfinite(g).all() for g in step.g_grads.generator.values())
    assert all(g is None for g in step.g_grads.frozen.values())


def test_generator_losses_of_the_tiny_config(world, step):
    assert set(step.g_losses) == expected_generator_losses(world.cfg, vgg=False)
    assert "mrf" not in step.g_losses
    for name, value in step.g_losses.items():
        assert value.shape == () and torch.isfinite(value) and value >= 0, name


def test_switched_off_terms_are_left_out(world, step, monkeypatch):
    off = {"z_sym": 0.0, "au_feature": 0.0, "adversarial": 0.0, "detail_consistency": 0.0}
    cfg = dataclasses.replace(world.cfg, loss=dataclasses.replace(world.cfg.loss, **off))
    monkeypatch.setattr(world.module, "cfg", cfg)
    with torch.no_grad():
        losses = world.module.generator_losses(step.batch.image, *step.outputs)
    assert set(losses) == expected_generator_losses(cfg, vgg=False)
    assert not set(off) & set(losses)


def test_lazy_r1_on_its_steps(world, step, monkeypatch):
    cfg = dataclasses.replace(world.cfg, loss=dataclasses.replace(world.cfg.loss, r1_gamma=2.0, r1_every=4))
    monkeypatch.setattr(world.module, "cfg", cfg)
    condition = step.outputs[2]
    fakes = step.outputs[4].image.detach()
    for steps_done, applied in [(8, True), (9, False)]:
        monkeypatch.setattr(world.module, "steps_done", steps_done)
        losses = world.module.discriminator_losses(step.batch.image, fakes, condition)
        assert ("d_r1" in losses) == applied
        if applied:
            assert torch.isfinite(losses["d_r1"]) and losses["d_r1"] >= 0


@pytest.mark.parametrize("term", ["au_score", "au_feature"])
def test_au_consistency_alone_sends_gradient_to_the_generator(world, step, monkeypatch, term):
    """The frozen AU net on the rendering is differentiable end to end: with every other weight at zero,
    the AU term still reaches the detail encoder and decoder (and never the frozen parts)."""
    module = world.module
    weights = {name: 0.0 for name in GENERATOR_TERMS} | {term: 1.0}
    monkeypatch.setattr(
        module, "cfg", dataclasses.replace(world.cfg, loss=dataclasses.replace(world.cfg.loss, **weights))
    )
    module.zero_grad(set_to_none=True)
    with module.step_randomness():
        coarse, aus, condition, detail, rendering, _ = module.run_detail(step.batch, step.batch.image)
        losses = module.generator_losses(step.batch.image, coarse, aus, condition, detail, rendering)
    assert set(losses) == {term} and losses[term] > 0
    losses[term].backward()
    generator = parameters_of(module.detail.encoder, module.detail.decoder)
    assert sum(float(p.grad.abs().sum()) for _, p in generator if p.grad is not None) > 0
    assert all(p.grad is None for _, p in parameters_of(module.detail.au_net, module.coarse))
    module.zero_grad(set_to_none=True)


def test_reals_and_fakes_reach_the_discriminator_through_the_same_augmentation(world, step, monkeypatch):
    """A stand-in augmentation (a horizontal flip) shows on every image the discriminator sees: reals and
    detached fakes in its own step, fakes in the generator's adversarial term."""
    module = world.module
    seen: list[torch.Tensor] = []
    critic_forward = module.discriminator.forward

    def recording_forward(images, condition):
        seen.append(images.detach().clone())
        return critic_forward(images, condition)

    monkeypatch.setattr(module.augment, "forward", lambda images: SimpleNamespace(images=images.flip(-1)))
    monkeypatch.setattr(module.discriminator, "forward", recording_forward)
    condition, fakes = step.outputs[2], step.outputs[4].image.detach()
    reals = step.batch.image
    with torch.no_grad():
        module.discriminator_losses(reals, fakes, condition)
        module.generator_losses(reals, *step.outputs)
    assert len(seen) == 3
    assert torch.equal(seen[0], reals.flip(-1))
    assert torch.equal(seen[1], fakes.flip(-1)) and torch.equal(seen[2], fakes.flip(-1))


def test_frozen_parts_keep_their_state_through_a_step(world, step):
    assert_same_state(state_copy(world.module.detail.au_net), step.au_before)
    assert_same_state(state_copy(world.module.detail.au_net), world.saved_au)
    assert_same_state(state_copy(world.module.coarse), step.coarse_before)


def test_frozen_parts_stay_in_eval_mode(world, step):
    module = world.module
    for check in (step.modes, {name: m.training for name, m in module.named_modules()}):
        frozen = {name: mode for name, mode in check.items() if name.startswith(("coarse", "detail.au_net"))}
        assert frozen and not any(frozen.values())
        assert check["detail.encoder"] and check["detail.decoder"] and check["discriminator"]
    module.eval()
    module.train()
    assert not any(m.training for m in module.coarse.modules())
    assert not any(m.training for m in module.detail.au_net.modules())
    assert module.detail.encoder.training and module.discriminator.training


def test_visuals_make_an_image_grid(world, step):
    columns = world.module.visuals(step.batch)
    size = world.cfg.render.image_size
    assert len(columns) == 5
    for column in columns:
        assert column.shape == (step.batch.image.shape[0], 3, size, size)
    grid = image_grid(columns)
    assert grid.shape == (3, min(4, len(step.batch.image)) * size, 5 * size)


def test_mrf_is_on_with_a_vgg19_file(world, step, tmp_path, monkeypatch):
    """With ``assets.vgg19`` (a torchvision-layout file, random weights) the ID-MRF term joins the losses and
    sends gradients to the generator."""
    from aucgan.nets.vgg import VGG19Features

    path = tmp_path / "vgg19-dcbfe4e9.pth"
    torch.save(VGG19Features().state_dict(), path)
    cfg = load_config(
        Config,
        TINY,
        [
            "model.coarse_source=ground-truth",
            f"assets.au_net={world.cfg.assets.au_net}",
            f"assets.vgg19={path}",
        ],
    )
    module, messages = build_counting_messages(cfg)
    assert module.vgg is not None and not any("ID-MRF" in message for message in messages)
    batch = step.batch
    with module.step_randomness():
        coarse, aus, condition, detail, rendering, _ = module.run_detail(batch, batch.image)
        losses = module.generator_losses(batch.image, coarse, aus, condition, detail, rendering)
    assert set(losses) == expected_generator_losses(cfg, vgg=True)
    losses["mrf"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.detail.decoder.parameters())
    assert all(p.grad is None for p in module.vgg.parameters())


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_truth_losses_are_the_skin_errors_in_units_of_max_z_over_20(world, step, kind):
    module, cfg = world.module, world.cfg
    cfg = dataclasses.replace(
        cfg,
        loss=dataclasses.replace(
            cfg.loss, displacement_truth=2.0, displacement_truth_kind=kind, displacement_gradient=0.5
        ),
    )
    detail = step.outputs[3]
    truth = step.batch.uv_displacement
    skin = module.coarse.uv_space.skin
    unit = cfg.model.max_z / 20
    error = (detail.uv_displacement - truth) / unit
    values = error.square() if kind == "l2" else error.abs()
    expected = (values * skin).sum() / (skin.sum() * truth.shape[0])
    original, module.cfg = module.cfg, cfg
    try:
        losses = module.truth_losses(detail.uv_displacement, truth)
        perfect = module.truth_losses(truth, truth)
    finally:
        module.cfg = original
    assert set(losses) == {"displacement_truth", "displacement_gradient"}
    assert float(losses["displacement_truth"].detach()) == pytest.approx(
        2.0 * float(expected.detach()), rel=1e-5
    )
    assert float(losses["displacement_gradient"].detach()) > 0
    assert all(float(value) == 0.0 for value in perfect.values())


def test_held_out_errors_of_a_flat_prediction_equal_the_flat_baseline(world, step, monkeypatch):
    module = world.module
    module.eval()
    with torch.no_grad():
        errors = module.held_out_errors(step.batch)
        monkeypatch.setattr(
            module.detail.decoder,
            "forward",
            lambda latent, condition=None: torch.zeros(
                latent.shape[0], 1, module.cfg.render.uv_size, module.cfg.render.uv_size
            ),
        )
        zero = module.held_out_errors(step.batch)
    module.train()
    assert set(errors) == {
        "displacement_mae", "displacement_mae_flat", "normal_error_deg", "normal_error_flat_deg",
        "normal_error_wrinkle_deg", "normal_error_wrinkle_flat_deg", "normal_error_active_deg",
        "normal_error_active_flat_deg",
    }  # fmt: skip
    assert float(zero["normal_error_active_deg"]) == pytest.approx(
        float(zero["normal_error_active_flat_deg"]), abs=1e-3
    )
    assert float(zero["displacement_mae"]) == pytest.approx(float(zero["displacement_mae_flat"]), rel=1e-6)
    assert float(zero["normal_error_deg"]) == pytest.approx(float(zero["normal_error_flat_deg"]), abs=1e-3)
    assert float(zero["normal_error_wrinkle_deg"]) == pytest.approx(
        float(zero["normal_error_wrinkle_flat_deg"]), abs=1e-3
    )
    wrinkles = module.wrinkle_regions
    assert wrinkles.shape == (1, 1, module.cfg.render.uv_size, module.cfg.render.uv_size)
    assert 0 < float(wrinkles.mean()) < 0.5


@pytest.mark.parametrize("init", ["flat", "random"])
def test_detail_init_is_honoured(world, init):
    cfg = dataclasses.replace(world.cfg, model=dataclasses.replace(world.cfg.model, detail_init=init))
    module = DetailTraining(cfg)
    output = [m for m in module.detail.decoder.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1][
        -1
    ]
    assert (output.weight.abs().sum() == 0) == (init == "flat")


# The uv-unet decoder, its edit pairs and the UV discriminator --------------------------------------------


@pytest.fixture(scope="module")
def uv_world(world):
    loss = dataclasses.replace(
        world.cfg.loss, displacement_truth=1.0, displacement_gradient=0.5, edit_truth=1.0, edit_true_aus=0.5
    )
    model = dataclasses.replace(world.cfg.model, detail_decoder="uv-unet", discriminator="uv-projection")
    cfg = dataclasses.replace(world.cfg, model=model, loss=loss)
    torch.manual_seed(0)
    return SimpleNamespace(cfg=cfg, module=DetailTraining(cfg))


def test_uv_unet_step_trains_on_truth_edit_pairs_and_the_uv_discriminator(uv_world, step, monkeypatch):
    module, batch = uv_world.module, step.batch
    assert module.detail.reads_photo and module.discriminator.space == "uv"
    logs = by_hand(module, monkeypatch)
    judged: list[torch.Tensor] = []
    forward = module.discriminator.forward
    monkeypatch.setattr(module.discriminator, "forward", lambda x, c: judged.append(x) or forward(x, c))
    before = state_copy(module.detail.decoder)
    module.train()
    module.training_step(batch, 0)
    logged = logs[0]
    for name in ("displacement_truth", "displacement_gradient", "edit_truth", "edit_gradient", "adversarial"):
        assert f"train/{name}" in logged, name
    size = module.cfg.render.uv_size
    assert judged and all(x.shape[-2:] == (size, size) for x in judged)  # UV maps, not images
    after = module.detail.decoder.state_dict()
    assert any(not torch.equal(after[name], value) for name, value in before.items())


def capture_decode(module: DetailTraining, detail, monkeypatch) -> dict:
    """Make ``module.detail.decode`` return ``detail`` and record what it was given (``target``, ``code``,
    ``condition``, ``evidence``) in the returned dict."""
    seen = {}

    def decode(target, code, cond, evid):
        seen.update(target=target, code=code, condition=cond, evidence=evid)
        return detail

    monkeypatch.setattr(module.detail, "decode", decode)
    return seen


def test_edit_pairs_take_the_other_images_aus_and_keep_the_photo(uv_world, step, monkeypatch):
    module, batch = uv_world.module, step.batch
    k = module.group_size
    with torch.no_grad():
        coarse, aus, condition, detail, _, evidence = module.run_detail(batch, batch.image)
    seen = capture_decode(module, detail, monkeypatch)
    torch.manual_seed(0)
    module.edit_pair(batch, coarse, aus, condition, evidence, detail.detail_code)
    true, read = swap_within_groups(batch.expression, k), swap_within_groups(aus.main_scores, k)
    chosen = seen["condition"].intensities
    assert all(
        torch.allclose(c, t) or torch.allclose(c, r) for c, t, r in zip(chosen, true, read, strict=True)
    )
    assert seen["condition"].features is condition.features  # the photo's own AU features
    assert seen["evidence"] is evidence and seen["code"] is detail.detail_code
    torch.testing.assert_close(seen["target"].codes.jaw_pose, swap_within_groups(coarse.codes.jaw_pose, k))
    torch.testing.assert_close(seen["target"].codes.expression, chosen)  # the built-in face: expression = AUs


def test_single_au_edits_move_one_wrinkle_au_and_target_the_worlds_displacement(uv_world, step, monkeypatch):
    module, batch = uv_world.module, step.batch
    with torch.no_grad():
        coarse, _, condition, detail, _, evidence = module.run_detail(batch, batch.image)
    seen = capture_decode(module, detail, monkeypatch)
    wrinkle = {MAIN_AUS.index(au) for au in AU_WRINKLE_REGIONS}
    world = world_parameters(module.cfg).world()
    kinds = set()
    for seed in range(6):
        torch.manual_seed(seed)
        edit = module.single_au_edit(batch, coarse, condition, evidence, detail.detail_code)
        target, regions = edit.target, edit.regions
        assert edit.unedited is None and edit.true_change is None  # not asked for
        chosen = seen["condition"].intensities
        for i in range(chosen.shape[0]):
            true = batch.expression[i].to(chosen)
            on_true = (chosen[i] != true).nonzero().flatten().tolist()
            on_neutral = chosen[i].nonzero().flatten().tolist()
            moved = on_true if len(on_true) <= 1 else on_neutral
            assert len(moved) <= 1 and set(moved) <= wrinkle, (seed, i, on_true, on_neutral)
            kinds.add("true" if len(on_true) <= 1 else "neutral")
            if moved:  # the regions are the moved AU's
                (au,) = [name for name in AU_WRINKLE_REGIONS if MAIN_AUS.index(name) == moved[0]]
                size = module.cfg.render.uv_size
                torch.testing.assert_close(regions[i, 0], au_region_mask(au, size).to(regions))
            # the target by hand: the identity's static detail plus its basis at the chosen intensities
            person = world.identity(int(batch.identity[i]))
            by_hand = person.static_detail + sum(
                float(chosen[i, k]) * person.wrinkle_basis[k] for k in range(len(MAIN_AUS))
            )
            torch.testing.assert_close(target[i, 0], by_hand.to(target), atol=1e-6, rtol=1e-5)
        assert seen["condition"].features is condition.features  # the photo's own AU features
        assert seen["evidence"] is evidence and seen["code"] is detail.detail_code
        torch.testing.assert_close(
            seen["target"].codes.expression, chosen
        )  # the built-in face: expression = AUs
    assert kinds == {"true", "neutral"}


def test_single_au_edits_decode_the_unedited_condition_and_the_worlds_change(uv_world, step, monkeypatch):
    """With ``unedited``, the same condition is decoded again with the edited AU at 0 (every other AU as
    in the edit), and the world's change from there is the AU's fold times its intensity: the difference
    of the world's displacements at the two conditions."""
    module, batch = uv_world.module, step.batch
    with torch.no_grad():
        coarse, _, condition, detail, _, evidence = module.run_detail(batch, batch.image)
    calls = []

    def decode(target, code, cond, evid):
        calls.append(cond.intensities.clone())
        return detail

    monkeypatch.setattr(module.detail, "decode", decode)
    world = world_parameters(module.cfg).world()
    for seed in range(4):
        torch.manual_seed(seed)
        calls.clear()
        edit = module.single_au_edit(batch, coarse, condition, evidence, detail.detail_code, unedited=True)
        assert len(calls) == 2
        edited, before = calls
        for i in range(edited.shape[0]):
            moved = (edited[i] != before[i]).nonzero().flatten().tolist()
            assert len(moved) <= 1, (seed, i, moved)
            if not moved:  # the AU was drawn at intensity 0: no change
                torch.testing.assert_close(edit.true_change[i], torch.zeros_like(edit.true_change[i]))
                continue
            (k,) = moved
            assert float(before[i, k]) == 0.0
            person = world.identity(int(batch.identity[i]))
            basis = person.wrinkle_basis[k].to(edit.fold)
            torch.testing.assert_close(edit.fold[i, 0], basis)
            by_hand = sum(
                (float(edited[i, j]) - float(before[i, j])) * person.wrinkle_basis[j]
                for j in range(len(MAIN_AUS))
            )
            torch.testing.assert_close(edit.true_change[i, 0], by_hand.to(edit.fold), atol=1e-6, rtol=1e-5)
        assert edit.unedited is detail.uv_displacement


def test_single_au_edits_refuse_data_of_another_world(uv_world, step):
    module, batch = uv_world.module, step.batch
    module._world_checked = False
    bases, static = module.wrinkle_bases(batch)  # the fixture's data: the world of its config
    rebuilt = wrinkle_displacement(batch.expression.to(bases), bases, static)
    torch.testing.assert_close(rebuilt, batch.uv_displacement.to(rebuilt), atol=1e-5, rtol=1e-3)
    other = dataclasses.replace(batch, uv_displacement=batch.uv_displacement.flip(-1) + 0.01)
    module._world_checked = False
    message = r"loss.edit_single_au: .* not this world's .*world seed=0.*aucgan synth"
    with pytest.raises(ConfigError, match=message):
        module.wrinkle_bases(other)
    module._world_checked = False


def test_single_au_edits_read_the_world_of_the_datasets_manifest(uv_world, tmp_path):
    module, cfg = uv_world.module, uv_world.cfg
    write_dataset(tmp_path, world_parameters(cfg), {"train": 4}, shard_size=4, workers=0)
    faces = ShardedFaces(tmp_path, "train")
    batch = collate([faces[i] for i in range(len(faces))])
    # the run's seed differs from the data's: the bases are still the data's world's
    module.cfg = dataclasses.replace(cfg, seed=5, data=dataclasses.replace(cfg.data, source=str(tmp_path)))
    module._world, module._world_checked = None, False
    try:
        bases, static = module.wrinkle_bases(batch)
        assert module._world.seed == cfg.seed and module._world_checked
        rebuilt = wrinkle_displacement(batch.expression.to(bases), bases, static)
        torch.testing.assert_close(rebuilt, batch.uv_displacement.to(rebuilt), atol=1e-5, rtol=1e-3)
    finally:
        module.cfg = cfg
        module._world, module._world_checked = None, False


def test_single_edit_losses_weigh_the_skin_and_the_edited_regions(uv_world, step, monkeypatch):
    module, batch = uv_world.module, step.batch
    size = module.cfg.render.uv_size
    generator = torch.Generator().manual_seed(3)
    predicted, target = (torch.randn(batch.image.shape[0], 1, size, size, generator=generator) for _ in "ab")
    regions = (torch.rand(batch.image.shape[0], 1, size, size, generator=generator) > 0.7).float()
    before, true_change, fold = (torch.randn(*predicted.shape, generator=generator) for _ in "abc")
    asked = []

    def single_au_edit(*args, unedited=False):
        asked.append(unedited)
        return SingleAUEdit(predicted, target, regions, *((before, true_change, fold) if unedited else ()))

    monkeypatch.setattr(module, "single_au_edit", single_au_edit)
    loss = dataclasses.replace(
        module.cfg.loss, edit_single_au=2.0, edit_single_region=0.5, edit_single_change=3.0
    )
    monkeypatch.setattr(module, "cfg", dataclasses.replace(module.cfg, loss=loss))
    losses = module.single_edit_losses(batch, None, None, None, SimpleNamespace(detail_code=None))
    skin = module.coarse.uv_space.skin
    unit = module.cfg.model.max_z * detail_training.TRUTH_UNIT
    for prefix, weight, mask in (("single_edit", 2.0, skin), ("single_region", 0.5, regions * skin)):
        truth = loss.displacement_truth * displacement_error(predicted, target, mask, unit)
        slopes = loss.displacement_gradient * displacement_gradient_error(predicted, target, mask, unit)
        torch.testing.assert_close(losses[f"{prefix}_truth"], weight * truth)
        torch.testing.assert_close(losses[f"{prefix}_gradient"], weight * slopes)
    change = 3.0 * change_error(predicted - before, true_change, fold, skin)
    torch.testing.assert_close(losses["single_change"], change)
    loss = dataclasses.replace(loss, edit_single_change=0.0)  # off: no second decode, no loss
    monkeypatch.setattr(module, "cfg", dataclasses.replace(module.cfg, loss=loss))
    losses = module.single_edit_losses(batch, None, None, None, SimpleNamespace(detail_code=None))
    assert asked == [True, False] and "single_change" not in losses


def test_a_step_with_single_au_edits_logs_their_losses(uv_world, step, monkeypatch):
    loss = dataclasses.replace(
        uv_world.cfg.loss, edit_single_au=2.0, edit_single_region=0.5, edit_single_change=1.0
    )
    torch.manual_seed(0)
    module = DetailTraining(dataclasses.replace(uv_world.cfg, loss=loss))
    logs = by_hand(module, monkeypatch)
    module.train()
    module.training_step(step.batch, 0)
    names = (
        "single_edit_truth",
        "single_edit_gradient",
        "single_region_truth",
        "single_region_gradient",
        "single_change",
    )
    for name in names:
        value = logs[0][f"train/{name}"]
        assert math.isfinite(float(value)) and float(value) > 0, name


# Self-distillation: photos with refined targets -----------------------------------------------------------


def photos_of(batch, n_albedo: int, refined: torch.Tensor) -> RealSample:
    """A batch of photos made of a synthetic batch: its images and true coarse fits (the mean albedo), and
    ``refined`` as the refined targets."""
    size = batch.image.shape[0]
    return RealSample(
        index=batch.index, identity=batch.identity, image=batch.image, landmarks=torch.zeros(size, 468, 3),
        shape=batch.shape, albedo=torch.zeros(size, n_albedo), expression=batch.expression,
        pose=batch.pose, camera=batch.camera, light=batch.light, refined_displacement=refined,
    )  # fmt: skip


def by_hand(module: DetailTraining, monkeypatch) -> list[dict[str, float]]:
    """Make ``module.training_step`` run without a Trainer; returns the list each step's logs go to."""
    logs: list[dict[str, float]] = [{}]
    monkeypatch.setattr(module, "log_dict", lambda values, **_: logs[-1].update(values))
    monkeypatch.setattr(module, "log", lambda name, value, **_: logs[-1].update({name: value}))
    optimizers = list(module.configure_optimizers()[0])
    monkeypatch.setattr(module, "optimizers", lambda: optimizers)
    monkeypatch.setattr(module, "lr_schedulers", lambda: [SimpleNamespace(step=lambda: None)] * 2)
    monkeypatch.setattr(module, "toggled_optimizer", lambda _opt: contextlib.nullcontext())

    def optimise(optimizer, losses, _name):
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    monkeypatch.setattr(module, "optimise", optimise)
    monkeypatch.setattr(module, "finish_step", lambda: logs.append({}))
    return logs


@pytest.fixture(scope="module")
def distilled(world):
    """The tiny detail module with the refined-target losses on."""
    loss = dataclasses.replace(world.cfg.loss, refined_target=1.0, refined_gradient=0.5)
    cfg = dataclasses.replace(world.cfg, loss=loss)
    torch.manual_seed(0)
    return SimpleNamespace(cfg=cfg, module=DetailTraining(cfg))


def test_refined_losses_are_the_truth_losses_against_the_refined_targets(distilled, step):
    module, cfg = distilled.module, distilled.cfg
    predicted, target = step.outputs[3].uv_displacement.detach(), step.batch.uv_displacement
    losses = module.refined_losses(predicted, target)
    skin, unit = module.coarse.uv_space.skin, cfg.model.max_z / 20
    assert set(losses) == {"refined_target", "refined_gradient"}
    torch.testing.assert_close(losses["refined_target"], displacement_error(predicted, target, skin, unit))
    torch.testing.assert_close(
        losses["refined_gradient"], 0.5 * displacement_gradient_error(predicted, target, skin, unit)
    )
    assert all(float(value) == 0.0 for value in module.refined_losses(target, target).values())
    with pytest.raises(ValueError, match="need the photo cache's refined targets"):
        module.refined_losses(predicted, torch.zeros(predicted.shape[0], 0))


def test_photos_with_refined_targets_train_the_decoder_towards_them(distilled, step, monkeypatch):
    """Training steps on photos log the refined-target losses, which fall as the network overfits them."""
    module, cfg = distilled.module, distilled.cfg
    photos = photos_of(step.batch, cfg.model.n_albedo, step.batch.uv_displacement)
    logs = by_hand(module, monkeypatch)
    module.train()
    for _ in range(6):
        module.training_step(photos, 0)
    logged = [entry for entry in logs if entry]
    assert len(logged) == 6
    for name in ("refined_target", "refined_gradient", "photo_detail"):
        assert all(f"train/{name}" in entry for entry in logged), name
    assert not any("train/displacement_truth" in entry for entry in logged)
    errors = [float(entry["train/refined_target"]) for entry in logged]
    assert all(math.isfinite(error) for error in errors)
    assert errors[-1] < 0.5 * errors[0], errors


def test_photos_without_refined_targets_are_one_line_when_the_loss_is_on(distilled, step, monkeypatch):
    module, cfg = distilled.module, distilled.cfg
    size = step.batch.image.shape[0]
    photos = photos_of(step.batch, cfg.model.n_albedo, torch.zeros(size, 0))
    by_hand(module, monkeypatch)
    module.train()
    with pytest.raises(ValueError, match="need the photo cache's refined targets"):
        module.training_step(photos, 0)

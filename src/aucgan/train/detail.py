"""Training the AU-conditioned detail stage as a conditional GAN (manual optimisation).

Per step: the frozen coarse stage and the frozen AU net read the input; the generator (detail encoder +
displacement decoder) makes the displacement; the detail normals shade the coarse albedo and the face is
rendered over the input. Then

1. **discriminator step** on the real input and the rendered face *detached* (no generator graph is kept
   or reused), both through the same augmentation (:meth:`DetailTraining.discriminate`);
2. **generator step** on the content losses, AU consistency and the adversarial loss (the discriminator's
   parameters do not receive gradients: Lightning's ``toggled_optimizer``).

Both learning-rate schedules step once per training step, as declared. Every loss is its own function in
:mod:`aucgan.losses`, with its formula; the weights come from ``cfg.loss``. Synthetic samples add the truth
losses against the world's displacement; photos with refined targets (``loss.refined_target``,
``loss.refined_gradient``: :mod:`aucgan.data.real`) add the same losses against their refined displacement
(self-distillation).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_only

from aucgan.au import MAIN_AUS
from aucgan.build import (
    au_net,
    coarse_stage,
    detail_stage,
    discriminator,
    load_coarse,
    require_asset,
    world_parameters,
)
from aucgan.config import Config, ConfigError
from aucgan.data.real import RealSample
from aucgan.data.shards import ShardedFaces
from aucgan.data.synthetic import SyntheticSample, SyntheticWorld
from aucgan.data.wrinkles import wrinkle_displacement
from aucgan.face_model.regions import (
    AU_WRINKLE_REGIONS,
    active_region_mask,
    au_region_mask,
    region_mask,
)
from aucgan.geometry.render import Rendering, texel_visibility
from aucgan.geometry.shading import sh_shading
from aucgan.geometry.uv import angle_degrees
from aucgan.losses.adversarial import discriminator_loss, generator_loss, r1_penalty
from aucgan.losses.au_consistency import au_feature_loss, au_score_loss
from aucgan.losses.mrf import id_mrf
from aucgan.losses.photometric import masked_l1
from aucgan.losses.regularizers import displacement_magnitude, displacement_symmetry, shading_smoothness
from aucgan.losses.truth import change_error, displacement_error, displacement_gradient_error
from aucgan.nets.au_net import AUOutput
from aucgan.nets.detail_decoder import AUCondition
from aucgan.nets.vgg import DEFAULT_LAYERS, load_vgg19
from aucgan.stages.coarse import CoarseOutput
from aucgan.stages.detail import DetailOutput, UVEvidence, au_condition, photo_in_uv, read_photo
from aucgan.train.augmentation import face_augmentation
from aucgan.train.module import StageModule

MRF_LAYER_WEIGHTS = {"relu3_2": 1.0, "relu4_2": 1.0}

log = logging.getLogger(__name__)


SINGLE_EDIT_NEUTRAL = 0.5
"""Share of single-AU edits (``loss.edit_single_au``) made on a neutral condition (every other AU at 0, as
``aucgan evaluate`` edits); the rest move one AU of the face's true intensities."""

TRUTH_UNIT = 1.0 / 20.0
"""The truth losses measure displacement in units of ``model.max_z`` times this (0.5 mm for the built-in
face's 1 cm bound)."""


class SingleAUEdit(NamedTuple):
    """A single-AU edit of each photo (:meth:`DetailTraining.single_au_edit`), all ``(B, 1, S, S)``."""

    predicted: torch.Tensor
    """the decoder's displacement at the edited condition."""
    target: torch.Tensor
    """the world's displacement at that condition."""
    regions: torch.Tensor
    """the edited AU's wrinkle regions."""
    unedited: torch.Tensor | None = None
    """the decoder's displacement at the same condition with the edited AU at 0 (when asked for)."""
    true_change: torch.Tensor | None = None
    """the world's change from there to the edit: the edited AU's wrinkle basis times its intensity."""
    fold: torch.Tensor | None = None
    """the edited AU's wrinkle basis (its whole fold, intensity 1)."""


def swap_within_groups(codes: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each sample takes the code of the next image of its identity (batches hold whole groups of
    ``group_size`` images per identity): ``(B, ...)`` → ``(B, ...)``."""
    batch = codes.shape[0]
    if batch % group_size:
        raise ValueError(f"a batch of {batch} does not hold whole groups of {group_size}")
    index = torch.arange(batch, device=codes.device)
    return codes[index - index % group_size + (index + 1) % group_size]


def normal_angle_degrees(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angle (degrees) between unit normal maps ``(B, 3, S, S)`` over ``mask (B or 1, 1, S, S)``."""
    angles = angle_degrees(predicted, target)
    weights = mask.expand_as(angles)
    return (angles * weights).sum() / weights.sum().clamp(min=1)


class DetailTraining(StageModule):
    """The detail GAN: generator = detail encoder + decoder; discriminator separate; coarse and AU net
    frozen (whole modules in eval mode for good)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        # Photos with coarse.backend=mediapipe carry their cached fits, as synthetic samples their truth.
        network_coarse = cfg.model.coarse_source == "network" and cfg.coarse.backend == "network"
        self.coarse = coarse_stage(cfg, with_encoder=network_coarse)
        if network_coarse:
            load_coarse(
                self.coarse, require_asset(cfg, "coarse", "train it with `aucgan train coarse CONFIG`")
            )
        self.coarse.requires_grad_(False).eval()
        require_asset(cfg, "au_net", "train it with `aucgan train au CONFIG` or give OpenGraphAU's file")
        au = au_net(cfg)
        self.detail = detail_stage(cfg, self.coarse.uv_space, au, self.coarse.face_model.n_expression)
        self.discriminator = discriminator(cfg, au.channels)
        self.augment = face_augmentation(cfg.augment)
        self.input_augment = face_augmentation(cfg.augment) if network_coarse else None
        self.vgg = None
        if cfg.loss.mrf > 0:
            if cfg.assets.vgg19:
                self.vgg = load_vgg19(cfg.assets.vgg19, DEFAULT_LAYERS)
            else:
                rank_zero_only(log.warning)(
                    "ID-MRF loss off: assets.vgg19 is not set (torchvision's vgg19-dcbfe4e9.pth turns it on; "
                    "loss.mrf=0 silences this warning)"
                )
        self.group_size = cfg.synth.images_per_identity
        self._world: SyntheticWorld | None = None  # the world's wrinkle bases, for single-AU edits
        self._world_checked = False
        self._single_au_regions: torch.Tensor | None = None

    def train(self, mode: bool = True) -> DetailTraining:
        super().train(mode)
        self.coarse.eval()
        return self

    # The pipeline -------------------------------------------------------------------------------------

    def coarse_output(self, batch: SyntheticSample | RealSample, images: torch.Tensor) -> CoarseOutput:
        """The frozen coarse stage on ``images``, or the ground truth (``model.coarse_source``)."""
        with torch.no_grad():
            if self.coarse.encoder is not None:
                return self.coarse(images)
            codes = batch.coarse_codes(self.coarse.albedo.n_albedo)
            return self.coarse.decode(codes, uv_albedo=batch.uv_albedo)

    def run_detail(
        self, batch: SyntheticSample | RealSample, images: torch.Tensor
    ) -> tuple[CoarseOutput, AUOutput, AUCondition, DetailOutput, Rendering, UVEvidence | None]:
        """The detail pipeline on ``images``: coarse fit, AU reading, the photo's evidence in UV (for a
        decoder that reads it), detail and the detailed rendering (rasterised once)."""
        coarse = self.coarse_output(batch, images)
        with torch.no_grad():
            aus = self.detail.read_aus(images)
        condition = au_condition(aus)
        evidence, fragments = None, None
        if self.detail.reads_photo:
            with torch.no_grad():
                evidence, fragments = read_photo(self.coarse, images, coarse)
        detail = self.detail.decode(coarse, self.detail.encoder(images), condition, evidence)
        rendering = self.coarse.render(
            coarse, uv_normals=detail.uv_detail_normals, background=images, fragments=fragments
        )
        return coarse, aus, condition, detail, rendering, evidence

    def visible_skin(self, coarse: CoarseOutput, rendering: Rendering) -> torch.Tensor:
        """``(B, 1, S, S)`` the skin texels seen in the image (where photometric losses and errors look)."""
        skin = self.coarse.uv_space.to(coarse.surface.positions.device).skin
        seen = texel_visibility(
            coarse.surface.positions, coarse.surface.normals, coarse.codes.camera, rendering.fragments
        )
        return seen * skin

    def discriminate(self, images: torch.Tensor, condition: AUCondition) -> torch.Tensor:
        """The one way images reach the discriminator: the same augmentation for reals and fakes."""
        return self.discriminator(self.augment(images).images, condition)

    def judged(
        self, images: torch.Tensor, coarse: CoarseOutput, detail: DetailOutput, rendering: Rendering
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reals, fakes)`` for the discriminator: the photos and the detailed renderings, or, for a
        discriminator in UV space, the photo sampled into UV and the detail texture, both on the skin texels
        seen in the photo."""
        if self.discriminator.space != "uv":
            return images, rendering.image
        with torch.no_grad():
            visible = self.visible_skin(coarse, rendering)
            photo = photo_in_uv(images, coarse)
        return photo * visible, detail.uv_texture * visible

    # Losses -------------------------------------------------------------------------------------------

    def discriminator_losses(
        self, images: torch.Tensor, fakes: torch.Tensor, condition: AUCondition
    ) -> dict[str, torch.Tensor]:
        weights = self.cfg.loss
        kind = weights.adversarial_kind
        lazy_r1 = weights.r1_gamma > 0 and self.steps_done % weights.r1_every == 0
        reals = self.augment(images).images.detach().requires_grad_(lazy_r1)
        real_logits = self.discriminator(reals, condition)
        fake_logits = self.discriminate(fakes.detach(), condition)
        losses = {
            "d_adversarial": discriminator_loss(
                real_logits, fake_logits, kind, weights.real_target, weights.fake_target
            )
        }
        if lazy_r1:
            penalty = r1_penalty(real_logits, reals)
            losses["d_r1"] = penalty * weights.r1_gamma / 2 * weights.r1_every
        return losses

    def generator_losses(
        self,
        images: torch.Tensor,
        coarse: CoarseOutput,
        aus: AUOutput,
        condition: AUCondition,
        detail: DetailOutput,
        rendering: Rendering,
        evidence: UVEvidence | None = None,
        fakes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The generator's weighted losses; ``fakes`` are what the discriminator judges (default: the
        detailed rendering)."""
        weights = self.cfg.loss
        skin = self.coarse.uv_space.to(images.device).skin
        visible = self.visible_skin(coarse, rendering)
        photo = photo_in_uv(images, coarse)
        losses: dict[str, torch.Tensor] = {}
        if weights.photo_detail > 0:
            losses["photo_detail"] = weights.photo_detail * masked_l1(detail.uv_texture, photo, visible)
        if weights.mrf > 0 and self.vgg is not None:
            fake_features = self.vgg(detail.uv_texture * visible)
            with torch.no_grad():
                real_features = self.vgg(photo * visible)
            losses["mrf"] = weights.mrf * id_mrf(fake_features, real_features, MRF_LAYER_WEIGHTS)
        if weights.z_reg > 0:
            losses["z_reg"] = weights.z_reg * displacement_magnitude(detail.uv_displacement, skin)
        if weights.z_diff > 0:
            losses["z_diff"] = weights.z_diff * shading_smoothness(detail.uv_shading, skin)
        if weights.z_sym > 0:
            losses["z_sym"] = weights.z_sym * displacement_symmetry(
                detail.uv_displacement, (1 - visible) * skin
            )
        if weights.detail_consistency > 0 and self.group_size > 1:
            swapped_code = swap_within_groups(detail.detail_code, self.group_size)
            swapped = self.detail.decode(coarse, swapped_code, condition, evidence)
            losses["detail_consistency"] = weights.detail_consistency * masked_l1(
                swapped.uv_texture, photo, visible
            )
        if weights.au_score > 0 or weights.au_feature > 0:
            rendered_aus = self.detail.read_aus(rendering.image)
            if weights.au_score > 0:
                losses["au_score"] = weights.au_score * au_score_loss(
                    rendered_aus.main_scores, aus.main_scores, weights.au_score_kind
                )
            if weights.au_feature > 0:
                losses["au_feature"] = weights.au_feature * au_feature_loss(
                    rendered_aus.features, aus.features
                )
        if weights.adversarial > 0:
            losses["adversarial"] = weights.adversarial * generator_loss(
                self.discriminate(rendering.image if fakes is None else fakes, condition),
                weights.adversarial_kind,
            )
        return losses

    # Lightning ----------------------------------------------------------------------------------------

    def training_step(self, batch: SyntheticSample | RealSample, batch_idx: int) -> None:
        g_optimizer, d_optimizer = self.optimizers()
        g_schedule, d_schedule = self.lr_schedulers()
        with self.step_randomness():
            images = batch.image if self.input_augment is None else self.input_augment(batch.image).images
            coarse, aus, condition, detail, rendering, evidence = self.run_detail(batch, images)
            condition = AUCondition(condition.features.detach(), condition.intensities.detach())
            reals, fakes = self.judged(images, coarse, detail, rendering)
            if self.cfg.loss.adversarial > 0:
                with self.toggled_optimizer(d_optimizer):
                    d_losses = self.discriminator_losses(reals, fakes, condition)
                    self.optimise(d_optimizer, d_losses, "discriminator")
                self.log_dict({f"train/{name}": value.detach() for name, value in d_losses.items()})
            with self.toggled_optimizer(g_optimizer):
                g_losses = self.generator_losses(
                    images, coarse, aus, condition, detail, rendering, evidence, fakes
                )
                if isinstance(batch, SyntheticSample):
                    g_losses.update(self.truth_losses(detail.uv_displacement, batch.uv_displacement))
                    if self.cfg.loss.edit_truth > 0 and self.group_size > 1:
                        pair = self.edit_pair(batch, coarse, aus, condition, evidence, detail.detail_code)
                        for name, value in self.truth_losses(
                            pair, swap_within_groups(batch.uv_displacement, self.group_size)
                        ).items():
                            g_losses[name.replace("displacement", "edit")] = self.cfg.loss.edit_truth * value
                    loss = self.cfg.loss
                    if max(loss.edit_single_au, loss.edit_single_region, loss.edit_single_change) > 0:
                        g_losses.update(self.single_edit_losses(batch, coarse, condition, evidence, detail))
                else:
                    g_losses.update(self.refined_losses(detail.uv_displacement, batch.refined_displacement))
                self.optimise(g_optimizer, g_losses, "generator")
        g_schedule.step()
        if self.cfg.loss.adversarial > 0:
            d_schedule.step()
        self.log_dict({f"train/{name}": value.detach() for name, value in g_losses.items()})
        self.log("train/g_total", sum(g_losses.values()).detach(), prog_bar=True)
        self.finish_step()

    def truth_losses(self, predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
        """Supervision from the synthetic world's true displacement over the skin
        (:mod:`aucgan.losses.truth`), weighted: ``displacement_truth`` (``loss.displacement_truth_kind``) and
        ``displacement_gradient``, in units of ``model.max_z`` × :data:`TRUTH_UNIT`."""
        weights = self.cfg.loss
        return self.target_losses(
            predicted,
            truth,
            ("displacement_truth", "displacement_gradient"),
            (weights.displacement_truth, weights.displacement_gradient),
        )

    def refined_losses(self, predicted: torch.Tensor, refined: torch.Tensor) -> dict[str, torch.Tensor]:
        """Self-distillation on photos: the truth losses against each photo's refined displacement
        ``refined (B, 1, S, S)`` (:class:`~aucgan.data.real.RealSample`), weighted by ``refined_target`` and
        ``refined_gradient``; none when both are 0.

        Raises:
            ValueError: a weight is above 0 but the batch holds no refined targets (one line).
        """
        weights = self.cfg.loss
        if weights.refined_target <= 0 and weights.refined_gradient <= 0:
            return {}
        if refined.ndim != 4:
            raise ValueError(
                "loss.refined_target / loss.refined_gradient need the photo cache's refined targets and this "
                "batch has none: train with coarse.backend=mediapipe data.source=PHOTOS (`aucgan train`)"
            )
        return self.target_losses(
            predicted,
            refined.to(predicted),
            ("refined_target", "refined_gradient"),
            (weights.refined_target, weights.refined_gradient),
        )

    def target_losses(
        self,
        predicted: torch.Tensor,
        target: torch.Tensor,
        names: tuple[str, str],
        weights: tuple[float, float],
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The displacement ``predicted (B, 1, S, S)`` against ``target`` over the skin, in units of
        ``model.max_z`` × :data:`TRUTH_UNIT`, as ``{names[0]: weights[0] × displacement_error,
        names[1]: weights[1] × displacement_gradient_error}`` (:mod:`aucgan.losses.truth`, the first of kind
        ``loss.displacement_truth_kind``); a weight of 0 leaves its loss out. ``mask (B or 1, 1, S, S)``
        replaces the skin."""
        skin = self.coarse.uv_space.to(predicted.device).skin if mask is None else mask
        unit = self.cfg.model.max_z * TRUTH_UNIT
        losses = {}
        if weights[0] > 0:
            kind = self.cfg.loss.displacement_truth_kind
            losses[names[0]] = weights[0] * displacement_error(predicted, target, skin, unit, kind)
        if weights[1] > 0:
            losses[names[1]] = weights[1] * displacement_gradient_error(predicted, target, skin, unit)
        return losses

    def edit_pair(
        self,
        batch: SyntheticSample,
        coarse: CoarseOutput,
        aus: AUOutput,
        condition: AUCondition,
        evidence: UVEvidence | None,
        detail_code: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, 1, S, S)``: each face's photo (its evidence, ``detail_code`` and AU features) decoded with
        the AU intensities, jaw and expression of the next image of its identity — an edit whose truth the
        world knows (that image's displacement). The intensities are the world's true ones with probability
        ``loss.edit_true_aus``, else what the AU net reads from that image."""
        k = self.group_size
        true = swap_within_groups(batch.expression.to(aus.scores), k)
        read = swap_within_groups(aus.main_scores, k)
        use_true = torch.rand(true.shape[0], 1, device=true.device) < self.cfg.loss.edit_true_aus
        intensities = torch.where(use_true, true, read)
        codes = coarse.codes
        expression = swap_within_groups(codes.expression, k)
        if self.coarse.face_model.expression_is_au_rig:
            expression = intensities
        pose = torch.cat([codes.global_pose, swap_within_groups(codes.jaw_pose, k)], dim=1)
        target = dataclasses.replace(
            coarse, codes=dataclasses.replace(codes, expression=expression, pose=pose)
        )
        detail = self.detail.decode(target, detail_code, condition.with_intensities(intensities), evidence)
        return detail.uv_displacement

    def single_edit_losses(
        self,
        batch: SyntheticSample,
        coarse: CoarseOutput,
        condition: AUCondition,
        evidence: UVEvidence | None,
        detail: DetailOutput,
    ) -> dict[str, torch.Tensor]:
        """The truth losses on :meth:`single_au_edit`, weighted: over the skin by ``loss.edit_single_au``
        (``single_edit_truth``, ``single_edit_gradient``) and over the edited AU's wrinkle regions alone by
        ``loss.edit_single_region`` (``single_region_truth``, ``single_region_gradient``: a faint fold in a
        small region counts as much as a deep one in a large region); and ``single_change``, the edit's
        change (from the edited AU at 0) against the world's, in units of that AU's whole fold
        (:func:`~aucgan.losses.truth.change_error`), weighted by ``loss.edit_single_change``."""
        weights = self.cfg.loss
        edit = self.single_au_edit(
            batch, coarse, condition, evidence, detail.detail_code, unedited=weights.edit_single_change > 0
        )
        skin = self.coarse.uv_space.to(edit.predicted.device).skin
        names = ("displacement_truth", "displacement_gradient")
        losses = {}
        for mask, prefix, weight in (
            (skin, "single_edit", weights.edit_single_au),
            (edit.regions * skin, "single_region", weights.edit_single_region),
        ):
            if weight > 0:
                terms = (weights.displacement_truth, weights.displacement_gradient)
                for name, value in self.target_losses(
                    edit.predicted, edit.target, names, terms, mask
                ).items():
                    losses[name.replace("displacement", prefix)] = weight * value
        if weights.edit_single_change > 0:
            change = edit.predicted - edit.unedited
            losses["single_change"] = weights.edit_single_change * change_error(
                change, edit.true_change, edit.fold, skin
            )
        return losses

    def single_au_edit(
        self,
        batch: SyntheticSample,
        coarse: CoarseOutput,
        condition: AUCondition,
        evidence: UVEvidence | None,
        detail_code: torch.Tensor,
        unedited: bool = False,
    ) -> SingleAUEdit:
        """A single-AU edit of each photo (``predicted``, ``target``, ``regions``): one wrinkle
        AU (of :data:`~aucgan.face_model.regions.AU_WRINKLE_REGIONS`, drawn per face) moved to an intensity
        drawn in [0, 1], on the face's true intensities or, for a share :data:`SINGLE_EDIT_NEUTRAL`, on a
        neutral condition (every other AU at 0); the photo, its AU features and its detail code kept. The
        target is the world's displacement at that condition (the identity's static detail plus its wrinkle
        basis weighted by the intensities: the world's displacement is linear in them), so an edit learns to
        move only that AU's folds, by as much as the world does — which the co-occurring AUs of edit pairs
        between two photos cannot teach. ``regions`` are the edited AU's wrinkle regions. With ``unedited``
        the same condition is decoded again with the edited AU at 0 (``unedited``), and the world's change
        from there (``true_change``) and the AU's whole fold (``fold``) come with it. Built-in face,
        synthetic data only.

        Raises:
            ConfigError: the batch's displacements are not the world's (a dataset whose manifest does not
                match its shards), in one line.
        """
        bases, static = self.wrinkle_bases(batch)
        true = batch.expression.to(bases)
        faces = true.shape[0]
        wrinkle_aus = torch.tensor([MAIN_AUS.index(au) for au in AU_WRINKLE_REGIONS], device=true.device)
        position = torch.randint(len(wrinkle_aus), (faces,), device=true.device)
        chosen = wrinkle_aus[position]
        neutral = torch.rand(faces, 1, device=true.device) < SINGLE_EDIT_NEUTRAL
        intensities = torch.where(neutral, torch.zeros_like(true), true)
        rows = torch.arange(faces, device=true.device)
        intensities[rows, chosen] = torch.rand(faces, device=true.device)
        predicted = self.decode_intensities(coarse, condition, evidence, detail_code, intensities)
        target = wrinkle_displacement(intensities, bases, static).to(predicted)
        regions = self.single_au_regions.to(predicted)[position][:, None]
        if not unedited:
            return SingleAUEdit(predicted, target, regions)
        before = intensities.clone()
        before[rows, chosen] = 0.0
        fold = bases[rows, chosen][:, None].to(predicted)
        return SingleAUEdit(
            predicted,
            target,
            regions,
            self.decode_intensities(coarse, condition, evidence, detail_code, before),
            fold * intensities[rows, chosen].to(predicted)[:, None, None, None],
            fold,
        )

    def decode_intensities(
        self,
        coarse: CoarseOutput,
        condition: AUCondition,
        evidence: UVEvidence | None,
        detail_code: torch.Tensor,
        intensities: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, 1, S, S)``: the photos (their ``evidence``, ``detail_code`` and AU features) decoded with the
        AU ``intensities (B, 27)``; on the built-in face the coarse expression (the AU rig) follows them."""
        codes = coarse.codes
        expression = intensities if self.coarse.face_model.expression_is_au_rig else codes.expression
        edited = dataclasses.replace(coarse, codes=dataclasses.replace(codes, expression=expression))
        detail = self.detail.decode(edited, detail_code, condition.with_intensities(intensities), evidence)
        return detail.uv_displacement

    @property
    def single_au_regions(self) -> torch.Tensor:
        """``(18, S, S)`` the wrinkle regions of each AU of :data:`AU_WRINKLE_REGIONS`, in its order."""
        if self._single_au_regions is None:
            size = self.cfg.render.uv_size
            self._single_au_regions = torch.stack([au_region_mask(au, size) for au in AU_WRINKLE_REGIONS])
        return self._single_au_regions

    def wrinkle_bases(self, batch: SyntheticSample) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 27, S, S)`` each face's identity's displacement per AU at intensity 1 and ``(B, S, S)`` its
        static detail (cm), from the synthetic world of ``data.source``'s manifest (else the config's); the
        first call checks that they give the batch's displacements."""
        source = self.cfg.data.source
        if self._world is None:  # the world the data was written from (its manifest), else the config's
            parameters = ShardedFaces(source, "train").parameters if source else world_parameters(self.cfg)
            self._world = parameters.world()
        people = [self._world.identity(int(identity)) for identity in batch.identity]
        device = batch.uv_displacement.device
        bases = torch.stack([person.wrinkle_basis for person in people]).to(device)
        static = torch.stack([person.static_detail for person in people]).to(device)
        if not self._world_checked:
            rebuilt = wrinkle_displacement(batch.expression.to(bases), bases, static)
            stored = batch.uv_displacement.to(bases)
            error = float((rebuilt - stored).abs().max())
            if error > 1e-2 * float(stored.abs().max()) + 1e-5:
                raise ConfigError(
                    f"loss.edit_single_au: the batch's displacements are not this world's (off by "
                    f"{error:.3g} cm; world seed={self._world.seed}, UV size {self._world.uv_size}, from "
                    f"{source or 'the config'}): rewrite the data with `aucgan synth`, or set "
                    "loss.edit_single_au=0"
                )
            self._world_checked = True
        return bases, static

    def held_out_errors(self, batch: SyntheticSample) -> dict[str, torch.Tensor]:
        """Errors against the synthetic ground truth, over the skin texels: ``displacement_mae`` (face-model
        units), ``normal_error_deg``, and ``normal_error_wrinkle_deg`` over the AUs' wrinkle regions (the
        union of :data:`~aucgan.face_model.regions.AU_WRINKLE_REGIONS`); each ``*_flat`` is the same for a
        flat prediction (zero displacement: the coarse normals), for scale."""
        coarse, _, _, detail, _, _ = self.run_detail(batch, batch.image)
        skin = self.coarse.uv_space.to(batch.image.device).skin
        wrinkles = self.wrinkle_regions.to(skin) * skin
        active = active_region_mask(batch.au_occurrence, skin.shape[-1]).to(skin) * skin
        count = skin.sum() * batch.image.shape[0]
        truth, flat = batch.uv_detail_normals, coarse.surface.normals
        return {
            "normal_error_active_deg": normal_angle_degrees(detail.uv_detail_normals, truth, active),
            "normal_error_active_flat_deg": normal_angle_degrees(flat, truth, active),
            "displacement_mae": ((detail.uv_displacement - batch.uv_displacement).abs() * skin).sum() / count,
            "displacement_mae_flat": (batch.uv_displacement.abs() * skin).sum() / count,
            "normal_error_deg": normal_angle_degrees(detail.uv_detail_normals, truth, skin),
            "normal_error_flat_deg": normal_angle_degrees(flat, truth, skin),
            "normal_error_wrinkle_deg": normal_angle_degrees(detail.uv_detail_normals, truth, wrinkles),
            "normal_error_wrinkle_flat_deg": normal_angle_degrees(flat, truth, wrinkles),
        }

    @property
    def wrinkle_regions(self) -> torch.Tensor:
        """``(1, 1, S, S)`` the union of every AU's wrinkle regions on the built-in face's UV layout."""
        size = self.cfg.render.uv_size
        names = sorted({name for regions in AU_WRINKLE_REGIONS.values() for name in regions})
        return torch.stack([region_mask(name, size) for name in names]).amax(0)[None, None]

    def photo_errors(self, batch: RealSample) -> dict[str, torch.Tensor]:
        """Photos have no true displacement: ``photo_detail_l1``, the mean absolute difference between the
        detail-shaded texture and the photo over the visible skin texels, and ``photo_flat_l1`` for the
        coarse (flat) shading, for scale."""
        coarse, _, _, detail, rendering, _ = self.run_detail(batch, batch.image)
        visible = self.visible_skin(coarse, rendering)
        photo = photo_in_uv(batch.image, coarse)
        flat = coarse.uv_albedo * sh_shading(coarse.surface.normals, coarse.codes.light)
        return {
            "photo_detail_l1": masked_l1(detail.uv_texture, photo, visible),
            "photo_flat_l1": masked_l1(flat, photo, visible),
        }

    def validation_step(self, batch: SyntheticSample | RealSample, batch_idx: int) -> None:
        if isinstance(batch, RealSample):
            errors = self.photo_errors(batch)
            self.log_dict({f"val/{name}": value for name, value in errors.items()}, sync_dist=True)
            return
        errors = self.held_out_errors(batch)
        self.log_dict({f"val/{name}": value for name, value in errors.items()}, sync_dist=True)

    def visuals(self, batch: SyntheticSample | RealSample) -> list[torch.Tensor]:
        """Columns of the image grid: input | coarse | detail shading | displacement | detail normals."""
        coarse, _, _, detail, _, _ = self.run_detail(batch, batch.image)
        smooth = self.coarse.render(coarse, background=batch.image)
        detailed = self.coarse.render(coarse, uv_normals=detail.uv_detail_normals)
        size = batch.image.shape[-2:]
        displacement = (
            (0.5 + 0.5 * detail.uv_displacement / self.cfg.model.max_z).clamp(0, 1).expand(-1, 3, -1, -1)
        )
        normals = detail.uv_detail_normals * 0.5 + 0.5
        resize = torch.nn.functional.interpolate
        return [
            batch.image,
            smooth.image,
            (detailed.shading / detailed.shading.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)),
            resize(displacement, size=size, mode="bilinear", align_corners=False),
            resize(normals, size=size, mode="bilinear", align_corners=False),
        ]

    def configure_optimizers(self) -> tuple[list[Any], list[Any]]:
        optim = self.cfg.optim
        generator = self.optimizer(self.detail.trainable_parameters(), optim.lr)
        critic = self.optimizer(self.discriminator.parameters(), optim.lr_discriminator)
        return (
            [generator["optimizer"], critic["optimizer"]],
            [generator["lr_scheduler"], critic["lr_scheduler"]],
        )

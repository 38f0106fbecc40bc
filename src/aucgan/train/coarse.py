"""Training the coarse stage on the synthetic world: ground-truth codes, landmarks and a photometric term."""

from __future__ import annotations

from typing import Any

import torch

from aucgan.build import coarse_stage, load_coarse_encoder
from aucgan.config import Config
from aucgan.data.synthetic import SyntheticSample
from aucgan.nets.coarse_encoder import CODE_NAMES, CoarseCodes
from aucgan.stages.coarse import CoarseOutput
from aucgan.train.augmentation import face_augmentation
from aucgan.train.module import StageModule


def code_loss(predicted: CoarseCodes, target: CoarseCodes, scales: dict[str, float]) -> torch.Tensor:
    """``Σ_name mean((p - t) / s_name)²`` over the six codes: each code's squared error in units of its
    typical spread ``s_name`` (camera scale varies by about 0.01 while an identity code varies by 1)."""
    total = predicted.shape.new_zeros(())
    for name in CODE_NAMES:
        difference = (getattr(predicted, name) - getattr(target, name)) / scales[name]
        total = total + difference.pow(2).mean()
    return total


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between projected landmarks ``(B, 68, 2)`` in NDC."""
    return (predicted - target).abs().mean()


CODE_SCALES = {"shape": 1.0, "albedo": 1.0, "expression": 0.3, "pose": 0.2, "camera": 0.1, "light": 0.2}
"""Typical spread of each code in the synthetic world, to weigh their errors alike."""


class CoarseTraining(StageModule):
    """The coarse encoder regressing the built-in face's codes (albedo: its linear model's code); it starts
    from the encoder of ``trainer.start_from`` (a coarse checkpoint) when that is set, else from scratch."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.stage = coarse_stage(cfg)
        if cfg.trainer.start_from and not cfg.resume:  # a resumed run's checkpoint holds the weights
            load_coarse_encoder(self.stage, cfg.trainer.start_from, "trainer.start_from")
        self.augment = face_augmentation(cfg.augment, geometric=False)

    def target_codes(self, batch: SyntheticSample) -> CoarseCodes:
        return CoarseCodes(
            shape=batch.shape,
            albedo=self.stage.albedo.project(batch.uv_albedo),
            expression=batch.expression,
            pose=batch.pose,
            camera=batch.camera,
            light=batch.light,
        )

    def losses(
        self, batch: SyntheticSample, images: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], CoarseOutput]:
        weights = self.cfg.loss
        output = self.stage(images)
        losses = {
            "code": code_loss(output.codes, self.target_codes(batch), CODE_SCALES) * weights.code,
            "landmarks": landmark_loss(output.landmarks, batch.landmarks) * weights.landmarks,
        }
        if weights.photometric > 0:
            rendering = self.stage.render(output, background=batch.image)
            overlap = rendering.mask * batch.mask
            error = ((rendering.image - batch.image).abs() * overlap).sum() / (3 * overlap.sum()).clamp(min=1)
            losses["photometric"] = error * weights.photometric
        return losses, output

    def training_step(self, batch: SyntheticSample, batch_idx: int) -> None:
        with self.step_randomness():
            images = self.augment(batch.image).images
        losses, _ = self.losses(batch, images)
        self.optimise(self.optimizers(), losses)
        self.lr_schedulers().step()
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()})
        self.log("train/total", sum(losses.values()).detach(), prog_bar=True)
        self.finish_step()

    def validation_step(self, batch: SyntheticSample, batch_idx: int) -> None:
        losses, output = self.losses(batch, batch.image)
        size = batch.image.shape[-1]
        pixels = (output.landmarks - batch.landmarks).norm(dim=-1).mean() * size / 2
        self.log("val/landmark_error_px", pixels, prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{name}": value for name, value in losses.items()}, sync_dist=True)

    def visuals(self, batch: SyntheticSample) -> list[torch.Tensor]:
        """Columns of the image grid: input | coarse rendering | coarse shading."""
        output = self.stage(batch.image)
        rendering = self.stage.render(output, background=batch.image)
        return [batch.image, rendering.image, rendering.shading.clamp(0, 1)]

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimizer(self.stage.encoder.parameters(), self.cfg.optim.lr)

"""Training the AU net (MEFARG) on synthetic AU labels; per-AU F1 on held-out identities."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from aucgan.au import MAIN_AUS
from aucgan.build import new_au_net
from aucgan.config import Config
from aucgan.data.augment import mirror_images
from aucgan.data.synthetic import SyntheticSample, SyntheticWorld, stable_seed
from aucgan.loaders.common import CheckpointError, load_strict
from aucgan.loaders.opengraphau import load_au_net
from aucgan.train.augmentation import face_augmentation
from aucgan.train.data import au_balance_weights
from aucgan.train.module import StageModule

FREQUENCY_DRAWS = 4000


def au_frequencies(cfg: Config, draws: int = FREQUENCY_DRAWS) -> torch.Tensor:
    """``(27,)`` how often each AU occurs in the training batches: in the synthetic world's expression prior
    (no rendering), reweighted as the AU-balanced sampler draws when ``data.au_balance > 0``."""
    generator = torch.Generator().manual_seed(stable_seed("aucgan-au-frequencies", cfg.seed))
    occurrence = torch.stack([SyntheticWorld.expression(generator) > 0 for _ in range(draws)]).float()
    weights = au_balance_weights(occurrence, cfg.data.au_balance)
    return (weights[:, None] * occurrence).sum(0) / weights.sum()


def weighted_bce(
    probabilities: torch.Tensor, labels: torch.Tensor, positive_weight: torch.Tensor
) -> torch.Tensor:
    """``mean_{b,k} w_k^{y} · BCE(p_bk, y_bk)`` on probabilities (the AU net's scores are in [0, 1], not
    logits), with positives of AU k weighted by ``positive_weight[k]`` against class imbalance."""
    eps = 1e-6
    loss = F.binary_cross_entropy(probabilities.clamp(eps, 1 - eps), labels, reduction="none")
    weights = torch.where(labels > 0, positive_weight.to(loss), torch.ones_like(loss))
    return (weights * loss).mean()


def f1_scores(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-AU F1 ``(K,)`` of bool predictions and labels ``(N, K)``; NaN for an AU with no positive
    label and no positive prediction (undefined)."""
    predicted, labels = predicted.bool(), labels.bool()
    true_positive = (predicted & labels).sum(0).float()
    denominator = predicted.sum(0).float() + labels.sum(0).float()
    return torch.where(denominator > 0, 2 * true_positive / denominator.clamp(min=1), torch.nan)


def f1_thresholds(
    scores: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor | None = None
) -> torch.Tensor:
    """``(K,)`` for each AU, the score threshold among ``candidates`` (default 0.05, 0.10, ..., 0.95) whose
    predictions ``scores > t`` have the highest F1 against ``labels`` ``(N, K)``; 0.5 for an AU with no
    positive label. Choose them on one held-out split and report F1 on another."""
    if candidates is None:
        candidates = torch.linspace(0.05, 0.95, 19)
    labels = labels.bool()
    f1 = torch.stack([f1_scores(scores > t, labels).nan_to_num(-1.0) for t in candidates.tolist()])
    best = candidates.to(scores)[f1.argmax(0)]
    return torch.where(labels.any(0), best, torch.full_like(best, 0.5))


class AUTraining(StageModule):
    """MEFARG trained with weighted BCE on the 27 main AUs' occurrence (synthetic labels); it starts from
    ``trainer.start_from`` when that is set (fine-tuning ours or OpenGraphAU's), else from scratch."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.net = new_au_net(cfg)
        if cfg.trainer.start_from and not cfg.resume:  # a resumed run's checkpoint holds the weights
            start = load_au_net(cfg.trainer.start_from)
            wanted = (cfg.model.au_backbone, cfg.model.au_stage)
            if (start.backbone_name, start.stage) != wanted:
                raise CheckpointError(
                    f"{cfg.trainer.start_from} [trainer.start_from]: an AU net of {start.backbone_name} "
                    f"stage {start.stage}, the config builds {wanted[0]} stage {wanted[1]}; set "
                    f"model.au_backbone={start.backbone_name} model.au_stage={start.stage}"
                )
            load_strict(self.net, start.state_dict(), f"{cfg.trainer.start_from} [trainer.start_from]")
        frequencies = au_frequencies(cfg).clamp(min=1e-3)
        self.register_buffer(
            "positive_weight",
            ((1 - frequencies) / frequencies).clamp(1.0, cfg.loss.au_positive_weight),
            persistent=False,
        )
        self.net.to(memory_format=torch.channels_last)  # NHWC convolutions: ~1.2x faster steps on a CPU
        self.augment = face_augmentation(cfg.augment)
        self._validation: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, batch: SyntheticSample) -> torch.Tensor:
        """The weighted BCE of the step's augmented (and, with ``augment.mirror``, mirrored) images against
        their AU labels."""
        with self.step_randomness():
            images = self.augment(batch.image).images
            if self.cfg.augment.enabled:
                images = mirror_images(images, self.cfg.augment.mirror)
        scores = self.net(images.contiguous(memory_format=torch.channels_last)).main_scores
        return weighted_bce(scores, batch.au_occurrence.float(), self.positive_weight)

    def training_step(self, batch: SyntheticSample, batch_idx: int) -> None:
        loss = self.loss(batch)
        self.optimise(self.optimizers(), {"au_bce": loss})
        self.lr_schedulers().step()
        self.log("train/au_bce", loss.detach(), prog_bar=True)
        self.finish_step()

    def validation_step(self, batch: SyntheticSample, batch_idx: int) -> None:
        scores = self.net(batch.image.contiguous(memory_format=torch.channels_last)).main_scores
        self._validation.append((scores.detach().cpu(), batch.au_occurrence.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._validation:
            return
        scores = torch.cat([s for s, _ in self._validation])
        labels = torch.cat([y for _, y in self._validation])
        self._validation.clear()
        scores, labels = self.all_gather(scores).flatten(0, -2), self.all_gather(labels).flatten(0, -2)
        f1 = f1_scores(scores > 0.5, labels)
        present = labels.any(0)
        self.log("val/f1_mean", f1[present].nanmean(), prog_bar=True, sync_dist=False)
        self.log("val/accuracy", ((scores > 0.5) == labels).float().mean(), sync_dist=False)
        for name, value in zip(MAIN_AUS, f1.tolist(), strict=True):
            if value == value:
                self.log(f"val_f1/{name}", value, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimizer(self.net.parameters(), self.cfg.optim.lr)

"""Adversarial losses on discriminator logits: non-saturating (with optional label smoothing) and hinge,
and the R1 gradient penalty.

The discriminators return raw logits; sigmoid is folded into the losses (``softplus``), which is the stable
form of the reference's sigmoid + ``BCELoss``. The generator phase sees the discriminator on fakes that keep
their graph; the discriminator phase must be given ``fake_logits`` computed from *detached* fakes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("non-saturating", "hinge")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown adversarial loss {kind!r}; valid: {', '.join(KINDS)}")


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    kind: str = "non-saturating",
    real_target: float = 1.0,
    fake_target: float = 0.0,
) -> torch.Tensor:
    """Loss of the discriminator phase.

    * ``non-saturating``: ``BCE(σ(real), real_target) + BCE(σ(fake), fake_target)`` averaged over logits;
      the reference smoothed the targets to 0.9 / 0.1.
    * ``hinge``: ``mean relu(1 - real) + mean relu(1 + fake)`` (targets ignored).
    """
    _check_kind(kind)
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_target))
    return real + fake


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """Generator phase: ``mean softplus(-fake)`` (= BCE towards 1), or ``-mean fake`` for hinge."""
    _check_kind(kind)
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1: ``mean_batch ||∇_x D(x)||²`` on real images (Mescheder et al. 2018); ``real_images`` must have
    ``requires_grad`` set before the discriminator saw them. Multiply by γ/2 in the caller."""
    if not real_images.requires_grad:
        raise ValueError("r1_penalty needs real_images.requires_grad = True before the discriminator call")
    (gradient,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()

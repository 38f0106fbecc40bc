"""AU consistency: the frozen AU net should read the same Action Units from the rendered detail image as
from the input photo (differentiable end to end).

The AU net's scores are probabilities in [0, 1], so they are compared as probabilities (MSE, or binary
cross-entropy with the input's scores as soft targets) — never with ``BCEWithLogitsLoss``, which would treat
them as logits (a defect of the reference, which also swapped input and target). The input's side is the
target and carries no gradient; the rendered side carries the gradient back to the detail generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCORE_LOSSES = ("mse", "bce")


def au_score_loss(
    rendered_scores: torch.Tensor, input_scores: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Distance between AU probabilities ``(B, K)`` read from the rendering and from the input.

    * ``mse``: ``mean (p_render - p_input)^2``;
    * ``bce``: ``mean BCE(p_render, p_input)`` with the input's probabilities as soft targets.
    """
    if kind not in SCORE_LOSSES:
        raise ValueError(f"unknown AU score loss {kind!r}; valid: {', '.join(SCORE_LOSSES)}")
    if rendered_scores.shape != input_scores.shape or rendered_scores.ndim != 2:
        raise ValueError(
            f"scores must be equal (B, K), got {tuple(rendered_scores.shape)} and {tuple(input_scores.shape)}"
        )
    target = input_scores.detach()
    if kind == "mse":
        return F.mse_loss(rendered_scores, target)
    eps = 1e-6
    return F.binary_cross_entropy(rendered_scores.clamp(eps, 1 - eps), target.clamp(0.0, 1.0))


def au_feature_loss(rendered_features: torch.Tensor, input_features: torch.Tensor) -> torch.Tensor:
    """``mean_k (1 - cos(f_render_k, f_input_k))`` over the per-AU features ``(B, K, C)``."""
    if rendered_features.shape != input_features.shape or rendered_features.ndim != 3:
        raise ValueError(
            f"features must be equal (B, K, C), got {tuple(rendered_features.shape)} and "
            f"{tuple(input_features.shape)}"
        )
    return (1.0 - F.cosine_similarity(rendered_features, input_features.detach(), dim=-1, eps=1e-8)).mean()

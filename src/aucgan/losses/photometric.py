"""Photometric loss of the detail stage in UV space (DECA's ``photo_detail``)."""

from __future__ import annotations

import torch


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``photo_detail``: ``sum_mask |prediction - target| / (C * sum(mask))``, the mean absolute colour error
    over the texels in ``mask`` (the face patch where the texel is visible in the photo).

    Args:
        prediction: ``(B, C, H, W)`` predicted detail texture (albedo × detail shading) in UV space.
        target: ``(B, C, H, W)`` the photo sampled into UV space.
        mask: ``(B or 1, 1, H, W)`` weights in [0, 1] (visibility × face patch).
    """
    if prediction.ndim != 4 or prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must be equal (B, C, H, W), got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != prediction.shape[-2:]:
        raise ValueError(
            f"mask must be (B, 1, {prediction.shape[-2]}, {prediction.shape[-1]}), got {tuple(mask.shape)}"
        )
    weights = mask.to(prediction.dtype)
    error = ((prediction - target).abs() * weights).sum()
    return error / (prediction.shape[1] * weights.expand(prediction.shape[0], -1, -1, -1).sum()).clamp(
        min=1.0
    )

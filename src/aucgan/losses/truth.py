"""Supervision from the synthetic world's true displacement (synthetic data only).

The true displacement is sparse: zero on most of the skin, folds of a few tenths of a millimetre to 2 mm
where AUs act. A median-seeking L1 is content to predict zero there; the mean-seeking L2 is not, and the
gradient term weighs what the normals (and so the shading and the normal error) see: the slopes of the
folds, not their depth alone.
"""

from __future__ import annotations

import torch


def _check(prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> None:
    if prediction.ndim != 4 or prediction.shape[1] != 1 or prediction.shape != truth.shape:
        raise ValueError(
            f"prediction and truth must be equal (B, 1, H, W), got {tuple(prediction.shape)} and "
            f"{tuple(truth.shape)}"
        )
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != prediction.shape[-2:]:
        raise ValueError(f"mask must be (B or 1, 1, H, W), got {tuple(mask.shape)}")


def displacement_error(
    prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, unit: float, kind: str = "l2"
) -> torch.Tensor:
    """``mean_mask ((z - z_true) / unit)^2`` (``kind="l2"``) or ``mean_mask |z - z_true| / unit`` (``"l1"``).

    Args:
        prediction, truth: ``(B, 1, H, W)`` displacement, model units.
        mask: ``(B or 1, 1, H, W)`` weights (the skin).
        unit: the displacement that counts as 1 (model units).
        kind: ``"l2"`` or ``"l1"``.
    """
    _check(prediction, truth, mask)
    error = (prediction - truth) / unit
    values = error.square() if kind == "l2" else error.abs() if kind == "l1" else None
    if values is None:
        raise ValueError(f"kind must be 'l2' or 'l1', got {kind!r}")
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def displacement_gradient_error(
    prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, unit: float
) -> torch.Tensor:
    """Mean squared error of the displacement's texel-to-texel differences, in ``unit`` per 1/32 of the UV
    square (so the same fold slope costs the same at every map size), over neighbour pairs both in ``mask``:
    ``mean ((Δ(z - z_true) * S / 32) / unit)^2`` over horizontal and vertical pairs.

    Shapes as :func:`displacement_error`.
    """
    _check(prediction, truth, mask)
    error = (prediction - truth) / unit * (prediction.shape[-1] / 32.0)
    weights = mask.to(error.dtype).expand_as(error)
    total, count = error.new_zeros(()), error.new_zeros(())
    for dim in (-1, -2):
        n = error.shape[dim]
        difference = error.narrow(dim, 1, n - 1) - error.narrow(dim, 0, n - 1)
        both = weights.narrow(dim, 1, n - 1) * weights.narrow(dim, 0, n - 1)
        total = total + (difference.square() * both).sum()
        count = count + both.sum()
    return total / count.clamp(min=1.0)


def change_error(
    change: torch.Tensor, true_change: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The error of an edit's displacement change against the world's, per face in units of that face's
    ``scale``: ``mean_b [ sum_mask (Δz - Δz_true)^2 / sum_mask s^2 ]`` over the faces whose ``scale`` is
    not zero on ``mask``.

    With ``scale`` the edited AU's whole fold (its wrinkle basis at intensity 1), a faint AU's edit counts
    as much as a deep one's, and a change outside the AU's folds (where ``Δz_true`` is 0) costs in the same
    units as a missing fold: what an edit's locality and gain measure, learnt directly.

    Args:
        change, true_change, scale: ``(B, 1, H, W)`` (the same units).
        mask: ``(B or 1, 1, H, W)`` weights (the skin).
    """
    _check(change, true_change, mask)
    if scale.shape != change.shape:
        raise ValueError(f"scale must be {tuple(change.shape)}, got {tuple(scale.shape)}")
    weights = mask.to(change.dtype).expand_as(change)
    error = ((change - true_change).square() * weights).flatten(1).sum(1)
    energy = (scale.square() * weights).flatten(1).sum(1)
    has_fold = energy > 0
    ratios = torch.where(has_fold, error / torch.where(has_fold, energy, 1.0), 0.0)
    return ratios.sum() / has_fold.sum().clamp(min=1)

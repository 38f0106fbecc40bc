"""Linear albedo models: ``uv_albedo = clamp(mean + Σ_k code_k · basis_k, 0, 1)``.

FLAME's albedo (``FLAME_albedo_from_BFM.npz``: ``MU``, ``PC``) has this form; for the built-in face,
:func:`fit_linear_albedo` builds one by principal component analysis of example albedo maps (the synthetic
world's training identities), scaled so that the codes of the examples have unit variance.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearAlbedo(nn.Module):
    """A linear UV albedo model; ``mean`` and ``basis`` are buffers (saved with a stage's weights unless
    ``persistent`` is False).

    Args:
        mean: ``(3, S, S)`` mean albedo in [0, 1].
        basis: ``(K, 3, S, S)`` components, one per code entry.
        persistent: whether the buffers enter the ``state_dict``; False for data whose licence forbids
            redistribution with the project's weights (FLAME's albedo models), which are read from the
            user's file instead.

    Shape:
        ``code (B, K)`` → ``(B, 3, S, S)`` albedo in [0, 1].
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, persistent: bool = True) -> None:
        super().__init__()
        if mean.ndim != 3 or mean.shape[0] != 3 or basis.ndim != 4 or basis.shape[1:] != mean.shape:
            raise ValueError(
                f"mean must be (3, S, S) and basis (K, 3, S, S) of the same S; got {tuple(mean.shape)}, "
                f"{tuple(basis.shape)}"
            )
        self.register_buffer("mean", mean.clone(), persistent=persistent)
        self.register_buffer("basis", basis.clone(), persistent=persistent)

    @property
    def n_albedo(self) -> int:
        return self.basis.shape[0]

    @property
    def size(self) -> int:
        return self.mean.shape[-1]

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        if code.ndim != 2 or code.shape[1] != self.n_albedo:
            raise ValueError(f"albedo code must be (B, {self.n_albedo}), got {tuple(code.shape)}")
        maps = self.mean + torch.einsum("bk,kchw->bchw", code.to(self.basis.dtype), self.basis)
        return maps.clamp(0.0, 1.0)

    def project(self, albedo: torch.Tensor) -> torch.Tensor:
        """Least-squares code ``(B, K)`` of albedo maps ``(B, 3, S, S)`` (before clamping)."""
        if albedo.ndim != 4 or albedo.shape[1:] != self.mean.shape:
            raise ValueError(
                f"albedo must be (B, {', '.join(map(str, self.mean.shape))}), got {tuple(albedo.shape)}"
            )
        flat_basis = self.basis.flatten(1)
        residual = (albedo - self.mean).flatten(1).to(flat_basis.dtype)
        gram = flat_basis @ flat_basis.T
        return torch.linalg.solve(gram, flat_basis @ residual.T).T


def fit_linear_albedo(maps: torch.Tensor, n_components: int) -> LinearAlbedo:
    """PCA of example albedo maps ``(N, 3, S, S)``: the mean and the first ``n_components`` principal
    directions, each scaled by its standard deviation over the examples (so example codes have unit
    variance per component). Needs ``N > n_components``."""
    if maps.ndim != 4 or maps.shape[1] != 3:
        raise ValueError(f"maps must be (N, 3, S, S), got {tuple(maps.shape)}")
    count = maps.shape[0]
    if not 0 < n_components < count:
        raise ValueError(f"need more examples ({count}) than components ({n_components})")
    flat = maps.flatten(1).double()
    mean = flat.mean(0)
    _, singular, directions = torch.linalg.svd(flat - mean, full_matrices=False)
    std = singular[:n_components] / (count - 1) ** 0.5
    basis = directions[:n_components] * std[:, None]
    return LinearAlbedo(
        mean.reshape(maps.shape[1:]).float(), basis.reshape(n_components, *maps.shape[1:]).float()
    )

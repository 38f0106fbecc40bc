"""FLAME's albedo models (DECA's FLAMETex) as a :class:`~aucgan.face_model.albedo.LinearAlbedo`.

Two published files (user-supplied, never downloaded) hold the same kind of model, a mean texture and
principal components over a square texture in FLAME's UV layout (DECA's ``head_template.obj``):

* ``FLAME_albedo_from_BFM.npz`` (the BFM_to_FLAME conversion): key ``MU``, the mean, ``S·S·3`` values in
  [0, 1]; key ``PC``, the components, ``S·S·3`` rows by ``K`` columns (K = 199);
* the FLAME texture space (``FLAME_texture.npz``): key ``mean`` with ``S·S·3`` values in [0, 255]; key
  ``tex_dir`` with ``S·S·3`` rows by ``K`` columns (K = 200), in the same 0..255 scale.

In both, the values of a texture are laid out row-major as ``(S, S, 3)`` (S = 512), row 0 at the top of the
texture image (v = 1, the OBJ convention the UV template uses), colours in B, G, R order; the arrays may be
stored flat or already shaped, as long as the components are the last axis. The first ``n_albedo``
components are kept (DECA: 50), the colours turned to R, G, B, values scaled to [0, 1], and the maps
resampled to the working UV size: an area average when shrinking (512² → 256²), bilinear when enlarging.
Resampling is linear, so resampling the mean and each component equals resampling every texture.

Files are read with ``np.load(allow_pickle=False)``: nothing in them can run code. The albedo model's
buffers are non-persistent: like FLAME's geometry, the texture model never enters aucgan's weight files.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aucgan.face_model.albedo import LinearAlbedo
from aucgan.loaders.common import CheckpointError

ALBEDO_LAYOUTS: dict[str, tuple[str, float]] = {"MU": ("PC", 1.0), "mean": ("tex_dir", 1.0 / 255.0)}
"""Mean key → (components key, scale to [0, 1]) of the two published albedo files."""

_WHAT = "FLAME albedo model"


def resample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Resample square maps ``(N, C, S, S)`` to ``(N, C, size, size)``: area average when shrinking,
    bilinear (``align_corners=False``) when enlarging, unchanged when ``size == S``."""
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (N, C, S, S), got {tuple(maps.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if maps.shape[-1] == size:
        return maps
    if maps.shape[-1] > size:
        return F.interpolate(maps, size=(size, size), mode="area")
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def _array(data: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        array = data[key]
    except ValueError:
        raise CheckpointError(
            f"{source}: key '{key}' holds pickled objects, not numbers; not loaded"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{source}: key '{key}' is unreadable ({error}); download the file again"
        ) from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CheckpointError(f"{source}: key '{key}' holds {array.dtype} values, not numbers")
    return array


def read_flame_albedo(path: str | os.PathLike[str], n_albedo: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Read the mean and the first ``n_albedo`` components of a FLAME albedo file, in R, G, B and [0, 1].

    Args:
        path: ``FLAME_albedo_from_BFM.npz`` (``MU``, ``PC``) or the FLAME texture space (``mean``,
            ``tex_dir``).
        n_albedo: components kept.

    Returns:
        ``mean (3, S, S)`` and ``basis (n_albedo, 3, S, S)``, float32, row 0 at v = 1.

    Raises:
        ValueError: ``n_albedo`` < 1.
        CheckpointError: one line naming the file (and the key at fault): missing, not an ``.npz``,
            pickled content, neither key pair, sizes that are not ``S·S·3`` (by ``K``), fewer than
            ``n_albedo`` components, non-finite values, a mean outside [0, 1] after scaling.
    """
    if n_albedo < 1:
        raise ValueError(f"n_albedo must be positive, got {n_albedo}")
    path = Path(path)
    source = f"{path}: {_WHAT}"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file ({_WHAT})")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head.startswith((b"PK", b"\x93NUMPY")):
        looks = (
            "an HTML page (a download that saved a web page?)" if b"<" in head[:16] else "not an .npz file"
        )
        raise CheckpointError(f"{source}: not a readable .npz file: {looks}")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError:
        raise CheckpointError(f"{source}: holds pickled objects, not an .npz of arrays; not loaded") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{source}: not a readable .npz file ({first})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(
            f"{source}: a single .npy array, expected an .npz with keys MU, PC or mean, tex_dir"
        )
    with data:
        keys = list(data.files)
        layout = next((mean_key for mean_key in ALBEDO_LAYOUTS if mean_key in keys), None)
        if layout is None:
            shown = ", ".join(keys[:8]) or "none"
            raise CheckpointError(
                f"{source}: expected keys MU and PC (FLAME_albedo_from_BFM.npz) or mean and tex_dir "
                f"(FLAME texture space); found {shown}"
            )
        basis_key, scale = ALBEDO_LAYOUTS[layout]
        if basis_key not in keys:
            raise CheckpointError(f"{source}: missing key '{basis_key}' (beside '{layout}')")
        mean = _array(data, layout, source)
        n_values = mean.size
        side = math.isqrt(n_values // 3) if n_values >= 3 else 0
        if side < 1 or side * side * 3 != n_values:
            raise CheckpointError(
                f"{source}: key '{layout}' has shape {tuple(mean.shape)} ({n_values} values), expected "
                "S x S x 3 values of a square RGB texture"
            )
        components = _array(data, basis_key, source)
    n_components = components.shape[-1] if components.ndim else 0
    if components.ndim < 2 or components.size != n_values * n_components:
        raise CheckpointError(
            f"{source}: key '{basis_key}' has shape {tuple(components.shape)}, expected ({n_values}, K): "
            f"{side} x {side} x 3 rows, components last"
        )
    if n_albedo > n_components:
        raise CheckpointError(
            f"{source}: key '{basis_key}' holds {n_components} components, model.n_albedo asks for {n_albedo}"
        )
    mean_rgb = (mean.reshape(side, side, 3)[..., ::-1].astype(np.float64) * scale).astype(np.float32)
    basis = components.reshape(side, side, 3, n_components)[:, :, ::-1, :n_albedo]
    basis_rgb = (basis.astype(np.float64) * scale).astype(np.float32)
    del components
    for key, values in ((layout, mean_rgb), (basis_key, basis_rgb)):
        if not np.all(np.isfinite(values)):
            raise CheckpointError(f"{source}: key '{key}' holds non-finite values")
    low, high = float(mean_rgb.min()), float(mean_rgb.max())
    if low < -0.5 or high > 1.5:
        raise CheckpointError(
            f"{source}: key '{layout}' spans [{low:.3g}, {high:.3g}] after scaling, expected albedo in "
            f"[0, 1] ({'MU in [0, 1]' if layout == 'MU' else 'mean in [0, 255]'})"
        )
    return (
        np.ascontiguousarray(mean_rgb.transpose(2, 0, 1)),
        np.ascontiguousarray(basis_rgb.transpose(3, 2, 0, 1)),
    )


def load_flame_albedo(path: str | os.PathLike[str], n_albedo: int = 50, size: int = 256) -> LinearAlbedo:
    """DECA's FLAMETex as a :class:`~aucgan.face_model.albedo.LinearAlbedo` of ``size``² maps.

    Args:
        path: ``FLAME_albedo_from_BFM.npz`` or the FLAME texture space ``.npz``.
        n_albedo: components kept (DECA: 50); the albedo code is ``(B, n_albedo)``.
        size: side of the UV maps (``render.uv_size``).

    Returns:
        ``LinearAlbedo`` with non-persistent buffers ``mean (3, size, size)``, ``basis (n_albedo, 3,
        size, size)``; ``albedo(code)`` is ``clamp(mean + Σ code_k basis_k, 0, 1)``, R, G, B.

    Raises:
        CheckpointError: see :func:`read_flame_albedo`.
    """
    mean, basis = read_flame_albedo(path, n_albedo)
    maps = resample_maps(torch.from_numpy(np.concatenate([mean[None], basis])), size)
    return LinearAlbedo(maps[0], maps[1:], persistent=False)


__all__ = ["ALBEDO_LAYOUTS", "load_flame_albedo", "read_flame_albedo", "resample_maps"]

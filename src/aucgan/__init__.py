"""aucgan: detailed 3D face reconstruction from one image, with wrinkles driven by facial Action Units."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# Public entry points, imported on first use so that `import aucgan` (and `aucgan --version`) stay light.
_LAZY = {
    "load_deca": "aucgan.loaders.deca",
    "load_emoca": "aucgan.loaders.deca",
    "load_au_net": "aucgan.loaders.opengraphau",
    "load_flame": "aucgan.face_model.flame",
    "Reconstructor": "aucgan.reconstruct",
    "Reconstruction": "aucgan.reconstruct",
    "load_faces": "aucgan.reconstruct",
    "write_face": "aucgan.reconstruct",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aucgan' has no attribute {name!r}")

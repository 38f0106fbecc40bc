"""Fixtures shared by the reconstruction-pipeline tests (weights files, reconstruct, evaluate, CLI).

All of them are session-scoped and built once: a :class:`~aucgan.reconstruct.Reconstructor` of the tiny
config with random weights (no checkpoint needed), its weights file, and a folder of awkward inputs derived
from matplotlib's sample photo.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from aucgan.build import coarse_stage, detail_stage
from aucgan.config import Config, load_config, preset_path
from aucgan.nets.au_net import MEFARG
from aucgan.reconstruct import Reconstructor
from aucgan.weights import save_weights

TINY_CONFIG = preset_path("synthetic-tiny")
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
PROVENANCE = "random weights, seed 0, built by the test suite"


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return load_config(Config, TINY_CONFIG)


@pytest.fixture(scope="session")
def random_reconstructor(tiny_config: Config) -> Reconstructor:
    """The tiny config's stages with random weights (seed 0), without any checkpoint."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        coarse = coarse_stage(tiny_config)
        au = MEFARG(tiny_config.model.au_backbone, tiny_config.model.au_stage)
        detail = detail_stage(tiny_config, coarse.uv_space, au, coarse.face_model.n_expression)
    return Reconstructor(coarse, detail, tiny_config, "random")


@pytest.fixture(scope="session")
def random_weights(random_reconstructor: Reconstructor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float16 weights file of :func:`random_reconstructor`."""
    rec = random_reconstructor
    return save_weights(
        tmp_path_factory.mktemp("weights") / "w.safetensors",
        {"coarse": rec.coarse, "detail": rec.detail},
        rec.cfg,
        provenance=PROVENANCE,
    )


@pytest.fixture(scope="session")
def real_photos() -> dict[str, Path]:
    """The two public real photos the MediaPipe backend is tested on: matplotlib's ``grace_hopper.jpg`` and
    scikit-image's ``astronaut.png`` (both in pip packages of the test install)."""
    skimage = pytest.importorskip("skimage", reason="scikit-image (the test extra) holds astronaut.png")
    astronaut = Path(skimage.__file__).parent / "data" / "astronaut.png"
    for path in (PHOTO, astronaut):
        if not path.is_file():
            pytest.skip(f"{path} is not installed here")
    return {"grace_hopper": PHOTO, "astronaut": astronaut}


@pytest.fixture(scope="session")
def mediapipe_installed() -> None:
    """Skip unless the optional MediaPipe extra is installed (CI installs it)."""
    pytest.importorskip("mediapipe", reason="the mediapipe extra: pip install -e '.[mediapipe]'")


@pytest.fixture(scope="session")
def photo_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six files: the photo as RGB, grayscale and CMYK JPEG and as RGBA PNG with a partly transparent
    alpha (stems ``photo``, ``grey``, ``cmyk``, ``alpha``), a truncated JPEG (``broken.jpg``) and a text file
    (``notes.txt``)."""
    if not PHOTO.is_file():
        pytest.skip(f"matplotlib ships no {PHOTO.name} here")
    folder = tmp_path_factory.mktemp("inputs")
    with Image.open(PHOTO) as opened:
        photo = opened.convert("RGB")
    photo.save(folder / "photo.jpg", quality=95)
    photo.convert("L").save(folder / "grey.jpg", quality=95)
    photo.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    rgba = np.array(photo.convert("RGBA"))
    rgba[:, : rgba.shape[1] // 4, 3] = 96
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    (folder / "broken.jpg").write_bytes(PHOTO.read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return folder

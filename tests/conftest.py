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


FACE_IN_PHOTO = {"grace_hopper": (264.0, 232.0, 202.0), "astronaut": (225.0, 123.5, 103.0)}
"""Centre x, y and height in pixels of the face in each of :func:`real_photos` (the box of the 468 landmarks
MediaPipe's face mesh finds on the whole photo)."""


@pytest.fixture(scope="session")
def paste_faces(real_photos: dict[str, Path]):
    """``paste_faces(faces, width=1280, height=886)`` → a wide scene ``(height, width, 3)`` uint8 and the box
    ``(x0, y0, x1, y1)`` of each face in it (pixels, its height square around its centre).

    ``faces`` are ``(photo, face height px, centre x, centre y, mirrored)``, ``photo`` a key of
    :func:`real_photos`: each face is cut from its photo with a disc of its height's diameter twice over
    (hair and shoulders included), rescaled, mirrored if asked, and feathered onto a background of smooth
    colour noise under a left-right and top-bottom gradient.
    """
    photos = {}
    for name, path in real_photos.items():
        with Image.open(path) as opened:
            photos[name] = opened.convert("RGB")

    def paste(faces, width: int = 1280, height: int = 886) -> tuple[np.ndarray, list[tuple[float, ...]]]:
        rng = np.random.default_rng(0)
        noise = Image.fromarray((rng.random((12, 18, 3)) * 255).astype(np.uint8))
        rows, cols = np.mgrid[0:height, 0:width]
        scene = (
            0.35 * np.asarray(noise.resize((width, height), Image.Resampling.BICUBIC), np.float64)
            + 90.0 + 50.0 * (cols / width)[..., None] + 30.0 * (rows / height)[..., None]
            + rng.normal(0.0, 4.0, (height, width, 3))
        )  # fmt: skip
        boxes = []
        for name, face_height, centre_x, centre_y, mirrored in faces:
            source_x, source_y, source_height = FACE_IN_PHOTO[name]
            reach = source_height  # half the cut's side: the cut is twice the face's height across
            side = round(2 * face_height)
            window = (source_x - reach, source_y - reach, source_x + reach, source_y + reach)
            cut = np.asarray(
                photos[name].resize((side, side), Image.Resampling.LANCZOS, box=window), np.float64
            )
            if mirrored:
                cut = cut[:, ::-1]
            radius = np.hypot(*(np.mgrid[0:side, 0:side] - (side - 1) / 2.0)) / (side / 2.0)
            alpha = np.clip((1.0 - radius) / 0.25, 0.0, 1.0)[..., None]
            x0, y0 = round(centre_x - side / 2), round(centre_y - side / 2)
            region = scene[y0 : y0 + side, x0 : x0 + side]
            scene[y0 : y0 + side, x0 : x0 + side] = alpha * cut + (1.0 - alpha) * region
            half = face_height / 2.0
            boxes.append((centre_x - half, centre_y - half, centre_x + half, centre_y + half))
        return np.clip(scene, 0, 255).round().astype(np.uint8), boxes

    return paste


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

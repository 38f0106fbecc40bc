"""Real face photos for ``aucgan train detail``: a folder, list or video → cached coarse fits → samples.

With ``coarse.backend=mediapipe`` a training source that is not a dataset written by ``aucgan synth`` is read
as photos (:func:`aucgan.data.images.collect_inputs`: an image, a folder, a ``.txt`` list or a video). Each
photo's largest face is one identity; its K images (``synth.images_per_identity``, DECA's K for the
detail-consistency loss) are the photo itself and K - 1 augmented copies of it (flip, rotation, brightness,
contrast and saturation within ``augment.*``; the copies are scaled and shifted too, but framing each copy
from its own landmarks undoes that; with ``augment.enabled=false`` the K images are the photo itself), each
found and fitted again by MediaPipe and
:class:`~aucgan.stages.landmark_fit.LandmarkCoarse` so that its coarse fit matches its pixels. Fits are
computed once and cached in one ``.npz`` (no pickle) keyed by the files (path, size, modification time) and
the settings; a changed folder or setting refits.

For self-distillation (``loss.refined_target`` or ``loss.refined_gradient`` above 0) the cache also holds each
image's *refined displacement*: :func:`~aucgan.stages.refine.refine_faces` of its cached fit and crop, started
from flat (zeros: the network being trained must not be its own teacher), at the coarse stage's UV size. Its
own key (:meth:`RealSettings.refined_key`: the fits' key, the ``refine.*`` settings and the UV size) says
whether the cached targets are current; changed refine settings refine again without refitting. The
refinement is resumable: each batch is saved beside the cache as it is done (a ``.refined-parts`` folder,
removed once the cache holds all of them), so an interrupted run refines only what is left.

A split holds whole sources: with 10 or more faces, the faces of the files whose path hashes to 9 (mod 10)
are validation ones (all frames of a video stay on one side); with fewer there is no held-out face and
validation reuses the training faces (said in the log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.data import Dataset

from aucgan.atomic import atomic_open, atomic_save_npz
from aucgan.config import AugmentConfig, CoarseConfig, RefineConfig
from aucgan.data.images import InputError, InputItem, collect_inputs, faces_from_landmarks, load_image
from aucgan.data.shards import DatasetError
from aucgan.data.synthetic import stable_seed
from aucgan.nets.coarse_encoder import CODE_NAMES, CoarseCodes

log = logging.getLogger(__name__)

CACHE_VERSION = 2
FIT_BATCH = 16
"""Faces fitted together."""
REFINED_VERSION = 1
REFINE_BATCH = 8
"""Faces refined together (for the refined targets)."""


@dataclass(frozen=True)
class RealSample:
    """One real face image and its coarse fit (or a batch: every field then gains a leading ``B``).

    Attributes:
        index: item index in the split. identity: identity index (a face of one photo).
        image: ``(3, H, W)`` in [0, 1].
        landmarks: ``(468, 3)`` MediaPipe's landmarks, NDC.
        shape, albedo, expression, pose, camera: the fitted codes; light ``(9, 3)`` SH.
        refined_displacement: ``(1, S, S)`` the image's refined displacement (face-model units, 0 off the
            skin), the target of self-distillation; ``(0,)`` when the cache holds no refined targets.
    """

    index: torch.Tensor
    identity: torch.Tensor
    image: torch.Tensor
    landmarks: torch.Tensor
    shape: torch.Tensor
    albedo: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    camera: torch.Tensor
    light: torch.Tensor
    refined_displacement: torch.Tensor

    uv_albedo = None
    """No albedo map: the coarse stage draws it from the fitted albedo code."""

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def coarse_codes(self, n_albedo: int) -> CoarseCodes:
        """The fitted coarse codes of a batch."""
        if self.albedo.shape[-1] != n_albedo:
            raise ValueError(
                f"the cached fits have {self.albedo.shape[-1]} albedo components, not {n_albedo}"
            )
        return CoarseCodes(**{name: getattr(self, name) for name in CODE_NAMES})


@dataclass(frozen=True)
class RealSettings:
    """What a real-photo dataset depends on (all of it enters the cache key).

    Attributes:
        source: the photos (image, folder, list file or video).
        cache: the ``.npz`` file of the fits.
        image_size: side of the crops.
        images_per_identity: K.
        coarse: MediaPipe and fit settings.
        augment: ranges of the augmented copies.
        seed: seeds the augmentations.
        model: what the fits depend on besides these (face model, albedo model, UV size), as text.
        every: video: every N-th frame.
        refine: the refinement of the refined targets (``refine.*``), or ``None``: no refined targets.
    """

    source: str
    cache: Path
    image_size: int
    images_per_identity: int
    coarse: CoarseConfig
    augment: AugmentConfig
    seed: int
    model: str = ""
    every: int = 1
    refine: RefineConfig | None = None

    def key(self, items: list[InputItem]) -> str:
        files = sorted({str(item.path) for item in items})
        stats = [(name, Path(name).stat().st_size, Path(name).stat().st_mtime_ns) for name in files]
        frames = [(item.name, item.frame) for item in items]
        payload = {
            "version": CACHE_VERSION,
            "files": stats,
            "frames": frames,
            "size": self.image_size,
            "k": self.images_per_identity,
            "coarse": vars(self.coarse),
            "augment": vars(self.augment),
            "seed": self.seed,
            "model": self.model,
        }
        return _digest(payload)

    def refined_key(self, fits_key: str, uv_size: int) -> str:
        """The key of the refined targets of the fits with key ``fits_key`` (:meth:`key`) at ``uv_size``:
        it changes with any ``refine.*`` setting of the displacement fit that makes them, not with the coarse
        and AU fits' (:data:`~aucgan.stages.refine.BEFORE_DISPLACEMENT`: targets are refined from flat on
        the cached fits, without a network). ``ValueError`` when :attr:`refine` is ``None``."""
        from aucgan.stages.refine import BEFORE_DISPLACEMENT

        if self.refine is None:
            raise ValueError("these settings ask for no refined targets (refine is None)")
        payload = {
            "version": REFINED_VERSION,
            "fits": fits_key,
            "uv_size": uv_size,
            "start": "flat",
            "refine": {
                name: value for name, value in vars(self.refine).items() if name not in BEFORE_DISPLACEMENT
            },
        }
        return _digest(payload)


def augmented_copy(image: np.ndarray, augment: AugmentConfig, seed: int) -> np.ndarray:
    """A random flip, rotation (± ``augment.rotation_degrees``), scale, shift and brightness / contrast /
    saturation change of ``image (H, W, 3)`` uint8 (edges repeat into uncovered corners)."""
    rng = np.random.default_rng(seed)
    picture = Image.fromarray(image)
    if rng.random() < 0.5:
        picture = ImageOps.mirror(picture)
    width, height = picture.size
    angle = rng.uniform(-augment.rotation_degrees, augment.rotation_degrees)
    scale = rng.uniform(*augment.scale)
    shift = rng.uniform(-augment.translate, augment.translate, size=2) * np.array([width, height])
    # PIL's affine maps each output pixel to the input pixel it shows: p ↦ C + M⁻¹ (p - C - t), with
    # M = scale · rotation(angle) about the centre C; the input is padded by repeating its edges.
    a = math.cos(math.radians(angle)) / scale
    b = math.sin(math.radians(angle)) / scale
    cx, cy = width / 2.0, height / 2.0
    pad = max(width, height) // 2
    c = cx - a * (cx + shift[0]) - b * (cy + shift[1]) + pad
    f = cy + b * (cx + shift[0]) - a * (cy + shift[1]) + pad
    edges = Image.fromarray(np.pad(np.asarray(picture), ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    picture = edges.transform(
        (width, height), Image.Transform.AFFINE, (a, b, c, -b, a, f), resample=Image.Resampling.BILINEAR
    )
    for enhance, strength in (
        (ImageEnhance.Brightness, augment.brightness),
        (ImageEnhance.Contrast, augment.contrast),
        (ImageEnhance.Color, augment.saturation),
    ):
        picture = enhance(picture).enhance(1.0 + rng.uniform(-strength, strength))
    return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def _largest_face(item: InputItem, image: np.ndarray, settings: RealSettings, detector) -> tuple | None:
    faces = faces_from_landmarks(item, image, settings.image_size, detector)
    face = faces[0] if faces else None
    return None if face is None else (face.image, face.landmarks)


def _digest(payload: dict) -> str:
    """A cache key: the SHA-256 of ``payload`` as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cached_keys(cache: Path) -> tuple[str, str]:
    """``(fits key, refined key)`` of the cache at ``cache``; ``""`` for what it lacks or cannot read."""
    if not cache.is_file():
        return "", ""
    try:
        with np.load(cache, allow_pickle=False) as data:
            keys = [str(data[name]) if name in data.files else "" for name in ("key", "refined_key")]
    except (OSError, ValueError):
        return "", ""
    return keys[0], keys[1]


def build_real_cache(settings: RealSettings, stage) -> Path:
    """Find, crop and fit every photo of ``settings.source`` (the largest face of each) and its augmented
    copies; write the cache unless one with the same key is there. With ``settings.refine``, also refine
    every cached image from flat (:func:`refine_targets`) unless the cache holds current refined targets.
    ``stage`` is the built-in face's coarse stage (:class:`~aucgan.stages.coarse.CoarseStage`).

    Raises:
        DatasetError: the source holds no readable photo with a face (one line).
        ConfigError: MediaPipe is not installed, or the face model is not the built-in one.
    """
    try:
        items = collect_inputs(settings.source, settings.every)
    except InputError as error:
        raise DatasetError(str(error)) from None
    key = settings.key(items)
    cached_key, cached_refined = _cached_keys(settings.cache)
    refined_key = "" if settings.refine is None else settings.refined_key(key, stage.uv_space.size)
    if cached_key == key and (not refined_key or cached_refined == refined_key):
        return settings.cache
    if cached_key == key:
        with np.load(settings.cache, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    else:
        arrays = _fit_faces(settings, stage, items, key)
        atomic_save_npz(settings.cache, arrays)
    if settings.refine is not None:
        arrays["refined"] = refine_targets(settings, stage, arrays, refined_key)
        arrays["refined_key"] = np.array(refined_key)
        atomic_save_npz(settings.cache, arrays)
        shutil.rmtree(_parts_folder(settings.cache), ignore_errors=True)
        log.info(
            "refined the detail of %d images from flat; cached in %s", len(arrays["images"]), settings.cache
        )
    return settings.cache


def _fit_faces(settings: RealSettings, stage, items: list[InputItem], key: str) -> dict[str, np.ndarray]:
    """The arrays of the cache (without refined targets) of ``items``: see :func:`build_real_cache`."""
    from tqdm import tqdm

    from aucgan.stages.landmark_fit import landmarks_to_ndc, mediapipe_backend

    fitter, detector = mediapipe_backend(stage, settings.coarse)
    crops: list[np.ndarray] = []
    landmarks: list[torch.Tensor] = []
    names: list[str] = []
    sources: list[str] = []
    problems: list[str] = []
    k_views = settings.images_per_identity
    for item in tqdm(items, desc="find and frame faces", unit="photo", disable=len(items) < 4):
        try:
            image = load_image(item.path, item.frame)
            first = _largest_face(item, image, settings, detector)
        except InputError as error:
            problems.append(str(error))
            continue
        views = [first]
        for k in range(1, k_views if settings.augment.enabled else 1):
            view = None
            for attempt in range(3):
                seed = stable_seed("aucgan-real-augment", settings.seed, item.name, k, attempt)
                try:
                    view = _largest_face(
                        item, augmented_copy(image, settings.augment, seed), settings, detector
                    )
                except InputError:
                    view = None
                if view is not None:
                    break
            views.append(view or first)
        views += [first] * (k_views - len(views))
        for crop, points in views:
            crops.append(crop)
            landmarks.append(landmarks_to_ndc(torch.from_numpy(points), settings.image_size).float())
        names.append(item.name)
        sources.append(str(item.path))
    for problem in problems:
        log.warning("skipped: %s", problem)
    if not names:
        raise DatasetError(
            f"{settings.source}: no photo with a face MediaPipe can find"
            + (f" ({problems[0]})" if problems else "")
        )
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    points = torch.stack(landmarks)
    codes = []
    for start in tqdm(range(0, len(images), FIT_BATCH), desc="fit faces", disable=len(images) <= FIT_BATCH):
        coarse, _ = fitter(images[start : start + FIT_BATCH], points[start : start + FIT_BATCH])
        codes.append(coarse.codes)
    arrays = {name: torch.cat([getattr(c, name) for c in codes]).numpy() for name in CODE_NAMES}
    log.info("fitted %d faces x %d views; cached in %s", len(names), k_views, settings.cache)
    return {
        "key": np.array(key),
        "images": np.stack(crops),
        "landmarks": points.numpy(),
        "names": np.array(names),
        "sources": np.array(sources),
        **arrays,
    }


def _parts_folder(cache: Path) -> Path:
    return cache.with_name(cache.name + ".refined-parts")


def _refine_rows(stage, arrays: dict[str, np.ndarray], rows: slice, refine: RefineConfig, progress):
    """:func:`~aucgan.stages.refine.refine_faces` of the cached images ``rows``, from flat (with autograd on,
    whatever the caller's mode: the refinement optimises)."""
    from aucgan.stages.refine import refine_faces

    with torch.inference_mode(False), torch.enable_grad():
        images = torch.from_numpy(arrays["images"][rows]).permute(0, 3, 1, 2).float() / 255
        codes = CoarseCodes(**{name: torch.from_numpy(arrays[name][rows]).float() for name in CODE_NAMES})
        with torch.no_grad():
            coarse = stage.decode(codes)
        size = stage.uv_space.size
        flat = images.new_zeros(images.shape[0], 1, size, size)
        return refine_faces(stage, coarse, images, flat, refine, progress)


def refine_targets(settings: RealSettings, stage, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    """``(N, 1, S, S)`` float16: the refined displacement of each cached image (``arrays``: the cache's
    crops and fitted codes), :func:`~aucgan.stages.refine.refine_faces` of its crop through its fit's coarse
    output (``stage.decode``), from flat, with ``settings.refine``, at ``stage``'s UV size; ``key`` is
    :meth:`RealSettings.refined_key`. Batches of :data:`REFINE_BATCH` are saved in the cache's
    ``.refined-parts`` folder as they are done, and batches already there under ``key`` are reused (other
    keys' parts are deleted)."""
    from tqdm import tqdm

    if settings.refine is None:
        raise ValueError("these settings ask for no refined targets (refine is None)")
    parts = _parts_folder(settings.cache)
    parts.mkdir(parents=True, exist_ok=True)
    prefix = key[:16]
    for stale in parts.glob("*.npy"):
        if not stale.name.startswith(prefix):
            stale.unlink()
    count, size = len(arrays["images"]), stage.uv_space.size
    steps = settings.refine.steps
    targets = []
    with tqdm(
        total=count * steps, desc="refine detail targets", unit="face-step", disable=count * steps < 100
    ) as bar:
        for start in range(0, count, REFINE_BATCH):
            rows = slice(start, min(start + REFINE_BATCH, count))
            n = rows.stop - rows.start
            part = parts / f"{prefix}-{start:07d}.npy"
            target = None
            if part.is_file():
                try:
                    target = np.load(part, allow_pickle=False)
                except (OSError, ValueError):
                    target = None
                if target is not None and target.shape != (n, 1, size, size):
                    target = None
            if target is None:
                refined = _refine_rows(stage, arrays, rows, settings.refine, lambda _, n=n: bar.update(n))
                target = refined.uv_displacement.cpu().numpy().astype(np.float16)
                with atomic_open(part, binary=True) as handle:
                    np.save(handle, target)
            else:
                bar.update(n * steps)
            targets.append(target)
    return np.concatenate(targets)


def split_identities(sources: list[str], split: str) -> list[int]:
    """Identity indices of ``split`` (``"train"`` or ``"val"``) given each identity's source file: see the
    module docstring."""
    if split not in ("train", "val"):
        raise ValueError(f"real photos have train and val splits, not {split!r}")
    if len(sources) < 10:
        return list(range(len(sources)))
    held_out = [stable_seed("aucgan-real-split", source) % 10 == 9 for source in sources]
    if not any(held_out) or all(held_out):
        return list(range(len(sources)))
    return [i for i, out in enumerate(held_out) if out == (split == "val")]


class RealFaces(Dataset):
    """The cached real faces of one split, identity-major (item ``i`` is view ``i % K`` of the split's
    identity ``i // K``), read into memory from the cache of :func:`build_real_cache` (with its refined
    targets, when it holds them)."""

    def __init__(self, cache: Path, split: str, images_per_identity: int) -> None:
        try:
            with np.load(cache, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as error:
            raise DatasetError(f"{cache}: unreadable real-face cache ({error}); delete it to refit") from None
        names = [str(name) for name in arrays["names"]]
        sources = [str(source) for source in arrays.get("sources", arrays["names"])]
        k = images_per_identity
        if len(arrays["images"]) != len(names) * k:
            raise DatasetError(f"{cache}: holds {len(arrays['images'])} images, not {len(names)} x K={k}")
        identities = split_identities(sources, split)
        if split == "val" and len(names) < 10:
            log.info("%d faces (< 10): validation reuses the training faces (no held-out face)", len(names))
        rows = [identity * k + view for identity in identities for view in range(k)]
        self.names = [names[i] for i in identities]
        self.identity = torch.tensor([identity for identity in identities for _ in range(k)])
        self.images = torch.from_numpy(arrays["images"][rows]).permute(0, 3, 1, 2).contiguous()
        self.codes = {
            name: torch.from_numpy(arrays[name][rows]).float() for name in ("landmarks", *CODE_NAMES)
        }
        self.refined = torch.from_numpy(arrays["refined"][rows]) if "refined" in arrays else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> RealSample:
        return RealSample(
            index=torch.tensor(index),
            identity=self.identity[index],
            image=self.images[index].float() / 255,
            **{name: values[index] for name, values in self.codes.items()},
            refined_displacement=torch.zeros(0) if self.refined is None else self.refined[index].float(),
        )


__all__ = [
    "RealFaces",
    "RealSample",
    "RealSettings",
    "augmented_copy",
    "build_real_cache",
    "refine_targets",
    "split_identities",
]

"""Reconstruction for users: images → coarse + detailed faces, written as meshes, maps and codes.

:class:`Reconstructor` runs the two stages (coarse fit, AU-conditioned detail) on a batch of face images
and edits AU intensities of a reconstruction; :func:`write_face` writes one face's folder;
:func:`reconstruct_inputs` does a whole batch job (an image, a folder, a video or a list file) in which one
bad file never stops the others and finished faces are skipped on a rerun; several processes or machines
share one such job by taking disjoint shards of its inputs (:mod:`aucgan.sharding`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from aucgan.atomic import atomic_save_npz
from aucgan.au import MAIN_AUS, SUB_AUS, au_index
from aucgan.build import coarse_stage, detail_stage, new_au_net
from aucgan.config import CoarseConfig, Config, ConfigError, RefineConfig, config_from_yaml
from aucgan.export import write_displacement, write_image, write_normal_map, write_obj
from aucgan.geometry.uv import dense_mesh
from aucgan.loaders.common import CheckpointError, read_checkpoint
from aucgan.nets.au_net import AUOutput
from aucgan.nets.coarse_encoder import CODE_NAMES, CoarseCodes
from aucgan.nets.detail_decoder import AUCondition
from aucgan.stages.coarse import CoarseOutput, CoarseStage
from aucgan.stages.detail import DetailOutput, DetailStage, UVEvidence, au_condition, read_photo
from aucgan.stages.landmark_fit import LandmarkCoarse, landmarks_to_ndc, mediapipe_backend, resolve_backend
from aucgan.stages.refine import Refinement, fit_coarse, fit_intensities, refine_faces
from aucgan.weights import PARTS, WeightsFile, detail_checkpoint_states, load_part, read_weights

if TYPE_CHECKING:
    from aucgan.data.face_mesh import FaceMeshDetector
    from aucgan.data.images import InputItem
    from aucgan.sharding import Shard

log = logging.getLogger(__name__)

SHIPPED_WEIGHTS = Path(__file__).parent / "pretrained" / "synthetic.safetensors"
"""Weights for the built-in synthetic world, shipped with aucgan (see ``pretrained/README.md``)."""

VIS_SIZE = 256
"""Side of each panel of ``vis.png`` (and of the input crop kept beside the outputs)."""

MICROMETRES_PER_UNIT = {"procedural": 1e4, "flame": 1e6}
"""Micrometres in one unit of each face model's geometry (``face_model.kind``): the built-in face is in
centimetres, FLAME in metres. Pictures of displacement state their scale in micrometres."""

COLOUR_BAR_WIDTH = 120
"""Width in pixels of the colour bar beside a picture of a signed map (as tall as the picture)."""

FACE_FILES = (
    "input.png",
    "coarse.obj",
    "coarse.mtl",
    "texture.png",
    "detail.obj",
    "detail.mtl",
    "normal_map.png",
    "displacement.png",
    "displacement.npy",
    "vis.png",
    "codes.npz",
)
"""Every file of a face folder; ``codes.npz`` is written last, so its presence marks a finished face."""


@dataclass(frozen=True)
class Reconstruction:
    """A batch of reconstructed faces.

    Attributes:
        images: ``(B, 3, H, W)`` the network's input in [0, 1].
        coarse: the coarse stage's output (codes, posed vertices, UV surface, albedo).
        au: the AU net on the input: ``scores (B, 41)``, ``features (B, 27, C)``.
        condition: what conditions the detail decoder (AU features and the 27 main intensities; an edit
            changes the intensities, and so does the refinement's fit of them to the photo).
        detail: displacement, detail normals, shading and texture in UV space.
        landmarks: ``(B, 468, 3)`` NDC, the dense landmarks the coarse fit used
            (``coarse.backend=mediapipe``); ``None`` with the coarse network.
        evidence: what the photo shows in UV space, for a detail decoder that reads it (``None`` for the
            others); an edit keeps it, as it keeps the photo.
        refinement: the photometric refinement that made ``detail`` (``refine.mode``), with its masks and
            residuals; ``None`` when the detail is the network's own, or was read back from a face folder.
        photo_detail: ``(B, 1, S, S)`` what the refinement added to the network's displacement (drawn
            for the AU intensities it fitted, which ``condition`` then holds): the face's own lines, which an
            edit keeps (adding the network's change) and a face folder stores; ``None`` without refinement.
    """

    images: torch.Tensor
    coarse: CoarseOutput
    au: AUOutput
    condition: AUCondition
    detail: DetailOutput
    landmarks: torch.Tensor | None = None
    evidence: UVEvidence | None = None
    refinement: Refinement | None = None
    photo_detail: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    def take(self, n: int) -> Reconstruction:
        """The first ``n`` faces."""
        return _zip_tensors(lambda tensors: tensors[0][:n], [self])

    @staticmethod
    def concatenate(reconstructions: Sequence[Reconstruction]) -> Reconstruction:
        """One reconstruction holding the faces of several, in order."""
        return _zip_tensors(torch.cat, list(reconstructions))


def _cloned(value: Any) -> Any:
    """``value`` (a dataclass of tensors) with every tensor cloned: usable by autograd outside inference
    mode."""
    return _zip_tensors(lambda tensors: tensors[0].clone(), [value])


def rig_intensities(expression: torch.Tensor) -> torch.Tensor:
    """``(B, 27)`` the AU intensities an AU-rig expression code ``(B, 27)`` (the built-in face's:
    :attr:`~aucgan.face_model.base.FaceModel.expression_is_au_rig`) stands for: the code in [0, 1]."""
    return expression.detach().clamp(0.0, 1.0)


def _zip_tensors(combine: Callable[[list[torch.Tensor]], torch.Tensor], values: list) -> Any:
    """Rebuild nested dataclasses of tensors, each tensor made by ``combine`` of the matching tensors."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return combine(values)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        return type(first)(
            **{
                f.name: _zip_tensors(combine, [getattr(v, f.name) for v in values])
                for f in dataclasses.fields(first)
            }
        )
    return first


def _config_from_mapping(data: Mapping, source: str) -> Config:
    try:
        return config_from_yaml(Config, yaml.safe_dump(dict(data), sort_keys=False), source)
    except ConfigError as error:
        raise CheckpointError(f"{source}: its stored config does not load: {error}") from None


class Reconstructor:
    """Coarse stage + detail stage (with its frozen AU net), ready for inference.

    Build one with :meth:`load` (a weights file of ``aucgan pack``, a checkpoint of ``aucgan train detail``,
    or by default the weights shipped for the synthetic world).

    Args:
        coarse: a coarse stage with an encoder.
        detail: a detail stage with its AU net.
        cfg: the config the stages were built from.
        source: where the weights came from (recorded in every output's ``codes.npz``).
        coarse_settings: how the coarse stage reads photos (default ``cfg.coarse``): with
            ``backend="mediapipe"`` the coarse codes come from fitting MediaPipe's landmarks instead of the
            encoder (needs the built-in face model and MediaPipe installed); ``backend="auto"`` is resolved
            for photos by :func:`~aucgan.stages.landmark_fit.resolve_backend` (``coarse_settings.backend``
            then holds the backend it chose).
        refine_settings: the photometric refinement of the detail (default ``cfg.refine``; its ``auto``
            mode refines photos read with MediaPipe).

    Attributes:
        backend_note: one line for the user when ``backend="auto"`` fell back to the coarse network for
            want of MediaPipe (what installing it brings); ``""`` otherwise.

    Raises:
        ConfigError: the mediapipe backend without MediaPipe installed, or with another face model.
    """

    def __init__(
        self,
        coarse: CoarseStage,
        detail: DetailStage,
        cfg: Config,
        source: str,
        channels_last: bool = True,
        coarse_settings: CoarseConfig | None = None,
        refine_settings: RefineConfig | None = None,
    ) -> None:
        settings = coarse_settings or cfg.coarse
        choice = resolve_backend(settings, cfg.face_model.kind, has_encoder=coarse.encoder is not None)
        self.coarse_settings = dataclasses.replace(settings, backend=choice.backend)
        self.backend_note = choice.note
        if coarse.encoder is None and self.coarse_settings.backend != "mediapipe":
            raise ValueError(
                f"{source}: has no coarse encoder (trained with coarse.backend=mediapipe); reconstruct with "
                "coarse.backend=mediapipe"
            )
        self.coarse = coarse.eval()
        self.detail = detail.eval()
        self.refine_settings: RefineConfig = refine_settings or cfg.refine
        self.cfg = dataclasses.replace(cfg, coarse=self.coarse_settings, refine=self.refine_settings)
        self.source = source
        self.channels_last = channels_last
        self.landmark_coarse: LandmarkCoarse | None = None
        self.detector: FaceMeshDetector | None = None
        if self.coarse_settings.backend == "mediapipe":
            self.landmark_coarse, self.detector = mediapipe_backend(self.coarse, self.coarse_settings)
        if channels_last:  # NHWC convolutions: about 18 % faster end to end on a CPU (docs/RESULTS.md)
            self.coarse.to(memory_format=torch.channels_last)
            self.detail.to(memory_format=torch.channels_last)

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        coarse_settings: CoarseConfig | None = None,
        backend: str | None = None,
        refine_settings: RefineConfig | None = None,
    ) -> Reconstructor:
        """Load a weights file (``.safetensors``), a ``aucgan train detail`` checkpoint, or (``None``) the
        shipped synthetic-world weights; ``coarse_settings`` choose the coarse backend (default: the
        weights' config, the coarse network), and ``backend`` (e.g. ``"auto"``), when given, replaces
        theirs; ``refine_settings`` replace the weights' ``refine`` section.

        Raises:
            CheckpointError: one line naming the file, if it is missing, unreadable or does not fit.
        """
        if weights is None:
            if not SHIPPED_WEIGHTS.is_file():
                raise CheckpointError(
                    f"{SHIPPED_WEIGHTS}: the shipped weights are missing from this install; reinstall aucgan "
                    "or pass a weights file (--weights) made with `aucgan pack`"
                )
            weights = SHIPPED_WEIGHTS
        path = Path(weights)
        if path.suffix.lower() == ".safetensors":
            packed = read_weights(path)
        else:
            packed = _weights_from_detail_checkpoint(path)
        return cls.from_weights(packed, str(path), device, coarse_settings, backend, refine_settings)

    @classmethod
    def from_weights(
        cls,
        packed: WeightsFile,
        source: str,
        device: str | torch.device = "cpu",
        coarse_settings: CoarseConfig | None = None,
        backend: str | None = None,
        refine_settings: RefineConfig | None = None,
    ) -> Reconstructor:
        cfg = packed.config
        if backend is not None:
            coarse_settings = dataclasses.replace(coarse_settings or cfg.coarse, backend=backend)
        # A detail stage trained on photos with coarse.backend=mediapipe comes without a coarse encoder.
        coarse = coarse_stage(cfg, with_encoder=cfg.coarse.backend == "network")
        load_part(coarse, packed, "coarse", source)
        au = new_au_net(cfg)
        detail = detail_stage(cfg, coarse.uv_space, au, coarse.face_model.n_expression)
        load_part(detail, packed, "detail", source)
        try:
            return cls(
                coarse.to(device),
                detail.to(device),
                cfg,
                source,
                coarse_settings=coarse_settings,
                refine_settings=refine_settings,
            )
        except ValueError as error:
            raise CheckpointError(str(error)) from None

    @classmethod
    def from_assets(
        cls, cfg: Config, device: str | torch.device = "cpu", source: str | None = None
    ) -> Reconstructor:
        """The FLAME setting (``face_model.kind=flame``) built from the user's files named in ``cfg.assets``.

        The coarse stage is FLAME + FLAMETex (``assets.flame_*``, ``head_template``, ``uv_face_mask``) with
        DECA's ``E_flame`` (``assets.deca``); the AU net is ``assets.au_net`` (OpenGraphAU's file or one of
        ``aucgan train au``). The detail stage is DECA's own ``E_detail`` + ``D_detail`` when
        ``model.detail_decoder`` is ``none``; otherwise it comes, with the coarse stage and AU net it was
        trained with, from ``assets.detail``, a checkpoint of ``aucgan train detail`` for this face model.

        Args:
            cfg: a config with ``face_model.kind=flame``.
            device: where the stages run.
            source: what to record as the weights' origin in every ``codes.npz`` (default: the files).

        Raises:
            ConfigError: wrong face model, an asset not set or not found, or settings that contradict
                DECA's networks (``model.max_z`` must be DECA's 0.01 with its decoder).
            CheckpointError: a file that does not load (one line naming it).
        """
        from aucgan.build import (
            DECA_MAX_Z,
            FLAME_ASSETS,
            deca_detail_stage,
            deca_weights,
            flame_coarse_stage,
            flame_encoder,
            require_assets,
        )
        from aucgan.loaders.opengraphau import load_au_net
        from aucgan.weights import load_part

        if cfg.face_model.kind != "flame":
            raise ConfigError(
                "Reconstructor.from_assets builds the FLAME setting, but "
                f"face_model.kind={cfg.face_model.kind}; the built-in face's models load with "
                "Reconstructor.load (--weights)"
            )
        detail_assets = ("deca", "au_net") if cfg.model.detail_decoder == "none" else ("detail",)
        require_assets(
            cfg,
            (*FLAME_ASSETS, "flame_albedo", *detail_assets),
            f"reconstruct with face_model.kind=flame and model.detail_decoder={cfg.model.detail_decoder}",
        )
        if cfg.model.detail_decoder == "none":
            if cfg.model.max_z != DECA_MAX_Z:
                raise ConfigError(
                    f"DECA's D_detail displaces by at most {DECA_MAX_Z} m; set model.max_z={DECA_MAX_Z} "
                    f"(got {cfg.model.max_z})"
                )
            au_path = cfg.assets.au_net
            deca = deca_weights(cfg)
            coarse = flame_coarse_stage(cfg, deca.coarse_encoder)
            detail = deca_detail_stage(deca, coarse.uv_space, load_au_net(au_path))
            origin = f"DECA {cfg.assets.deca}, AU net {au_path}"
        else:
            path = cfg.assets.detail
            packed = _weights_from_detail_checkpoint(Path(path))
            if packed.config.face_model.kind != "flame":
                raise CheckpointError(
                    f"{path}: trained with face_model.kind={packed.config.face_model.kind}, not flame; "
                    "load it with --weights instead"
                )
            cfg = dataclasses.replace(packed.config, assets=cfg.assets)
            coarse = flame_coarse_stage(cfg, flame_encoder(cfg))
            load_part(coarse, packed, "coarse", path)
            au = new_au_net(cfg)
            detail = detail_stage(cfg, coarse.uv_space, au, coarse.face_model.n_expression)
            load_part(detail, packed, "detail", path)
            origin = f"checkpoint {path}"
        return cls(coarse.to(device), detail.to(device), cfg, source or f"FLAME assets: {origin}")

    @property
    def device(self) -> torch.device:
        return next(self.detail.parameters()).device

    @property
    def image_size(self) -> int:
        return self.coarse.image_size

    @torch.inference_mode()
    def __call__(
        self,
        images: torch.Tensor,
        landmarks: torch.Tensor | None = None,
        coarse: CoarseOutput | None = None,
        refine: bool | None = None,
    ) -> Reconstruction:
        """Reconstruct ``images (B, 3, H, W)`` in [0, 1] (resized to the network's input size if needed).

        With the mediapipe backend, ``landmarks (B, 468, 3)`` NDC are the faces' dense landmarks (as
        :func:`aucgan.stages.landmark_fit.landmarks_to_ndc` makes them); when not given, MediaPipe finds them
        in the images (the largest face of each). A given ``coarse`` output (e.g. a synthetic face's true
        fit, to measure the detail stage alone) replaces the coarse stage. ``refine`` says whether to refine
        the detail against the images (:meth:`refine`; default :attr:`refines`).

        Raises:
            ValueError: images of the wrong shape; with the mediapipe backend, an image with no face.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        photo = images
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size,) * 2, mode="area")
        if self.landmark_coarse is not None and landmarks is None and coarse is None:
            landmarks = self.find_landmarks(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if coarse is not None:
            landmarks = None
        elif self.landmark_coarse is not None:
            landmarks = landmarks.to(self.device, torch.float32)
            coarse, _ = self.landmark_coarse(images, landmarks)
        else:
            coarse, landmarks = self.coarse(images), None
        au = self.detail.read_aus(images)
        condition = au_condition(au)
        evidence = read_photo(self.coarse, images, coarse)[0] if self.detail.reads_photo else None
        detail = self.detail.decode(coarse, self.detail.encoder(images), condition, evidence)
        reconstruction = Reconstruction(images, coarse, au, condition, detail, landmarks, evidence)
        if self.refines if refine is None else refine:
            square = photo.shape[-1] == photo.shape[-2]
            reconstruction = self.refine(reconstruction, photo if square else None)
        return reconstruction

    @property
    def refines(self) -> bool:
        """Whether :meth:`__call__` refines the detail against the photo (``refine.mode``: ``always``, or
        ``auto`` with the mediapipe backend)."""
        mode = self.refine_settings.mode
        return mode == "always" or (mode == "auto" and self.coarse_settings.backend == "mediapipe")

    def refine(
        self,
        reconstruction: Reconstruction,
        photo: torch.Tensor | None = None,
        settings: RefineConfig | None = None,
        from_flat: bool = False,
        progress: Callable[[int], object] | None = None,
    ) -> Reconstruction:
        """The faces with their detail refined against the photo (:mod:`aucgan.stages.refine`). First the
        coarse fit itself (shape, expression, albedo, pose, camera, light, a smooth albedo gain) is refitted
        to the photo and the detail network's prediction is read again through it (:meth:`refit_coarse`,
        ``refine.coarse_steps``). Then, with an AU-conditioned decoder, the AU intensities of its condition
        are fitted to the input's fine shading (``refine.au_steps``,
        :func:`~aucgan.stages.refine.fit_intensities`; the reconstruction keeps the fitted ones, so edits
        start from them); then the displacement, the light (in the coarse codes) and a smooth gain on the
        albedo are fitted to ``photo (B, 3, P, P)`` (the same crops as the network's input, at any size: a
        larger crop shows finer lines; default the input itself) (``refine.steps``), starting from the AU
        fit's prediction. The AU fit starts from the AU net's intensities or, on the built-in face (whose
        expression code is the AU rig), from the coarse fit's expression (``refine.au_start``). With
        ``from_flat`` the AU fit starts from zero intensities (a flat prediction), or without an AU fit the
        displacement from zero. ``progress(1)`` is called after each optimisation step.
        """
        settings = settings or self.refine_settings
        photo = self._refine_photo(reconstruction, photo)
        reconstruction = self.refit_coarse(reconstruction, photo, settings, progress)
        condition, network = reconstruction.condition, reconstruction.detail
        evidence = reconstruction.evidence
        with torch.inference_mode(False), torch.enable_grad():
            coarse = _cloned(reconstruction.coarse)
            start = (
                torch.zeros_like(network.uv_displacement) if from_flat else network.uv_displacement.clone()
            )
            conditioned = self.detail.decoder.conditioned
            moved = conditioned and not from_flat and self.resolved_au_start(settings) == "expression"
            if moved:
                condition = condition.with_intensities(rig_intensities(coarse.codes.expression))
            if settings.au_steps > 0 and conditioned:
                if evidence is None:
                    evidence = read_photo(self.coarse, reconstruction.images.clone(), coarse)[0]
                intensities = fit_intensities(
                    self.coarse, self.detail, coarse, _cloned(evidence), network.detail_code.clone(),
                    _cloned(condition), settings, from_flat, progress,
                )  # fmt: skip
                condition = condition.with_intensities(intensities)
                moved = True
            if moved:
                with torch.no_grad():
                    network = self.detail.decode(coarse, network.detail_code, condition, evidence)
                start = network.uv_displacement.clone()
            refinement = refine_faces(self.coarse, coarse, photo.clone(), start, settings, progress)
        with torch.inference_mode():
            coarse = dataclasses.replace(
                coarse,
                codes=dataclasses.replace(coarse.codes, light=refinement.light),
                uv_albedo=refinement.uv_albedo,
            )
            bound = self.cfg.model.max_z
            refined = refinement.uv_displacement.clamp(-bound, bound)
            detail = self.detail.from_displacement(coarse, network.detail_code, refined)
            photo_detail = detail.uv_displacement - network.uv_displacement
        return dataclasses.replace(
            reconstruction,
            coarse=coarse,
            condition=condition,
            detail=detail,
            refinement=refinement,
            photo_detail=photo_detail,
        )

    def resolved_au_start(self, settings: RefineConfig) -> str:
        """Where the AU fit starts (``refine.au_start``, ``auto`` resolved): ``"expression"`` or ``"au-net"``.

        Raises:
            ValueError: ``expression`` with a face model whose expression code is not the AU rig.
        """
        rig = self.coarse.face_model.expression_is_au_rig
        if settings.au_start == "auto":
            return "expression" if rig else "au-net"
        if settings.au_start == "expression" and not rig:
            raise ValueError(
                "refine.au_start=expression needs a face model whose expression code is the AU rig (the "
                "built-in face); use refine.au_start=au-net or auto"
            )
        return settings.au_start

    def _refine_photo(self, reconstruction: Reconstruction, photo: torch.Tensor | None) -> torch.Tensor:
        """The photo a refinement compares with: ``photo (B, 3, P, P)`` on this device, or the input."""
        photo = reconstruction.images if photo is None else photo.to(self.device, torch.float32)
        if photo.shape[0] != reconstruction.batch_size or photo.shape[-1] != photo.shape[-2]:
            raise ValueError(
                f"photo must be ({reconstruction.batch_size}, 3, P, P), got {tuple(photo.shape)}"
            )
        return photo

    def refit_coarse(
        self,
        reconstruction: Reconstruction,
        photo: torch.Tensor | None = None,
        settings: RefineConfig | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> Reconstruction:
        """The first fit of :meth:`refine`: the faces with their coarse fit refitted to ``photo`` (default the
        input; :func:`~aucgan.stages.refine.fit_coarse`, ``refine.coarse_steps``, held to the landmarks
        where the MediaPipe backend gave some) and the detail network's prediction read again through the
        refitted surface; ``reconstruction`` itself with ``coarse_steps=0``."""
        settings = settings or self.refine_settings
        if settings.coarse_steps == 0:
            return reconstruction
        photo = self._refine_photo(reconstruction, photo)
        with torch.inference_mode(False), torch.enable_grad():
            start, landmarks = _cloned(reconstruction.coarse), reconstruction.landmarks
            coarse = fit_coarse(self.coarse, start, photo.clone(), settings, landmarks, progress)
            with torch.no_grad():
                images = reconstruction.images.clone()
                evidence = read_photo(self.coarse, images, coarse)[0] if self.detail.reads_photo else None
                code = reconstruction.detail.detail_code.clone()
                network = self.detail.decode(coarse, code, _cloned(reconstruction.condition), evidence)
        with torch.inference_mode():
            return dataclasses.replace(reconstruction, coarse=coarse, detail=network, evidence=evidence)

    def find_landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 468, 3)`` NDC landmarks of the largest face MediaPipe finds in each of the square
        ``images (B, 3, S, S)``.

        Raises:
            ValueError: an image in which MediaPipe finds no face.
        """
        if self.detector is None:
            raise ValueError("find_landmarks needs coarse.backend=mediapipe")
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"find_landmarks needs square images (B, 3, S, S), got {tuple(images.shape)}")
        found = []
        for index, image in enumerate(images):
            pixels = (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
            faces = self.detector(pixels)
            if not faces:
                raise ValueError(f"MediaPipe finds no face in image {index} of the batch")
            found.append(landmarks_to_ndc(torch.from_numpy(faces[0]), images.shape[-1]))
        return torch.stack(found).float().to(images.device)

    @torch.inference_mode()
    def redecode(
        self, reconstruction: Reconstruction, codes: CoarseCodes, condition: AUCondition
    ) -> Reconstruction:
        """The same faces with new coarse ``codes`` and detail ``condition`` (the detail code is kept)."""
        own = reconstruction.photo_detail
        coarse = self.coarse.decode(codes, uv_albedo=None if own is None else reconstruction.coarse.uv_albedo)
        detail = self.detail.decode(
            coarse, reconstruction.detail.detail_code, condition, reconstruction.evidence
        )
        if own is not None:  # keep the face's own lines that the refinement added to the network's
            detail = self.detail.from_displacement(coarse, detail.detail_code, detail.uv_displacement + own)
        return dataclasses.replace(reconstruction, coarse=coarse, condition=condition, detail=detail)

    def edit(self, reconstruction: Reconstruction, intensities: Mapping[str, float]) -> Reconstruction:
        """Set AU intensities (``{"AU12": 1.0}``, values in [0, 1]) and regenerate the detail; with the
        built-in face (whose expression code is the AU rig) the coarse expression follows too.

        Raises:
            ValueError: an unknown AU name or an intensity outside [0, 1].
        """
        new_intensities = reconstruction.condition.intensities.clone()
        codes = reconstruction.coarse.codes
        expression = codes.expression.clone()
        for name, value in intensities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: AU intensities are in [0, 1]")
            index = au_index(name)
            new_intensities[:, index] = value
            if self.coarse.face_model.expression_is_au_rig:
                expression[:, index] = value
        codes = dataclasses.replace(codes, expression=expression)
        condition = reconstruction.condition.with_intensities(new_intensities)
        return self.redecode(reconstruction, codes, condition)

    @torch.inference_mode()
    def render_views(self, reconstruction: Reconstruction, size: int = VIS_SIZE) -> dict[str, torch.Tensor]:
        """``(B, 3, size, size)`` pictures: ``coarse`` and ``detail`` renderings over the input, and the grey
        ``shading`` of the detail normals (what the wrinkles look like without albedo)."""
        rec = reconstruction
        background = F.interpolate(rec.images, size=(size, size), mode="bilinear", align_corners=False)
        smooth = self.coarse.render(rec.coarse, background=background, image_size=size)
        once = smooth.fragments  # the same geometry three times: rasterise it once
        detailed = self.coarse.render(
            rec.coarse, rec.detail.uv_detail_normals, background=background, image_size=size, fragments=once
        )
        grey = dataclasses.replace(rec.coarse, uv_albedo=torch.full_like(rec.coarse.uv_albedo, 0.7))
        shading = self.coarse.render(
            grey, rec.detail.uv_detail_normals, torch.ones_like(background), image_size=size, fragments=once
        )
        return {"coarse": smooth.image, "detail": detailed.image, "shading": shading.image.clamp(0, 1)}


def _weights_from_detail_checkpoint(path: Path) -> WeightsFile:
    data = read_checkpoint(path)
    states = detail_checkpoint_states(data, path)
    stored = data["aucgan"].get("config")
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{path}: has no stored config; is it from `aucgan train detail`?")
    cfg = _config_from_mapping(stored, str(path))
    if cfg.model.coarse_source != "network" and cfg.coarse.backend != "mediapipe":
        raise CheckpointError(
            f"{path}: trained with model.coarse_source={cfg.model.coarse_source}, so it holds no coarse "
            "encoder to reconstruct images with; train the detail stage with model.coarse_source=network"
        )
    return WeightsFile(states, cfg, f"checkpoint {path}", "?")


# Writing a face folder -----------------------------------------------------------------------------------


def au_chart(scores: torch.Tensor, size: int = VIS_SIZE, names: Sequence[str] = MAIN_AUS) -> np.ndarray:
    """``(size, size, 3)`` uint8 bar chart of AU scores ``(K,)`` in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = scores.detach().float().cpu().clamp(0, 1).numpy()
    figure = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.2, 0.04, 0.76, 0.92))
    positions = np.arange(len(values))
    axes.barh(positions, values, color=np.where(values >= 0.5, "#d1495b", "#8d99ae"), height=0.8)
    axes.set_yticks(positions, [name.replace("AU", "") for name in names], fontsize=4.5)
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.tick_params(axis="x", labelsize=5)
    axes.axvline(0.5, color="#555", linewidth=0.5, linestyle=":")
    axes.set_title("AU scores", fontsize=6, pad=2)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def colour_bar(
    colours: Callable[[torch.Tensor], torch.Tensor],
    limit: float,
    unit: str,
    title: str,
    note: str = "",
    height: int = VIS_SIZE,
    width: int = COLOUR_BAR_WIDTH,
) -> np.ndarray:
    """``(height, width, 3)`` uint8 vertical colour bar for a picture of a signed map.

    Args:
        colours: the function that coloured the picture: values ``(H, W)`` in [-1, 1] → ``(3, H, W)``
            in [0, 1]; the bar shows it from -1 (bottom) to 1 (top), so bar and picture cannot disagree.
        limit: the value that 1 stands for (the range is symmetric: ``±limit``), in ``unit``.
        unit: e.g. ``"µm"``.
        title: what the values are, e.g. ``"displacement change"``; shown above the bar with the unit.
        note: a line under the bar, e.g. ``"red raised, blue lowered"`` (may hold a newline).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gradient = torch.linspace(1.0, -1.0, 256)[:, None].expand(256, 8)
    pixels = colours(gradient).permute(1, 2, 0).clamp(0, 1).numpy()
    figure = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    bottom = 0.2 if note else 0.08
    axes = figure.add_axes((0.12, bottom, 0.16, 0.76 - bottom))
    axes.imshow(pixels, aspect="auto", extent=(0, 1, -limit, limit))
    axes.set_xticks([])
    axes.yaxis.tick_right()
    text = f"{limit:.3g}"
    axes.set_yticks([limit, 0.0, -limit], [f"+{text} {unit}", "0", f"−{text} {unit}"], fontsize=6.5)
    for spine in axes.spines.values():
        spine.set_linewidth(0.5)
    figure.text(0.5, 0.97, f"{title}\n(range ±{text} {unit})", ha="center", va="top", fontsize=6.5)
    if note:
        figure.text(0.5, 0.03, note, ha="center", va="bottom", fontsize=6.5)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def panel_image(image: torch.Tensor) -> np.ndarray:
    """``(S, S, 3)`` uint8 picture of a ``(3, S, S)`` float image in [0, 1] (clipped)."""
    return (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def vis_grid(panels: Sequence[np.ndarray]) -> np.ndarray:
    """Panels ``(S, S, 3)`` uint8 side by side with a 4-pixel white gap."""
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for panel in panels:
        row += [panel, gap]
    return np.concatenate(row[:-1], axis=1)


def face_codes(reconstruction: Reconstruction, index: int) -> dict[str, np.ndarray]:
    """Every code of face ``index``: coarse codes, detail code, AU scores and features (float32 arrays)."""
    rec = reconstruction
    arrays = {name: getattr(rec.coarse.codes, name)[index] for name in CODE_NAMES}
    arrays["detail_code"] = rec.detail.detail_code[index]
    arrays["au_scores"] = rec.au.scores[index]
    arrays["au_features"] = rec.condition.features[index]
    arrays["au_intensities"] = rec.condition.intensities[index]
    if rec.landmarks is not None:
        arrays["landmarks"] = rec.landmarks[index]
    return {name: value.detach().float().cpu().numpy() for name, value in arrays.items()}


def detail_mesh(reconstruction: Reconstruction, index: int) -> tuple[torch.Tensor, ...]:
    """Dense detail mesh of face ``index``: one vertex per covered texel, displaced along the coarse normal.

    Returns vertices ``(N, 3)``, faces ``(M, 3)``, uvs ``(N, 2)`` and per-vertex detail normals ``(N, 3)``.
    """
    rec = reconstruction
    surface = rec.coarse.surface
    positions = surface.positions[index] + rec.detail.uv_displacement[index] * surface.normals[index]
    covered = (surface.normals[index].norm(dim=0) > 0.5).cpu()
    vertices, faces, uvs = dense_mesh(positions.cpu(), covered)
    normals = rec.detail.uv_detail_normals[index].cpu().permute(1, 2, 0)[covered]
    return vertices, faces, uvs, normals


def write_face(
    folder: str | os.PathLike[str],
    reconstructor: Reconstructor,
    reconstruction: Reconstruction,
    index: int,
    record: Mapping[str, str] | None = None,
    views: Mapping[str, torch.Tensor] | None = None,
    input_image: torch.Tensor | None = None,
) -> Path:
    """Write face ``index`` of a reconstruction to ``folder`` (see :data:`FACE_FILES`).

    Args:
        record: text kept in ``codes.npz`` (source file, frame, crop box …); the weights' source is added.
        views: :meth:`Reconstructor.render_views` of the batch (computed if not given).
        input_image: ``(3, S, S)`` the input at display resolution (default: the network input, resized).

    Returns:
        The folder, as a :class:`~pathlib.Path`.
    """
    folder = Path(folder)
    rec = reconstruction
    model = reconstructor.coarse.face_model
    views = views if views is not None else reconstructor.render_views(rec)
    if input_image is None:
        input_image = F.interpolate(rec.images[index : index + 1], size=(VIS_SIZE,) * 2, mode="bilinear")[0]
    write_image(folder / "input.png", input_image.clamp(0, 1))
    texture = rec.coarse.uv_albedo[index]
    write_obj(
        folder / "coarse.obj", rec.coarse.vertices[index], model.faces,
        uvs=model.uvs, uv_faces=model.uv_faces, texture=texture, texture_name="texture.png",
    )  # fmt: skip
    vertices, faces, uvs, normals = detail_mesh(rec, index)
    write_obj(
        folder / "detail.obj", vertices, faces, uvs=uvs, normals=normals,
        texture=texture, texture_name="texture.png",
    )  # fmt: skip
    write_normal_map(folder / "normal_map.png", rec.detail.uv_detail_normals[index])
    displacement = rec.detail.uv_displacement[index, 0].detach().float().cpu()
    write_displacement(folder / "displacement.png", displacement, reconstructor.cfg.model.max_z)  # + .npy
    panels = [
        panel_image(input_image),
        *(panel_image(views[name][index]) for name in ("coarse", "detail", "shading")),
    ]
    panels.append(au_chart(rec.au.main_scores[index]))
    write_image(folder / "vis.png", vis_grid(panels))
    text = {"weights": reconstructor.source, **(record or {})}
    atomic_save_npz(
        folder / "codes.npz",
        {
            **face_codes(rec, index),
            **refined_maps(rec, index),
            "au_names": np.array([*MAIN_AUS, *SUB_AUS]),
            **{f"record_{key}": np.array(str(value)) for key, value in text.items()},
        },
    )
    return folder


def refined_maps(reconstruction: Reconstruction, index: int) -> dict[str, np.ndarray]:
    """What ``codes.npz`` keeps of a refined face (nothing for the network's own detail): ``photo_detail``
    ``(S, S)`` float32, what the refinement added to the network's displacement, and ``uv_albedo``
    ``(3, S, S)`` float16, the albedo with its fitted gain; :func:`read_face` restores both."""
    if reconstruction.photo_detail is None:
        return {}
    return {
        "photo_detail": reconstruction.photo_detail[index, 0].detach().float().cpu().numpy(),
        "uv_albedo": reconstruction.coarse.uv_albedo[index].detach().cpu().numpy().astype(np.float16),
    }


def is_finished(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds every file of a written face."""
    return all((Path(folder) / name).is_file() for name in FACE_FILES)


class FaceFolderError(ValueError):
    """A face folder that cannot be read back (one line, names the folder and the fix)."""


def read_face(
    folder: str | os.PathLike[str], reconstructor: Reconstructor
) -> tuple[Reconstruction, dict[str, str]]:
    """Rebuild the reconstruction written in ``folder`` from its ``codes.npz`` and ``input.png`` (with the
    refined detail and albedo when the face was refined)."""
    folder = Path(folder)
    path = folder / "codes.npz"
    if not path.is_file():
        raise FaceFolderError(f"{folder}: no codes.npz; is it a face folder written by `aucgan reconstruct`?")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise FaceFolderError(f"{path}: unreadable ({error}); reconstruct the face again") from None
    missing = [
        name for name in (*CODE_NAMES, "detail_code", "au_scores", "au_features") if name not in arrays
    ]
    if missing:
        raise FaceFolderError(f"{path}: lacks {', '.join(missing)}; reconstruct the face again")
    record = {key[len("record_") :]: str(value) for key, value in arrays.items() if key.startswith("record_")}
    device = reconstructor.device

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))[None].to(device)

    try:
        codes = CoarseCodes(**{name: tensor(name) for name in CODE_NAMES})
        refined = "photo_detail" in arrays and "uv_albedo" in arrays
        with torch.inference_mode():
            coarse = reconstructor.coarse.decode(codes, uv_albedo=tensor("uv_albedo") if refined else None)
            au = AUOutput(scores=tensor("au_scores"), features=tensor("au_features"))
            intensities = tensor("au_intensities") if "au_intensities" in arrays else au.main_scores
            condition = AUCondition(au.features, intensities)
    except (ValueError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise FaceFolderError(
            f"{path}: does not fit these weights ({first}); edit with the weights that reconstructed it "
            f"({record.get('weights', 'unknown')})"
        ) from None
    images = _read_png(folder / "input.png", reconstructor.image_size, device)
    try:
        with torch.inference_mode():
            evidence = None
            if reconstructor.detail.reads_photo:
                evidence = read_photo(reconstructor.coarse, images, coarse)[0]
            detail = reconstructor.detail.decode(coarse, tensor("detail_code"), condition, evidence)
            photo_detail = tensor("photo_detail")[:, None] if refined else None
            if photo_detail is not None:
                detail = reconstructor.detail.from_displacement(
                    coarse, detail.detail_code, detail.uv_displacement + photo_detail
                )
    except (ValueError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise FaceFolderError(
            f"{path}: does not fit these weights ({first}); edit with the weights that reconstructed it "
            f"({record.get('weights', 'unknown')})"
        ) from None
    landmarks = tensor("landmarks") if "landmarks" in arrays else None
    rebuilt = Reconstruction(images, coarse, au, condition, detail, landmarks, evidence)
    return dataclasses.replace(rebuilt, photo_detail=photo_detail), record


def _read_png(path: Path, size: int, device: torch.device) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except (OSError, ValueError) as error:
        raise FaceFolderError(f"{path}: unreadable ({error}); reconstruct the face again") from None
    return torch.from_numpy(array).permute(2, 0, 1)[None].float().div(255).to(device)


# Batch jobs ----------------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a batch job did: faces written, inputs skipped as already finished, and failures.

    Attributes:
        inputs: the inputs this job (this shard) took.
        written: the face folders written.
        skipped: names of the inputs whose folder was finished already.
        failed: ``(input, one-line reason)`` of each input or face that failed.
        others: inputs left to the other shards (0 without sharding).
        notes: ``(input, one-line note)`` of each input with faces found but not reconstructed (too small
            for ``coarse.min_face_px``); also logged as they come.
    """

    inputs: int = 0
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    others: int = 0
    notes: list[tuple[str, str]] = field(default_factory=list)


def skipped_faces_note(where: str, heights: Sequence[float], min_face_px: float) -> str:
    """The one line that says which faces of ``where`` (a file) were too small to reconstruct: their
    ``heights`` in pixels against ``coarse.min_face_px``, and the fix."""
    sizes = ", ".join(f"{height:.0f} px" for height in heights)
    count = f"{len(heights)} face{'s' if len(heights) != 1 else ''}"
    return (
        f"{where}: skipped {count} smaller than {min_face_px:g} px ({sizes}); raise the resolution or "
        "lower coarse.min_face_px"
    )


def reconstruct_inputs(
    reconstructor: Reconstructor,
    source: str | os.PathLike[str] | Sequence[InputItem],
    out: str | os.PathLike[str],
    crop: bool = True,
    batch_size: int = 8,
    every: int = 1,
    progress: Callable[[int], object] | None = None,
    on_total: Callable[[int], object] | None = None,
    shard: Shard | None = None,
) -> BatchReport:
    """Reconstruct every face of ``source`` (image, folder, video or list file) into ``out/<name>/``.

    A bad input is recorded in the report and the job goes on; an input whose folder is finished is
    skipped. With the mediapipe backend every face of an image at least ``coarse.min_face_px`` tall is
    reconstructed, and the smaller ones are named in a note (:attr:`BatchReport.notes`, and logged).
    ``progress(n)`` is called as inputs are done; ``on_total(n)`` once with the input count.

    Args:
        source: a path for :func:`~aucgan.data.images.collect_inputs`, or the items it returned.
        every: keep every ``every``-th video frame (with a path).
        shard: take only the inputs this shard owns (:mod:`aucgan.sharding`); the output layout is the
            same as without sharding, so shards can share ``out``.

    Raises:
        InputError: the source does not exist or holds nothing to reconstruct (one line).
    """
    from aucgan.data.images import InputError, collect_inputs, prepare_faces

    out = Path(out)
    items = list(source) if isinstance(source, Sequence) and not isinstance(source, str) else None
    if items is None:
        items = collect_inputs(source, every)
    everything = len(items)
    if shard is not None:
        items = [item for item in items if shard.owns(item.name)]
    if on_total is not None:
        on_total(len(items))
    report = BatchReport(inputs=len(items), others=everything - len(items))
    pending: list[tuple[str, torch.Tensor, dict[str, str]]] = []
    pending_landmarks: list[torch.Tensor] = []
    too_small: list[float] = []  # heights of the faces of the current input that are too small to fit
    detector = reconstructor.detector

    def landmarks_of_faces(image: np.ndarray) -> list[np.ndarray]:
        found = detector.find(image)
        too_small.extend(found.too_small)
        return found.landmarks

    def flush() -> None:
        if not pending:
            return
        inputs = torch.stack([image for _, image, _ in pending])
        landmarks = torch.stack(pending_landmarks) if pending_landmarks else None
        pending_landmarks.clear()
        try:
            rec = reconstructor(inputs, landmarks)
            views = reconstructor.render_views(rec)
        except (RuntimeError, ValueError) as error:
            first = str(error).splitlines()[0]
            report.failed += [(name, f"reconstruction failed: {first}") for name, _, _ in pending]
            pending.clear()
            return
        for index, (name, image, record) in enumerate(pending):
            try:
                report.written.append(
                    write_face(out / name, reconstructor, rec, index, record, views, input_image=image)
                )
            except OSError as error:
                report.failed.append((name, f"cannot write {error.filename or out / name}: {error.strerror}"))
        pending.clear()

    for item in items:
        if is_finished(out / item.name) or is_finished(out / f"{item.name}_face1"):
            report.skipped.append(item.name)
        else:
            too_small.clear()
            failure = ""
            try:
                faces = prepare_faces(
                    item, VIS_SIZE, crop=crop, detector=None if detector is None else landmarks_of_faces
                )
            except InputError as error:
                failure, faces = str(error), []
            if too_small:
                where = str(item.path) if item.frame is None else f"{item.path} (frame {item.frame})"
                note = skipped_faces_note(where, too_small, detector.min_face_px)
                if failure:  # every face found was too small: say so rather than "no face"
                    failure = note
                else:
                    report.notes.append((item.name, note))
                    log.warning("%s", note)
            if failure:
                report.failed.append((str(item.path), failure))
            for face in faces:
                record = {"source": str(face.source), "frame": "" if face.frame is None else str(face.frame)}
                if face.box is not None:
                    record["crop_box"] = (
                        f"{face.box.centre_x:.1f} {face.box.centre_y:.1f} {face.box.size:.1f}"
                    )
                image = torch.from_numpy(np.array(face.image, copy=True)).permute(2, 0, 1).float() / 255
                pending.append((face.name, image, record))
                if face.landmarks is not None:
                    pending_landmarks.append(
                        landmarks_to_ndc(torch.from_numpy(face.landmarks), VIS_SIZE).float()
                    )
                if len(pending) >= batch_size:
                    flush()
        if progress is not None:
            progress(1)
    flush()
    return report


def load_faces(
    paths: Sequence[str | os.PathLike[str]], crop: bool = True, size: int = VIS_SIZE
) -> tuple[torch.Tensor, list]:
    """Face images from image files, detected and cropped (``crop=False``: the files are face crops).

    Returns ``(N, 3, size, size)`` in [0, 1] — one row per face found, in file order — and the
    :class:`~aucgan.data.images.PreparedFace` of each row (name, crop box, source).

    Raises:
        InputError: a file that cannot be read or holds no face (one line naming it).
    """
    from aucgan.data.images import InputItem, prepare_faces

    faces = [
        face for path in paths for face in prepare_faces(InputItem(Path(path).stem, Path(path)), size, crop)
    ]
    if not faces:
        raise ValueError("no image paths given")
    images = torch.stack(
        [torch.from_numpy(np.array(face.image, copy=True)).permute(2, 0, 1) for face in faces]
    )
    return images.float() / 255, faces


def parse_edits(pairs: Mapping[str, float]) -> dict[str, float]:
    """Validate ``{"AU12": 1.0}`` edits: known AU names, intensities in [0, 1]; names normalised."""
    edits: dict[str, float] = {}
    for name, value in pairs.items():
        index = au_index(name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value}: AU intensities are in [0, 1]")
        edits[MAIN_AUS[index]] = float(value)
    return edits


def edit_face(
    folder: str | os.PathLike[str],
    reconstructor: Reconstructor,
    edits: Mapping[str, float],
    out: str | os.PathLike[str] | None = None,
) -> tuple[Path, Reconstruction, Reconstruction]:
    """Edit the AU intensities of the face in ``folder``; write the edited face (every file of a face
    folder) and ``before_after.png`` to ``out`` (default ``folder/edits/AU12=1.0``).

    ``before_after.png`` shows the input, the detail shading before and after the edit, the change of the
    UV displacement (red raised, blue lowered, white unchanged; the colour range is symmetric, ± the largest
    change) and a colour bar stating that range in micrometres.

    Returns the output folder, the reconstruction before and the one after the edit.
    """
    folder = Path(folder)
    edits = parse_edits(edits)
    before, record = read_face(folder, reconstructor)
    after = reconstructor.edit(before, edits)
    tag = "_".join(f"{name}={value:g}" for name, value in edits.items())
    target = Path(out) if out is not None else folder / "edits" / tag
    input_image = _read_png(folder / "input.png", VIS_SIZE, before.images.device)[0]
    views_before = reconstructor.render_views(before)
    views_after = reconstructor.render_views(after)
    micrometres = MICROMETRES_PER_UNIT[reconstructor.cfg.face_model.kind]
    change = (after.detail.uv_displacement - before.detail.uv_displacement)[0, 0].float().cpu() * micrometres
    scale = float(change.abs().max().clamp(min=1e-8))
    change_image = _signed_map(change / scale)
    panels = [
        panel_image(input_image),
        panel_image(views_before["shading"][0]),
        panel_image(views_after["shading"][0]),
        panel_image(F.interpolate(change_image[None], size=(VIS_SIZE,) * 2, mode="nearest")[0]),
        colour_bar(_signed_map, scale, "µm", "displacement change\nin UV space", "red raised\nblue lowered"),
    ]
    write_image(target / "before_after.png", vis_grid(panels))
    write_face(target, reconstructor, after, 0, {**record, "edit": tag}, views_after, input_image)
    return target, before, after


def _signed_map(values: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` blue (negative) - white (0) - red (positive) picture of ``values (H, W)`` in [-1, 1]."""
    positive = values.clamp(min=0)
    negative = (-values).clamp(min=0)
    return torch.stack([1 - negative, 1 - positive - negative, 1 - positive]).clamp(0, 1)


__all__ = [
    "COLOUR_BAR_WIDTH",
    "FACE_FILES",
    "MICROMETRES_PER_UNIT",
    "PARTS",
    "SHIPPED_WEIGHTS",
    "BatchReport",
    "FaceFolderError",
    "Reconstruction",
    "Reconstructor",
    "colour_bar",
    "edit_face",
    "is_finished",
    "load_faces",
    "read_face",
    "reconstruct_inputs",
    "rig_intensities",
    "skipped_faces_note",
    "write_face",
]

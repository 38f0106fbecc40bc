"""Typed configuration: dataclass schemas, YAML presets and ``key=value`` command-line overrides.

A configuration is a tree of plain dataclasses. Each section is one dataclass, nested in its parent with
``field(default_factory=...)``; adding a section means writing one dataclass and adding one field to
:class:`Config`. Settings that need checking beyond their type are declared with :func:`setting`
(numeric bounds, a tuple of choices), which every load enforces.

Nothing here is global: :func:`load_config` returns a fresh dataclass instance and the caller passes the
pieces it needs down as plain arguments. Networks never see a config object.

Loading happens in layers, later ones winning: the schema's defaults, then a YAML file, then overrides
such as ``render.image_size=256``. Every layer is checked before it is merged, so a mistake is reported
against the file (with its line) or the command line where it was made:

* unknown keys, with the closest valid keys as a suggestion;
* keys given twice in one YAML file, at any depth;
* values of the wrong type, and values outside their bounds or choices.

Every such mistake raises :class:`ConfigError`, whose message is a single line. OmegaConf interpolations
(``${render.image_size}``) are allowed in values; they are resolved, and the resolved values checked,
before the config is returned. :func:`save_config` writes the resolved config, every default included,
as ``config.yaml`` beside a run's outputs; :func:`load_config` reads it back to an equal config.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aucgan.atomic import atomic_open

__all__ = [
    "FACE_MODEL_KINDS",
    "PACKAGE_SCHEME",
    "PRESETS",
    "Config",
    "ConfigError",
    "FaceModelConfig",
    "RenderConfig",
    "SynthConfig",
    "load_config",
    "package_file",
    "parse_overrides",
    "preset_names",
    "preset_path",
    "resolve_config",
    "save_config",
    "setting",
]

T = TypeVar("T")

CONFIG_FILE_NAME = "config.yaml"
COMMAND_LINE = "command line"

PRESETS = Path(__file__).parent / "configs"
"""The YAML presets installed with aucgan (``synthetic``, ``synthetic-tiny``, ``flame-deca``, …): every
command's config may name one instead of giving a path (:func:`resolve_config`)."""

_PRESET_SUFFIXES = (".yaml", ".yml")

log = logging.getLogger(__name__)

_LOW = "aucgan_low"
_HIGH = "aucgan_high"
_CHOICES = "aucgan_choices"
_SHOWN_VALUE_CHARS = 60


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is always one line, fit to print without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(part.strip() for part in str(message).splitlines() if part.strip()))


def setting(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field whose value is checked at load time.

    Args:
        default: the default value; a list or dict default is copied for each instance.
        low: smallest allowed value (inclusive); for a sequence, of each element.
        high: largest allowed value (inclusive); for a sequence, of each element.
        choices: the allowed values.

    Returns:
        A ``dataclasses.field`` carrying the constraints in its metadata.
    """
    metadata: dict[str, Any] = {}
    if low is not None:
        metadata[_LOW] = low
    if high is not None:
        metadata[_HIGH] = high
    if choices is not None:
        metadata[_CHOICES] = tuple(choices)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


FACE_MODEL_KINDS: tuple[str, ...] = ("procedural", "flame")
"""Face models :class:`FaceModelConfig.kind` may name."""


@dataclass
class FaceModelConfig:
    """Which parametric face model to use, and how many of its components.

    Attributes:
        kind: the face model; ``"procedural"`` is the built-in head that needs no downloaded assets;
            ``"flame"`` is FLAME 2020 with DECA's UV template (needs ``assets.flame_model``,
            ``assets.flame_landmarks``, ``assets.head_template``, ``assets.uv_face_mask`` and, for its
            albedo, ``assets.flame_albedo``).
        n_identity: number of identity shape components used from the built-in face model.
        n_shape: FLAME identity shape components used (DECA: 100; FLAME 2020 has 300).
        n_expression: FLAME expression components used (DECA: 50; FLAME 2020 has 100).
    """

    kind: str = setting("procedural", choices=FACE_MODEL_KINDS)
    n_identity: int = setting(12, low=1, high=16)
    n_shape: int = setting(100, low=1, high=300)
    n_expression: int = setting(50, low=1, high=100)


@dataclass
class RenderConfig:
    """Sizes and background of the renderer.

    Attributes:
        image_size: side of the square rendered image, in pixels.
        uv_size: side of the square UV-space maps (texture, displacement, normals), in texels.
        background: RGB colour behind the face, each channel in [0, 1].
    """

    image_size: int = setting(224, low=16)
    uv_size: int = setting(256, low=16)
    background: tuple[float, float, float] = setting((0.12, 0.12, 0.14), low=0.0, high=1.0)


@dataclass
class SynthConfig:
    """The synthetic AU-wrinkle face world (``aucgan synth``); its seed is the run's ``seed``.

    Attributes:
        images_per_identity: K, images (expressions) of each identity, for detail consistency.
        shard_size: samples per shard file written by ``aucgan synth``.
        workers: processes generating samples.
    """

    images_per_identity: int = setting(4, low=1)
    shard_size: int = setting(256, low=1)
    workers: int = setting(2, low=0)


@dataclass
class DataConfig:
    """Where training and validation samples come from.

    Attributes:
        source: ``""`` generates samples on the fly from the synthetic world (``seed``, ``render.*``,
            ``synth.images_per_identity``); otherwise a folder written by ``aucgan synth``.
        n_train: training samples used (on the fly; for a folder, at most this many, 0 = all).
        n_val: validation samples (held-out identities).
        identities_per_batch: identities in one batch; a batch holds K images of each
            (K = ``synth.images_per_identity``), so the batch size is ``identities_per_batch * K`` (with
            ``au_balance`` > 0 the AU net draws that many single images instead).
        workers: data-loading processes (0 loads in the training process).
        au_balance: AU net training only: draw training images with weight ``(1 / f)^au_balance`` of the
            rarest AU they show (``f`` its frequency), so rare AUs are seen about as often as common ones;
            0 keeps the plain identity-group order.
        shard_cache: decoded shards of a written folder each reader keeps in memory (about 80 MB per 256
            samples at 128 px). Batches draw from the whole split, so a split with more shards than this
            decodes shards again and again; a warning says so.
    """

    source: str = ""
    n_train: int = setting(4096, low=0)
    n_val: int = setting(256, low=0)
    identities_per_batch: int = setting(2, low=1)
    workers: int = setting(2, low=0)
    au_balance: float = setting(0.0, low=0.0)
    shard_cache: int = setting(64, low=1)


@dataclass
class ModelConfig:
    """The networks of the three stages.

    Attributes:
        coarse_backbone: ResNet of the coarse encoder (DECA: resnet50).
        coarse_source: ``"network"`` regresses the coarse codes; ``"ground-truth"`` (synthetic data only)
            takes them from the samples, to train or test the detail stage on a perfect coarse fit.
        n_albedo: albedo components: of the built-in face's linear albedo model, or of FLAME's albedo
            model (DECA: 50).
        au_backbone: ResNet of the AU net (OpenGraphAU publishes resnet50).
        au_stage: MEFARG stage: 2 (MEFL, the published second stage) or 1 (ANFL).
        au_input_size: side the AU net resizes every image to before its trunk (its training, the detail
            stage's AU features and AU consistency, reconstruction); 0 takes images at their size. An AU
            net keeps the size it was trained with: its checkpoint records it.
        detail_encoder: ``"conv"`` (the reference's 8-conv encoder), ``"resnet18"`` or ``"resnet50"``
            (DECA's E_detail), or ``"none"``: no encoder, the detail code is zeros (for the ``"uv-unet"``
            decoder, which reads the photo in UV itself).
        n_detail: length of the detail code.
        detail_decoder: AU conditioning of the displacement decoder: ``"none"`` (DECA), ``"concat-1x1"``
            (the reference AUCGAN), ``"token-attention"`` or ``"uv-unet"`` (AU maps placed in UV and the photo
            read in UV, :class:`~aucgan.nets.detail_decoder.UVUNetDecoder`).
        discriminator: AU conditioning of the discriminator: ``"reference-3x9"`` (the reference AUCGAN),
            ``"projection"`` (patch logits), ``"projection-global"`` (all three on the photo and the
            rendering) or ``"uv-projection"`` (patch logits on the photo and the detail texture in UV space).
        detail_init: a fresh decoder's output layer: ``"flat"`` (zeroed: training starts from the flat
            prediction) or ``"random"`` (PyTorch's default init: about ±max_z/5 of random displacement).
        detail_paths: the information paths of the ``"uv-unet"`` decoder (for the ablation): ``"photo"``
            (the photo read in UV), ``"au"`` (per-AU maps placed in UV) and ``"latent"`` (jaw, expression
            and detail code); the UV coordinates are always read.
        detail_norm: the ``"uv-unet"`` decoder's normalisation: ``"group"`` (GroupNorm: its statistics pool
            the whole UV map, so an AU edit shifts every texel a little) or ``"texel"`` (each texel's
            channels alone, :class:`~aucgan.nets.detail_decoder.TexelNorm`).
        detail_output_gain: the decoder's output is ``max_z · tanh(gain · x)``: with ``max_z`` far above a
            typical fold, a gain of about typical / max_z keeps the last layer's weights at their usual
            size (the built-in face's presets: 0.05, folds of 0.5 mm under a 1 cm bound); 1 for DECA.
        max_z: largest displacement the decoder produces, in face-model units: 1.0 for the built-in face (cm:
            its world's deepest possible fold, :func:`aucgan.data.wrinkles.max_displacement`, is 0.8 cm; real
            folds reach about 0.3 cm), 0.01 for FLAME (m, DECA's bound: the same centimetre).
    """

    coarse_backbone: str = setting("resnet18", choices=("resnet18", "resnet50"))
    coarse_source: str = setting("network", choices=("network", "ground-truth"))
    n_albedo: int = setting(16, low=1, high=64)
    au_backbone: str = setting("resnet18", choices=("resnet18", "resnet50"))
    au_stage: int = setting(2, choices=(1, 2))
    au_input_size: int = setting(0, low=0, high=1024)
    detail_encoder: str = setting("conv", choices=("conv", "resnet18", "resnet50", "none"))
    n_detail: int = setting(128, low=1)
    detail_decoder: str = setting(
        "token-attention", choices=("none", "concat-1x1", "token-attention", "uv-unet")
    )
    detail_paths: tuple[str, ...] = setting(("photo", "au", "latent"), choices=("photo", "au", "latent"))
    detail_norm: str = setting("group", choices=("group", "texel"))
    discriminator: str = setting(
        "projection", choices=("reference-3x9", "projection", "projection-global", "uv-projection")
    )
    detail_init: str = setting("flat", choices=("flat", "random"))
    detail_output_gain: float = setting(1.0, low=1e-6)
    max_z: float = setting(1.0, low=1e-6)


@dataclass
class CoarseConfig:
    """How the coarse stage reads a photo.

    Attributes:
        backend: ``"network"`` regresses the codes with the trained coarse encoder; ``"mediapipe"`` finds
            faces and their 468 landmarks with MediaPipe (``pip install 'aucgan[mediapipe]'``) and fits the
            built-in face model to them (:mod:`aucgan.stages.landmark_fit`): no coarse training, real
            photos, and real-photo datasets for ``aucgan train detail``; ``"auto"`` (what ``aucgan
            reconstruct`` and ``edit`` use when no backend is named) is ``mediapipe`` for photos when
            MediaPipe is installed and the face model is the built-in one, else ``network``, and always
            ``network`` for the synthetic world (``train``, ``evaluate``; see
            :func:`aucgan.stages.landmark_fit.resolve_backend`).
        max_faces: most faces MediaPipe fits in one image (the largest).
        min_confidence: MediaPipe's face-detection confidence threshold.
        min_face_px: MediaPipe: faces less tall than this in the photo's pixels (the detector's box, about
            brows to chin) are not fitted but reported, by size, in a note.
        fit_iterations: Levenberg-Marquardt iterations of the landmark fit.
        depth_weight: weight of MediaPipe's relative landmark depth against the image position.
        shape_prior, expression_prior, jaw_prior: how strongly the fit pulls the identity code, the AU
            intensities and the jaw rotation towards zero.
    """

    backend: str = setting("network", choices=("network", "mediapipe", "auto"))
    max_faces: int = setting(64, low=1)
    min_confidence: float = setting(0.5, low=0.0, high=1.0)
    min_face_px: float = setting(40.0, low=1.0)
    fit_iterations: int = setting(10, low=1)
    depth_weight: float = setting(0.5, low=0.0)
    shape_prior: float = setting(0.02, low=0.0)
    expression_prior: float = setting(0.1, low=0.0)
    jaw_prior: float = setting(0.05, low=0.0)


@dataclass
class RefineConfig:
    """Photometric refinement (:mod:`aucgan.stages.refine`): after the detail network, each face's coarse
    fit, then the AU intensities of its detail, then its displacement (shape from shading in UV space) are
    fitted to its photo, jointly with the light and a smooth albedo gain, on the visible skin.

    Attributes:
        mode: ``"auto"`` refines photos read with the MediaPipe backend (real photos, where the network
            trained on the synthetic world misses the face's own lines) and nothing else; ``"always"``
            and ``"never"`` say when else (words, not on/off, which YAML reads as booleans).
        compare: where the rendering meets the photo: ``"image"``, pixel by pixel as the camera saw the face
            (the detail normals looked up at each pixel's UV coordinates), or ``"uv"``, texel by texel
            against the photo sampled into UV (the coarser model of the two: a texel's colour is then one
            bilinear sample of the photo, not what the camera integrated); ``"auto"`` compares each face
            where it is sampled more coarsely: in the image when a pixel spans at least a texel (a small
            face, or a fine UV map), else in UV (a large crop, whose pixels are finer than the texels).
        steps: optimisation steps of the displacement per batch of faces (0: the displacement is the
            decoder's, after the AU fit of ``au_steps``).
        lr: Adam's step, in texel-slope units (one unit: a 45° slope between neighbouring texels).
        smoothness: weight of the squared Laplacian of the displacement.
        magnitude: weight of the squared distance to the starting displacement (the AU fit's prediction, or
            the network's): strong by default, so that only shading stronger than the skin's fine albedo
            texture moves it. A smooth albedo cannot explain that texture, and a weak pull copies it as
            relief (on synthetic test faces, after the AU fit, 0.05 raised the active-region error from 5.0°
            to 7.9°; 24 lowers it to 4.95°, and still takes half of real photos' fine residual).
        symmetry: weight pulling texels unseen in the photo towards their seen left-right mirror.
        levels: the displacement is optimised as a pyramid of this many resolutions.
        light_lr: the SH light's Adam step as a fraction of ``lr`` (0 keeps the coarse fit's light).
        band: the fit compares the residual after a Gaussian high-pass of this sigma, in texels at UV 256
            (scaled to the UV size; the same length on the face in pixels): what the coarse fit gets
            wrong at larger scales (shape, albedo, light) must not be explained by detail. 0: no high-pass.
        albedo_cells: the albedo may change by a smooth gain on this many cells across the UV square.
        robust: residuals (colour, in [0, 1]) above this count linearly, not quadratically.
        outlier: texels whose photo differs from the coarse-only rendering by more than this relative
            amount (grey level: hair, glasses, cast shadows) are left out.
        au_steps: before the displacement is fitted, the AU intensities that condition the detail decoder
            are fitted to the photo for this many steps (:func:`aucgan.stages.refine.fit_intensities`;
            0: keep where it starts, ``au_start``; decoders without AU conditioning skip it). The detail
            then stays among the folds the decoder draws, which fine albedo texture cannot imitate.
        au_lr: Adam's step of that fit, in intensity units (intensities are kept in [0, 1]).
        au_start: where that fit starts: ``"au-net"``, the AU net's intensities; ``"expression"``, the
            coarse fit's expression code, which on the built-in face *is* the 27 AU intensities (the rig
            edits set both); ``"auto"``, the expression where the face model's expression is that rig,
            else the AU net's. The coarse fit reads the AUs from the whole face's shape and shading, so
            from there a few steps do what 30 do from the AU net (32 val faces through the coarse network:
            5 steps 7.63° active against 7.58° for 30 from the AU net, at a sixth of the AU fit's cost).
        coarse_steps: before both, the coarse fit (shape, expression, albedo, pose, camera, light, a
            smooth albedo gain) is refitted to the photo for this many steps
            (:func:`aucgan.stages.refine.fit_coarse`; 0: keep the coarse stage's). The detail is read again
            through the refitted surface.
        coarse_lr: Adam's step of that fit, in code units.
        coarse_uv: the coarse fit compares the rendering with the photo in a UV map of at most this size
            (the face model's UV size when smaller; 0: always that size): the coarse surface's shading and
            outlines are smooth, and the fit's cost grows with the texels.
    """

    mode: str = setting("auto", choices=("auto", "always", "never"))
    compare: str = setting("auto", choices=("auto", "image", "uv"))
    steps: int = setting(50, low=0)
    lr: float = setting(0.02, low=1e-6)
    smoothness: float = setting(0.2, low=0.0)
    magnitude: float = setting(24.0, low=0.0)
    symmetry: float = setting(0.01, low=0.0)
    levels: int = setting(3, low=1, high=8)
    band: float = setting(4.0, low=0.0)
    light_lr: float = setting(0.1, low=0.0)
    albedo_cells: int = setting(8, low=1)
    robust: float = setting(0.02, low=1e-6)
    outlier: float = setting(0.35, low=1e-6)
    au_steps: int = setting(5, low=0)
    au_lr: float = setting(0.1, low=1e-6)
    au_start: str = setting("auto", choices=("auto", "au-net", "expression"))
    coarse_steps: int = setting(100, low=0)
    coarse_lr: float = setting(0.03, low=1e-6)
    coarse_uv: int = setting(160, low=0)


@dataclass
class LossConfig:
    """Loss weights (0 turns a term off) and kinds. Detail-stage weights default to DECA's.

    Attributes:
        photo_detail: L1 of the detail texture against the photo in UV space (DECA 2.0).
        mrf: ID-MRF on VGG19 features of the same patch (DECA 2.0 x 0.05); needs ``assets.vgg19``.
        z_reg: mean absolute displacement (DECA 0.005).
        z_diff: smoothness of the detail shading (DECA 0.005).
        z_sym: left-right symmetry of the displacement where unseen (DECA 0.005).
        detail_consistency: ``photo_detail`` again with detail codes swapped among the K images of each
            identity (DECA uses the photometric weight).
        au_score: AU consistency on the AU net's probabilities (rendering vs input).
        au_score_kind: ``"mse"`` or ``"bce"`` on probabilities (never BCE-with-logits).
        au_feature: AU consistency as the cosine distance of the per-AU features.
        adversarial: generator's adversarial weight.
        displacement_truth: synthetic data only: error of the displacement against the world's ground truth
            over the skin, in units of ``model.max_z / 20`` (0 = off, DECA's self-supervised objective
            alone); :mod:`aucgan.losses.truth`.
        displacement_truth_kind: ``"l2"`` (learns sparse folds) or ``"l1"`` (stays near zero on them).
        displacement_gradient: synthetic data only: squared error of the displacement's slopes against the
            truth's (what the detail normals see).
        edit_truth: synthetic data only: the truth losses again on an *edit pair* — each photo decoded with
            the AU intensities of another image of the same identity, against that image's displacement —
            so that an AU edit draws the folds the world would (0 = off).
        edit_true_aus: share of edit pairs conditioned on the world's true AU intensities (the rest on what
            the AU net reads from the other image).
        edit_single_au: synthetic data only: the truth losses again on a *single-AU edit* — each photo
            decoded with one wrinkle AU moved to a random intensity (on its true intensities, or on a
            neutral condition), against the world's displacement at that condition — so that an edit moves
            that AU's folds alone (0 = off; :meth:`aucgan.train.detail.DetailTraining.single_au_edit`).
        edit_single_region: the same single-AU edits' truth losses over the edited AU's wrinkle regions
            alone (so that a faint fold in a small region weighs as much as a deep one; 0 = off).
        edit_single_change: the same single-AU edits decoded again with the edited AU at 0: the error of
            the edit's change against the world's (that AU's folds alone), per face in units of the AU's
            whole fold, so that a faint AU's edit counts as much as a deep one's and any change outside its
            folds costs (:func:`aucgan.losses.truth.change_error`; one more decoder pass; 0 = off).
        refined_target: photos only (``coarse.backend=mediapipe``), self-distillation: the error
            (``displacement_truth_kind``, units of ``model.max_z / 20``) of the displacement against the
            photo's *refined* displacement, :func:`~aucgan.stages.refine.refine_faces` of the cached fit
            from flat with the ``refine.*`` settings (not from the network being trained), computed once for
            every cached image when the photo cache is built (0 = off; this or ``refined_gradient`` above 0
            turns the refinement of the cache on).
        refined_gradient: photos only: squared error of the displacement's slopes against the refined
            displacement's (as ``displacement_gradient``).
        adversarial_kind: ``"non-saturating"`` or ``"hinge"``.
        real_target, fake_target: non-saturating discriminator targets (the reference smoothed to 0.9/0.1).
        r1_gamma: lazy R1 penalty strength on real images (0 = off).
        r1_every: apply R1 every this many steps (scaled by it, as lazy regularisation does).
        code: coarse stage: L2 to the ground-truth codes (synthetic).
        landmarks: coarse stage: L1 of the projected 68 landmarks (NDC).
        photometric: coarse stage: L1 of the coarse rendering inside the face mask.
        au_positive_weight: AU net: the largest weight of a positive label, ``min(this, (1 - f) / f)`` for
            an AU of frequency ``f`` in the training batches (1 = plain BCE). Large weights trade false
            positives for recall: scores above 0.5 then over-predict rare AUs.
    """

    photo_detail: float = setting(2.0, low=0.0)
    mrf: float = setting(0.1, low=0.0)
    z_reg: float = setting(0.005, low=0.0)
    z_diff: float = setting(0.005, low=0.0)
    z_sym: float = setting(0.005, low=0.0)
    detail_consistency: float = setting(2.0, low=0.0)
    au_score: float = setting(1.0, low=0.0)
    au_score_kind: str = setting("mse", choices=("mse", "bce"))
    au_feature: float = setting(0.1, low=0.0)
    adversarial: float = setting(0.01, low=0.0)
    displacement_truth: float = setting(0.0, low=0.0)
    displacement_truth_kind: str = setting("l2", choices=("l2", "l1"))
    displacement_gradient: float = setting(0.0, low=0.0)
    edit_truth: float = setting(0.0, low=0.0)
    edit_true_aus: float = setting(0.5, low=0.0, high=1.0)
    edit_single_au: float = setting(0.0, low=0.0)
    edit_single_region: float = setting(0.0, low=0.0)
    edit_single_change: float = setting(0.0, low=0.0)
    refined_target: float = setting(0.0, low=0.0)
    refined_gradient: float = setting(0.0, low=0.0)
    adversarial_kind: str = setting("non-saturating", choices=("non-saturating", "hinge"))
    real_target: float = setting(0.9, low=0.0, high=1.0)
    fake_target: float = setting(0.1, low=0.0, high=1.0)
    r1_gamma: float = setting(0.0, low=0.0)
    r1_every: int = setting(16, low=1)
    code: float = setting(1.0, low=0.0)
    landmarks: float = setting(10.0, low=0.0)
    photometric: float = setting(1.0, low=0.0)
    au_positive_weight: float = setting(10.0, low=1.0)


@dataclass
class OptimConfig:
    """Adam(W) optimisers and the learning-rate schedule (stepped once per training step, by design).

    Attributes:
        lr: learning rate of the trained networks (the generator for the detail stage).
        lr_discriminator: learning rate of the discriminator.
        betas: Adam betas (the reference GAN: 0.5, 0.999).
        weight_decay: decoupled weight decay.
        warmup_steps: linear warm-up steps.
        schedule: ``"cosine"`` decays to 10 % of ``lr`` at the last step; ``"constant"`` keeps it.
    """

    lr: float = setting(1e-4, low=0.0)
    lr_discriminator: float = setting(1e-4, low=0.0)
    betas: tuple[float, float] = setting((0.5, 0.999), low=0.0, high=1.0)
    weight_decay: float = setting(0.0, low=0.0)
    warmup_steps: int = setting(0, low=0)
    schedule: str = setting("cosine", choices=("cosine", "constant"))


@dataclass
class AugmentConfig:
    """Augmentation through the one choke point (:mod:`aucgan.data.augment`): geometric + colour,
    consistent over image, mask and landmarks; the discriminator's reals and fakes pass the same one.

    Attributes:
        enabled: augment at all.
        rotation_degrees: largest in-plane rotation (never 90° turns).
        scale: range of the random zoom.
        translate: largest shift, fraction of the image side.
        brightness, contrast, saturation, hue: colour jitter strengths.
        mirror: probability of a left-right mirror, used by the AU stage only: its labels (bilateral AUs)
            are the same for a mirrored face, the other stages' targets (landmarks, pose, UV maps) are not.
    """

    enabled: bool = True
    rotation_degrees: float = setting(10.0, low=0.0, high=45.0)
    scale: tuple[float, float] = setting((0.9, 1.1), low=0.01)
    translate: float = setting(0.05, low=0.0, high=0.5)
    brightness: float = setting(0.15, low=0.0)
    contrast: float = setting(0.15, low=0.0)
    saturation: float = setting(0.15, low=0.0)
    hue: float = setting(0.02, low=0.0, high=0.5)
    mirror: float = setting(0.5, low=0.0, high=1.0)


@dataclass
class TrainerConfig:
    """The training loop (Lightning).

    Attributes:
        steps: training steps (batches).
        val_every: validate every this many steps (and at the end).
        log_every: log losses every this many steps.
        image_every: write an image grid every this many steps (0 = never).
        checkpoint_every: keep a periodic checkpoint every this many steps (``last.ckpt`` is always kept).
        devices: processes (DDP when more than 1; gloo on CPU, NCCL on GPUs).
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"``.
        precision: ``"32-true"`` or ``"bf16-mixed"``.
        out_dir: run folder (default ``runs/<config name>/<stage>``).
        progress: show progress bars.
        start_from: fine-tuning instead of a fresh initialisation; ``""`` = from scratch. ``train au``: an AU
            net file (ours or OpenGraphAU's); ``train coarse``: a checkpoint of ``aucgan train coarse``, whose
            encoder only is loaded (the face and albedo models stay the config's).
        max_bad_steps: a step whose loss or gradient is NaN/inf is skipped (nothing applied), counted and
            logged; this many such steps in a row stop the run, its last checkpoint intact.
        stop_after: end the run after this many steps (validated there, ``last.ckpt`` at that step) while
            its schedule and batch order stay laid out over ``steps``: a stage that starts the next one from
            a point of a longer schedule (the AU net's recipe in ``docs/RESULTS.md``). ``resume=true`` with
            a later ``stop_after`` (or 0) continues it exactly. 0 = run all ``steps``.
    """

    steps: int = setting(1000, low=1)
    val_every: int = setting(250, low=1)
    log_every: int = setting(10, low=1)
    image_every: int = setting(250, low=0)
    checkpoint_every: int = setting(500, low=1)
    devices: int = setting(1, low=1)
    accelerator: str = setting("cpu", choices=("cpu", "gpu", "auto"))
    precision: str = setting("32-true", choices=("32-true", "bf16-mixed"))
    out_dir: str = ""
    progress: bool = True
    start_from: str = ""
    max_bad_steps: int = setting(20, low=1)
    stop_after: int = setting(0, low=0)


@dataclass
class AssetsConfig:
    """Files the stages read (paths; empty = not given). Never downloaded; ``aucgan doctor`` checks them
    and says where each comes from.

    Attributes:
        au_net: the AU net: a ``last.ckpt``/``best.ckpt`` of ``aucgan train au`` or OpenGraphAU's
            ``OpenGprahAU-ResNet50_second_stage.pth``.
        coarse: the coarse stage: a checkpoint of ``aucgan train coarse``.
        vgg19: torchvision's ImageNet VGG19 state dict (``vgg19-dcbfe4e9.pth``), for the ID-MRF loss.
        detail: a checkpoint of ``aucgan train detail`` (holds the coarse stage and AU net it was trained
            with): what ``aucgan pack`` packs.
        weights: an aucgan weights file (``aucgan pack``) for ``reconstruct``, ``edit``, ``evaluate``;
            empty = the weights shipped with aucgan for the built-in synthetic world.
        flame_model: FLAME 2020 ``generic_model.pkl`` (``face_model.kind=flame``).
        flame_landmarks: DECA's ``landmark_embedding.npy`` (FLAME's 68 landmarks).
        head_template: DECA's ``head_template.obj`` (FLAME's UV layout).
        uv_face_mask: DECA's ``uv_face_eye_mask.png`` (the face region in UV space).
        flame_albedo: ``FLAME_albedo_from_BFM.npz`` or the FLAME texture space ``FLAME_texture.npz``.
        deca: DECA's ``deca_model.tar`` (E_flame as the coarse encoder; E_detail and D_detail as the
            detail stage when ``model.detail_decoder`` is ``none``).
    """

    au_net: str = ""
    coarse: str = ""
    vgg19: str = ""
    detail: str = ""
    weights: str = ""
    flame_model: str = ""
    flame_landmarks: str = ""
    head_template: str = ""
    uv_face_mask: str = ""
    flame_albedo: str = ""
    deca: str = ""


@dataclass
class Config:
    """The whole configuration of a run.

    Attributes:
        face_model: the parametric face model.
        render: the renderer.
        synth: the synthetic world.
        data, model, loss, optim, augment, trainer, assets: training (``aucgan train``).
        coarse: how photos are read (the coarse backend).
        refine: the photometric refinement of the detail after the network.
        resume: continue the run in ``trainer.out_dir`` from its ``last.ckpt``.
        seed: seed of every random number generator of the run.
    """

    face_model: FaceModelConfig = field(default_factory=FaceModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    assets: AssetsConfig = field(default_factory=AssetsConfig)
    resume: bool = False
    seed: int = 0


def load_config(
    schema: type[T], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> T:
    """Build a config from the schema's defaults, a YAML file and command-line overrides.

    Args:
        schema: the dataclass describing the config, e.g. :class:`Config`.
        path: a YAML file, or the name of a preset installed with aucgan (``"synthetic"``; see
            :func:`resolve_config`), or ``None`` for the defaults alone.
        overrides: ``key=value`` items applied after the file, e.g. ``["render.image_size=256"]``.

    Returns:
        A validated instance of ``schema`` (a plain dataclass, not an OmegaConf object).

    Raises:
        ConfigError: no such file or preset, the file cannot be read or parsed, or a key or value in it
            or in the overrides is not valid for the schema.
        TypeError: ``schema`` is not a dataclass, or declares a field type this loader does not support.
    """
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    layers: list[tuple[dict, _Origin]] = []
    if path is not None:
        resolved = resolve_config(path)
        data, lines = _read_yaml(resolved)
        layers.append((data, _Origin(str(resolved), lines)))
    return _merge_layers(schema, layers, overrides)


PACKAGE_SCHEME = "package://"
"""An ``assets.*`` path that starts with this names a file inside the installed aucgan package, e.g.
``package://pretrained/synthetic.safetensors`` (the shipped weights), wherever aucgan is installed and
whatever the working folder."""


def package_file(path: str) -> str:
    """``package://REL`` → the absolute path of ``REL`` inside the installed aucgan package; any other
    path unchanged. The file need not exist (the reader of the asset reports a missing file).

    Raises:
        ConfigError: ``REL`` is empty, absolute or climbs out of the package with ``..``.
    """
    if not path.startswith(PACKAGE_SCHEME):
        return path
    relative = Path(path[len(PACKAGE_SCHEME) :])
    if not relative.parts or relative.is_absolute() or ".." in relative.parts:
        raise ConfigError(
            f"{path}: {PACKAGE_SCHEME} names a file inside the installed aucgan, e.g. "
            f"{PACKAGE_SCHEME}pretrained/synthetic.safetensors"
        )
    return str(Path(__file__).parent / relative)


def _resolve_package_paths(config: Any) -> None:
    """Turn the ``package://`` paths of ``config.assets`` (when it has that section) into real paths."""
    assets = getattr(config, "assets", None)
    if not isinstance(assets, AssetsConfig):
        return
    for item in dataclasses.fields(assets):
        value = getattr(assets, item.name)
        if isinstance(value, str) and value.startswith(PACKAGE_SCHEME):
            try:
                setattr(assets, item.name, package_file(value))
            except ConfigError as error:
                raise ConfigError(f"assets.{item.name}={error}") from None


def preset_names() -> list[str]:
    """The names of the presets in :data:`PRESETS`, sorted."""
    return sorted(path.stem for path in PRESETS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the preset ``name`` (with or without ``.yaml``), e.g. ``preset_path("synthetic")``.

    Raises:
        ConfigError: no such preset (one line listing them).
    """
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in _PRESET_SUFFIXES else name
    path = PRESETS / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not stem or not path.is_file():
        raise ConfigError(f"no preset named {name!r}; presets: {', '.join(preset_names())}")
    return path


def resolve_config(config: str | os.PathLike[str]) -> Path:
    """The YAML file a config argument means: the file itself when it exists, else the preset of that
    name (``synthetic``, ``synthetic.yaml``), so a preset loads by name from any folder.

    Commands written before the presets were installed with the package name them ``configs/NAME.yaml``
    (the repository's old folder); such a path that does not exist resolves to the preset NAME, with a
    warning.

    Raises:
        ConfigError: neither a file nor a preset (one line listing the presets).
    """
    path = Path(config)
    if path.is_file():
        return path
    names = preset_names()
    if path.parent == Path(".") and (path.stem if path.suffix in _PRESET_SUFFIXES else path.name) in names:
        return preset_path(path.name)
    if path.parent.name == "configs" and path.suffix in _PRESET_SUFFIXES and path.stem in names:
        preset = preset_path(path.stem)
        log.warning("%s: not here; using the preset %r installed with aucgan (%s)", path, path.stem, preset)
        return preset
    listed = ", ".join(names)
    if path.exists():
        raise ConfigError(f"{path}: is not a file; give a YAML config file or a preset: {listed}")
    if path.parent == Path(".") and not path.suffix:
        raise ConfigError(f"no config file or preset named {str(config)!r}; presets: {listed}")
    raise ConfigError(f"config file not found: {path}; give an existing YAML file or a preset: {listed}")


def config_from_yaml(schema: type[T], text: str, source: str, overrides: Sequence[str] = ()) -> T:
    """Like :func:`load_config`, from YAML ``text`` (e.g. a config stored in a weights file named
    ``source``) instead of a file."""
    data, lines = _parse_yaml(text, source)
    return _merge_layers(schema, [(data, _Origin(source, lines))], overrides)


def config_to_yaml(cfg: Any) -> str:
    """``cfg`` as the YAML text :func:`save_config` writes (every default included), without the header."""
    schema = type(cfg)
    plain = _to_plain(cfg)
    _check_mapping(schema, schema, plain, "", _Origin("config to save"), allow_interpolation=False)
    return yaml.dump(
        plain, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def _merge_layers(schema: type[T], layers: list[tuple[dict, _Origin]], overrides: Sequence[str]) -> T:
    if overrides:
        layers.append((parse_overrides(overrides), _Origin(COMMAND_LINE)))

    merged = OmegaConf.structured(schema)
    for data, origin in layers:
        _check_mapping(schema, schema, data, "", origin, allow_interpolation=True)
        try:
            merged = OmegaConf.merge(merged, data)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{origin.where(_full_key(error))}: {_first_line(error)}") from None
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot resolve '{_full_key(error)}': {_first_line(error)}") from None
    _resolve_package_paths(config)
    _check_mapping(
        schema, schema, _to_plain(config), "", _Origin("resolved config"), allow_interpolation=False
    )
    return typing.cast(T, config)


def save_config(cfg: Any, out_dir: str | Path) -> Path:
    """Write a config, every default included, as ``config.yaml`` in ``out_dir`` (created if missing).

    Args:
        cfg: a config dataclass instance, e.g. the result of :func:`load_config`.
        out_dir: the run's output folder.

    Returns:
        The path of the written file; ``load_config(type(cfg), path)`` reads back an equal config.

    Raises:
        ConfigError: ``cfg`` holds an invalid value (so it would not load back).
        TypeError: ``cfg`` is not a dataclass instance.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"cfg must be a dataclass instance, got {type(cfg).__name__}")
    schema = type(cfg)
    body = config_to_yaml(cfg)
    out_path = Path(out_dir) / CONFIG_FILE_NAME
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Resolved configuration ({schema.__module__}.{schema.__qualname__}), all defaults included.\n"
    with atomic_open(out_path, binary=False) as handle:
        handle.write(header + body)
    return out_path


def parse_overrides(items: Sequence[str]) -> dict:
    """Turn ``key=value`` items into a nested dict.

    Dotted keys address nested sections (``"render.image_size=256"`` -> ``{"render": {"image_size":
    256}}``); values are parsed as YAML, so ``3`` is an int, ``0.5`` a float, ``[0, 0, 1]`` a list and
    ``abc`` a string. The keys are not checked against any schema here.

    Args:
        items: the override items, in command-line order.

    Returns:
        The nested dict of overrides.

    Raises:
        ConfigError: an item has no ``=``, an empty key part or an unparsable value, or two items set the
            same key (or a key and a section containing it).
    """
    if isinstance(items, str):
        raise ConfigError(
            f"{COMMAND_LINE}: overrides must be a list of key=value items, got the string {items!r}"
        )
    result: dict = {}
    assigned: dict[tuple[str, ...], str] = {}
    for item in items:
        key, equals, text = str(item).partition("=")
        parts = tuple(part.strip() for part in key.split("."))
        if not equals:
            raise ConfigError(f"{COMMAND_LINE}: override {item!r} is not of the form key=value")
        if not all(parts):
            raise ConfigError(f"{COMMAND_LINE}: override {item!r} has an empty key or key part")
        for other, other_item in assigned.items():
            shorter = min(len(other), len(parts))
            if other[:shorter] == parts[:shorter]:
                raise ConfigError(f"{COMMAND_LINE}: overrides {other_item!r} and {item!r} set the same key")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"{COMMAND_LINE}: cannot parse the value of {item!r}: {_yaml_problem(error)}"
            ) from None
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        assigned[parts] = str(item)
    return result


class _ConfigDumper(yaml.SafeDumper):
    """Safe YAML dumper writing mappings as blocks and lists of plain values on one line."""

    def represent_sequence(self, tag: str, sequence: Any, flow_style: bool | None = None) -> yaml.Node:
        flat = all(not isinstance(item, (list, tuple, dict)) for item in sequence)
        return super().represent_sequence(tag, sequence, flow_style=flat)


class _Origin:
    """Where a layer of settings came from: a file (with the line of each dotted key) or the command line."""

    def __init__(self, name: str, lines: Mapping[str, int] | None = None) -> None:
        self.name = name
        self.lines = lines or {}

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return self.name if line is None else f"{self.name}:{line}"


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """Parse a YAML file, refusing duplicate keys; return its mapping and the line of each dotted key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, path: str) -> tuple[dict, dict[str, int]]:
    """Parse YAML ``text`` read from ``path`` (a name for messages); see :func:`_read_yaml`."""
    loader = yaml.SafeLoader(text)
    lines: dict[str, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, lines
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(
                f"{path}:{node.start_mark.line + 1}: the top level must be a mapping of keys, got a {node.id}"
            )
        _scan_keys(node, "", str(path), lines, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark is not None else None
        where = str(path) if line is None else f"{path}:{line}"
        raise ConfigError(f"{where}: invalid YAML: {_yaml_problem(error)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(error)}") from None
    finally:
        loader.dispose()
    return data, lines


def _scan_keys(node: yaml.Node, prefix: str, file: str, lines: dict[str, int], seen: set[int]) -> None:
    """Record the line of every mapping key under ``node``; raise on a key given twice in one mapping."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _scan_keys(item, f"{prefix[:-1]}[{index}].", file, lines, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{file}:{line}: a key must be a plain name, got a {key_node.id}")
        dotted = prefix + key_node.value
        if key_node.value in first_lines:
            raise ConfigError(
                f"{file}:{line}: duplicate key '{dotted}' (first given on line {first_lines[key_node.value]})"
            )
        first_lines[key_node.value] = line
        lines[dotted] = line
        _scan_keys(value_node, dotted + ".", file, lines, seen)


def _check_mapping(
    root: type,
    schema: type,
    data: Mapping,
    prefix: str,
    origin: _Origin,
    *,
    allow_interpolation: bool,
) -> None:
    """Check the keys and values of ``data`` against ``schema``, the section at ``prefix`` of ``root``."""
    fields = _schema_fields(schema)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        where = origin.where(dotted)
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} under '{prefix[:-1] or 'top level'}' must be a name")
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{dotted}'; {_suggestion(root, schema, prefix, key)}")
        annotation, metadata = fields[key]
        if _is_section(annotation):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{where}: '{dotted}' is a section and needs a mapping of its keys, got {_show(value)}"
                )
            _check_mapping(
                root, annotation, value, dotted + ".", origin, allow_interpolation=allow_interpolation
            )
        elif not (allow_interpolation and _is_interpolation(value)):
            _check_value(annotation, metadata, value, dotted, where)


def _check_value(annotation: Any, metadata: Mapping[str, Any], value: Any, key: str, where: str) -> None:
    """Check one value's type, then its bounds and choices declared with :func:`setting`."""
    if not _matches(annotation, value):
        raise ConfigError(
            f"{where}: wrong type for '{key}': got {_show(value)} ({type(value).__name__}), "
            f"expected {_type_name(annotation)}"
        )
    if value is None:
        return
    choices = metadata.get(_CHOICES)
    if choices is not None:
        is_sequence = isinstance(value, (list, tuple))
        if any(item not in choices for item in (value if is_sequence else (value,))):
            allowed = ", ".join(repr(choice) for choice in choices)
            subject = "elements from" if is_sequence else "one of"
            raise ConfigError(
                f"{where}: invalid value for '{key}': got {_show(value)}, expected {subject} {allowed}"
            )
    low, high = metadata.get(_LOW), metadata.get(_HIGH)
    if low is None and high is None:
        return
    is_sequence = isinstance(value, (list, tuple))
    for number in value if is_sequence else (value,):
        if isinstance(number, (int, float)) and not _within(number, low, high):
            if low is not None and high is not None:
                expected = f"between {low} and {high}"
            else:
                expected = f">= {low}" if low is not None else f"<= {high}"
            subject = "each element " if is_sequence else ""
            raise ConfigError(
                f"{where}: invalid value for '{key}': got {_show(value)}, expected {subject}{expected}"
            )


def _within(number: float, low: float | None, high: float | None) -> bool:
    """Whether ``low <= number <= high`` (a missing bound is open); NaN is never within bounds."""
    return (low is None or number >= low) and (high is None or number <= high)


def _schema_fields(schema: type) -> dict[str, tuple[Any, Mapping[str, Any]]]:
    """The fields of a dataclass schema: name -> (resolved type annotation, field metadata)."""
    hints = typing.get_type_hints(schema)
    fields: dict[str, tuple[Any, Mapping[str, Any]]] = {}
    for item in dataclasses.fields(schema):
        annotation = hints[item.name]
        _require_supported(annotation, f"{schema.__qualname__}.{item.name}")
        fields[item.name] = (annotation, item.metadata)
    return fields


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _require_supported(annotation: Any, name: str) -> None:
    """Raise TypeError for a field type the loader cannot check (a schema bug, not a user mistake)."""
    if annotation in (Any, bool, int, float, str, Path, type(None)) or _is_section(annotation):
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return
    if origin in (typing.Union, types.UnionType, list, tuple, dict) and args:
        if origin is dict and args[0] is not str:
            raise TypeError(f"config field {name}: dict keys must be str, got {_type_name(annotation)}")
        for arg in args:
            if arg is not Ellipsis:
                if _is_section(arg):
                    raise TypeError(
                        f"config field {name}: a section cannot sit inside {_type_name(annotation)}"
                    )
                _require_supported(arg, name)
        return
    raise TypeError(f"config field {name}: unsupported type {_type_name(annotation)}")


def _matches(annotation: Any, value: Any) -> bool:
    """Whether a plain (YAML-like) value is acceptable for a field of the given type."""
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is Path:
        return isinstance(value, (str, Path))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or (isinstance(value, str) and value in annotation.__members__)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in args)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(args[0], item) for item in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], item) for item in value)
        return len(value) == len(args) and all(
            _matches(arg, item) for arg, item in zip(args, value, strict=True)
        )
    if origin is dict:
        return isinstance(value, Mapping) and all(
            isinstance(key, str) and _matches(args[1], item) for key, item in value.items()
        )
    return False


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return getattr(annotation, "__name__", repr(annotation))


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _suggestion(root: type, schema: type, prefix: str, key: str) -> str:
    """A did-you-mean for an unknown key: close siblings first, then close names in other sections."""
    siblings = list(_schema_fields(schema))
    names = [prefix + name for name in difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)]
    elsewhere = _dotted_keys(root, "")
    leaves = sorted({dotted.rsplit(".", 1)[-1] for dotted in elsewhere})
    close_leaves = difflib.get_close_matches(key, leaves, n=3, cutoff=0.75)
    for leaf in close_leaves:
        for dotted in elsewhere:
            if dotted.rsplit(".", 1)[-1] == leaf and dotted not in names and len(names) < 3:
                names.append(dotted)
    if names:
        return "did you mean " + " or ".join(f"'{name}'" for name in names) + "?"
    valid = ", ".join(prefix + name for name in siblings)
    return f"valid keys here: {valid}"


def _dotted_keys(schema: type, prefix: str) -> list[str]:
    """Every dotted key of a schema, sections included, depth first."""
    keys: list[str] = []
    for name, (annotation, _) in _schema_fields(schema).items():
        keys.append(prefix + name)
        if _is_section(annotation):
            keys.extend(_dotted_keys(annotation, f"{prefix}{name}."))
    return keys


def _to_plain(value: Any) -> Any:
    """A dataclass tree as plain YAML-ready containers (tuples become lists, paths strings, enums names)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _to_plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    return value


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 3] + "..."
    return text


def _full_key(error: OmegaConfBaseException) -> str:
    return str(getattr(error, "full_key", None) or "")


def _first_line(error: Exception) -> str:
    message = getattr(error, "msg", None) or str(error)
    return str(message).strip().splitlines()[0] if str(message).strip() else type(error).__name__


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        return " ".join(part for part in (error.context, error.problem) if part)
    return _first_line(error)

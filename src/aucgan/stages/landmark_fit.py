"""The coarse stage without a network: fit the built-in face model to 468 dense 3D landmarks.

MediaPipe's face-landmark model predicts the 468 points of its canonical face mesh, which is the built-in face
model's topology (:mod:`aucgan.face_model.procedural`), so every landmark is one model vertex and the fit
needs no correspondence search. Given landmarks in NDC (x right, y up, depth towards the viewer, up to an
unknown offset), :func:`fit_geometry` finds the identity code, the AU intensities (the expression code,
kept in [0, 1]), the global and jaw rotations and the orthographic camera by damped Gauss-Newton
(Levenberg-Marquardt) on

``E = Σ_v |P(v)_xy - l_v,xy|² + w_z² Σ_v (P(v)_z + d - l_v,z)²
+ w_s² |shape|² + w_e² |expression|² + w_j² |jaw|²``

with ``P(v) = s (R X_v + (tx, ty, 0))`` (:func:`aucgan.geometry.camera.orthographic_project`), ``d`` a free
depth offset, started from the similarity (Umeyama) that best maps the neutral template onto the landmarks.
The Jacobian is analytic and cheap: the model is linear in its codes up to the jaw's blended rotation, the
head rotation and the camera; only the 3x3 rotation matrices' derivatives are central differences, good to
~1e-10 (:func:`_jacobian`, tested against autograd). AU intensities held at 0 or 1 by the gradient form an
active set that the step leaves out. :func:`fit_appearance` then finds
the SH light and the albedo code from the visible skin by alternating linear least squares.
:class:`LandmarkCoarse` does both and returns a :class:`~aucgan.stages.coarse.CoarseOutput` like the
network's.
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from aucgan.config import CoarseConfig, ConfigError
from aucgan.face_model.base import FaceModel
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.render import texel_visibility
from aucgan.geometry.rotation import axis_angle_to_matrix, matrix_to_axis_angle
from aucgan.geometry.shading import sh_basis
from aucgan.nets.coarse_encoder import CoarseCodes
from aucgan.stages.coarse import CoarseOutput, CoarseStage
from aucgan.stages.detail import photo_in_uv

if TYPE_CHECKING:
    from aucgan.data.face_mesh import FaceMeshDetector

DENSE_LANDMARKS = 468
"""Landmarks of MediaPipe's face mesh: the vertices of the built-in face model, in its order."""

VISIBILITY_SIZE = 128
"""Largest side at which :func:`fit_appearance` rasterises the face to find its visible texels."""


@dataclass(frozen=True)
class FitSettings:
    """Weights and iterations of :func:`fit_geometry` and :func:`fit_appearance`.

    Attributes:
        iterations: most Levenberg-Marquardt iterations.
        tolerance: stop earlier once every face has taken an accepted step that lowered its cost by less
            than this fraction (faces keep their last accepted parameters meanwhile).
        depth_weight: ``w_z``, the weight of the landmarks' depth against their image position (MediaPipe's
            depth is relative and less certain than x, y).
        shape_prior: ``w_s`` (identity codes are ~N(0, 1) per component).
        expression_prior: ``w_e``, pulls AU intensities to 0 (sparse expressions).
        jaw_prior: ``w_j``, pulls the jaw rotation to 0 (AU26/AU27 open the jaw already).
        appearance_rounds: alternations of light and albedo least squares.
        appearance_texels: the least squares use every ``uv_size // appearance_texels``-th texel of the UV
            maps in each direction.
        albedo_prior: ridge weight on the albedo code (unit-variance components), per visible texel.
    """

    iterations: int = 10
    tolerance: float = 1e-3
    depth_weight: float = 0.5
    shape_prior: float = 0.02
    expression_prior: float = 0.1
    jaw_prior: float = 0.05
    appearance_rounds: int = 3
    appearance_texels: int = 64
    albedo_prior: float = 1e-3


@dataclass(frozen=True)
class GeometryFit:
    """What :func:`fit_geometry` found for a batch.

    Attributes:
        shape, expression, pose, camera: codes ``(B, n_shape)``, ``(B, 27)``, ``(B, 6)``, ``(B, 3)``.
        depth_offset: ``(B,)`` the offset between the model's and the landmarks' depth.
        error: ``(B, 468)`` distance in NDC between each projected model vertex and its landmark (x, y).
    """

    shape: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    camera: torch.Tensor
    depth_offset: torch.Tensor
    error: torch.Tensor


def require_dense_face_model(face_model: FaceModel) -> None:
    """``ValueError`` unless ``face_model`` is the built-in one, whose vertices are the 468 landmarks."""
    if not face_model.expression_is_au_rig or face_model.template.shape[0] != DENSE_LANDMARKS:
        raise ValueError(
            "fitting 468 landmarks needs the built-in face model (face_model.kind=procedural), whose "
            "vertices are MediaPipe's face-mesh points"
        )


def _check_landmarks(face_model: FaceModel, landmarks: torch.Tensor) -> None:
    require_dense_face_model(face_model)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (DENSE_LANDMARKS, 3):
        raise ValueError(f"landmarks must be (B, {DENSE_LANDMARKS}, 3), got {tuple(landmarks.shape)}")
    if not torch.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")


def similarity_init(template: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rotation, scale and translation that best map ``template (V, 3)`` onto ``landmarks (B, V, 3)``
    (Umeyama's least-squares similarity).

    Returns:
        ``rotation (B, 3, 3)`` (a proper rotation), ``scale (B,)``, ``translation (B, 3)``, with
        ``landmarks ≈ scale * template @ rotation.T + translation``.
    """
    source = template.to(landmarks.dtype).expand_as(landmarks)
    source_mean, target_mean = source.mean(1, keepdim=True), landmarks.mean(1, keepdim=True)
    a, b = source - source_mean, landmarks - target_mean
    covariance = b.transpose(1, 2) @ a / a.shape[1]
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.ones_like(singular)
    sign[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    rotation = u @ torch.diag_embed(sign) @ vh
    variance = (a * a).sum((1, 2)) / a.shape[1]
    scale = (singular * sign).sum(1) / variance
    translation = target_mean[:, 0] - scale[:, None] * (rotation @ source_mean[:, 0, :, None])[..., 0]
    return rotation, scale, translation


class _Layout:
    """Where each code sits in the flat parameter vector of the fit."""

    def __init__(self, n_shape: int, n_expression: int) -> None:
        self.shape = slice(0, n_shape)
        self.expression = slice(n_shape, n_shape + n_expression)
        start = n_shape + n_expression
        self.pose = slice(start, start + 6)
        self.jaw = slice(start + 3, start + 6)
        self.camera = slice(start + 6, start + 9)
        self.depth = start + 9
        self.size = start + 10


def _residuals(
    face_model: FaceModel,
    layout: _Layout,
    params: torch.Tensor,
    landmarks: torch.Tensor,
    settings: FitSettings,
) -> torch.Tensor:
    """``(N, R)`` weighted residuals of parameters ``(N, P)`` against ``landmarks (N, 468, 3)``."""
    geometry = face_model(params[:, layout.shape], params[:, layout.expression], params[:, layout.pose])
    projected = orthographic_project(geometry.vertices, params[:, layout.camera])
    depth = projected[..., 2] + params[:, layout.depth, None]
    return torch.cat(
        [
            (projected[..., :2] - landmarks[..., :2]).transpose(1, 2).flatten(1),  # all x, then all y
            settings.depth_weight * (depth - landmarks[..., 2]),
            settings.shape_prior * params[:, layout.shape],
            settings.expression_prior * params[:, layout.expression],
            settings.jaw_prior * params[:, layout.jaw],
        ],
        dim=1,
    )


def _rotation_derivatives(axis_angle: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """``(B, 3, 3, 3)``: the derivative of the rotation matrix with respect to each axis-angle entry
    (central differences of :func:`axis_angle_to_matrix`; exact to ~1e-10 in float64)."""
    offsets = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device) * step
    plus = axis_angle_to_matrix(axis_angle[:, None] + offsets)
    minus = axis_angle_to_matrix(axis_angle[:, None] - offsets)
    return (plus - minus) / (2 * step)


def _jacobian(
    face_model: FaceModel, layout: _Layout, params: torch.Tensor, settings: FitSettings
) -> torch.Tensor:
    """``(B, R, P)`` the exact Jacobian of :func:`_residuals` for the built-in face model, using its
    structure: vertices linear in the codes, then the jaw's blended rotation, the global rotation and the
    camera (tested against autograd of :func:`_residuals`). Derivatives are kept coordinate-major,
    ``(B, 3, V, n)``, so that each rotation applies to all of them in one matrix product."""
    batch, dtype = params.shape[0], params.dtype
    n_codes, n_linear = layout.size, layout.expression.stop
    shape, expression = params[:, layout.shape], params[:, layout.expression]
    global_rotation, jaw = params[:, layout.pose.start : layout.pose.start + 3], params[:, layout.jaw]
    scale = params[:, layout.camera.start, None, None, None]
    identity, rig = face_model.identity_basis.to(dtype), face_model.au_basis.to(dtype)
    opening = face_model.jaw_opening.to(dtype)
    weights = face_model.jaw_weights.to(dtype)  # (V,)
    pivot = face_model.jaw_pivot.to(dtype)
    n_vertices = weights.shape[0]
    base = (
        face_model.template.to(dtype)
        + torch.einsum("bk,kvc->bvc", shape, identity)
        + torch.einsum("bk,kvc->bvc", expression, rig)
    )
    angle = jaw + (expression @ opening)[:, None] * params.new_tensor([1.0, 0.0, 0.0])
    jaw_matrix, jaw_derivative = axis_angle_to_matrix(angle), _rotation_derivatives(angle)
    rotation, rotation_derivative = (
        axis_angle_to_matrix(global_rotation),
        _rotation_derivatives(global_rotation),
    )
    relative = (base - pivot).transpose(1, 2)  # (B, 3, V)
    base_t = base.transpose(1, 2)
    blended = base_t + weights * (jaw_matrix @ relative + pivot[:, None] - base_t)  # (B, 3, V)
    posed = rotation @ blended

    def rotate_each(derivatives: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, 3, V, 3): the derivative matrices (B, 3 [entry], 3, 3) applied to points (B, 3, V)."""
        moved = derivatives.reshape(batch, 9, 3) @ points  # (B, entry * 3 + i, V)
        return moved.reshape(batch, 3, 3, n_vertices).permute(0, 2, 3, 1)

    directions = torch.cat([identity, rig]).permute(2, 1, 0)  # (3, V, n_linear)
    rotated = (jaw_matrix @ directions.reshape(3, -1)).reshape(batch, 3, n_vertices, n_linear)
    keep = (1 - weights)[:, None]
    d_blended = torch.empty(batch, 3, n_vertices, n_linear + 3, dtype=dtype, device=params.device)
    jaw_moves = rotate_each(jaw_derivative, relative) * weights[:, None]  # (B, 3, V, 3)
    d_blended[..., :n_linear] = keep * directions + weights[:, None] * rotated
    d_blended[..., layout.expression] += jaw_moves[..., :1] * opening
    d_blended[..., n_linear:] = jaw_moves
    d_posed = (rotation @ d_blended.reshape(batch, 3, -1)).reshape(batch, 3, n_vertices, n_linear + 3)
    vertex = params.new_zeros(batch, 3, n_vertices, n_codes)
    vertex[..., :n_linear] = scale * d_posed[..., :n_linear]
    vertex[..., layout.jaw] = scale * d_posed[..., n_linear:]
    vertex[..., layout.pose.start : layout.pose.start + 3] = scale * rotate_each(rotation_derivative, blended)
    vertex[:, :2, :, layout.camera.start] = (
        posed[:, :2] + params[:, layout.camera.start + 1 : layout.camera.stop, None]
    )
    vertex[:, 2, :, layout.camera.start] = posed[:, 2]
    vertex[:, 0, :, layout.camera.start + 1] = scale[:, 0, 0]
    vertex[:, 1, :, layout.camera.start + 2] = scale[:, 0, 0]
    vertex[:, 2, :, layout.depth] = 1.0
    priors = params.new_zeros(batch, n_linear + 3, n_codes)
    rows = torch.arange(n_linear)
    priors[:, rows[layout.shape], rows[layout.shape]] = settings.shape_prior
    priors[:, rows[layout.expression], rows[layout.expression]] = settings.expression_prior
    priors[:, torch.arange(n_linear, n_linear + 3), torch.arange(layout.jaw.start, layout.jaw.stop)] = (
        settings.jaw_prior
    )
    return torch.cat([vertex[:, :2].flatten(1, 2), settings.depth_weight * vertex[:, 2], priors], dim=1)


_FLOAT64_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _float64_copy(face_model: FaceModel) -> FaceModel:
    """A float64 copy of ``face_model`` on its device, made once per model and device (copying the built-in
    model takes ~20 ms, more than fitting one face); the model's buffers are constants."""
    device = face_model.template.device
    cached = _FLOAT64_COPIES.get(face_model)
    if cached is None or cached.template.device != device:
        cached = copy.deepcopy(face_model).double()
        _FLOAT64_COPIES[face_model] = cached
    return cached


def fit_geometry(
    face_model: FaceModel, landmarks: torch.Tensor, settings: FitSettings = FitSettings()
) -> GeometryFit:
    """Fit shape, AU intensities, pose and camera of the built-in face model to dense landmarks.

    Args:
        face_model: the built-in face model (:class:`~aucgan.face_model.procedural.ProceduralFaceModel`).
        landmarks: ``(B, 468, 3)`` NDC: x right and y up in [-1, 1] across the image, depth towards the
            viewer on the x scale (any offset).
        settings: weights and iterations.

    Returns:
        The fit (float32 codes on the landmarks' device; computed in float64).

    Raises:
        ValueError: another face model, or landmarks of the wrong shape or not finite.
    """
    _check_landmarks(face_model, landmarks)
    out_dtype = landmarks.dtype
    model = _float64_copy(face_model)
    target = landmarks.double()
    batch = target.shape[0]
    layout = _Layout(model.n_shape, model.n_expression)
    rotation, scale, translation = similarity_init(model.template, target)
    params = target.new_zeros(batch, layout.size)
    params[:, layout.pose.start : layout.pose.start + 3] = matrix_to_axis_angle(rotation)
    params[:, layout.camera] = torch.stack(
        [scale, translation[:, 0] / scale, translation[:, 1] / scale], dim=1
    )
    params[:, layout.depth] = translation[:, 2]
    damping = target.new_full((batch,), 1e-3)
    done = torch.zeros(batch, dtype=torch.bool, device=target.device)

    def residuals(p: torch.Tensor) -> torch.Tensor:
        return _residuals(model, layout, p, target, settings)

    current = residuals(params)
    cost = (current * current).sum(1)
    for _ in range(settings.iterations):
        jacobian = _jacobian(model, layout, params, settings)
        gram = jacobian.transpose(1, 2) @ jacobian
        gradient = jacobian.transpose(1, 2) @ current[..., None]
        # Active set: an AU intensity at 0 (or 1) that the gradient pushes further out stays where it is, and
        # the step is solved for the others (clamping a free step instead makes it zigzag).
        expression, pull = params[:, layout.expression], gradient[:, layout.expression, 0]
        held = ((expression <= 0.0) & (pull > 0)) | ((expression >= 1.0) & (pull < 0))
        free = torch.ones_like(params)
        free[:, layout.expression] = (~held).to(params.dtype)
        gram = gram * free[:, :, None] * free[:, None, :] + torch.diag_embed(1.0 - free)
        gradient = gradient * free[..., None]
        diagonal = torch.diag_embed(gram.diagonal(dim1=1, dim2=2).clamp(min=1e-9))
        delta = torch.linalg.solve(gram + damping[:, None, None] * diagonal, -gradient)[..., 0]
        proposal = params + delta
        proposal[:, layout.expression] = proposal[:, layout.expression].clamp(0.0, 1.0)
        trial = residuals(proposal)
        trial_cost = (trial * trial).sum(1)
        better = (trial_cost < cost) & ~done  # a face that is done keeps its parameters
        # A face is done when an accepted step gained less than the tolerance, or its damping is at the
        # ceiling (no step helps); a rejected step only raises the damping.
        done |= better & (cost - trial_cost <= settings.tolerance * cost)
        params = torch.where(better[:, None], proposal, params)
        current = torch.where(better[:, None], trial, current)
        cost = torch.where(better, trial_cost, cost)
        damping = torch.where(
            done, damping, torch.where(better, damping / 3.0, damping * 4.0).clamp(1e-7, 1e7)
        )
        done |= damping >= 1e7
        if bool(done.all()):
            break
    geometry = model(params[:, layout.shape], params[:, layout.expression], params[:, layout.pose])
    projected = orthographic_project(geometry.vertices, params[:, layout.camera])
    error = (projected[..., :2] - target[..., :2]).norm(dim=-1)

    def out(value: torch.Tensor) -> torch.Tensor:
        return value.to(out_dtype)

    return GeometryFit(
        shape=out(params[:, layout.shape]),
        expression=out(params[:, layout.expression]),
        pose=out(params[:, layout.pose]),
        camera=out(params[:, layout.camera]),
        depth_offset=out(params[:, layout.depth]),
        error=out(error),
    )


def fit_appearance(
    stage: CoarseStage,
    images: torch.Tensor,
    coarse: CoarseOutput,
    settings: FitSettings = FitSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """SH light and albedo code of the visible skin, by alternating linear least squares.

    The rendering model is ``photo(t) = albedo(t) ⊙ (sh_basis(n_t) · L)`` at every skin texel ``t`` seen in
    the image: with the albedo fixed the light ``L (9, 3)`` is linear, with the light fixed the albedo code is
    (ridge on the unit-variance code). Starts from the mean albedo.

    Args:
        stage: the coarse stage (face model, albedo model, UV space).
        images: ``(B, 3, H, W)`` in [0, 1].
        coarse: the fitted geometry, decoded (its albedo and light are not used).

    Returns:
        ``light (B, 9, 3)`` and ``albedo code (B, n_albedo)``.
    """
    albedo_model = stage.albedo
    batch = images.shape[0]
    n_albedo = albedo_model.n_albedo
    rendering = stage.render(coarse, image_size=min(images.shape[-1], VISIBILITY_SIZE))
    skin = stage.uv_space.to(images.device).skin
    visible = texel_visibility(
        coarse.surface.positions, coarse.surface.normals, coarse.codes.camera, rendering.fragments
    )
    # Every step-th texel in each direction (about 64² of them) holds ample equations for 27 + K unknowns.
    step = max(1, stage.uv_space.size // settings.appearance_texels)
    grid = (..., slice(None, None, step), slice(None, None, step))
    weight = (visible * skin)[grid].flatten(1).double()  # (B, T)
    photo = photo_in_uv(images, coarse)[grid].flatten(2).double()  # (B, 3, T)
    normals = coarse.surface.normals[grid]
    basis = sh_basis(normals.permute(0, 2, 3, 1)).flatten(1, 2).double()  # (B, T, 9)
    mean = albedo_model.mean[grid].flatten(1).double()  # (3, T)
    components = albedo_model.basis[grid].flatten(2).double()  # (K, 3, T)
    albedo_code = photo.new_zeros(batch, n_albedo)
    light = photo.new_zeros(batch, 9, 3)
    count = weight.sum(1).clamp(min=1.0)
    for _ in range(max(1, settings.appearance_rounds)):
        albedo = (mean + torch.einsum("bk,kct->bct", albedo_code, components)).clamp(0.0, 1.0)
        # Light, per colour channel: the photo is the albedo times the SH basis applied to the light.
        design = albedo[..., None] * basis[:, None]  # (B, 3, T, 9)
        weighted = design * weight[:, None, :, None]
        gram = weighted.transpose(2, 3) @ design + 1e-6 * torch.eye(
            9, dtype=design.dtype, device=design.device
        )
        rhs = weighted.transpose(2, 3) @ photo[..., None]
        light = torch.linalg.solve(gram, rhs)[..., 0].transpose(1, 2)  # (B, 9, 3)
        # Albedo code: what the mean albedo's shading leaves of the photo is the code's components, shaded.
        shading = torch.einsum("btk,bkc->bct", basis, light)  # (B, 3, T)
        residual = (photo - mean * shading).flatten(1)  # (B, 3T)
        design = (components[None] * shading[:, None]).flatten(2)  # (B, K, 3T)
        weights3 = weight.repeat(1, 3)
        weighted = design * weights3[:, None]
        ridge = (
            settings.albedo_prior
            * count[:, None, None]
            * torch.eye(n_albedo, dtype=design.dtype, device=design.device)
        )
        gram = weighted @ design.transpose(1, 2) + ridge
        albedo_code = torch.linalg.solve(gram, (weighted @ residual[..., None]))[..., 0]
    return light.to(images.dtype), albedo_code.to(images.dtype)


class LandmarkCoarse:
    """A coarse stage driven by dense landmarks: :func:`fit_geometry`, then :func:`fit_appearance`.

    Args:
        stage: the built-in face's coarse stage (its encoder, if any, is not used).
        settings: the fit's weights and iterations.
    """

    def __init__(self, stage: CoarseStage, settings: FitSettings = FitSettings()) -> None:
        self.stage = stage
        self.settings = settings

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor) -> tuple[CoarseOutput, torch.Tensor]:
        """Fit ``images (B, 3, H, W)`` with their ``landmarks (B, 468, 3)`` NDC.

        Returns:
            The coarse output and the per-landmark image-plane error ``(B, 468)`` in NDC.
        """
        geometry = fit_geometry(self.stage.face_model, landmarks.float(), self.settings)
        batch = geometry.shape.shape[0]
        codes = CoarseCodes(
            shape=geometry.shape,
            albedo=geometry.shape.new_zeros(batch, self.stage.albedo.n_albedo),
            expression=geometry.expression,
            pose=geometry.pose,
            camera=geometry.camera,
            light=geometry.shape.new_zeros(batch, 9, 3),
        )
        coarse = self.stage.decode(codes)
        light, albedo = fit_appearance(self.stage, images.float(), coarse, self.settings)
        # The geometry is decoded once: only the albedo map and the codes change.
        return dataclasses.replace(
            coarse,
            codes=dataclasses.replace(codes, light=light, albedo=albedo),
            uv_albedo=self.stage.albedo(albedo),
        ), geometry.error


def mediapipe_backend(stage: CoarseStage, settings: CoarseConfig) -> tuple[LandmarkCoarse, FaceMeshDetector]:
    """The landmark fit and MediaPipe's detector for ``coarse.backend=mediapipe``.

    Raises:
        ConfigError: another face model than the built-in one, or MediaPipe not installed.
    """
    from aucgan.data.face_mesh import FaceMeshDetector, require_mediapipe

    try:
        require_dense_face_model(stage.face_model)
    except ValueError as error:
        raise ConfigError(
            f"coarse.backend=mediapipe: {error}; with FLAME use coarse.backend=network"
        ) from None
    require_mediapipe()
    fit = FitSettings(
        iterations=settings.fit_iterations,
        depth_weight=settings.depth_weight,
        shape_prior=settings.shape_prior,
        expression_prior=settings.expression_prior,
        jaw_prior=settings.jaw_prior,
    )
    return LandmarkCoarse(stage, fit), FaceMeshDetector(
        settings.max_faces, settings.min_confidence, settings.min_face_px
    )


AUTO_NETWORK_NOTE = (
    "note: coarse.backend=auto uses the coarse network, which knows only the synthetic world; "
    "pip install 'aucgan[mediapipe]' fits real photos' head pose and shape (MediaPipe landmarks)"
)
"""What ``coarse.backend=auto`` says when it falls back to the network for want of MediaPipe."""


@dataclass(frozen=True)
class BackendChoice:
    """The coarse backend that ``coarse.backend`` names, ``"auto"`` resolved.

    Attributes:
        backend: ``"network"`` or ``"mediapipe"``.
        note: one line for the user when ``"auto"`` fell back to the network for want of MediaPipe
            (:data:`AUTO_NETWORK_NOTE`); ``""`` otherwise.
    """

    backend: str
    note: str = ""


def resolve_backend(
    settings: CoarseConfig, face_model_kind: str, has_encoder: bool = True, photos: bool = True
) -> BackendChoice:
    """The backend ``settings.backend`` stands for; ``"network"`` and ``"mediapipe"`` stand for themselves.

    ``"auto"`` is ``"mediapipe"`` where it is the only way to read a face (weights without a coarse encoder,
    trained with ``coarse.backend=mediapipe``), else ``"network"`` for the synthetic world (``photos=False``:
    training, evaluation on its renders, whose truth the network was trained against) and for another face
    model than the built-in one (the landmark fit knows only it), else ``"mediapipe"`` when MediaPipe is
    installed and imports (:func:`aucgan.data.face_mesh.require_mediapipe`), else ``"network"`` with a
    note saying what the extra brings.

    Args:
        settings: the coarse settings.
        face_model_kind: ``face_model.kind`` of the weights (``"procedural"`` or ``"flame"``).
        has_encoder: whether the coarse stage has its trained encoder.
        photos: whether the images are photos (``reconstruct``, ``edit``) rather than the synthetic world's.

    Raises:
        ConfigError: an unknown backend.
    """
    if settings.backend not in ("network", "mediapipe", "auto"):
        raise ConfigError(f"coarse.backend={settings.backend}: choose network, mediapipe or auto")
    if settings.backend != "auto":
        return BackendChoice(settings.backend)
    if not has_encoder:
        return BackendChoice("mediapipe")
    if not photos or face_model_kind != "procedural":
        return BackendChoice("network")
    from aucgan.data.face_mesh import MediaPipeMissing, require_mediapipe

    try:
        require_mediapipe()
    except MediaPipeMissing:
        return BackendChoice("network", AUTO_NETWORK_NOTE)
    return BackendChoice("mediapipe")


def relative_landmark_error(
    vertices: torch.Tensor, camera: torch.Tensor, landmarks: torch.Tensor
) -> torch.Tensor:
    """``(B,)`` median image-plane distance between the projected model vertices ``(B, 468, 3)`` and their
    landmarks ``(B, 468, 3)`` NDC, in units of the face box: the mean side of the bounding box of the 68
    landmarks of :data:`~aucgan.face_model.procedural.LANDMARKS_68` (how the crop is framed)."""
    from aucgan.face_model.procedural import LANDMARKS_68

    projected = orthographic_project(vertices, camera)[..., :2]
    distance = (projected - landmarks[..., :2]).norm(dim=-1)
    box = landmarks[:, list(LANDMARKS_68), :2]
    side = (box.amax(1) - box.amin(1)).mean(-1)
    return distance.median(dim=1).values / side


def landmarks_to_ndc(points: torch.Tensor, size: int) -> torch.Tensor:
    """Landmarks ``(..., 3)`` in pixels of a ``size``² image (x right, y down, pixel centres at integers;
    depth in pixels, smaller nearer, as MediaPipe gives it) → NDC (x right, y up, depth larger nearer, on
    the x scale)."""
    from aucgan.data.augment import pixels_to_ndc

    return torch.cat([pixels_to_ndc(points[..., :2], size, size), points[..., 2:] * (-2.0 / size)], dim=-1)


__all__ = [
    "AUTO_NETWORK_NOTE",
    "DENSE_LANDMARKS",
    "BackendChoice",
    "FitSettings",
    "GeometryFit",
    "LandmarkCoarse",
    "fit_appearance",
    "fit_geometry",
    "landmarks_to_ndc",
    "mediapipe_backend",
    "relative_landmark_error",
    "require_dense_face_model",
    "resolve_backend",
    "similarity_init",
]

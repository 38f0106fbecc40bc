"""The FLAME head model as a stateless layer, read from the published files without chumpy.

Files (user-supplied, never downloaded):

* FLAME 2020 ``generic_model.pkl``: a protocol-2 pickle of chumpy arrays and a SciPy sparse matrix, read
  with :func:`aucgan.loaders.pickles.restricted_load` (no code runs). Keys used: ``v_template (V, 3)``
  metres, ``f (F, 3)``, ``shapedirs (V, 3, 400)`` (columns 0..299 identity shape, 300..399 expression),
  ``posedirs (V, 3, 36)``, ``J_regressor (5, V)`` (sparse), ``kintree_table (2, 5)`` (parents in row 0,
  the root's a huge unsigned value), ``weights (V, 5)``. Other keys (``J``, ``bs_style``, ...) are ignored.
* DECA's ``landmark_embedding.npy`` (optional): a pickled dict of barycentric landmark embeddings, read with
  :func:`aucgan.loaders.pickles.load_npy_dict`: 51 static landmarks (iBUG-68 points 18..68), a 79-row table
  of the 17 jaw-contour landmarks indexed by head yaw, and a fixed 68-landmark embedding.
* DECA's ``head_template.obj`` and ``uv_face_eye_mask.png`` (for :class:`FlameFaceModel`): the UV layout
  of FLAME's triangles (read with :func:`read_obj_template`) and the face region in UV space.

:class:`FlameLayer` is FLAME alone; :class:`FlameFaceModel` puts it behind the
:class:`~aucgan.face_model.base.FaceModel` interface with DECA's UV template (:func:`load_flame_face_model`).

Joints: 0 global (root), 1 neck, 2 jaw, 3 left eye, 4 right eye. The layer's pose code is ``(B, 6)`` =
global rotation (3) + jaw rotation (3), axis-angle in radians; neck and eye rotations are zero.

The model data lives in non-persistent buffers: they follow ``.to()`` but never enter a ``state_dict``, so
the project's own weight files never carry FLAME (whose licence forbids redistribution).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aucgan.face_model.base import FACE_PART_EYE, FACE_PART_SKIN, FaceGeometry, FaceModel, check_code_shapes
from aucgan.face_model.lbs import linear_blend_skinning
from aucgan.geometry.rotation import axis_angle_to_matrix
from aucgan.loaders.common import CheckpointError
from aucgan.loaders.pickles import SparseMatrix, load_npy_dict, restricted_load

MAX_SHAPE = 300
"""Identity shape components in FLAME 2020 (``shapedirs`` columns 0..299)."""
MAX_EXPRESSION = 100
"""Expression components in FLAME 2020 (``shapedirs`` columns 300..399)."""
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
PARENTS = (-1, 0, 1, 1, 1)
N_CONTOUR = 17
N_STATIC = 51
MAX_CONTOUR_YAW = 39
"""The contour table has rows for yaw 0..39 degrees and -1..-39 degrees (79 rows)."""
_POSE_FEATURES = 9 * (len(PARENTS) - 1)
_REQUIRED_KEYS = ("f", "v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


@dataclass(frozen=True)
class FlameData:
    """The arrays of a FLAME model, validated (NumPy, float64 / int64).

    Attributes:
        template: ``(V, 3)`` mean head, metres.
        faces: ``(F, 3)`` vertex triangles.
        shape_directions: ``(V, 3, n_shape)`` identity blend shapes.
        expression_directions: ``(V, 3, n_exp)`` expression blend shapes.
        pose_directions: ``(36, 3 V)`` pose-corrective blend shapes (``posedirs`` reshaped to
            ``(3 V, 36)`` and transposed).
        joint_regressor: ``(5, V)`` dense.
        skinning_weights: ``(V, 5)``.
    """

    template: np.ndarray
    faces: np.ndarray
    shape_directions: np.ndarray
    expression_directions: np.ndarray
    pose_directions: np.ndarray
    joint_regressor: np.ndarray
    skinning_weights: np.ndarray


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as barycentric points on mesh triangles (NumPy).

    Attributes:
        static_faces: ``(51,)`` triangle of each static landmark (iBUG-68 points 18..68).
        static_barycentric: ``(51, 3)``.
        dynamic_faces: ``(79, 17)`` triangles of the 17 jaw-contour landmarks, one row per head yaw (see
            :func:`contour_rows`).
        dynamic_barycentric: ``(79, 17, 3)``.
        full_faces: ``(68,)`` a fixed embedding of all 68 landmarks (DECA's ``landmarks3d``).
        full_barycentric: ``(68, 3)``.
    """

    static_faces: np.ndarray
    static_barycentric: np.ndarray
    dynamic_faces: np.ndarray
    dynamic_barycentric: np.ndarray
    full_faces: np.ndarray
    full_barycentric: np.ndarray


@dataclass(frozen=True)
class FlameOutput:
    """Posed FLAME geometry, metres.

    Attributes:
        vertices: ``(B, V, 3)``.
        joints: ``(B, 5, 3)`` posed joints (global, neck, jaw, left eye, right eye).
        landmarks: ``(B, 68, 3)`` iBUG-68 landmarks: the 17 jaw-contour points chosen by head yaw, then
            the 51 static ones (DECA's ``landmarks2d``); ``None`` without a landmark embedding.
        landmarks_static: ``(B, 51, 3)`` the static landmarks alone; ``None`` without an embedding.
        landmarks_full: ``(B, 68, 3)`` the fixed 68-landmark embedding (DECA's ``landmarks3d``); ``None``
            without an embedding.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor | None = None
    landmarks_static: torch.Tensor | None = None
    landmarks_full: torch.Tensor | None = None


def barycentric_landmarks(
    vertices: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor, barycentric: torch.Tensor
) -> torch.Tensor:
    """Points inside mesh triangles: ``sum_i barycentric[b, l, i] * vertices[b, faces[face_index[b, l], i]]``.

    Args:
        vertices: ``(B, V, 3)``.
        faces: ``(F, 3)`` int64.
        face_index: ``(B, L)`` int64 triangle of each point.
        barycentric: ``(B, L, 3)`` weights of the triangle's corners.

    Returns:
        ``(B, L, 3)`` points.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    batch = vertices.shape[0]
    if face_index.ndim != 2 or face_index.shape[0] != batch:
        raise ValueError(f"face_index must be ({batch}, L), got {tuple(face_index.shape)}")
    n_points = face_index.shape[1]
    if barycentric.shape != (batch, n_points, 3):
        raise ValueError(f"barycentric must be ({batch}, {n_points}, 3), got {tuple(barycentric.shape)}")
    corners = faces[face_index].reshape(batch, n_points * 3, 1).expand(-1, -1, 3)
    points = torch.gather(vertices, 1, corners).reshape(batch, n_points, 3, 3)
    return (points * barycentric[..., None]).sum(dim=2)


def head_yaw(rotation: torch.Tensor) -> torch.Tensor:
    """Yaw of a head rotation, radians: ``atan2(-R[2, 0], sqrt(R[0, 0]^2 + R[1, 0]^2))``.

    This is the angle about +y of a y-x-z Euler decomposition; for ``R = rot_y(t)`` it is ``t``, and a
    positive yaw turns the nose (+z) towards +x (the viewer's right, the subject's left).

    Args:
        rotation: ``(B, 3, 3)``.

    Returns:
        ``(B,)`` radians in [-pi/2, pi/2].
    """
    if rotation.ndim != 3 or rotation.shape[1:] != (3, 3):
        raise ValueError(f"rotation must be (B, 3, 3), got {tuple(rotation.shape)}")
    return torch.atan2(-rotation[:, 2, 0], torch.hypot(rotation[:, 0, 0], rotation[:, 1, 0]))


def contour_rows(rotation: torch.Tensor) -> torch.Tensor:
    """Row of the dynamic contour table for a head rotation, with DECA's indexing.

    With ``d = round(yaw in degrees)`` (:func:`head_yaw`; halves round to even): row ``min(d, 39)`` for
    ``d >= 0``, row ``39 - d`` (40..78) for ``-39 <= d < 0``, row 78 for ``d < -39``.

    Args:
        rotation: ``(B, 3, 3)`` head rotation (global rotation composed with the neck rotation).

    Returns:
        ``(B,)`` int64 rows in [0, 78].
    """
    degrees = torch.round(torch.clamp(torch.rad2deg(head_yaw(rotation)), max=MAX_CONTOUR_YAW))
    negative = torch.where(degrees >= -MAX_CONTOUR_YAW, MAX_CONTOUR_YAW - degrees, 2.0 * MAX_CONTOUR_YAW)
    return torch.where(degrees >= 0, degrees, negative).long()


class FlameLayer(nn.Module):
    """FLAME as a stateless layer: every code is a forward argument.

    Args:
        data: the model arrays (see :func:`read_flame`).
        embedding: landmark embedding; without one the output has no landmarks.
        dtype: floating dtype of the buffers.

    Attributes:
        n_shape, n_expression: code sizes. n_pose: 6 (global 3 + jaw 3, axis-angle).
    """

    n_pose = 6

    def __init__(
        self, data: FlameData, embedding: LandmarkEmbedding | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        n_vertices, n_faces = data.template.shape[0], data.faces.shape[0]
        self.n_shape = data.shape_directions.shape[2]
        self.n_expression = data.expression_directions.shape[2]
        directions = np.concatenate([data.shape_directions, data.expression_directions], axis=2)

        def buffer(name: str, array: np.ndarray, kind: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=kind), persistent=False)

        buffer("template", data.template)
        buffer("faces", data.faces, torch.int64)
        buffer("shape_directions", directions)
        buffer("pose_directions", data.pose_directions)
        buffer("joint_regressor", data.joint_regressor)
        buffer("skinning_weights", data.skinning_weights)
        buffer("parents", np.array(PARENTS), torch.int64)
        self.has_landmarks = embedding is not None
        if embedding is not None:
            used = np.concatenate(
                [
                    embedding.static_faces.ravel(),
                    embedding.dynamic_faces.ravel(),
                    embedding.full_faces.ravel(),
                ]
            )
            if used.min() < 0 or used.max() >= n_faces:
                raise ValueError(f"landmark embedding refers to triangles outside [0, {n_faces})")
            buffer("static_faces", embedding.static_faces, torch.int64)
            buffer("static_barycentric", embedding.static_barycentric)
            buffer("dynamic_faces", embedding.dynamic_faces, torch.int64)
            buffer("dynamic_barycentric", embedding.dynamic_barycentric)
            buffer("full_faces", embedding.full_faces, torch.int64)
            buffer("full_barycentric", embedding.full_barycentric)
        self.n_vertices = n_vertices

    def check_codes(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> None:
        """Raise ``ValueError`` quoting the shapes unless the codes are ``(B, n_shape)``,
        ``(B, n_expression)``, ``(B, 6)`` floating tensors with one batch size and one dtype."""
        check_code_shapes(self.n_shape, self.n_expression, self.n_pose, shape, expression, pose)
        dtypes = {shape.dtype, expression.dtype, pose.dtype}
        if len(dtypes) != 1 or not shape.is_floating_point():
            raise ValueError(
                f"codes must share one floating dtype, got {shape.dtype}, {expression.dtype}, {pose.dtype}"
            )

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> FlameOutput:
        """Pose the head.

        Args:
            shape: ``(B, n_shape)`` identity code.
            expression: ``(B, n_expression)`` expression code.
            pose: ``(B, 6)`` global rotation (3) + jaw rotation (3), axis-angle, radians.

        Returns:
            :class:`FlameOutput` in the codes' dtype, metres.
        """
        self.check_codes(shape, expression, pose)
        dtype, batch = shape.dtype, shape.shape[0]
        zero = pose.new_zeros(batch, 3)
        full_pose = torch.stack([pose[:, :3], zero, pose[:, 3:], zero, zero], dim=1)
        rotations = axis_angle_to_matrix(full_pose)
        vertices, joints = linear_blend_skinning(
            self.template.to(dtype),
            self.shape_directions.to(dtype),
            torch.cat([shape, expression], dim=1),
            self.pose_directions.to(dtype),
            self.joint_regressor.to(dtype),
            self.parents,
            self.skinning_weights.to(dtype),
            rotations,
        )
        if not self.has_landmarks:
            return FlameOutput(vertices=vertices, joints=joints)

        def embed(faces: torch.Tensor, barycentric: torch.Tensor) -> torch.Tensor:
            return barycentric_landmarks(vertices, self.faces, faces, barycentric.to(dtype))

        static = embed(self.static_faces.expand(batch, -1), self.static_barycentric.expand(batch, -1, -1))
        # The head's yaw is that of the neck joint's world rotation: global composed with neck (as in DECA).
        rows = contour_rows(rotations[:, 0] @ rotations[:, 1])
        contour = embed(self.dynamic_faces[rows], self.dynamic_barycentric[rows])
        full = embed(self.full_faces.expand(batch, -1), self.full_barycentric.expand(batch, -1, -1))
        return FlameOutput(
            vertices=vertices,
            joints=joints,
            landmarks=torch.cat([contour, static], dim=1),
            landmarks_static=static,
            landmarks_full=full,
        )


def _numeric(raw: dict[str, Any], key: str, source: str) -> np.ndarray:
    if key not in raw:
        raise CheckpointError(f"{source}: missing key '{key}'")
    value = raw[key]
    array = value.toarray() if isinstance(value, SparseMatrix) else np.asarray(value)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise CheckpointError(f"{source}: key '{key}' holds {array.dtype} values, not numbers")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise CheckpointError(f"{source}: key '{key}' holds non-finite values")
    return array


def _check_shape(
    array: np.ndarray, expected: tuple[int | None, ...], key: str, source: str, text: str
) -> None:
    fits = array.ndim == len(expected) and all(
        e is None or e == n for e, n in zip(expected, array.shape, strict=False)
    )
    if not fits:
        raise CheckpointError(f"{source}: key '{key}' has shape {tuple(array.shape)}, expected {text}")


def _check_indices(array: np.ndarray, limit: int, key: str, source: str, what: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        raise CheckpointError(f"{source}: key '{key}' must hold integer {what} indices, found {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= limit):
        raise CheckpointError(f"{source}: key '{key}' has {what} indices outside [0, {limit})")
    return array.astype(np.int64)


def _check_sizes(n_shape: int, n_exp: int) -> None:
    if not 1 <= n_shape <= MAX_SHAPE:
        raise ValueError(f"n_shape must be in [1, {MAX_SHAPE}] (FLAME 2020 has {MAX_SHAPE}), got {n_shape}")
    if not 1 <= n_exp <= MAX_EXPRESSION:
        raise ValueError(
            f"n_exp must be in [1, {MAX_EXPRESSION}] (FLAME 2020 has {MAX_EXPRESSION}), got {n_exp}"
        )


def read_flame(path: str | os.PathLike[str], n_shape: int = 100, n_exp: int = 50) -> FlameData:
    """Read and validate a FLAME 2020 ``generic_model.pkl`` (no chumpy, no code execution).

    Args:
        path: the pickle.
        n_shape: identity components kept (columns ``0..n_shape-1``), at most 300.
        n_exp: expression components kept (columns ``300..300+n_exp-1``), at most 100.

    Raises:
        ValueError: ``n_shape`` or ``n_exp`` out of range.
        CheckpointError: one line naming the file and, where it applies, the key: unreadable file, refused
            global, missing key, wrong shape or dtype, out-of-range index, unexpected kinematic tree.
    """
    _check_sizes(n_shape, n_exp)
    path = Path(path)
    raw = restricted_load(path, "FLAME model")
    source = f"{path}: FLAME model"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: expected a dict of arrays, found {type(raw).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{source}: missing key '{missing[0]}' (needs {', '.join(_REQUIRED_KEYS)})")
    n_joints = len(PARENTS)
    template = _numeric(raw, "v_template", source)
    _check_shape(template, (None, 3), "v_template", source, "(V, 3)")
    n_vertices = template.shape[0]
    faces = _numeric(raw, "f", source)
    _check_shape(faces, (None, 3), "f", source, "(F, 3)")
    faces = _check_indices(faces, n_vertices, "f", source, "vertex")
    columns = MAX_SHAPE + n_exp
    shapedirs = _numeric(raw, "shapedirs", source)
    _check_shape(shapedirs, (n_vertices, 3, None), "shapedirs", source, f"({n_vertices}, 3, 400)")
    if shapedirs.shape[2] < columns:
        raise CheckpointError(
            f"{source}: key 'shapedirs' has shape {shapedirs.shape}, expected ({n_vertices}, 3, 400) "
            f"(at least {columns} columns for n_exp={n_exp})"
        )
    posedirs = _numeric(raw, "posedirs", source)
    _check_shape(
        posedirs, (n_vertices, 3, _POSE_FEATURES), "posedirs", source, f"({n_vertices}, 3, {_POSE_FEATURES})"
    )
    regressor = _numeric(raw, "J_regressor", source)
    _check_shape(regressor, (n_joints, n_vertices), "J_regressor", source, f"({n_joints}, {n_vertices})")
    weights = _numeric(raw, "weights", source)
    _check_shape(weights, (n_vertices, n_joints), "weights", source, f"({n_vertices}, {n_joints})")
    tree = _numeric(raw, "kintree_table", source)
    _check_shape(tree, (2, n_joints), "kintree_table", source, f"(2, {n_joints})")
    if not np.issubdtype(tree.dtype, np.integer):
        raise CheckpointError(f"{source}: key 'kintree_table' must hold integers, found {tree.dtype}")
    parents = [int(p) for p in tree[0]]
    root_ok = not 0 <= parents[0] < n_joints
    if not root_ok or parents[1:] != list(PARENTS[1:]) or [int(j) for j in tree[1]] != list(range(n_joints)):
        raise CheckpointError(
            f"{source}: key 'kintree_table' is {tree.tolist()}, not FLAME's tree "
            f"(parents {list(PARENTS[1:])} of joints 1..4 under a root)"
        )
    return FlameData(
        template=template.astype(np.float64),
        faces=faces,
        shape_directions=shapedirs[:, :, :n_shape].astype(np.float64),
        expression_directions=shapedirs[:, :, MAX_SHAPE:columns].astype(np.float64),
        pose_directions=posedirs.reshape(-1, _POSE_FEATURES).T.astype(np.float64),
        joint_regressor=regressor.astype(np.float64),
        skinning_weights=weights.astype(np.float64),
    )


def read_landmark_embedding(path: str | os.PathLike[str], n_faces: int) -> LandmarkEmbedding:
    """Read and validate DECA's ``landmark_embedding.npy`` (a pickled dict; no code execution).

    Args:
        path: the ``.npy`` file.
        n_faces: triangles of the mesh it embeds into (indices are checked against it).

    Raises:
        CheckpointError: one line naming the file and, where it applies, the key.
    """
    path = Path(path)
    raw = load_npy_dict(path, "landmark embedding")
    source = f"{path}: landmark embedding"
    n_rows = 2 * MAX_CONTOUR_YAW + 1
    n_all = N_CONTOUR + N_STATIC
    layout: dict[str, tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]] = {
        "static_lmk_faces_idx": (((N_STATIC,),), (N_STATIC,)),
        "static_lmk_bary_coords": (((N_STATIC, 3),), (N_STATIC, 3)),
        "dynamic_lmk_faces_idx": (((n_rows, N_CONTOUR),), (n_rows, N_CONTOUR)),
        "dynamic_lmk_bary_coords": (((n_rows, N_CONTOUR, 3),), (n_rows, N_CONTOUR, 3)),
        "full_lmk_faces_idx": (((n_all,), (1, n_all)), (n_all,)),
        "full_lmk_bary_coords": (((n_all, 3), (1, n_all, 3)), (n_all, 3)),
    }
    arrays: dict[str, np.ndarray] = {}
    for key, (accepted, target) in layout.items():
        array = _numeric(raw, key, source)
        if tuple(array.shape) not in accepted:
            text = " or ".join(str(s) for s in accepted)
            raise CheckpointError(f"{source}: key '{key}' has shape {tuple(array.shape)}, expected {text}")
        array = array.reshape(target)
        if key.endswith("faces_idx"):
            arrays[key] = _check_indices(array, n_faces, key, source, "triangle")
        else:
            arrays[key] = array.astype(np.float64)
    return LandmarkEmbedding(
        static_faces=arrays["static_lmk_faces_idx"],
        static_barycentric=arrays["static_lmk_bary_coords"],
        dynamic_faces=arrays["dynamic_lmk_faces_idx"],
        dynamic_barycentric=arrays["dynamic_lmk_bary_coords"],
        full_faces=arrays["full_lmk_faces_idx"],
        full_barycentric=arrays["full_lmk_bary_coords"],
    )


def load_flame(
    path: str | os.PathLike[str],
    n_shape: int = 100,
    n_exp: int = 50,
    landmark_embedding: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> FlameLayer:
    """Build a :class:`FlameLayer` from ``generic_model.pkl`` and, optionally, ``landmark_embedding.npy``.

    Args:
        path: FLAME 2020 ``generic_model.pkl``.
        n_shape: identity components (at most 300). n_exp: expression components (at most 100).
        landmark_embedding: DECA's ``landmark_embedding.npy``; without it the layer returns no landmarks.
        dtype: floating dtype of the layer's buffers.

    Raises:
        ValueError: ``n_shape`` / ``n_exp`` out of range.
        CheckpointError: one line naming the bad file and key (see :func:`read_flame`).
    """
    _check_sizes(n_shape, n_exp)
    data = read_flame(path, n_shape, n_exp)
    embedding = None
    if landmark_embedding is not None:
        embedding = read_landmark_embedding(landmark_embedding, data.faces.shape[0])
    return FlameLayer(data, embedding, dtype=dtype)


# FLAME behind the FaceModel interface, with DECA's UV template ------------------------------------------

EYE_JOINTS = (3, 4)
"""The eyeball joints (left eye, right eye) of FLAME's kinematic tree."""
EYE_WEIGHT = 0.5
"""A vertex skinned to the eye joints with more than this total weight belongs to an eyeball."""


@dataclass(frozen=True)
class UVTemplate:
    """A triangle mesh with texture coordinates, as read from an OBJ file (NumPy).

    Attributes:
        vertices: ``(V, 3)`` positions.
        faces: ``(F, 3)`` int64 vertex triangles, 0-based.
        uvs: ``(U, 2)`` float64 texture coordinates (OBJ convention: v up).
        uv_faces: ``(F, 3)`` int64 triangles into ``uvs``, in the order of ``faces``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray


def _obj_index(token: str, count: int) -> int:
    """0-based index of an OBJ index token (1-based, or negative = relative to the ``count`` read so far)."""
    value = int(token)
    if value == 0:
        raise ValueError("OBJ indices start at 1")
    return value - 1 if value > 0 else count + value


def read_obj_template(path: str | os.PathLike[str], what: str = "head template") -> UVTemplate:
    """Read the triangles and texture coordinates of an OBJ file such as DECA's ``head_template.obj``.

    Uses the ``v`` lines (x y z; extra per-vertex colour values are ignored), the ``vt`` lines (u v) and
    the ``f`` lines, which must be triangles whose corners all carry a texture index (``v/vt`` or
    ``v/vt/vn``); negative (relative) indices are resolved. Other lines (``vn``, ``g``, ``usemtl``, ...)
    are ignored.

    Raises:
        CheckpointError: one line naming the file (and the line, where one is at fault): unreadable,
            malformed numbers, a polygon that is not a triangle, a corner without a texture index, an
            index out of range, or no textured triangles at all.
    """
    path = Path(path)
    source = f"{path}: {what}"
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file ({what})") from None
    except OSError as error:
        raise CheckpointError(f"{source}: unreadable ({error.strerror or error})") from None
    vertices: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    uv_faces: list[list[int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        try:
            if tag == "v":
                vertices.append([float(x) for x in parts[1:4]])
                if len(vertices[-1]) != 3:
                    raise ValueError("a vertex needs x y z")
            elif tag == "vt":
                uvs.append([float(x) for x in parts[1:3]])
                if len(uvs[-1]) != 2:
                    raise ValueError("a texture coordinate needs u v")
            elif tag == "f":
                corners = [corner.split("/") for corner in parts[1:]]
                if len(corners) != 3:
                    raise ValueError(f"a polygon with {len(corners)} corners; only triangles are supported")
                if any(len(corner) < 2 or not corner[1] for corner in corners):
                    raise ValueError("a triangle corner without a texture index (v/vt)")
                faces.append([_obj_index(corner[0], len(vertices)) for corner in corners])
                uv_faces.append([_obj_index(corner[1], len(uvs)) for corner in corners])
        except ValueError as error:
            shown = raw.strip()[:40]
            raise CheckpointError(f"{source}: line {number} ({shown!r}): {error}") from None
    if not faces:
        raise CheckpointError(f"{source}: no textured triangles ('f v/vt ...' lines); is it an OBJ file?")
    face_array = np.asarray(faces, dtype=np.int64)
    uv_face_array = np.asarray(uv_faces, dtype=np.int64)
    for name, array, limit in (("vertex", face_array, len(vertices)), ("texture", uv_face_array, len(uvs))):
        if array.min() < 0 or array.max() >= limit:
            raise CheckpointError(f"{source}: a triangle refers to a {name} index outside [1, {limit}]")
    return UVTemplate(
        vertices=np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
        faces=face_array,
        uvs=np.asarray(uvs, dtype=np.float64).reshape(-1, 2),
        uv_faces=uv_face_array,
    )


def template_mismatch(template: UVTemplate, faces: np.ndarray, n_vertices: int) -> str | None:
    """Why ``template`` cannot serve a mesh with ``faces (F, 3)`` over ``n_vertices`` vertices, or ``None``.

    The template's triangles must be the mesh's, in the same order (its ``uv_faces`` are matched to the
    mesh's triangles by position), over the same number of vertices.
    """
    if template.vertices.shape[0] != n_vertices or template.faces.shape != faces.shape:
        return (
            f"has {template.vertices.shape[0]} vertices and {template.faces.shape[0]} triangles, the FLAME "
            f"model {n_vertices} and {faces.shape[0]}"
        )
    differ = np.flatnonzero(np.any(template.faces != faces, axis=1))
    if differ.size:
        return (
            f"its triangles differ from the FLAME model's ({differ.size} of {faces.shape[0]}, the first "
            f"at index {int(differ[0])})"
        )
    return None


def read_uv_mask(path: str | os.PathLike[str], what: str = "UV face mask") -> np.ndarray:
    """Read a UV mask image such as DECA's ``uv_face_eye_mask.png``: ``(H, W)`` bool, True where white.

    The first channel is used (the masks are grey, stored as grey or RGB); a texel is on the mask when it
    is brighter than half the full scale of the image's bit depth. Row 0 is the top of the image, i.e.
    v = 1 in UV space (the OBJ texture convention).

    Raises:
        CheckpointError: one line naming the file: missing, not an image, or all black.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file ({what})")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("RGB")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: {what}: not a readable image ({first})") from None
    if array.ndim == 3:
        array = array[..., 0]
    if array.dtype == np.bool_:
        full_scale = 1.0
    elif array.dtype == np.uint8:
        full_scale = 255.0
    elif np.issubdtype(array.dtype, np.integer):
        full_scale = 65535.0
    else:
        full_scale = 1.0
    mask = array.astype(np.float64) > 0.5 * full_scale
    if not mask.any():
        raise CheckpointError(f"{path}: {what}: the mask is all black (no face region)")
    return mask


def face_parts_from_mask(
    uvs: torch.Tensor,
    uv_faces: torch.Tensor,
    mask: torch.Tensor,
    eye_faces: torch.Tensor | None = None,
) -> torch.Tensor:
    """The part of each triangle from a UV mask: skin where the mask covers its UV centroid.

    A triangle whose UV centroid ``(u, v)`` falls on a mask texel (row ``floor((1 - v) H)``, column
    ``floor(u W)``, clamped to the image) is :data:`~aucgan.face_model.base.FACE_PART_SKIN`; every other
    triangle, and every triangle flagged in ``eye_faces``, is
    :data:`~aucgan.face_model.base.FACE_PART_EYE` — "not skin": no displacement, no photometric detail loss
    there.

    Args:
        uvs: ``(U, 2)`` texture coordinates in the unit square, v up.
        uv_faces: ``(F, 3)`` int64 triangles into ``uvs``.
        mask: ``(H, W)`` bool (or numbers, on where > 0.5); row 0 is v = 1.
        eye_faces: ``(F,)`` bool, triangles forced to the eye part (the eyeballs).

    Returns:
        ``(F,)`` int64 face parts.
    """
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"uvs must be (U, 2), got {tuple(uvs.shape)}")
    if uv_faces.ndim != 2 or uv_faces.shape[1] != 3:
        raise ValueError(f"uv_faces must be (F, 3), got {tuple(uv_faces.shape)}")
    if mask.ndim != 2 or min(mask.shape) < 1:
        raise ValueError(f"mask must be (H, W), got {tuple(mask.shape)}")
    if eye_faces is not None and eye_faces.shape != (uv_faces.shape[0],):
        raise ValueError(f"eye_faces must be ({uv_faces.shape[0]},), got {tuple(eye_faces.shape)}")
    height, width = mask.shape
    centroids = uvs[uv_faces].mean(dim=1)
    cols = torch.floor(centroids[:, 0] * width).long().clamp(0, width - 1)
    rows = torch.floor((1.0 - centroids[:, 1]) * height).long().clamp(0, height - 1)
    on_skin = mask.to(uvs.device)[rows, cols].float() > 0.5
    if eye_faces is not None:
        on_skin = on_skin & ~eye_faces.to(on_skin.device)
    return torch.where(on_skin, FACE_PART_SKIN, FACE_PART_EYE).long()


def eyeball_faces(skinning_weights: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``(F,)`` bool: triangles with a corner skinned to FLAME's eye joints with weight above
    :data:`EYE_WEIGHT`.

    Args:
        skinning_weights: ``(V, 5)`` FLAME's skinning weights.
        faces: ``(F, 3)`` int64.
    """
    n_joints = len(PARENTS)
    if skinning_weights.ndim != 2 or skinning_weights.shape[1] != n_joints:
        raise ValueError(f"skinning_weights must be (V, {n_joints}), got {tuple(skinning_weights.shape)}")
    eye_vertex = skinning_weights[:, list(EYE_JOINTS)].sum(dim=1) > EYE_WEIGHT
    return eye_vertex[faces].any(dim=1)


def landmark_vertices(
    vertices: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor, barycentric: torch.Tensor
) -> torch.Tensor:
    """For each embedded landmark, the corner of its triangle nearest to it.

    Args:
        vertices: ``(V, 3)`` a mesh (e.g. FLAME's template).
        faces: ``(F, 3)`` int64.
        face_index: ``(L,)`` int64 triangle of each landmark.
        barycentric: ``(L, 3)`` the landmark's weights on its triangle's corners.

    Returns:
        ``(L,)`` int64 vertex indices.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    if face_index.ndim != 1 or barycentric.shape != (face_index.shape[0], 3):
        raise ValueError(
            f"face_index must be (L,) and barycentric (L, 3); got {tuple(face_index.shape)}, "
            f"{tuple(barycentric.shape)}"
        )
    corners = faces[face_index]
    points = vertices[corners]
    landmarks = (points * barycentric.to(points.dtype)[..., None]).sum(dim=1)
    nearest = (points - landmarks[:, None]).norm(dim=-1).argmin(dim=1)
    return corners.gather(1, nearest[:, None]).squeeze(1)


class FlameFaceModel(FaceModel):
    """FLAME behind the :class:`~aucgan.face_model.base.FaceModel` interface, with DECA's UV template.

    Units are FLAME's metres, unchanged (DECA's orthographic camera works in them). ``landmarks`` of the
    output are DECA's ``landmarks2d``: the 17 jaw-contour points chosen by head yaw, then the 51 static
    ones (iBUG-68 order).

    Every buffer is non-persistent: FLAME's data and DECA's template never enter a ``state_dict`` (their
    licences forbid redistributing them with the project's weights).

    Args:
        layer: a :class:`FlameLayer` with a landmark embedding.
        template: DECA's ``head_template.obj`` (:func:`read_obj_template`); its triangles must be the
            layer's, in order.
        uv_mask: ``(H, W)`` bool, DECA's ``uv_face_eye_mask.png`` (:func:`read_uv_mask`): the face (with the
            eye region) in UV space; row 0 is v = 1.

    Buffers:
        ``faces (F, 3)``; ``uvs (U, 2)`` float32; ``uv_faces (F, 3)``;
        ``face_part (F,)``: skin on the mask (see :func:`face_parts_from_mask`), the eye part off the mask
        and on the eyeballs (:func:`eyeball_faces`); the FaceModel interface has no label for scalp, ears
        and neck, and "not skin" is what matters: no displacement and no detail loss there, as in DECA;
        ``landmark_indices (68,)``: for each of the 68 landmarks of the fixed embedding, the nearest corner
        of its triangle on the template (approximate; the exact landmarks come from :meth:`forward`).
    """

    expression_is_au_rig = False
    n_pose = 6

    def __init__(self, layer: FlameLayer, template: UVTemplate, uv_mask: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        if not layer.has_landmarks:
            raise ValueError("FlameFaceModel needs a FlameLayer with a landmark embedding")
        problem = template_mismatch(template, layer.faces.cpu().numpy(), layer.n_vertices)
        if problem is not None:
            raise ValueError(f"the UV template {problem}")
        self.layer = layer
        self.n_shape = layer.n_shape
        self.n_expression = layer.n_expression
        faces = torch.as_tensor(template.faces, dtype=torch.int64)
        uvs = torch.as_tensor(template.uvs, dtype=torch.float32)
        uv_faces = torch.as_tensor(template.uv_faces, dtype=torch.int64)
        mask = torch.as_tensor(np.asarray(uv_mask))
        eyes = eyeball_faces(layer.skinning_weights.cpu(), faces)
        landmarks = landmark_vertices(
            layer.template.cpu().double(), faces, layer.full_faces.cpu(), layer.full_barycentric.cpu()
        )
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("uvs", uvs, persistent=False)
        self.register_buffer("uv_faces", uv_faces, persistent=False)
        self.register_buffer("face_part", face_parts_from_mask(uvs, uv_faces, mask, eyes), persistent=False)
        self.register_buffer("landmark_indices", landmarks, persistent=False)

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> FaceGeometry:
        """Pose the head.

        Args:
            shape: ``(B, n_shape)`` identity code.
            expression: ``(B, n_expression)`` expression code.
            pose: ``(B, 6)`` global rotation (3) + jaw rotation (3), axis-angle, radians.

        Returns:
            :class:`~aucgan.face_model.base.FaceGeometry`: ``vertices (B, 5023, 3)`` and ``landmarks
            (B, 68, 3)``, metres.
        """
        output = self.layer(shape, expression, pose)
        return FaceGeometry(vertices=output.vertices, landmarks=output.landmarks)


def load_flame_face_model(
    model: str | os.PathLike[str],
    landmark_embedding: str | os.PathLike[str],
    head_template: str | os.PathLike[str],
    uv_mask: str | os.PathLike[str],
    n_shape: int = 100,
    n_exp: int = 50,
    dtype: torch.dtype = torch.float32,
) -> FlameFaceModel:
    """Build a :class:`FlameFaceModel` from FLAME's and DECA's files.

    Args:
        model: FLAME 2020 ``generic_model.pkl``.
        landmark_embedding: DECA's ``landmark_embedding.npy``.
        head_template: DECA's ``head_template.obj``.
        uv_mask: DECA's ``uv_face_eye_mask.png``.
        n_shape: identity components (at most 300). n_exp: expression components (at most 100).
        dtype: floating dtype of the FLAME buffers.

    Raises:
        ValueError: ``n_shape`` / ``n_exp`` out of range.
        CheckpointError: one line naming the bad file (and key or line), also for a template whose
            triangles are not the FLAME model's.
    """
    layer = load_flame(model, n_shape, n_exp, landmark_embedding=landmark_embedding, dtype=dtype)
    template = read_obj_template(head_template)
    problem = template_mismatch(template, layer.faces.numpy(), layer.n_vertices)
    if problem is not None:
        raise CheckpointError(
            f"{head_template}: head template {problem}; it must be DECA's head_template.obj for the "
            f"FLAME model {model}"
        )
    return FlameFaceModel(layer, template, read_uv_mask(uv_mask))


__all__ = [
    "EYE_JOINTS",
    "JOINT_NAMES",
    "MAX_EXPRESSION",
    "MAX_SHAPE",
    "FlameData",
    "FlameFaceModel",
    "FlameLayer",
    "FlameOutput",
    "LandmarkEmbedding",
    "UVTemplate",
    "barycentric_landmarks",
    "contour_rows",
    "eyeball_faces",
    "face_parts_from_mask",
    "head_yaw",
    "landmark_vertices",
    "load_flame",
    "load_flame_face_model",
    "read_flame",
    "read_landmark_embedding",
    "read_obj_template",
    "read_uv_mask",
    "template_mismatch",
]

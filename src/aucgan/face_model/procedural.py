"""The built-in face model: the MediaPipe canonical face mesh with a procedural identity basis and an AU rig.

It needs no registration and no download: the mesh (468 vertices, 898 triangles, one UV per vertex) ships
with the package (see NOTICE). On top of it this module builds, with plain numpy at construction time:

* an **identity basis** of smooth, anatomically named displacement fields (face width, nose protrusion,
  chin length, ...); a code of 1 is about one standard deviation of adult variation;
* an **AU rig**: one displacement field per OpenGraphAU main AU (27, order of :data:`aucgan.au.MAIN_AUS`)
  at intensity 1, built from anatomical handles (brows up for AU1/AU2, brows down and together for AU4,
  cheeks up for AU6, lip corners up and out for AU12, ...) with smooth Gaussian falloff, gated so that
  upper-lip handles never move the lower lip (and eyelid handles one lid only). Offsets are exaggerated
  over anatomy where a true-to-life movement would be under a pixel at the AU net's 128 px (lids, lips,
  nose wings): each AU must be visible for the world to teach AU recognition;
* a **jaw**: lower-face skinning weights from a harmonic interpolation over the open mesh (so the mouth
  opening separates the lips), rotating about a hinge behind the face. AU26 (jaw drop) and AU27 (mouth
  stretch) open the jaw through this rotation rather than through a linear blendshape;
* **landmarks**: 68 vertices in the iBUG-68 layout.

Units are centimetres; x to the viewer's right (the subject's left), y up, z towards the viewer. "Left" and
"right" in names are the subject's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from aucgan.au import MAIN_AUS
from aucgan.face_model.base import FACE_PART_EYE, FACE_PART_MOUTH, FACE_PART_SKIN, FaceGeometry, FaceModel
from aucgan.geometry.rotation import axis_angle_to_matrix


@dataclass(frozen=True)
class CanonicalMesh:
    """The packaged canonical face mesh (numpy, read once).

    Attributes:
        vertices: ``(468, 3)`` cm. uvs: ``(468, 2)`` v up. faces: ``(898, 3)``.
        hole_faces: ``(898,)`` bool, triangles that close the eyes and the mouth.
        rims: ordered vertex loops ``outer``, ``eye_right``, ``eye_left``, ``mouth``.
    """

    vertices: np.ndarray
    uvs: np.ndarray
    faces: np.ndarray
    hole_faces: np.ndarray
    rims: dict[str, np.ndarray]


def load_canonical_mesh() -> CanonicalMesh:
    """Read the packaged mesh asset."""
    path = resources.files("aucgan.face_model") / "data" / "canonical_face_mesh.npz"
    with resources.as_file(path) as file, np.load(file, allow_pickle=False) as data:
        rims = {key[: -len("_rim")]: data[key].astype(np.int64) for key in data.files if key.endswith("_rim")}
        return CanonicalMesh(
            vertices=data["vertices"].astype(np.float64),
            uvs=data["uvs"].astype(np.float64),
            faces=data["faces"].astype(np.int64),
            hole_faces=data["hole_faces"].astype(bool),
            rims=rims,
        )


# Landmarks in the iBUG-68 order (jaw 17, brows 5 + 5, nose 4 + 5, eyes 6 + 6, mouth 12 + 8), as vertices of
# the canonical mesh. Subject's right side first, as in iBUG-68.
LANDMARKS_68: tuple[int, ...] = (
    234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip

# Jaw hinge (about the temporomandibular joints) and head rotation centre, cm.
JAW_PIVOT = (0.0, 1.0, -3.0)
# Jaw opening (radians about +x) at intensity 1 of AU26 and AU27.
JAW_OPENING = {"AU26": 0.22, "AU27": 0.38}


@dataclass(frozen=True)
class Handle:
    """One anatomical handle of an AU: vertices whose centroid is pulled by ``offset`` (cm) at intensity 1.

    ``vertices`` are given on the subject's right (x < 0) or about the midline. A handle whose centroid lies
    off the midline (|x| > 0.5 cm) is mirrored to the left side with x negated. ``gate`` names the part of
    the face the handle may move.
    """

    vertices: tuple[int, ...]
    offset: tuple[float, float, float]
    radius: float
    gate: str = "any"


BROW_INNER = (107, 66, 55, 65)
BROW_OUTER = (70, 63, 46, 53)
BROW_MID = (105, 52)
UPPER_LID = (159, 158, 160)
LOWER_LID = (145, 144, 153)
CHEEK = (118, 101, 50)
NOSE_SIDE = (114, 217, 126)
NOSE_WING = (129, 102, 64, 49)
UPPER_LIP = (0, 37, 267, 13, 82, 312)
LOWER_LIP = (17, 84, 314, 14, 87, 317)
LIP_CORNER = (61, 78)
CHIN = (199, 200, 175)

AU_HANDLES: dict[str, tuple[Handle, ...]] = {
    "AU1": (Handle(BROW_INNER, (0.0, 0.55, 0.05), 1.3, "above_eye"), Handle((9, 151), (0, 0.2, 0), 1.8)),
    "AU2": (
        Handle(BROW_OUTER, (-0.05, 0.55, 0.0), 1.4, "above_eye"),
        Handle(BROW_MID, (0, 0.25, 0), 1.0, "above_eye"),
    ),
    "AU4": (
        Handle(BROW_INNER, (0.35, -0.5, 0.1), 1.1, "above_eye"),
        Handle(BROW_MID, (0.1, -0.3, 0), 1.2, "above_eye"),
    ),
    "AU5": (Handle(UPPER_LID, (0, 0.88, 0), 0.7, "above_eye"),),
    "AU6": (
        Handle(CHEEK, (0, 1.35, 0.6), 1.5, "below_eye"),
        Handle(LOWER_LID, (0, 0.45, 0), 0.6, "below_eye"),
    ),
    "AU7": (Handle(LOWER_LID, (0.2, 0.8, 0.2), 0.7, "below_eye"),),
    "AU9": (
        Handle(NOSE_SIDE, (0.15, 0.75, 0.15), 0.9, "upper_face"),
        Handle(NOSE_WING, (0, 0.6, 0), 0.8, "upper_face"),
        Handle(BROW_INNER, (0.3, -0.45, 0), 0.9, "above_eye"),
    ),
    "AU10": (Handle(UPPER_LIP, (0, 1.4, 0.32), 1.0, "upper_face"),),
    "AU11": (Handle((92, 165, 206), (-0.4, 0.96, -0.8), 0.8, "upper_face"),),
    "AU12": (Handle(LIP_CORNER, (-0.5, 0.7, -0.3), 1.3),),
    "AU13": (
        Handle(LIP_CORNER, (-0.45, 1.65, 0.3), 0.9),
        Handle((205, 36), (0, 0.45, 0.6), 1.2, "upper_face"),
    ),
    "AU14": (Handle(LIP_CORNER, (0.6, 0, -1.05), 0.8),),
    "AU15": (Handle(LIP_CORNER, (0.15, -1.35, 0), 1.1),),
    "AU16": (Handle(LOWER_LIP, (0, -1.2, 0.3), 0.9, "lower_face"),),
    "AU17": (
        Handle(CHIN, (0, 1.35, 0.6), 1.6, "lower_face"),
        Handle(LOWER_LIP, (0, 0.75, 0.45), 0.9, "lower_face"),
    ),
    "AU18": (Handle(LIP_CORNER, (1.65, 0, 0.75), 1.1), Handle(UPPER_LIP + LOWER_LIP, (0, 0, 1.05), 1.0)),
    "AU19": (
        Handle(LOWER_LIP, (0, -0.8, 0.9), 0.9, "lower_face"),
        Handle(UPPER_LIP, (0, 0.3, 0.5), 0.7, "upper_face"),
    ),
    "AU20": (Handle(LIP_CORNER, (-1.65, -0.3, -0.3), 1.2),),
    "AU22": (
        Handle(UPPER_LIP, (0, 0.45, 1.05), 0.9, "upper_face"),
        Handle(LOWER_LIP, (0, -0.45, 1.05), 0.9, "lower_face"),
        Handle(LIP_CORNER, (0.9, 0, 0.3), 0.8),
    ),
    "AU23": (
        Handle((0, 37, 267), (0, -0.6, -0.25), 0.6, "upper_face"),
        Handle((17, 84, 314), (0, 0.6, -0.25), 0.6, "lower_face"),
        Handle(LIP_CORNER, (0.75, 0, 0), 0.7),
    ),
    "AU24": (
        Handle(UPPER_LIP, (0, -0.5, -0.75), 0.8, "upper_face"),
        Handle(LOWER_LIP, (0, 0.6, -0.75), 0.8, "lower_face"),
    ),
    "AU25": (
        Handle(LOWER_LIP, (0, -1.0, 0), 0.8, "lower_face"),
        Handle(UPPER_LIP, (0, 0.4, 0), 0.7, "upper_face"),
    ),
    "AU26": (),
    "AU27": (Handle(LIP_CORNER, (0.25, -0.1, 0.0), 1.0),),
    "AU32": (Handle(LOWER_LIP, (0, 0.45, -1.05), 0.8, "lower_face"),),
    "AU38": (Handle(NOSE_WING, (-1.08, 0.12, 0), 0.6, "upper_face"),),
    "AU39": (Handle(NOSE_WING, (0.9, 0, 0), 0.6, "upper_face"),),
}


def _gaussian(points: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    return np.exp(-((points - centre) ** 2).sum(-1) / (2.0 * radius**2))


def _mirror(point: np.ndarray) -> np.ndarray:
    return point * np.array([-1.0, 1.0, 1.0])


def _identity_fields(v: np.ndarray, lower_face: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Smooth identity displacement fields, each ``(V, 3)`` cm, named for what they change."""
    x, y, z = v.T
    zero = np.zeros_like(x)

    def field(dx=zero, dy=zero, dz=zero):
        return np.stack([dx + zero, dy + zero, dz + zero], axis=-1)

    def pair(centre, radius):
        c = np.asarray(centre, dtype=np.float64)
        return _gaussian(v, c, radius), _gaussian(v, _mirror(c), radius)

    cheek_r, cheek_l = pair((-4.8, 0.8, 3.3), 1.6)
    eye_r, eye_l = pair((-3.1, 2.6, 3.7), 1.3)
    jowl_r, jowl_l = pair((-5.0, -3.5, 3.0), 2.0)
    nose = _gaussian(v, np.array([0.0, -0.6, 6.8]), 1.5)
    nose_wide = _gaussian(v, np.array([0.0, -1.0, 5.8]), 1.6)
    mouth = _gaussian(v, np.array([0.0, -4.3, 5.0]), 1.8)
    lips = _gaussian(v, np.array([0.0, -4.4, 5.6]), 1.0)
    chin = _gaussian(v, np.array([0.0, -8.3, 4.8]), 2.0)
    brow_band = np.exp(-((y - 4.6) ** 2) / (2 * 0.8**2) - x**2 / (2 * 4.0**2))
    forehead = np.maximum(y - 3.5, 0.0) ** 2
    return [
        ("face_width", field(dx=0.06 * x)),
        ("face_height", field(dy=0.045 * y)),
        ("face_depth", field(dz=0.08 * (z - z.mean()))),
        ("nose_protrusion", field(dz=0.45 * nose, dy=-0.1 * nose)),
        ("nose_width", field(dx=0.22 * x * nose_wide)),
        ("jaw_width", field(dx=0.07 * x * lower_face)),
        ("chin_length", field(dy=-0.5 * chin, dz=0.1 * chin)),
        ("cheekbones", field(dx=0.2 * (cheek_l - cheek_r), dz=0.35 * (cheek_l + cheek_r))),
        ("brow_ridge", field(dz=0.35 * brow_band)),
        ("forehead_slope", field(dz=-0.03 * forehead)),
        ("eye_spacing", field(dx=0.3 * (eye_l - eye_r))),
        ("eye_depth", field(dz=-0.3 * (eye_l + eye_r))),
        ("mouth_width", field(dx=0.12 * x * mouth)),
        ("lip_fullness", field(dz=0.3 * lips, dy=0.05 * lips * np.tanh((-4.3 - y) / 0.2))),
        ("cheek_fullness", field(dx=0.3 * (jowl_l - jowl_r), dz=0.2 * (jowl_l + jowl_r))),
        ("midface_length", field(dy=-0.35 * _gaussian(v, np.array([0.0, -2.5, 5.0]), 2.5))),
    ]


def _uniform_laplacian(n: int, faces: np.ndarray) -> np.ndarray:
    adjacency = np.zeros((n, n))
    for a, b in ((0, 1), (1, 2), (2, 0)):
        adjacency[faces[:, a], faces[:, b]] = 1.0
        adjacency[faces[:, b], faces[:, a]] = 1.0
    return np.diag(adjacency.sum(1)) - adjacency


def harmonic_weights(n: int, faces: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
    """Solve the uniform-Laplacian Dirichlet problem: values at ``fixed`` vertices, harmonic elsewhere."""
    laplacian = _uniform_laplacian(n, faces)
    known = np.array(sorted(fixed))
    free = np.setdiff1d(np.arange(n), known)
    values = np.zeros(n)
    values[known] = [fixed[i] for i in known]
    rhs = -laplacian[np.ix_(free, known)] @ values[known]
    values[free] = np.linalg.solve(laplacian[np.ix_(free, free)], rhs)
    return values


def jaw_weights(mesh: CanonicalMesh) -> np.ndarray:
    """Lower-face skinning weights in [0, 1]: 1 on the lower lip and chin, 0 above the upper lip."""
    y = mesh.vertices[:, 1]
    mouth_rim = mesh.rims["mouth"]
    rim_y = mesh.vertices[mouth_rim, 1]
    corners = mouth_rim[np.argsort(np.abs(mesh.vertices[mouth_rim, 0]))[-2:]]
    mid_y = rim_y.mean()
    fixed: dict[int, float] = {int(i): 0.0 for i in np.nonzero(y > -2.0)[0]}
    fixed.update({int(i): 1.0 for i in np.nonzero(y < -5.2)[0]})
    for i in mouth_rim:
        if i not in corners:
            fixed[int(i)] = 1.0 if mesh.vertices[i, 1] < mid_y else 0.0
    open_faces = mesh.faces[~mesh.hole_faces]
    return np.clip(harmonic_weights(len(mesh.vertices), open_faces, fixed), 0.0, 1.0)


def _gates(mesh: CanonicalMesh, lower_face: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Per-vertex masks, each a function of the handle's side (its x sign) returning ``(V,)`` in [0, 1]."""
    v = mesh.vertices
    eye_rims = np.concatenate([mesh.rims["eye_right"], mesh.rims["eye_left"]])
    eye_line = v[eye_rims, 1].mean()
    above_eye = 1.0 / (1.0 + np.exp(-(v[:, 1] - eye_line) / 0.08))
    return {
        "any": lambda: np.ones(len(v)),
        "upper_face": lambda: 1.0 - lower_face,
        "lower_face": lambda: lower_face,
        "above_eye": lambda: above_eye,
        "below_eye": lambda: 1.0 - above_eye,
    }


def build_au_basis(mesh: CanonicalMesh, lower_face: np.ndarray) -> np.ndarray:
    """``(27, V, 3)`` displacement of every vertex at intensity 1 of each main AU (cm)."""
    v = mesh.vertices
    gates = _gates(mesh, lower_face)
    basis = np.zeros((len(MAIN_AUS), len(v), 3))
    for k, au in enumerate(MAIN_AUS):
        for handle in AU_HANDLES[au]:
            centre = v[list(handle.vertices)].mean(0)
            offset = np.asarray(handle.offset, dtype=np.float64)
            sides = [(centre, offset)]
            if abs(centre[0]) > 0.5:
                sides.append((_mirror(centre), _mirror(offset)))
            gate = gates[handle.gate]()
            for c, o in sides:
                basis[k] += (_gaussian(v, c, handle.radius) * gate)[:, None] * o
    return basis


class ProceduralFaceModel(FaceModel):
    """The built-in face model (see the module docstring).

    ``forward(shape (B, n_shape), expression (B, 27) AU intensities in [0, 1], pose (B, 6))`` →
    :class:`FaceGeometry` in cm. Pose = global rotation about the head origin + jaw rotation about the jaw
    hinge, both axis-angle in radians; a positive x jaw rotation opens the mouth.

    Args:
        n_identity: number of identity components used (at most :attr:`MAX_IDENTITY`).
    """

    MAX_IDENTITY = 16

    def __init__(self, n_identity: int = 12) -> None:
        super().__init__()
        if not 1 <= n_identity <= self.MAX_IDENTITY:
            raise ValueError(f"n_identity must be in [1, {self.MAX_IDENTITY}], got {n_identity}")
        mesh = load_canonical_mesh()
        lower_face = jaw_weights(mesh)
        fields = _identity_fields(mesh.vertices, lower_face)[:n_identity]
        self.n_shape = n_identity
        self.expression_is_au_rig = True
        self.n_expression = len(MAIN_AUS)
        self.identity_names = tuple(name for name, _ in fields)

        part = np.full(len(mesh.faces), FACE_PART_SKIN)
        for name, label in (
            ("eye_right", FACE_PART_EYE),
            ("eye_left", FACE_PART_EYE),
            ("mouth", FACE_PART_MOUTH),
        ):
            part[np.isin(mesh.faces, mesh.rims[name]).all(1) & mesh.hole_faces] = label
        jaw_opening = torch.zeros(len(MAIN_AUS))
        for au, angle in JAW_OPENING.items():
            jaw_opening[MAIN_AUS.index(au)] = angle

        def f32(array):
            return torch.as_tensor(np.asarray(array), dtype=torch.float32)

        self.register_buffer("template", f32(mesh.vertices))
        self.register_buffer("identity_basis", f32(np.stack([f for _, f in fields])))
        self.register_buffer("au_basis", f32(build_au_basis(mesh, lower_face)))
        self.register_buffer("jaw_weights", f32(lower_face))
        self.register_buffer("jaw_pivot", f32(JAW_PIVOT))
        self.register_buffer("jaw_opening", jaw_opening)
        self.register_buffer("faces", torch.as_tensor(mesh.faces))
        self.register_buffer("uvs", f32(mesh.uvs))
        self.register_buffer("uv_faces", torch.as_tensor(mesh.faces))
        self.register_buffer("face_part", torch.as_tensor(part))
        self.register_buffer("landmark_indices", torch.as_tensor(LANDMARKS_68))
        self.rims = {name: torch.as_tensor(loop) for name, loop in mesh.rims.items()}

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> FaceGeometry:
        self.check_codes(shape, expression, pose)
        dtype = shape.dtype
        vertices = (
            self.template.to(dtype)
            + torch.einsum("bk,kvc->bvc", shape, self.identity_basis.to(dtype))
            + torch.einsum("bk,kvc->bvc", expression, self.au_basis.to(dtype))
        )
        jaw = pose[:, 3:6] + expression @ self.jaw_opening.to(dtype)[:, None] * pose.new_tensor(
            [1.0, 0.0, 0.0]
        )
        pivot = self.jaw_pivot.to(dtype)
        rotated = torch.einsum("bij,bvj->bvi", axis_angle_to_matrix(jaw), vertices - pivot) + pivot
        vertices = vertices + self.jaw_weights.to(dtype)[None, :, None] * (rotated - vertices)
        vertices = torch.einsum("bij,bvj->bvi", axis_angle_to_matrix(pose[:, :3]), vertices)
        return FaceGeometry(vertices=vertices, landmarks=vertices[:, self.landmark_indices])

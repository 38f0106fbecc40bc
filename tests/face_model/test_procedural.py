import numpy as np
import pytest
import torch

from aucgan.au import MAIN_AUS, au_index
from aucgan.face_model import ProceduralFaceModel
from aucgan.face_model.base import FACE_PART_EYE, FACE_PART_MOUTH
from aucgan.face_model.procedural import LANDMARKS_68, load_canonical_mesh


@pytest.fixture(scope="module")
def model():
    return ProceduralFaceModel(n_identity=16).double()


@pytest.fixture(scope="module")
def mesh():
    return load_canonical_mesh()


def mirror_map(vertices: np.ndarray) -> np.ndarray:
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    return ((mirrored[:, None] - vertices[None]) ** 2).sum(-1).argmin(1)


def boundary_edges(faces: np.ndarray) -> set[tuple[int, int]]:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return {tuple(e) for e in unique[counts == 1]}


def pose_expression(model, aus: dict[str, float], dtype=torch.float64):
    expression = torch.zeros(1, model.n_expression, dtype=dtype)
    for name, value in aus.items():
        expression[0, au_index(name)] = value
    shape = torch.zeros(1, model.n_shape, dtype=dtype)
    return model(shape, expression, torch.zeros(1, 6, dtype=dtype))


def test_asset_sizes_and_uvs(mesh):
    assert mesh.vertices.shape == (468, 3) and mesh.faces.shape == (898, 3)
    assert mesh.hole_faces.sum() == 46
    assert (mesh.uvs >= 0).all() and (mesh.uvs <= 1).all()
    # v grows upwards like y: forehead above chin in UV as in space.
    assert np.corrcoef(mesh.uvs[:, 1], mesh.vertices[:, 1])[0, 1] > 0.95
    assert np.corrcoef(mesh.uvs[:, 0], mesh.vertices[:, 0])[0, 1] > 0.95


def test_rims_are_the_hole_boundaries(mesh):
    closed = boundary_edges(mesh.faces)
    outer = mesh.rims["outer"]
    assert closed == {tuple(sorted((int(a), int(b)))) for a, b in zip(outer, np.roll(outer, -1), strict=True)}
    opened = boundary_edges(mesh.faces[~mesh.hole_faces]) - closed
    expected = set()
    for name in ("eye_right", "eye_left", "mouth"):
        loop = mesh.rims[name]
        expected |= {tuple(sorted((int(a), int(b)))) for a, b in zip(loop, np.roll(loop, -1), strict=True)}
    assert opened == expected


def test_front_faces_point_at_viewer(mesh):
    v, f = mesh.vertices, mesh.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centre_faces = np.abs(v[f].mean(1)[:, 0]) < 3.0
    assert (normals[centre_faces, 2] > 0).mean() > 0.98


def test_face_parts(model, mesh):
    assert (model.face_part == FACE_PART_EYE).sum() == 28
    assert (model.face_part == FACE_PART_MOUTH).sum() == 18


def test_zero_codes_give_template(model):
    geometry = pose_expression(model, {})
    torch.testing.assert_close(geometry.vertices[0], model.template.double())
    assert geometry.landmarks.shape == (1, 68, 3)


def test_landmarks_follow_the_ibug_layout(model, mesh):
    assert len(set(LANDMARKS_68)) == 68
    lm = mesh.vertices[list(LANDMARKS_68)]
    jaw, brows, nose, eyes, mouth = lm[:17], lm[17:27], lm[27:36], lm[36:48], lm[48:68]
    assert set(LANDMARKS_68[:17]) <= set(mesh.rims["outer"].tolist())
    assert set(LANDMARKS_68[36:48]) <= set(mesh.rims["eye_right"].tolist()) | set(
        mesh.rims["eye_left"].tolist()
    )
    assert set(LANDMARKS_68[60:68]) <= set(mesh.rims["mouth"].tolist())
    # iBUG order: subject's right (x < 0) first; brows above eyes above nose tip above mouth above chin.
    assert jaw[0, 0] < 0 < jaw[16, 0] and np.argmin(jaw[:, 1]) == 8
    assert brows[:, 1].min() > eyes[:, 1].max() > nose[3, 1] > mouth[:, 1].max() > jaw[8, 1]
    assert eyes[:6, 0].max() < 0 < eyes[6:, 0].min()
    assert nose[3, 2] == mesh.vertices[:, 2].max()


def test_identity_components_are_smooth_and_independent(model):
    basis = model.identity_basis.double().reshape(model.n_shape, -1)
    assert torch.linalg.matrix_rank(basis) == model.n_shape
    magnitude = model.identity_basis.norm(dim=-1).amax(dim=1)
    assert (magnitude > 0.1).all() and (magnitude < 1.5).all()
    faces = model.faces[model.face_part == 0]
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    template = model.template.double()
    length = (template[edges[:, 0]] - template[edges[:, 1]]).norm(dim=-1)
    for name, component in zip(model.identity_names, model.identity_basis.double(), strict=True):
        # Smooth fields: neighbouring vertices move alike (displacement gradient well below 1 per cm).
        slope = (component[edges[:, 0]] - component[edges[:, 1]]).norm(dim=-1) / length
        assert slope.max() < 0.3, name


def test_au_rig_is_symmetric(model, mesh):
    mirror = torch.as_tensor(mirror_map(mesh.vertices))
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    for k, name in enumerate(MAIN_AUS):
        field = model.au_basis[k].double()
        torch.testing.assert_close(field[mirror] * flip, field, atol=1e-5, rtol=0, msg=name)


def lm(geometry, index):
    return geometry.landmarks[0, index]


@pytest.mark.parametrize(
    ("aus", "check"),
    [
        (
            {"AU1": 1},
            lambda g, n: (
                lm(g, 21)[1] - lm(n, 21)[1] > 0.3
                and lm(g, 21)[1] - lm(n, 21)[1] > lm(g, 17)[1] - lm(n, 17)[1]
            ),
        ),
        (
            {"AU2": 1},
            lambda g, n: (
                lm(g, 17)[1] - lm(n, 17)[1] > 0.3
                and lm(g, 17)[1] - lm(n, 17)[1] > lm(g, 21)[1] - lm(n, 21)[1]
            ),
        ),
        ({"AU4": 1}, lambda g, n: lm(g, 21)[1] < lm(n, 21)[1] - 0.2 and lm(g, 21)[0] > lm(n, 21)[0] + 0.1),
        (
            {"AU5": 1},
            lambda g, n: lm(g, 37)[1] > lm(n, 37)[1] + 0.1 and abs(lm(g, 41)[1] - lm(n, 41)[1]) < 0.05,
        ),
        ({"AU6": 1}, lambda g, n: (g.vertices[0, 118, 1] - n.vertices[0, 118, 1]) > 0.2),
        ({"AU12": 1}, lambda g, n: lm(g, 48)[1] > lm(n, 48)[1] + 0.3 and lm(g, 48)[0] < lm(n, 48)[0] - 0.2),
        ({"AU15": 1}, lambda g, n: lm(g, 48)[1] < lm(n, 48)[1] - 0.2),
        ({"AU17": 1}, lambda g, n: lm(g, 8)[1] > lm(n, 8)[1] + 0.2),
        ({"AU18": 1}, lambda g, n: lm(g, 54)[0] - lm(g, 48)[0] < lm(n, 54)[0] - lm(n, 48)[0] - 0.5),
        ({"AU20": 1}, lambda g, n: lm(g, 54)[0] - lm(g, 48)[0] > lm(n, 54)[0] - lm(n, 48)[0] + 0.5),
        ({"AU25": 1}, lambda g, n: lm(g, 62)[1] - lm(g, 66)[1] > lm(n, 62)[1] - lm(n, 66)[1] + 0.2),
        ({"AU26": 1}, lambda g, n: lm(g, 8)[1] < lm(n, 8)[1] - 1.0 and lm(g, 62)[1] - lm(g, 66)[1] > 1.0),
        ({"AU27": 1}, lambda g, n: lm(g, 8)[1] < lm(n, 8)[1] - 1.5 and lm(g, 62)[1] - lm(g, 66)[1] > 1.5),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, dict) else "",
)
def test_each_au_moves_the_right_part(model, aus, check):
    neutral = pose_expression(model, {})
    assert check(pose_expression(model, aus), neutral)


@pytest.mark.parametrize("name", ["AU10", "AU16", "AU22", "AU25"])
def test_lip_handles_move_one_lip(model, name):
    moved = (pose_expression(model, {name: 1.0}).landmarks - pose_expression(model, {}).landmarks)[0].norm(
        dim=-1
    )
    upper, lower = moved[62], moved[66]
    gate = model.jaw_weights
    assert gate[model.landmark_indices[62]] < 0.05 and gate[model.landmark_indices[66]] > 0.95
    assert max(upper, lower) > 0.1
    assert min(upper, lower) < 0.6 * max(upper, lower) or name == "AU22"


def test_upper_face_aus_leave_the_mouth_alone(model):
    for name in ("AU1", "AU2", "AU4", "AU5"):
        moved = (pose_expression(model, {name: 1.0}).vertices - model.template.double()).norm(dim=-1)[0]
        assert moved[model.rims["mouth"]].max() < 1e-3, name


def test_global_pose_is_rigid_and_jaw_moves_only_the_lower_face(model):
    shape = torch.randn(2, model.n_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expression = torch.rand(
        2, model.n_expression, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    rest = model(shape, expression, torch.zeros(2, 6, dtype=torch.float64)).vertices
    pose = torch.tensor([[0.3, -0.5, 0.2, 0, 0, 0], [0.0, 1.0, 0.0, 0, 0, 0]], dtype=torch.float64)
    posed = model(shape, expression, pose).vertices

    def distances(points):
        return (points[:, :, None] - points[:, None]).norm(dim=-1)

    torch.testing.assert_close(distances(posed), distances(rest))
    jaw = torch.tensor([[0, 0, 0, 0.3, 0, 0]] * 2, dtype=torch.float64)
    opened = model(shape, expression, jaw).vertices
    still = model.jaw_weights == 0
    torch.testing.assert_close(opened[:, still], rest[:, still])
    assert (opened - rest).norm(dim=-1)[:, model.jaw_weights == 1].min() > 0.1


def test_batch_items_are_independent(model):
    g = torch.Generator().manual_seed(2)
    codes = (
        torch.randn(3, model.n_shape, generator=g, dtype=torch.float64),
        torch.rand(3, model.n_expression, generator=g, dtype=torch.float64),
        0.2 * torch.randn(3, 6, generator=g, dtype=torch.float64),
    )
    batched = model(*codes).vertices
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], model(*(c[i : i + 1] for c in codes)).vertices)


def test_gradcheck_pose(model):
    shape = torch.zeros(1, model.n_shape, dtype=torch.float64)
    expression = torch.full((1, model.n_expression), 0.2, dtype=torch.float64)
    pose = torch.tensor([[0.1, 0.2, -0.1, 0.2, 0.01, 0.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: model(shape, expression, p).landmarks, (pose,))


def test_bad_codes_are_rejected(model):
    with pytest.raises(ValueError, match=r"got \(2, 16\), \(1, 27\), \(2, 6\)"):
        model(torch.zeros(2, 16), torch.zeros(1, 27), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="n_identity"):
        ProceduralFaceModel(n_identity=0)

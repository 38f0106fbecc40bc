import contextlib
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from aucgan.face_model.flame import contour_rows, head_yaw, load_flame, read_flame
from aucgan.loaders.common import CheckpointError

sparse = pytest.importorskip("scipy.sparse")

N_VERTICES, N_FACES, N_JOINTS = 40, 60, 5
FLAME_PARENTS = [-1, 0, 1, 1, 1]
ROOT_PARENT = 2**32 - 1  # how FLAME's kintree_table marks the root


@contextlib.contextmanager
def fake_chumpy():
    """``chumpy.ch.Ch`` registered only while pickling; it pickles like chumpy's (value under ``"x"``)."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    modules = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch")}
    modules["chumpy.ch"].Ch = Ch
    try:
        sys.modules.update(modules)
        yield Ch
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def flame_arrays(seed: int = 0) -> dict:
    """A tiny random model with FLAME 2020's keys, dtypes and layouts (the numbers are meaningless)."""
    rng = np.random.default_rng(seed)
    faces = np.stack([rng.choice(N_VERTICES, size=3, replace=False) for _ in range(N_FACES)]).astype(
        np.uint32
    )
    regressor = rng.random((N_JOINTS, N_VERTICES)) * (rng.random((N_JOINTS, N_VERTICES)) < 0.3)
    regressor[:, 0] += 0.1
    weights = rng.random((N_VERTICES, N_JOINTS)) ** 3
    template = rng.normal(size=(N_VERTICES, 3)) * 0.1
    return {
        "f": faces,
        "v_template": template,
        "shapedirs": rng.normal(size=(N_VERTICES, 3, 400)) * 0.01,
        "posedirs": rng.normal(size=(N_VERTICES, 3, 36)) * 0.01,
        "J_regressor": sparse.csc_matrix(regressor / regressor.sum(1, keepdims=True)),
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": weights / weights.sum(1, keepdims=True),
        "J": rng.normal(size=(N_JOINTS, 3)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pickle(path, arrays: dict, chumpy: bool = True):
    """Pickle like FLAME 2020: protocol 2, chumpy arrays for the float data (chumpy gone before loading)."""
    with fake_chumpy() as ch:
        wrap = ch if chumpy else np.asarray
        data = {
            k: wrap(v) if k in ("v_template", "shapedirs", "weights", "J") else v for k, v in arrays.items()
        }
        path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def embedding_arrays(seed: int = 1, full_shape=(1, 68)) -> dict:
    """A random embedding in DECA's layout; the dynamic entries are torch tensors, as in DECA's file."""
    rng = np.random.default_rng(seed)

    def bary(*shape):
        weights = rng.random((*shape, 3)) + 0.1
        return weights / weights.sum(-1, keepdims=True)

    return {
        "static_lmk_faces_idx": rng.integers(0, N_FACES, size=51),
        "static_lmk_bary_coords": bary(51),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, N_FACES, size=(79, 17))),
        "dynamic_lmk_bary_coords": torch.from_numpy(bary(79, 17)).float(),
        "full_lmk_faces_idx": rng.integers(0, N_FACES, size=full_shape),
        "full_lmk_bary_coords": bary(*full_shape),
    }


def write_embedding(path, arrays: dict):
    np.save(path, arrays, allow_pickle=True)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    arrays = flame_arrays()
    return types.SimpleNamespace(
        arrays=arrays,
        model=write_flame_pickle(folder / "generic_model.pkl", arrays),
        embedding_arrays=embedding_arrays(),
        embedding=write_embedding(folder / "landmark_embedding.npy", embedding_arrays()),
        folder=folder,
    )


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-15:
        return np.eye(3)
    kx, ky, kz = axis_angle / angle
    k = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def reference_flame(arrays: dict, shape, expression, pose, n_shape, n_exp):
    """FLAME for one head, float64, one vertex at a time, from the file's own (V, 3, K) layouts."""
    dirs = np.concatenate(
        [arrays["shapedirs"][:, :, :n_shape], arrays["shapedirs"][:, :, 300 : 300 + n_exp]], 2
    )
    shaped = arrays["v_template"] + dirs @ np.concatenate([shape, expression])
    rest = arrays["J_regressor"].toarray() @ shaped
    full_pose = [pose[:3], np.zeros(3), pose[3:], np.zeros(3), np.zeros(3)]
    rotations = [rodrigues(p) for p in full_pose]
    feature = np.concatenate([(r - np.eye(3)).ravel() for r in rotations[1:]])
    posed = shaped + arrays["posedirs"] @ feature
    world = []
    for j, parent in enumerate(FLAME_PARENTS):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = rest[j] - (rest[parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    skinning = []
    for j in range(N_JOINTS):
        undo = np.eye(4)
        undo[:3, 3] = -rest[j]
        skinning.append(world[j] @ undo)
    vertices = np.zeros_like(posed)
    for v in range(N_VERTICES):
        blended = sum(arrays["weights"][v, j] * skinning[j] for j in range(N_JOINTS))
        vertices[v] = (blended @ np.append(posed[v], 1.0))[:3]
    return vertices, np.stack([w[:3, 3] for w in world])


def interpolate(vertices: np.ndarray, faces: np.ndarray, face_index, barycentric) -> np.ndarray:
    return np.array(
        [
            sum(w * vertices[faces[f, i]] for i, w in enumerate(bc))
            for f, bc in zip(face_index, barycentric, strict=True)
        ]
    )


def codes(layer, batch, seed, dtype=torch.float64, pose_scale=0.4):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, layer.n_shape, generator=generator, dtype=dtype),
        torch.randn(batch, layer.n_expression, generator=generator, dtype=dtype),
        torch.randn(batch, 6, generator=generator, dtype=dtype) * pose_scale,
    )


def yaw_pose(degrees: float, jaw=(0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor([[0.0, math.radians(degrees), 0.0, *jaw]], dtype=torch.float64)


def one_line_error(load, path) -> str:
    with pytest.raises(CheckpointError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_matches_an_independent_float64_reference(files):
    layer = load_flame(files.model, n_shape=7, n_exp=5, dtype=torch.float64)
    shape, expression, pose = codes(layer, 3, seed=0)
    out = layer(shape, expression, pose)
    assert out.vertices.shape == (3, N_VERTICES, 3) and out.joints.shape == (3, N_JOINTS, 3)
    assert out.landmarks is None and out.landmarks_static is None and out.landmarks_full is None
    for b in range(3):
        vertices, joints = reference_flame(
            files.arrays, shape[b].numpy(), expression[b].numpy(), pose[b].numpy(), 7, 5
        )
        np.testing.assert_allclose(out.vertices[b].numpy(), vertices, atol=1e-9)
        np.testing.assert_allclose(out.joints[b].numpy(), joints, atol=1e-9)


def test_float32_layer_agrees_and_plain_numpy_pickle_loads_the_same(files, tmp_path):
    layer64 = load_flame(files.model, n_shape=7, n_exp=5, dtype=torch.float64)
    plain = write_flame_pickle(tmp_path / "plain.pkl", files.arrays, chumpy=False)
    layer32 = load_flame(plain, n_shape=7, n_exp=5)
    shape, expression, pose = codes(layer64, 2, seed=1)
    out32 = layer32(shape.float(), expression.float(), pose.float())
    assert out32.vertices.dtype == torch.float32
    reference = layer64(shape, expression, pose).vertices
    np.testing.assert_allclose(out32.vertices.double().numpy(), reference.numpy(), atol=1e-5)


def test_gradcheck_float64(files):
    layer = load_flame(files.model, n_shape=3, n_exp=2, dtype=torch.float64)
    inputs = tuple(code.requires_grad_() for code in codes(layer, 2, seed=2))

    def run(shape, expression, pose):
        out = layer(shape, expression, pose)
        return out.vertices, out.joints

    assert torch.autograd.gradcheck(run, inputs)


def test_landmarks_are_barycentric_points_of_the_posed_mesh(files):
    layer = load_flame(
        files.model, n_shape=4, n_exp=3, landmark_embedding=files.embedding, dtype=torch.float64
    )
    shape, expression, _ = codes(layer, 1, seed=3)
    out = layer(shape, expression, yaw_pose(0.0, jaw=(0.2, 0.0, 0.0)))
    vertices, faces, emb = out.vertices[0].numpy(), files.arrays["f"].astype(np.int64), files.embedding_arrays
    static = interpolate(vertices, faces, emb["static_lmk_faces_idx"], emb["static_lmk_bary_coords"])
    full = interpolate(vertices, faces, emb["full_lmk_faces_idx"][0], emb["full_lmk_bary_coords"][0])
    contour = interpolate(
        vertices,
        faces,
        emb["dynamic_lmk_faces_idx"][0].numpy(),
        emb["dynamic_lmk_bary_coords"][0].double().numpy(),
    )
    assert out.landmarks.shape == (1, 68, 3) and out.landmarks_static.shape == (1, 51, 3)
    np.testing.assert_allclose(out.landmarks_static[0].numpy(), static, atol=1e-12)
    np.testing.assert_allclose(out.landmarks_full[0].numpy(), full, atol=1e-12)
    np.testing.assert_allclose(out.landmarks[0, :17].numpy(), contour, atol=1e-7)
    np.testing.assert_allclose(out.landmarks[0, 17:].numpy(), static, atol=1e-12)


# DECA's table: yaw 0..39 degrees -> rows 0..39, yaw -1..-39 -> rows 40..78, clamped beyond.
EXPECTED_ROWS = {0: 0, 20: 20, -20: 59, 39: 39, -39: 78, 60: 39, -60: 78, 10.4: 10, -10.6: 50}


@pytest.mark.parametrize("degrees", list(EXPECTED_ROWS))
def test_head_yaw_selects_the_contour_row(files, degrees):
    layer = load_flame(
        files.model, n_shape=4, n_exp=3, landmark_embedding=files.embedding, dtype=torch.float64
    )
    shape, expression, _ = codes(layer, 1, seed=4)
    out = layer(shape, expression, yaw_pose(degrees, jaw=(0.1, 0.0, 0.0)))
    row = EXPECTED_ROWS[degrees]
    emb = files.embedding_arrays
    contour = interpolate(
        out.vertices[0].numpy(),
        files.arrays["f"].astype(np.int64),
        emb["dynamic_lmk_faces_idx"][row].numpy(),
        emb["dynamic_lmk_bary_coords"][row].double().numpy(),
    )
    np.testing.assert_allclose(out.landmarks[0, :17].numpy(), contour, atol=1e-7)


def test_opposite_yaws_use_different_contours(files):
    layer = load_flame(
        files.model, n_shape=4, n_exp=3, landmark_embedding=files.embedding, dtype=torch.float64
    )
    shape, expression, _ = codes(layer, 1, seed=5)
    left, right = (layer(shape, expression, yaw_pose(d)) for d in (20.0, -20.0))
    rotate = torch.from_numpy(rodrigues(np.array([0.0, math.radians(40.0), 0.0])))
    root = right.joints[0, 0]

    def turned(points):
        return (points - root) @ rotate.T + root

    # The head turns about the root joint: static landmarks are the same points turned, not the contour.
    torch.testing.assert_close(turned(right.landmarks[0, 17:]), left.landmarks[0, 17:])
    torch.testing.assert_close(turned(right.vertices[0]), left.vertices[0])
    assert not torch.allclose(turned(right.landmarks[0, :17]), left.landmarks[0, :17], atol=1e-3)


def test_head_yaw_ignores_pitch_and_contour_rows_follow_the_table():
    rotations, yaws = [], []
    for yaw, pitch in ((25.0, 0.0), (-25.0, 30.0), (5.0, -50.0), (-45.0, 10.0)):
        ry = rodrigues(np.array([0.0, math.radians(yaw), 0.0]))
        rotations.append(ry @ rodrigues(np.array([math.radians(pitch), 0.0, 0.0])))
        yaws.append(yaw)
    rotation = torch.from_numpy(np.stack(rotations))
    np.testing.assert_allclose(torch.rad2deg(head_yaw(rotation)).numpy(), yaws, atol=1e-9)
    assert contour_rows(rotation).tolist() == [25, 39 + 25, 5, 78]


def test_embedding_with_flat_full_arrays(files, tmp_path):
    arrays = embedding_arrays(seed=6, full_shape=(68,))
    path = write_embedding(tmp_path / "flat.npy", arrays)
    layer = load_flame(files.model, n_shape=4, n_exp=3, landmark_embedding=path, dtype=torch.float64)
    out = layer(*codes(layer, 1, seed=6))
    full = interpolate(
        out.vertices[0].numpy(),
        files.arrays["f"].astype(np.int64),
        arrays["full_lmk_faces_idx"],
        arrays["full_lmk_bary_coords"],
    )
    np.testing.assert_allclose(out.landmarks_full[0].numpy(), full, atol=1e-12)


def test_buffers_follow_dtype_but_stay_out_of_the_state_dict(files):
    layer = load_flame(files.model, n_shape=4, n_exp=3, landmark_embedding=files.embedding)
    assert layer.template.dtype == torch.float32 and layer.faces.dtype == torch.int64
    assert len(layer.state_dict()) == 0
    layer = layer.double()
    assert layer.template.dtype == torch.float64
    out = layer(*codes(layer, 2, seed=7))
    assert out.landmarks.dtype == torch.float64


def test_bad_codes_are_reported(files):
    layer = load_flame(files.model, n_shape=4, n_exp=3)
    shape, expression, pose = codes(layer, 2, seed=8, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"got \(2, 4\), \(2, 3\), \(2, 3\)"):
        layer(shape, expression, pose[:, :3])
    with pytest.raises(ValueError, match=r"got \(2, 4\), \(1, 3\), \(2, 6\)"):
        layer(shape, expression[:1], pose)
    with pytest.raises(ValueError, match="floating dtype"):
        layer(shape, expression.double(), pose)


def test_too_many_components_are_refused_before_reading(tmp_path):
    for kwargs, text in (
        ({"n_shape": 301}, "n_shape must be in [1, 300]"),
        ({"n_exp": 101}, "n_exp must be in [1, 100]"),
    ):
        with pytest.raises(ValueError) as info:
            load_flame(tmp_path / "absent.pkl", **kwargs)
        assert type(info.value) is ValueError and text in str(info.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.pop("posedirs"), "missing key 'posedirs'"),
        (lambda a: a.pop("J_regressor"), "missing key 'J_regressor'"),
        (lambda a: a.update(shapedirs=a["shapedirs"][:, :, :340]), "key 'shapedirs' has shape (40, 3, 340)"),
        (lambda a: a.update(posedirs=a["posedirs"][..., :35]), "key 'posedirs' has shape (40, 3, 35)"),
        (lambda a: a.update(weights=a["weights"][:, :4]), "key 'weights' has shape (40, 4)"),
        (lambda a: a.update(J_regressor=a["J_regressor"][:4]), "key 'J_regressor' has shape (4, 40)"),
        (lambda a: a.update(v_template=a["v_template"][:, :2]), "key 'v_template' has shape (40, 2)"),
        (lambda a: a.update(f=a["f"] + 40), "key 'f' has vertex indices outside [0, 40)"),
        (lambda a: a["kintree_table"].__setitem__((0, 4), 2), "key 'kintree_table' is"),
        (lambda a: a.update(weights=a["weights"] * np.nan), "key 'weights' holds non-finite values"),
    ],
)
def test_bad_model_files_name_the_file_and_key(tmp_path, change, expected):
    arrays = flame_arrays()
    change(arrays)
    path = write_flame_pickle(tmp_path / "generic_model.pkl", arrays)
    message = one_line_error(lambda: read_flame(path, n_exp=50), path)
    assert expected in message


def test_fewer_expression_columns_than_asked_are_refused(files):
    assert read_flame(files.model, n_exp=100).expression_directions.shape == (N_VERTICES, 3, 100)
    arrays = flame_arrays()
    arrays["shapedirs"] = arrays["shapedirs"][:, :, :350]
    path = write_flame_pickle(files.folder / "short.pkl", arrays)
    assert "at least 400 columns for n_exp=100" in one_line_error(lambda: read_flame(path, n_exp=100), path)
    assert read_flame(path, n_exp=50).expression_directions.shape == (N_VERTICES, 3, 50)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.pop("dynamic_lmk_bary_coords"), "missing key 'dynamic_lmk_bary_coords'"),
        (
            lambda a: a.update(static_lmk_faces_idx=a["static_lmk_faces_idx"][:50]),
            "key 'static_lmk_faces_idx' has",
        ),
        (
            lambda a: a.update(dynamic_lmk_faces_idx=a["dynamic_lmk_faces_idx"][:78]),
            "'dynamic_lmk_faces_idx' has",
        ),
        (
            lambda a: a.update(full_lmk_faces_idx=a["full_lmk_faces_idx"] + N_FACES),
            "triangle indices outside",
        ),
    ],
)
def test_bad_embeddings_name_the_file_and_key(files, tmp_path, change, expected):
    arrays = embedding_arrays()
    change(arrays)
    path = write_embedding(tmp_path / "landmark_embedding.npy", arrays)
    message = one_line_error(lambda: load_flame(files.model, landmark_embedding=path), path)
    assert expected in message


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_at_the_model_or_embedding_path_is_refused_and_never_runs(files, tmp_path):
    marker = tmp_path / "payload-ran"
    evil_model = tmp_path / "generic_model.pkl"
    evil_model.write_bytes(pickle.dumps({"v_template": Payload(marker)}, protocol=2))
    message = one_line_error(lambda: load_flame(evil_model), evil_model)
    assert f"refused to unpickle {os.system.__module__}.system (FLAME model)" in message
    evil_embedding = tmp_path / "landmark_embedding.npy"
    np.save(evil_embedding, {"static_lmk_faces_idx": Payload(marker)}, allow_pickle=True)
    message = one_line_error(
        lambda: load_flame(files.model, landmark_embedding=evil_embedding), evil_embedding
    )
    assert f"refused to unpickle {os.system.__module__}.system (landmark embedding)" in message
    assert not marker.exists()


def test_unreadable_model_files_name_the_file(files, tmp_path):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(files.model.read_bytes()[:5000])
    assert "truncated" in one_line_error(lambda: load_flame(cut), cut)
    page = tmp_path / "page.pkl"
    page.write_text("<!DOCTYPE html><html><head><title>FLAME</title></head><body>Login</body></html>")
    assert "HTML" in one_line_error(lambda: load_flame(page), page)
    listing = tmp_path / "list.pkl"
    listing.write_bytes(pickle.dumps([np.zeros(3)], protocol=2))
    assert "expected a dict" in one_line_error(lambda: load_flame(listing), listing)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(files):
    layer = load_flame(
        files.model, n_shape=4, n_exp=3, landmark_embedding=files.embedding, dtype=torch.float64
    )
    inputs = codes(layer, 3, seed=9)
    cpu = layer(*inputs)
    gpu = layer.to("cuda")(*(code.cuda() for code in inputs))
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices)
    torch.testing.assert_close(gpu.landmarks.cpu(), cpu.landmarks)


# FLAME as a FaceModel, with a UV template ---------------------------------------------------------------


def planar_uvs(vertices: np.ndarray) -> np.ndarray:
    """UVs by orthographic projection of x, y into [0.05, 0.95]²."""
    xy = vertices[:, :2]
    low, high = xy.min(0), xy.max(0)
    return 0.05 + 0.9 * (xy - low) / (high - low)


def template_uvs(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """A layout with a seam: triangles of odd index use a second copy of the UVs (U = 2 V), shifted."""
    uvs = planar_uvs(arrays["v_template"])
    faces = arrays["f"].astype(np.int64)
    uv_faces = faces + (np.arange(len(faces)) % 2)[:, None] * len(uvs)
    return np.concatenate([uvs, uvs * 0.5 + 0.25]), uv_faces


def write_obj(path, vertices, faces, uvs, uv_faces, normals: bool = False, relative: bool = False):
    lines = ["# a UV template written by the tests", "mtllib none.mtl"]
    lines += [f"v {x:.17g} {y:.17g} {z:.17g}" for x, y, z in vertices]
    lines += [f"vt {u:.17g} {v:.17g}" for u, v in uvs]
    if normals:
        lines.append("vn 0 0 1")
    lines.append("g head")
    for face, uv_face in zip(np.asarray(faces, np.int64), np.asarray(uv_faces, np.int64), strict=True):
        if relative:
            corners = [f"{a - len(vertices)}/{b - len(uvs)}" for a, b in zip(face, uv_face, strict=True)]
        else:
            corners = [
                f"{a + 1}/{b + 1}" + ("/1" if normals else "") for a, b in zip(face, uv_face, strict=True)
            ]
        lines.append("f " + " ".join(corners))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mask(path, mask: np.ndarray, mode: str = "RGB"):
    from PIL import Image

    if mode == "I;16":
        Image.fromarray((mask * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((mask * 255).astype(np.uint8)).convert(mode).save(path)
    return path


LEFT_HALF = np.zeros((16, 16), dtype=bool)
LEFT_HALF[:, :8] = True


@pytest.fixture(scope="module")
def face_files(files):
    uvs, uv_faces = template_uvs(files.arrays)
    template = write_obj(
        files.folder / "head_template.obj", files.arrays["v_template"], files.arrays["f"], uvs, uv_faces
    )
    return types.SimpleNamespace(
        uvs=uvs, uv_faces=uv_faces, template=template, mask=write_mask(files.folder / "mask.png", LEFT_HALF)
    )


def load_face_model(files, face_files, **kwargs):
    from aucgan.face_model.flame import load_flame_face_model

    return load_flame_face_model(
        files.model, files.embedding, face_files.template, face_files.mask, n_shape=7, n_exp=5, **kwargs
    )


@pytest.mark.parametrize(("normals", "relative"), [(False, False), (True, False), (False, True)])
def test_obj_template_reads_back_what_was_written(files, tmp_path, normals, relative):
    from aucgan.face_model.flame import read_obj_template

    uvs, uv_faces = template_uvs(files.arrays)
    path = write_obj(
        tmp_path / "t.obj", files.arrays["v_template"], files.arrays["f"], uvs, uv_faces, normals, relative
    )
    template = read_obj_template(path)
    np.testing.assert_array_equal(template.faces, files.arrays["f"])
    np.testing.assert_array_equal(template.uv_faces, uv_faces)
    np.testing.assert_allclose(template.vertices, files.arrays["v_template"], rtol=0, atol=0)
    np.testing.assert_allclose(template.uvs, uvs, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nf 1/1 2/1 3/1 4/1\n", "line 6"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1 2 3\n", "without a texture index"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 4/1\n", "vertex index outside [1, 3]"),
        ("v 0 0 zero\n", "line 1"),
        ("<!DOCTYPE html><html>sign in</html>\n", "no textured triangles"),
        ("", "no textured triangles"),
    ],
)
def test_bad_obj_templates_name_the_file(tmp_path, body, expected):
    from aucgan.face_model.flame import read_obj_template

    path = tmp_path / "head_template.obj"
    path.write_text(body, encoding="utf-8")
    assert expected in one_line_error(lambda: read_obj_template(path), path)


def test_face_model_poses_like_the_layer_and_keeps_nothing_in_its_state(files, face_files):
    from aucgan.face_model.base import FaceGeometry

    model = load_face_model(files, face_files, dtype=torch.float64)
    layer = load_flame(files.model, 7, 5, landmark_embedding=files.embedding, dtype=torch.float64)
    shape, expression, pose = codes(layer, 2, seed=3)
    geometry = model(shape, expression, pose)
    expected = layer(shape, expression, pose)
    assert isinstance(geometry, FaceGeometry)
    assert geometry.vertices.shape == (2, N_VERTICES, 3) and geometry.landmarks.shape == (2, 68, 3)
    torch.testing.assert_close(geometry.vertices, expected.vertices, rtol=0, atol=0)
    torch.testing.assert_close(geometry.landmarks, expected.landmarks, rtol=0, atol=0)
    assert (model.n_shape, model.n_expression, model.n_pose) == (7, 5, 6)
    assert not model.expression_is_au_rig
    assert model.state_dict() == {}
    torch.testing.assert_close(model.faces, torch.as_tensor(files.arrays["f"], dtype=torch.int64))
    torch.testing.assert_close(model.uv_faces, torch.as_tensor(face_files.uv_faces))
    torch.testing.assert_close(model.uvs, torch.as_tensor(face_files.uvs, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        model(shape, torch.zeros(3, 5, dtype=torch.float64), pose)


def test_face_parts_follow_the_mask_at_each_uv_centroid(files, face_files):
    from aucgan.face_model.base import FACE_PART_EYE, FACE_PART_SKIN

    model = load_face_model(files, face_files)
    eye_vertices = files.arrays["weights"][:, 3:].sum(1) > 0.5
    for f, uv_face in enumerate(face_files.uv_faces):
        u, v = face_files.uvs[uv_face].mean(0)
        row = min(max(math.floor((1 - v) * 16), 0), 15)
        col = min(max(math.floor(u * 16), 0), 15)
        is_eye = eye_vertices[files.arrays["f"][f]].any()
        expected = FACE_PART_SKIN if LEFT_HALF[row, col] and not is_eye else FACE_PART_EYE
        assert int(model.face_part[f]) == expected, f
    assert (model.face_part == FACE_PART_SKIN).any() and (model.face_part == FACE_PART_EYE).any()


def test_face_parts_in_uv_convention_with_eyes_forced():
    from aucgan.face_model.flame import face_parts_from_mask

    uvs = torch.tensor([[0.1, 0.9], [0.2, 0.9], [0.1, 0.8], [0.9, 0.1], [0.8, 0.1], [0.9, 0.2]])
    uv_faces = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 1, 2]])
    top_left = torch.zeros(4, 4, dtype=torch.bool)
    top_left[0, 0] = True
    parts = face_parts_from_mask(uvs, uv_faces, top_left, eye_faces=torch.tensor([False, False, True]))
    assert parts.tolist() == [0, 1, 1]
    bottom_right = torch.zeros(4, 4, dtype=torch.bool)
    bottom_right[3, 3] = True
    assert face_parts_from_mask(uvs, uv_faces, bottom_right).tolist() == [1, 0, 1]


def test_landmark_indices_are_the_nearest_corners(files, face_files):
    model = load_face_model(files, face_files)
    template = files.arrays["v_template"]
    faces = files.arrays["f"].astype(np.int64)
    full_faces = files.embedding_arrays["full_lmk_faces_idx"].reshape(-1)
    full_bary = files.embedding_arrays["full_lmk_bary_coords"].reshape(-1, 3)
    for index, (face, bary) in enumerate(zip(full_faces, full_bary, strict=True)):
        point = bary @ template[faces[face]]
        distances = [np.linalg.norm(template[v] - point) for v in faces[face]]
        assert int(model.landmark_indices[index]) == faces[face][int(np.argmin(distances))]


def test_uv_space_of_the_face_model(files, face_files):
    from aucgan.face_model.uv_space import UVSpace

    model = load_face_model(files, face_files)
    space = UVSpace(model, 32)
    assert space.layout.mask.sum() > 0
    assert 0 < space.skin.sum() < space.layout.mask.sum()
    surface = space.surface(model(*(c.float() for c in codes(model, 1, seed=0))).vertices)
    assert surface.positions.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_uv_masks_of_any_depth_read_the_same(tmp_path, mode):
    from aucgan.face_model.flame import read_uv_mask

    mask = np.zeros((8, 12), dtype=bool)
    mask[2:5, 3:9] = True
    np.testing.assert_array_equal(read_uv_mask(write_mask(tmp_path / "m.png", mask, mode)), mask)


def test_bad_uv_masks_name_the_file(tmp_path):
    from aucgan.face_model.flame import read_uv_mask

    black = write_mask(tmp_path / "black.png", np.zeros((8, 8), dtype=bool))
    assert "all black" in one_line_error(lambda: read_uv_mask(black), black)
    text = tmp_path / "mask.png"
    text.write_text("<html>not an image</html>", encoding="utf-8")
    assert "not a readable image" in one_line_error(lambda: read_uv_mask(text), text)
    missing = tmp_path / "missing.png"
    assert "no such file" in one_line_error(lambda: read_uv_mask(missing), missing)


def test_a_template_of_another_mesh_is_refused(files, face_files, tmp_path):
    faces = files.arrays["f"].copy()
    faces[[4, 5]] = faces[[5, 4]]
    swapped = write_obj(
        tmp_path / "swapped.obj", files.arrays["v_template"], faces, *template_uvs(files.arrays)
    )
    message = one_line_error(
        lambda: load_face_model(files, types.SimpleNamespace(template=swapped, mask=face_files.mask)), swapped
    )
    assert "differ" in message and "index 4" in message
    uvs, uv_faces = template_uvs(files.arrays)
    fewer = write_obj(
        tmp_path / "fewer.obj", files.arrays["v_template"][:-1], files.arrays["f"][:0], uvs, uv_faces[:0]
    )
    fewer.write_text(fewer.read_text() + "f 1/1 2/2 3/3\n", encoding="utf-8")
    message = one_line_error(
        lambda: load_face_model(files, types.SimpleNamespace(template=fewer, mask=face_files.mask)), fewer
    )
    assert f"{N_VERTICES - 1} vertices" in message

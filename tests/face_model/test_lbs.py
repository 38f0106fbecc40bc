import numpy as np
import pytest
import torch

from aucgan.face_model.lbs import blend_shapes, linear_blend_skinning, rigid_transforms, vertices_to_joints

PARENTS = [-1, 0, 1, 1]  # a root, a chain and a fork: not FLAME's tree


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """Rotation matrix from an axis-angle vector, written out: I + sin(t) K + (1 - cos(t)) K^2."""
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-15:
        return np.eye(3)
    kx, ky, kz = axis_angle / angle
    k = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def homogeneous(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


def reference_transforms(rotations, joints, parents):
    """World transform of each joint as the product of local transforms along its chain from the root."""
    world, skinning = [], []
    for j in range(len(parents)):
        chain = [j]
        while parents[chain[-1]] >= 0:
            chain.append(parents[chain[-1]])
        transform = np.eye(4)
        for k in reversed(chain):
            offset = joints[k] - (joints[parents[k]] if parents[k] >= 0 else 0.0)
            transform = transform @ homogeneous(rotations[k], offset)
        world.append(transform)
        skinning.append(transform @ homogeneous(np.eye(3), -joints[j]))
    return np.stack(world), np.stack(skinning)


def reference_lbs(template, shape_dirs, coefficients, pose_dirs_vck, regressor, parents, weights, rotations):
    """One mesh, one vertex at a time, float64; pose correctives use the (V, 3, P) layout directly."""
    shaped = template + np.einsum("vck,k->vc", shape_dirs, coefficients)
    joints = regressor @ shaped
    feature = np.concatenate([(rotations[j] - np.eye(3)).ravel() for j in range(1, len(parents))])
    posed = shaped + np.einsum("vck,k->vc", pose_dirs_vck, feature)
    world, skinning = reference_transforms(rotations, joints, parents)
    out = np.zeros_like(posed)
    for v in range(len(posed)):
        blended = sum(weights[v, j] * skinning[j] for j in range(len(parents)))
        out[v] = (blended @ np.append(posed[v], 1.0))[:3]
    return out, world[:, :3, 3]


def random_rig(rng: np.random.Generator, n_vertices=9, n_coefficients=4):
    n_joints = len(PARENTS)
    weights = rng.random((n_vertices, n_joints)) ** 2
    regressor = rng.random((n_joints, n_vertices))
    return {
        "template": rng.normal(size=(n_vertices, 3)),
        "shape_dirs": rng.normal(size=(n_vertices, 3, n_coefficients)) * 0.1,
        "pose_dirs_vck": rng.normal(size=(n_vertices, 3, 9 * (n_joints - 1))) * 0.1,
        "regressor": regressor / regressor.sum(1, keepdims=True),
        "weights": weights / weights.sum(1, keepdims=True),
    }


def torch_args(rig, coefficients, rotations, dtype=torch.float64, device="cpu"):
    def t(array):
        return torch.as_tensor(array, dtype=dtype, device=device)

    n_pose = rig["pose_dirs_vck"].shape[2]
    return (
        t(rig["template"]),
        t(rig["shape_dirs"]),
        t(coefficients),
        t(rig["pose_dirs_vck"].reshape(-1, n_pose).T),
        t(rig["regressor"]),
        torch.tensor(PARENTS, device=device),
        t(rig["weights"]),
        t(rotations),
    )


def random_rotations(rng, batch, n_joints=4):
    return np.stack(
        [np.stack([rodrigues(rng.normal(size=3)) for _ in range(n_joints)]) for _ in range(batch)]
    )


def test_blend_shapes_and_joint_regression_match_loops():
    rng = np.random.default_rng(0)
    coefficients, directions = rng.normal(size=(2, 4)), rng.normal(size=(5, 3, 4))
    expected = np.zeros((2, 5, 3))
    for b in range(2):
        for k in range(4):
            expected[b] += coefficients[b, k] * directions[:, :, k]
    out = blend_shapes(torch.from_numpy(coefficients), torch.from_numpy(directions))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
    regressor, vertices = rng.random((3, 5)), rng.normal(size=(2, 5, 3))
    joints = vertices_to_joints(torch.from_numpy(regressor), torch.from_numpy(vertices))
    expected = np.array(
        [[sum(regressor[j, v] * vertices[b, v] for v in range(5)) for j in range(3)] for b in range(2)]
    )
    np.testing.assert_allclose(joints.numpy(), expected, atol=1e-12)


def test_rigid_transforms_match_chain_products():
    rng = np.random.default_rng(1)
    rotations, joints = random_rotations(rng, 3), rng.normal(size=(3, len(PARENTS), 3))
    posed, transforms = rigid_transforms(
        torch.from_numpy(rotations), torch.from_numpy(joints), torch.tensor(PARENTS)
    )
    for b in range(3):
        world, skinning = reference_transforms(rotations[b], joints[b], PARENTS)
        np.testing.assert_allclose(posed[b].numpy(), world[:, :3, 3], atol=1e-12)
        np.testing.assert_allclose(transforms[b].numpy(), skinning, atol=1e-12)
        # A skinning transform takes each rest joint to its posed location.
        moved = np.einsum("jmn,jn->jm", skinning, np.concatenate([joints[b], np.ones((len(PARENTS), 1))], 1))
        np.testing.assert_allclose(moved[:, :3], world[:, :3, 3], atol=1e-12)


def test_linear_blend_skinning_matches_a_per_vertex_reference():
    rng = np.random.default_rng(2)
    rig = random_rig(rng)
    coefficients, rotations = rng.normal(size=(3, 4)), random_rotations(rng, 3)
    vertices, joints = linear_blend_skinning(*torch_args(rig, coefficients, rotations))
    assert vertices.shape == (3, 9, 3) and joints.shape == (3, len(PARENTS), 3)
    for b in range(3):
        expected_vertices, expected_joints = reference_lbs(
            rig["template"], rig["shape_dirs"], coefficients[b], rig["pose_dirs_vck"], rig["regressor"],
            PARENTS, rig["weights"], rotations[b],
        )  # fmt: skip
        np.testing.assert_allclose(vertices[b].numpy(), expected_vertices, atol=1e-10)
        np.testing.assert_allclose(joints[b].numpy(), expected_joints, atol=1e-10)


def test_rest_pose_with_zero_codes_is_the_template():
    rng = np.random.default_rng(3)
    rig = random_rig(rng)
    rotations = np.tile(np.eye(3), (2, len(PARENTS), 1, 1))
    vertices, joints = linear_blend_skinning(*torch_args(rig, np.zeros((2, 4)), rotations))
    np.testing.assert_allclose(vertices.numpy(), np.broadcast_to(rig["template"], (2, 9, 3)), atol=1e-12)
    np.testing.assert_allclose(joints[0].numpy(), rig["regressor"] @ rig["template"], atol=1e-12)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(4)
    rig = random_rig(rng)
    coefficients, rotations = rng.normal(size=(2, 4)), random_rotations(rng, 2)
    v64, _ = linear_blend_skinning(*torch_args(rig, coefficients, rotations))
    v32, _ = linear_blend_skinning(*torch_args(rig, coefficients, rotations, dtype=torch.float32))
    assert v32.dtype == torch.float32
    np.testing.assert_allclose(v32.numpy(), v64.numpy(), atol=1e-5)


def test_gradcheck_float64():
    rng = np.random.default_rng(5)
    rig = random_rig(rng, n_vertices=5, n_coefficients=2)
    args = list(torch_args(rig, rng.normal(size=(2, 2)), random_rotations(rng, 2)))
    coefficients, rotations = args[2].requires_grad_(), args[7].requires_grad_()

    def run(c, r):
        return linear_blend_skinning(*args[:2], c, *args[3:7], r)

    assert torch.autograd.gradcheck(run, (coefficients, rotations))


def test_bad_shapes_are_reported():
    rng = np.random.default_rng(6)
    rig = random_rig(rng)
    args = list(torch_args(rig, rng.normal(size=(2, 4)), random_rotations(rng, 2)))
    with pytest.raises(ValueError, match=r"coefficients must be \(2, K\), got \(3, 4\)"):
        linear_blend_skinning(*args[:2], torch.zeros(3, 4, dtype=torch.float64), *args[3:])
    with pytest.raises(ValueError, match=r"pose_directions must be \(27, 27\), got \(26, 27\)"):
        linear_blend_skinning(*args[:3], args[3][:26], *args[4:])
    with pytest.raises(ValueError, match=r"skinning_weights must be \(9, 4\), got \(9, 3\)"):
        linear_blend_skinning(*args[:6], args[6][:, :3], args[7])
    with pytest.raises(ValueError, match=r"parents must be -1 for the root"):
        linear_blend_skinning(*args[:5], torch.tensor([-1, 0, 3, 1]), *args[6:])
    with pytest.raises(ValueError, match=r"directions must be \(V, 3, 2\), got \(5, 3, 4\)"):
        blend_shapes(torch.zeros(1, 2), torch.zeros(5, 3, 4))
    with pytest.raises(ValueError, match=r"vertices must be \(B, 5, 3\), got \(1, 4, 3\)"):
        vertices_to_joints(torch.zeros(2, 5), torch.zeros(1, 4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(7)
    rig = random_rig(rng)
    coefficients, rotations = rng.normal(size=(2, 4)), random_rotations(rng, 2)
    cpu, _ = linear_blend_skinning(*torch_args(rig, coefficients, rotations))
    gpu, _ = linear_blend_skinning(*torch_args(rig, coefficients, rotations, device="cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu)

"""Linear blend skinning of a rigged mesh (the SMPL / FLAME family), as pure batched tensor functions.

All model data is passed in; nothing is cached. Rotations act on column vectors (``p' = R p``), as in
:func:`aucgan.geometry.rotation.axis_angle_to_matrix`. Joint ``0`` is the root and every joint's parent
comes before it (``parents[j] < j``); the root's parent is ``-1``.
"""

from __future__ import annotations

import torch


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def blend_shapes(coefficients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Linear blend-shape offsets: ``offsets[b, v, c] = sum_k coefficients[b, k] * directions[v, c, k]``.

    Args:
        coefficients: ``(B, K)`` blend-shape coefficients (shape or expression code).
        directions: ``(V, 3, K)`` one displacement field per coefficient.

    Returns:
        ``(B, V, 3)`` vertex offsets.
    """
    _check(coefficients.ndim == 2, f"coefficients must be (B, K), got {tuple(coefficients.shape)}")
    _check(
        directions.ndim == 3 and directions.shape[1] == 3 and directions.shape[2] == coefficients.shape[1],
        f"directions must be (V, 3, {coefficients.shape[1]}), got {tuple(directions.shape)}",
    )
    return torch.einsum("bk,vck->bvc", coefficients, directions)


def vertices_to_joints(regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joints as fixed linear combinations of vertices: ``joints[b, j] = sum_v R[j, v] vertices[b, v]``.

    Args:
        regressor: ``(J, V)`` joint regressor (each row usually sums to 1).
        vertices: ``(B, V, 3)``.

    Returns:
        ``(B, J, 3)`` joints.
    """
    _check(regressor.ndim == 2, f"regressor must be (J, V), got {tuple(regressor.shape)}")
    _check(
        vertices.ndim == 3 and vertices.shape[1:] == (regressor.shape[1], 3),
        f"vertices must be (B, {regressor.shape[1]}, 3), got {tuple(vertices.shape)}",
    )
    return torch.einsum("jv,bvc->bjc", regressor, vertices)


def _parent_list(parents: torch.Tensor, n_joints: int) -> list[int]:
    _check(
        parents.shape == (n_joints,) and not parents.is_floating_point(),
        f"parents must be ({n_joints},) integers, got {tuple(parents.shape)} {parents.dtype}",
    )
    values = [int(p) for p in parents.tolist()]
    _check(
        values[0] == -1 and all(0 <= p < j for j, p in enumerate(values) if j > 0),
        f"parents must be -1 for the root and precede each joint, got {values}",
    )
    return values


def rigid_transforms(
    rotations: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics of a joint tree, and the skinning transforms relative to the rest pose.

    Joint ``j`` rotates by ``R_j`` about its rest location ``J_j`` in its parent's frame: its local
    transform is ``L_j = [R_j, J_j - J_parent(j); 0, 1]`` (``L_0 = [R_0, J_0; 0, 1]`` for the root), its
    world transform ``G_j = G_parent(j) L_j``, its posed location the translation of ``G_j``. The skinning
    transform maps a rest-pose point to the posed one: ``A_j = G_j [I, -J_j; 0, 1]``, i.e. rotation
    ``W_j = R_0 ... R_j`` (along the chain) and translation ``posed_j - W_j J_j``.

    Args:
        rotations: ``(B, J, 3, 3)`` joint rotations, each relative to its parent.
        joints: ``(B, J, 3)`` rest-pose joint locations.
        parents: ``(J,)`` integer parent of each joint, ``-1`` for the root, ``parents[j] < j``.

    Returns:
        ``posed_joints (B, J, 3)`` and ``transforms (B, J, 4, 4)`` (the ``A_j``).
    """
    _check(
        rotations.ndim == 4 and rotations.shape[-2:] == (3, 3),
        f"rotations must be (B, J, 3, 3), got {tuple(rotations.shape)}",
    )
    batch, n_joints = rotations.shape[:2]
    _check(
        joints.shape == (batch, n_joints, 3),
        f"joints must be ({batch}, {n_joints}, 3), got {tuple(joints.shape)}",
    )
    parent = _parent_list(parents, n_joints)
    world_rotations = [rotations[:, 0]]
    world_translations = [joints[:, 0]]
    for j in range(1, n_joints):
        p = parent[j]
        offset = joints[:, j] - joints[:, p]
        world_rotations.append(world_rotations[p] @ rotations[:, j])
        world_translations.append(world_translations[p] + (world_rotations[p] @ offset[..., None])[..., 0])
    rotation = torch.stack(world_rotations, dim=1)
    posed_joints = torch.stack(world_translations, dim=1)
    translation = posed_joints - (rotation @ joints[..., None])[..., 0]
    top = torch.cat([rotation, translation[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return posed_joints, torch.cat([top, bottom], dim=-2)


def linear_blend_skinning(
    template: torch.Tensor,
    shape_directions: torch.Tensor,
    coefficients: torch.Tensor,
    pose_directions: torch.Tensor,
    joint_regressor: torch.Tensor,
    parents: torch.Tensor,
    skinning_weights: torch.Tensor,
    rotations: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a blend-shape mesh: shape and expression blend, pose correctives, then linear blend skinning.

    With ``T`` the template, ``S`` the shape directions, ``beta`` the coefficients:

    1. ``v_shaped = T + sum_k beta_k S_k`` (:func:`blend_shapes`);
    2. ``J = regressor @ v_shaped`` (:func:`vertices_to_joints`), the rest joints of this identity;
    3. ``p = flatten(R_1 - I, ..., R_{J-1} - I)`` (row-major, root excluded), ``(B, 9 (J - 1))``;
       ``v_posed = v_shaped + reshape(p @ pose_directions, (V, 3))`` (pose-corrective blend shapes);
    4. ``v = sum_j w[v, j] A_j [v_posed; 1]`` with ``A_j`` from :func:`rigid_transforms`.

    Args:
        template: ``(V, 3)`` rest-pose mean mesh.
        shape_directions: ``(V, 3, K)`` shape (and expression) blend shapes.
        coefficients: ``(B, K)`` their coefficients.
        pose_directions: ``(9 (J - 1), 3 V)`` pose-corrective blend shapes; column ``3 v + c`` moves
            coordinate ``c`` of vertex ``v``.
        joint_regressor: ``(J, V)``.
        parents: ``(J,)`` integer parents, ``-1`` for the root.
        skinning_weights: ``(V, J)`` per-vertex joint weights (rows sum to 1).
        rotations: ``(B, J, 3, 3)`` joint rotations relative to their parents.

    Returns:
        ``vertices (B, V, 3)`` posed mesh and ``joints (B, J, 3)`` posed joints.
    """
    _check(
        template.ndim == 2 and template.shape[1] == 3, f"template must be (V, 3), got {tuple(template.shape)}"
    )
    n_vertices = template.shape[0]
    _check(
        rotations.ndim == 4 and rotations.shape[-2:] == (3, 3),
        f"rotations must be (B, J, 3, 3), got {tuple(rotations.shape)}",
    )
    batch, n_joints = rotations.shape[:2]
    _check(
        coefficients.ndim == 2 and coefficients.shape[0] == batch,
        f"coefficients must be ({batch}, K), got {tuple(coefficients.shape)}",
    )
    _check(
        shape_directions.ndim == 3 and shape_directions.shape[0] == n_vertices,
        f"shape_directions must be ({n_vertices}, 3, K), got {tuple(shape_directions.shape)}",
    )
    n_pose = 9 * (n_joints - 1)
    _check(
        pose_directions.shape == (n_pose, 3 * n_vertices),
        f"pose_directions must be ({n_pose}, {3 * n_vertices}), got {tuple(pose_directions.shape)}",
    )
    _check(
        joint_regressor.shape == (n_joints, n_vertices),
        f"joint_regressor must be ({n_joints}, {n_vertices}), got {tuple(joint_regressor.shape)}",
    )
    _check(
        skinning_weights.shape == (n_vertices, n_joints),
        f"skinning_weights must be ({n_vertices}, {n_joints}), got {tuple(skinning_weights.shape)}",
    )
    shaped = template + blend_shapes(coefficients, shape_directions)
    rest_joints = vertices_to_joints(joint_regressor, shaped)
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    pose_feature = (rotations[:, 1:] - eye).reshape(batch, n_pose)
    posed = shaped + (pose_feature @ pose_directions).reshape(batch, n_vertices, 3)
    posed_joints, transforms = rigid_transforms(rotations, rest_joints, parents)
    blended = torch.einsum("vj,bjmn->bvmn", skinning_weights, transforms[..., :3, :])
    vertices = (blended[..., :3] @ posed[..., None])[..., 0] + blended[..., 3]
    return vertices, posed_joints

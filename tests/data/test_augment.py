"""Tests of the augmentation choke point (:mod:`aucgan.data.augment`).

The kornia pipeline is checked against a plain reference: ``grid_sample`` driven directly by the NDC transform
the module reports, with aucgan's pixel-centre convention. Landmarks are checked against the same matrix and,
end to end, against bright dots and mask discs drawn at the landmarks.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aucgan.data.augment import (
    AugmentSettings,
    FaceAugmentation,
    mirror_images,
    ndc_from_pixels_matrix,
    pixels_from_ndc_matrix,
    pixels_to_ndc,
)
from aucgan.geometry.camera import ndc_to_pixels

NO_COLOUR = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
NO_GEOMETRY = {"rotation_degrees": 0.0, "translate": 0.0, "scale": (1.0, 1.0)}


def pixel_centres_ndc(height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """``(H, W, 2)`` NDC of every pixel centre, written from the convention in :mod:`aucgan.geometry`."""
    x = (2.0 * torch.arange(width, dtype=dtype) + 1.0) / width - 1.0
    y = 1.0 - (2.0 * torch.arange(height, dtype=dtype) + 1.0) / height
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def reference_warp(images: torch.Tensor, ndc_transform: torch.Tensor) -> torch.Tensor:
    """Plain inverse warp: each output pixel centre samples the input at ``ndc_transform^-1`` of itself."""
    batch, _, height, width = images.shape
    centres = pixel_centres_ndc(height, width, images.dtype).reshape(-1, 2)
    homogeneous = torch.cat([centres, torch.ones_like(centres[:, :1])], dim=-1)
    source = torch.einsum("bij,nj->bni", torch.linalg.inv(ndc_transform), homogeneous)
    grid = torch.stack([source[..., 0], -source[..., 1]], dim=-1).reshape(batch, height, width, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_ndc(ndc_transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    return torch.einsum("bij,blj->bli", ndc_transform, homogeneous)[..., :2]


def random_landmarks(batch: int, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(batch, count, 2, dtype=dtype) * 1.6 - 0.8


# --- conventions -------------------------------------------------------------------------------------------


def test_pixels_to_ndc_inverts_ndc_to_pixels_and_matches_the_pixel_centre_convention():
    height, width = 6, 10
    points = torch.rand(3, 5, 2, dtype=torch.float64) * 2.0 - 1.0
    torch.testing.assert_close(pixels_to_ndc(ndc_to_pixels(points, height, width), height, width), points)
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    centres = pixels_to_ndc(torch.stack([cols, rows], dim=-1), height, width)
    torch.testing.assert_close(centres, pixel_centres_ndc(height, width, torch.float64))


def test_conversion_matrices_match_the_functions_and_invert_each_other():
    height, width = 7, 12
    to_pixels = pixels_from_ndc_matrix(height, width, torch.float64)
    to_ndc = ndc_from_pixels_matrix(height, width, torch.float64)
    torch.testing.assert_close(to_ndc @ to_pixels, torch.eye(3, dtype=torch.float64))
    points = torch.rand(9, 2, dtype=torch.float64) * 2.0 - 1.0
    homogeneous = torch.cat([points, torch.ones(9, 1, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close((homogeneous @ to_pixels.T)[:, :2], ndc_to_pixels(points, height, width))


# --- geometric consistency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_images_masks_and_landmarks_follow_the_reported_transform(dtype):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 24, 32, dtype=dtype)
    masks = torch.rand(4, 2, 24, 32, dtype=dtype)
    landmarks = random_landmarks(4, 7, dtype)
    tolerance = {"atol": 1e-4, "rtol": 0.0} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 0.0}

    geometric_only = FaceAugmentation(AugmentSettings(rotation_degrees=30.0, **NO_COLOUR))
    out = geometric_only(images, masks, landmarks)
    assert out.images.dtype == out.masks.dtype == out.landmarks.dtype == dtype
    assert not torch.allclose(out.ndc_transform, torch.eye(3, dtype=dtype).expand(4, 3, 3))
    torch.testing.assert_close(out.images, reference_warp(images, out.ndc_transform), **tolerance)
    torch.testing.assert_close(out.masks, reference_warp(masks, out.ndc_transform), **tolerance)
    torch.testing.assert_close(out.landmarks, apply_ndc(out.ndc_transform, landmarks), **tolerance)

    with_colour = FaceAugmentation(AugmentSettings(rotation_degrees=30.0))
    out = with_colour(images, masks, landmarks)
    assert not torch.allclose(out.images, reference_warp(images, out.ndc_transform), atol=1e-3)
    torch.testing.assert_close(out.masks, reference_warp(masks, out.ndc_transform), **tolerance)
    torch.testing.assert_close(out.landmarks, apply_ndc(out.ndc_transform, landmarks), **tolerance)


def test_transformed_landmarks_lie_on_the_transformed_dots_and_discs():
    size, sigma, radius = 64, 1.5, 3.0
    grid = torch.tensor([-0.5, 0.0, 0.5])
    centres = torch.cartesian_prod(grid, grid)
    torch.manual_seed(1)
    batch = 6
    landmarks = centres + (torch.rand(batch, 9, 2) - 0.5) * 0.1
    pixels = ndc_to_pixels(landmarks, size, size)
    rows, cols = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    distance2 = (cols[None, None] - pixels[..., 0, None, None]) ** 2 + (
        rows[None, None] - pixels[..., 1, None, None]
    ) ** 2
    dots = torch.exp(-distance2 / (2.0 * sigma**2)).sum(dim=1, keepdim=True)
    discs = (distance2 <= radius**2).any(dim=1, keepdim=True).float()

    augmentation = FaceAugmentation(AugmentSettings(rotation_degrees=20.0, translate=0.05, **NO_COLOUR))
    out = augmentation(dots.expand(-1, 3, -1, -1).contiguous(), discs, landmarks)
    predicted = ndc_to_pixels(out.landmarks, size, size)

    window = 6.0
    for picture in (out.images[:, :1], out.masks):
        near = (cols[None, None] - predicted[..., 0, None, None]).abs().le(window) & (
            rows[None, None] - predicted[..., 1, None, None]
        ).abs().le(window)
        weights = picture * near
        total = weights.sum(dim=(-2, -1))
        centroid = torch.stack(
            [(weights * cols).sum(dim=(-2, -1)) / total, (weights * rows).sum(dim=(-2, -1)) / total], dim=-1
        )
        error = (centroid - predicted).norm(dim=-1)
        assert error.max() < 0.5, f"landmark off its dot by {error.max():.3f} px"
        moved = (predicted - pixels).norm(dim=-1)
        assert moved.max() > 2.0


def test_mask_equal_to_an_image_channel_stays_equal_under_geometry():
    torch.manual_seed(2)
    images = torch.rand(5, 3, 20, 20)
    augmentation = FaceAugmentation(AugmentSettings(rotation_degrees=45.0, translate=0.1, **NO_COLOUR))
    out = augmentation(images, images[:, 1:2].clone())
    torch.testing.assert_close(out.masks, out.images[:, 1:2], atol=1e-6, rtol=0.0)
    assert (out.images - images).abs().max() > 0.1


@pytest.mark.parametrize("bound", [10.0, 45.0])
def test_drawn_rotation_scale_and_shift_stay_within_the_settings(bound):
    settings = AugmentSettings(rotation_degrees=bound, scale=(0.8, 1.2), translate=0.1, **NO_COLOUR)
    torch.manual_seed(3)
    out = FaceAugmentation(settings)(torch.rand(512, 3, 8, 8))
    matrix = out.ndc_transform
    torch.testing.assert_close(matrix[:, 0, 0], matrix[:, 1, 1])
    torch.testing.assert_close(matrix[:, 0, 1], -matrix[:, 1, 0])
    angles = torch.rad2deg(torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0])).abs()
    assert angles.max() <= bound + 1e-3
    assert angles.max() > 0.9 * bound
    scales = torch.linalg.det(matrix[:, :2, :2]).sqrt()
    assert scales.min() >= 0.8 - 1e-5 and scales.max() <= 1.2 + 1e-5
    assert scales.max() - scales.min() > 0.3
    shifts = matrix[:, :2, 2].abs()
    assert shifts.max() <= 2.0 * 0.1 + 1e-5
    assert shifts.max() > 0.15


def test_geometric_probability_gates_each_sample():
    torch.manual_seed(4)
    images = torch.rand(64, 3, 8, 8)
    out = FaceAugmentation(AugmentSettings(geometric_p=0.5, **NO_COLOUR))(images)
    untouched = (out.ndc_transform - torch.eye(3)).abs().amax(dim=(-2, -1)) < 1e-7
    assert 10 < int(untouched.sum()) < 54
    torch.testing.assert_close(out.images[untouched], images[untouched])
    assert ((out.images[~untouched] - images[~untouched]).abs().amax(dim=(1, 2, 3)) > 1e-3).all()


# --- colour ------------------------------------------------------------------------------------------------


def test_colour_only_settings_skip_the_affine_and_leave_masks_and_landmarks_alone():
    settings = AugmentSettings(brightness=0.5).without_geometry()
    augmentation = FaceAugmentation(settings)
    assert augmentation.colour and not augmentation.geometric
    torch.manual_seed(5)
    images = torch.rand(4, 3, 16, 16)
    masks = (torch.rand(4, 1, 16, 16) > 0.5).float()
    landmarks = random_landmarks(4, 5)
    out = augmentation(images, masks, landmarks)
    assert torch.equal(out.masks, masks)
    assert torch.equal(out.landmarks, landmarks)
    torch.testing.assert_close(out.ndc_transform, torch.eye(3).expand(4, 3, 3))
    assert (out.images - images).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0


def test_images_stay_in_the_unit_range_under_strong_colour():
    torch.manual_seed(6)
    settings = AugmentSettings(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.5)
    out = FaceAugmentation(settings)(torch.rand(8, 3, 12, 12))
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0


# --- disabled, reproducible --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        AugmentSettings(enabled=False),
        AugmentSettings(geometric_p=0.0, colour_p=0.0),
        AugmentSettings(**NO_GEOMETRY, **NO_COLOUR),
    ],
    ids=["enabled-false", "zero-probabilities", "trivial-ranges"],
)
def test_disabled_is_the_identity_and_draws_no_random_numbers(settings):
    augmentation = FaceAugmentation(settings)
    assert not augmentation.active
    images, masks, landmarks = torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8), random_landmarks(3, 4)
    state = torch.get_rng_state()
    out = augmentation(images, masks, landmarks)
    assert torch.equal(torch.get_rng_state(), state)
    assert out.images is images and out.masks is masks and out.landmarks is landmarks
    assert torch.equal(out.ndc_transform, torch.eye(3).expand(3, 3, 3))


def test_reproducible_under_manual_seed_and_independent_across_calls():
    augmentation = FaceAugmentation(AugmentSettings())
    images, masks, landmarks = torch.rand(4, 3, 16, 16), torch.rand(4, 1, 16, 16), random_landmarks(4, 5)
    torch.manual_seed(7)
    first = augmentation(images, masks, landmarks)
    second_draw = augmentation(images, masks, landmarks)
    torch.manual_seed(7)
    again = augmentation(images, masks, landmarks)
    for a, b in [
        (first.images, again.images),
        (first.masks, again.masks),
        (first.landmarks, again.landmarks),
        (first.ndc_transform, again.ndc_transform),
    ]:
        assert torch.equal(a, b)
    assert not torch.allclose(first.ndc_transform, second_draw.ndc_transform)
    assert not torch.allclose(first.ndc_transform[0], first.ndc_transform[1])


# --- gradients ---------------------------------------------------------------------------------------------


def test_gradients_flow_to_every_input_image():
    torch.manual_seed(8)
    images = (torch.rand(4, 3, 16, 16) * 0.6 + 0.2).requires_grad_()
    out = FaceAugmentation(AugmentSettings())(images)
    (out.images * torch.rand_like(out.images)).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert (images.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_gradcheck_float64():
    augmentation = FaceAugmentation(AugmentSettings(rotation_degrees=20.0))
    torch.manual_seed(9)
    images = (torch.rand(2, 3, 6, 6, dtype=torch.float64) * 0.5 + 0.25).requires_grad_()

    def augmented(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(10)
        return augmentation(x).images

    assert torch.autograd.gradcheck(augmented, (images,), eps=1e-6, atol=1e-5)


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rotation_degrees", 90.0),
        ("rotation_degrees", -1.0),
        ("rotation_degrees", math.nan),
        ("scale", (1.1, 0.9)),
        ("scale", (0.0, 1.0)),
        ("scale", (1.0,)),
        ("translate", -0.1),
        ("translate", 0.6),
        ("brightness", -0.1),
        ("contrast", 1.5),
        ("saturation", -1.0),
        ("hue", 0.6),
        ("geometric_p", 1.5),
        ("colour_p", -0.5),
    ],
)
def test_settings_reject_out_of_range_values_in_one_line(field, value):
    with pytest.raises(ValueError, match=field) as error:
        AugmentSettings(**{field: value})
    assert "\n" not in str(error.value)


def test_rotation_error_says_why():
    with pytest.raises(ValueError, match="face-crop statistics"):
        AugmentSettings(rotation_degrees=90.0)


def test_settings_normalise_a_scale_list_to_a_tuple():
    assert AugmentSettings(scale=[0.95, 1.05]).scale == (0.95, 1.05)


@pytest.mark.parametrize(
    ("images", "masks", "landmarks", "quoted"),
    [
        (torch.rand(2, 4, 8, 8), None, None, "(2, 4, 8, 8)"),
        (torch.rand(3, 8, 8), None, None, "(3, 8, 8)"),
        (torch.rand(2, 3, 8, 8), torch.rand(3, 1, 8, 8), None, "(3, 1, 8, 8)"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 9), None, "(2, 1, 8, 9)"),
        (torch.rand(2, 3, 8, 8), None, torch.rand(2, 5, 3), "(2, 5, 3)"),
    ],
)
def test_forward_rejects_bad_shapes_quoting_them(images, masks, landmarks, quoted):
    with pytest.raises(ValueError, match=quoted.replace("(", r"\(").replace(")", r"\)")):
        FaceAugmentation(AugmentSettings())(images, masks, landmarks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_and_matches_the_reference():
    images = torch.rand(2, 3, 16, 16, device="cuda")
    landmarks = random_landmarks(2, 4).cuda()
    torch.manual_seed(11)
    out = FaceAugmentation(AugmentSettings(**NO_COLOUR))(images, images[:, :1], landmarks)
    assert out.images.device.type == out.masks.device.type == out.landmarks.device.type == "cuda"
    torch.testing.assert_close(
        out.images.cpu(), reference_warp(images.cpu(), out.ndc_transform.cpu()), atol=1e-4, rtol=0.0
    )
    torch.testing.assert_close(out.landmarks.cpu(), apply_ndc(out.ndc_transform.cpu(), landmarks.cpu()))


def test_module_adds_nothing_to_a_checkpoint():
    assert FaceAugmentation(AugmentSettings()).state_dict() == {}


def test_mirror_flips_each_sample_or_leaves_it_and_draws_per_sample():
    images = torch.rand(64, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    assert mirror_images(images, 0.0) is images
    assert torch.equal(mirror_images(images, 1.0), images[..., torch.arange(9, -1, -1)])
    torch.manual_seed(3)
    mirrored = mirror_images(images, 0.5)
    flipped = [torch.equal(m, i.flip(-1)) for m, i in zip(mirrored, images, strict=True)]
    kept = [torch.equal(m, i) for m, i in zip(mirrored, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48
    torch.manual_seed(3)
    assert torch.equal(mirror_images(images, 0.5), mirrored)


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_mirror_rejects_a_probability_outside_the_unit_range(probability):
    with pytest.raises(ValueError, match=r"mirror probability must be in \[0, 1\]"):
        mirror_images(torch.zeros(1, 3, 2, 2), probability)

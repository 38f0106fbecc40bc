"""The augmentation choke point: one module that transforms images, masks and landmarks consistently.

The reference implementation rotated *real* images only, by multiples of 90°, so the discriminator could
tell real from fake by orientation (SPEC §3.4, §4). Here every augmentation goes through
:class:`FaceAugmentation`, and the trainer passes reals and fakes through the same instance before the
discriminator: the same distribution, independent draws per sample and per call (as in StyleGAN2-ADA).

The geometric part is a small similarity transform (rotation about the image centre, isotropic scale,
translation), never a 90° turn; the colour part jitters brightness, contrast, saturation and hue of the
image only. Both are kornia 0.9 operations in one ``kornia.augmentation.AugmentationSequential`` with data
keys for the image, the masks and the landmarks, so the three always receive the same geometric transform.

Landmarks use aucgan's NDC convention (:mod:`aucgan.geometry.camera`: x right, y up, [-1, 1] across the
image, pixel (i, j) centred at ``x = (2j + 1) / W - 1``, ``y = 1 - (2i + 1) / H``). kornia works in pixel
coordinates ``(column, row)`` with integer pixel centres, which is what
:func:`aucgan.geometry.camera.ndc_to_pixels` produces, so the conversion is exact in both directions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.constants import DataKey, Resample
from torch import nn

from aucgan.geometry.camera import ndc_to_pixels

MAX_ROTATION_DEGREES = 45.0
"""Largest rotation :class:`AugmentSettings` accepts, degrees."""

MAX_TRANSLATE = 0.5
"""Largest translation :class:`AugmentSettings` accepts, as a fraction of the image side."""

MAX_HUE = 0.5
"""Largest hue shift :class:`AugmentSettings` accepts, in turns of the hue circle."""


@dataclass(frozen=True)
class AugmentSettings:
    """What :class:`FaceAugmentation` draws from. Every range is symmetric about the identity.

    Attributes:
        rotation_degrees: rotation angle drawn uniformly from ``[-r, r]`` degrees, ``r`` in [0, 45].
        scale: ``(low, high)`` isotropic zoom factor drawn uniformly; above 1 enlarges the content.
        translate: shift drawn uniformly from ``[-t, t]`` times the image side, per axis, ``t`` in [0, 0.5].
        brightness: brightness factor drawn from ``[1 - b, 1 + b]`` and multiplied in, ``b`` in [0, 1].
        contrast: contrast factor drawn from ``[1 - c, 1 + c]`` (blend with the grey mean), ``c`` in [0, 1].
        saturation: saturation factor drawn from ``[1 - s, 1 + s]`` (blend with grey), ``s`` in [0, 1].
        hue: hue shift drawn from ``[-h, h]`` turns of the hue circle, ``h`` in [0, 0.5].
        geometric_p: probability that a sample gets the geometric transform, in [0, 1].
        colour_p: probability that a sample gets the colour transform, in [0, 1].
        enabled: ``False`` turns the whole module into the identity.

    Raises:
        ValueError: on a value out of range, with a one-line message naming the field.
    """

    rotation_degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15
    hue: float = 0.02
    geometric_p: float = 1.0
    colour_p: float = 1.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if len(self.scale) != 2:
            raise ValueError(f"AugmentSettings.scale must be (low, high), got {tuple(self.scale)}")
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        if not 0.0 <= self.rotation_degrees <= MAX_ROTATION_DEGREES:
            raise ValueError(
                f"AugmentSettings.rotation_degrees must be in [0, {MAX_ROTATION_DEGREES:g}], got "
                f"{self.rotation_degrees}: face crops are upright to within a few tens of degrees, so larger "
                "rotations are not face-crop statistics and teach the discriminator a tell"
            )
        low, high = self.scale
        if not 0.0 < low <= high < math.inf:
            raise ValueError(f"AugmentSettings.scale must satisfy 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.translate <= MAX_TRANSLATE:
            raise ValueError(
                f"AugmentSettings.translate must be in [0, {MAX_TRANSLATE:g}] (fraction of the image side), "
                f"got {self.translate}: a larger shift can move the face centre out of the crop"
            )
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"AugmentSettings.{name} must be in [0, 1] (factor drawn from [1 - {name}, 1 + {name}]), "
                    f"got {value}"
                )
        if not 0.0 <= self.hue <= MAX_HUE:
            raise ValueError(
                f"AugmentSettings.hue must be in [0, {MAX_HUE:g}] turns of the hue circle, got {self.hue}"
            )
        for name in ("geometric_p", "colour_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"AugmentSettings.{name} is a probability and must be in [0, 1], got {value}"
                )

    @property
    def uses_geometry(self) -> bool:
        """Whether a geometric transform can change anything: enabled, drawn with p > 0, non-trivial range."""
        trivial = self.rotation_degrees == 0.0 and self.translate == 0.0 and self.scale == (1.0, 1.0)
        return self.enabled and self.geometric_p > 0.0 and not trivial

    @property
    def uses_colour(self) -> bool:
        """Whether a colour transform can change anything: enabled, drawn with p > 0, non-trivial range."""
        ranges = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.enabled and self.colour_p > 0.0 and any(value > 0.0 for value in ranges)

    def without_geometry(self) -> AugmentSettings:
        """The same colour settings with no geometric transform (the coarse stage: its camera stays right)."""
        return dataclasses.replace(self, rotation_degrees=0.0, scale=(1.0, 1.0), translate=0.0)


@dataclass(frozen=True, eq=False)
class Augmented:
    """Output of :class:`FaceAugmentation`; a field is ``None`` where its input was ``None``.

    Attributes:
        images: ``(B, 3, H, W)`` augmented images in [0, 1], dtype and device of the input.
        masks: ``(B, K, H, W)`` masks in [0, 1] under the same geometric transform as the images (bilinear,
            so a binary mask gets soft edges; threshold at 0.5 for a hard one), or ``None``.
        landmarks: ``(B, L, 2)`` NDC landmarks under the same geometric transform, or ``None``. Landmarks
            moved out of the frame keep their coordinates beyond [-1, 1].
        ndc_transform: ``(B, 3, 3)`` the geometric transform each sample received: it maps homogeneous NDC
            ``(x, y, 1)`` of the input image to NDC of the output; the identity where no geometric transform
            was applied.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    landmarks: torch.Tensor | None
    ndc_transform: torch.Tensor


def pixels_from_ndc_matrix(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """The ``(3, 3)`` affine matrix mapping homogeneous NDC ``(x, y, 1)`` to pixel ``(column, row, 1)``.

    It is the matrix form of :func:`aucgan.geometry.camera.ndc_to_pixels` (integer pixel centres).
    """
    return torch.tensor(
        [[width / 2.0, 0.0, width / 2.0 - 0.5], [0.0, -height / 2.0, height / 2.0 - 0.5], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def ndc_from_pixels_matrix(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """The ``(3, 3)`` inverse of :func:`pixels_from_ndc_matrix`: pixel ``(column, row, 1)`` to NDC."""
    return torch.tensor(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, -2.0 / height, 1.0 - 1.0 / height], [0.0, 0.0, 1.0]],
        dtype=dtype,
        device=device,
    )


def pixels_to_ndc(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`aucgan.geometry.camera.ndc_to_pixels`.

    Args:
        pixels: ``(..., 2)`` continuous pixel coordinates (column, row); pixel (i, j) is centred at column j,
            row i.
        height: image height H in pixels.
        width: image width W in pixels.

    Returns:
        ``(..., 2)`` NDC (x right, y up, [-1, 1] across the image).
    """
    if pixels.ndim < 1 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must be (..., 2), got {tuple(pixels.shape)}")
    x = (pixels[..., 0] + 0.5) * (2.0 / width) - 1.0
    y = 1.0 - (pixels[..., 1] + 0.5) * (2.0 / height)
    return torch.stack([x, y], dim=-1)


def _check_inputs(images: torch.Tensor, masks: torch.Tensor | None, landmarks: torch.Tensor | None) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating (B, 3, H, W) tensor, got {tuple(images.shape)} {images.dtype}"
        )
    batch, _, height, width = images.shape
    if masks is not None and (
        masks.ndim != 4 or masks.shape[0] != batch or masks.shape[2:] != (height, width)
    ):
        raise ValueError(f"masks must be ({batch}, K, {height}, {width}), got {tuple(masks.shape)}")
    if landmarks is not None and (
        landmarks.ndim != 3 or landmarks.shape[0] != batch or landmarks.shape[2] != 2
    ):
        raise ValueError(f"landmarks must be ({batch}, L, 2), got {tuple(landmarks.shape)}")
    if landmarks is not None and not landmarks.is_floating_point():
        raise ValueError(f"landmarks must be floating, got {landmarks.dtype}")


class FaceAugmentation(nn.Module):
    """Consistent random geometric and colour augmentation of face images, masks and NDC landmarks.

    The trainer calls one instance on real and on generated images alike before the discriminator; every
    call draws new parameters for every sample.

    Choices:

    * Geometry is ``kornia.augmentation.RandomAffine`` (rotation about the image centre, isotropic scale,
      translation, no shear) with bilinear resampling and **reflection** padding. With the small transforms
      allowed here the uncovered band at the border is a few pixels wide; reflection continues the texture
      and gradient statistics of the crop edge there, where border padding would smear the edge pixels into
      constant streaks, an artificial texture real photographs never have. StyleGAN2-ADA pads its geometric
      augmentations by reflection for the same reason.
    * Masks go through the same bilinear warp as the images (not nearest): a mask that equals an image
      channel stays equal to it, a soft mask stays soft and the result is continuous in the transform. The
      values stay in [0, 1] (a bilinear blend of values in [0, 1], clamped against rounding); a binary mask
      gets soft edges, threshold it at 0.5 for a hard one. Colour operations never touch masks or landmarks.
    * Colour is ``kornia.augmentation.ColorJitter`` in the fixed order brightness, contrast, saturation, hue,
      with torchvision's semantics: brightness multiplies the image (a change of exposure or light
      intensity), contrast and saturation blend with the grey mean and the grey image. (kornia's
      ``ColorJiggle`` adds brightness and "contrast" multiplies the raw values, which is less photometric.)
      Images are clamped to [0, 1] afterwards.
    * Settings whose geometric range is trivial (rotation 0, translate 0, scale (1, 1)) or ``geometric_p = 0``
      build no affine operation at all (colour-only, as the coarse stage needs: its ground-truth camera
      would otherwise be wrong); likewise for colour. With neither, or ``enabled=False``, :meth:`forward` is
      the identity and draws no random numbers.

    Randomness: kornia draws the parameters from torch's global random generator of the device its parameter
    samplers live on, the CPU unless the module was moved with ``.to(device)``. ``torch.manual_seed(s)``
    before a call therefore reproduces it exactly on the same device and dtype.

    Differentiability: the output images are differentiable with respect to the input images (the warp is a
    bilinear ``grid_sample``, the colour operations are smooth almost everywhere, the clamps pass gradients
    inside [0, 1]). Works on any device, float32 and float64.

    Args:
        settings: what to draw from; see :class:`AugmentSettings`.
    """

    def __init__(self, settings: AugmentSettings) -> None:
        super().__init__()
        self.settings = settings
        self.geometric = settings.uses_geometry
        self.colour = settings.uses_colour
        operations: list[nn.Module] = []
        if self.geometric:
            operations.append(
                K.RandomAffine(
                    degrees=settings.rotation_degrees,
                    translate=(settings.translate, settings.translate),
                    scale=settings.scale,
                    resample="bilinear",
                    padding_mode="reflection",
                    align_corners=False,
                    p=settings.geometric_p,
                )
            )
        if self.colour:
            operations.append(
                K.ColorJitter(
                    brightness=settings.brightness,
                    contrast=settings.contrast,
                    saturation=settings.saturation,
                    hue=settings.hue,
                    order=(0, 1, 2, 3),
                    p=settings.colour_p,
                )
            )
        self.pipeline = (
            K.AugmentationSequential(
                *operations,
                data_keys=["input", "mask", "keypoints"],
                same_on_batch=False,
                extra_args={DataKey.MASK: {"resample": Resample.BILINEAR, "align_corners": False}},
            )
            if operations
            else None
        )

    @property
    def active(self) -> bool:
        """Whether :meth:`forward` changes anything (and draws random numbers)."""
        return self.pipeline is not None

    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        landmarks: torch.Tensor | None = None,
    ) -> Augmented:
        """Augment a batch; each sample gets its own random draw.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1], floating.
            masks: ``(B, K, H, W)`` masks in [0, 1] (typically ``K = 1``), or ``None``. Non-floating masks are
                converted to the image dtype.
            landmarks: ``(B, L, 2)`` NDC landmarks (x right, y up, [-1, 1] across the image), or ``None``.

        Returns:
            :class:`Augmented` with the same shapes, images and masks in the image dtype, landmarks in their
            own dtype.

        Raises:
            ValueError: if a shape does not match, quoting it.
        """
        _check_inputs(images, masks, landmarks)
        batch, _, height, width = images.shape
        identity = torch.eye(3, dtype=images.dtype, device=images.device).expand(batch, 3, 3)
        if masks is not None and masks.dtype != images.dtype:
            masks = masks.to(images.dtype)
        if self.pipeline is None:
            return Augmented(images=images, masks=masks, landmarks=landmarks, ndc_transform=identity)

        if not self.geometric:
            out_images = self.pipeline(images, data_keys=["input"])
            return Augmented(
                images=out_images.clamp(0.0, 1.0), masks=masks, landmarks=landmarks, ndc_transform=identity
            )

        arguments = [images]
        keys = ["input"]
        if masks is not None:
            arguments.append(masks)
            keys.append("mask")
        if landmarks is not None:
            arguments.append(ndc_to_pixels(landmarks.to(images.dtype), height, width))
            keys.append("keypoints")
        outputs = self.pipeline(*arguments, data_keys=keys)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        out = dict(zip(keys, outputs, strict=True))

        pixel_transform = self.pipeline.transform_matrix
        if pixel_transform is None:
            ndc_transform = identity
        else:
            pixel_transform = pixel_transform.to(dtype=images.dtype, device=images.device)
            to_pixels = pixels_from_ndc_matrix(height, width, images.dtype, images.device)
            to_ndc = ndc_from_pixels_matrix(height, width, images.dtype, images.device)
            ndc_transform = to_ndc @ pixel_transform @ to_pixels

        return Augmented(
            images=out["input"].clamp(0.0, 1.0),
            masks=out["mask"].clamp(0.0, 1.0) if masks is not None else None,
            landmarks=(
                pixels_to_ndc(out["keypoints"], height, width).to(landmarks.dtype)
                if landmarks is not None
                else None
            ),
            ndc_transform=ndc_transform,
        )


def mirror_images(images: torch.Tensor, probability: float) -> torch.Tensor:
    """Mirror each image left-right with ``probability``, drawn per sample from torch's generator of the
    images' device. Only for targets that a mirror leaves unchanged, such as bilateral AU labels: a
    mirrored face's landmarks, pose and UV maps would need their own mirroring, which this does not do.

    Args:
        images: ``(B, C, H, W)``.
        probability: in [0, 1]; 0 returns ``images`` itself and draws nothing.

    Returns:
        ``(B, C, H, W)``, each sample either unchanged or flipped along W.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mirror probability must be in [0, 1], got {probability}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if probability == 0.0:
        return images
    flip = torch.rand(images.shape[0], device=images.device) < probability
    return torch.where(flip[:, None, None, None], images.flip(-1), images)

"""Implicit-diversified MRF (ID-MRF) loss of Wang et al., NeurIPS 2018, on 1x1 feature patches.

DECA's ``photo_detail_mrf`` compares the VGG19 features (:mod:`aucgan.nets.vgg`, layers ``relu3_2`` and
``relu4_2``) of the rendered detail image with those of the photo on the face patch. ID-MRF asks every
real (target) feature vector to be the clear nearest neighbour of *some* fake (generated) one: a fake that
copies one good patch everywhere matches few targets and scores badly, hence "implicitly diversified".
Positions do not matter: the loss compares the two maps as sets of vectors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def _check_features(fake: torch.Tensor, real: torch.Tensor) -> None:
    if fake.ndim != 4 or real.ndim != 4 or fake.shape[:2] != real.shape[:2]:
        raise ValueError(
            "fake_features and real_features must be (B, C, h, w) with equal B and C, got "
            f"{tuple(fake.shape)} and {tuple(real.shape)}"
        )
    if fake.shape[2] * fake.shape[3] == 0 or real.shape[2] * real.shape[3] == 0:
        raise ValueError(f"feature maps must not be empty, got {tuple(fake.shape)} and {tuple(real.shape)}")


def id_mrf_loss(
    fake_features: torch.Tensor, real_features: torch.Tensor, bandwidth: float = 0.5, eps: float = 1e-5
) -> torch.Tensor:
    r"""ID-MRF loss between the feature maps of one layer, averaged over the batch.

    For one sample, let :math:`f_i` (:math:`i = 1..N_f`, ``N_f = h * w`` of the fake map) be the fake
    feature vectors and :math:`r_j` (:math:`j = 1..N_r`) the real ones (each a 1x1 patch, ``C`` channels):

    .. math::

        \bar r = \frac{1}{N_r} \sum_j r_j, \qquad
        x_i = \frac{f_i - \bar r}{\lVert f_i - \bar r \rVert}, \qquad
        y_j = \frac{r_j - \bar r}{\lVert r_j - \bar r \rVert}

        d_{ij} = 1 - \langle x_i, y_j \rangle, \qquad
        \tilde d_{ij} = \frac{d_{ij}}{\min_k d_{ik} + \epsilon}, \qquad
        w_{ij} = \exp\!\Big(\frac{1 - \tilde d_{ij}}{h}\Big), \qquad
        RS_{ij} = \frac{w_{ij}}{\sum_k w_{ik}}

        L = -\log\Big(\frac{1}{N_r} \sum_j \max_i RS_{ij}\Big)

    Which axis is which:

    * the centre :math:`\bar r` is the per-channel mean of the real vectors of the *same sample*, so that a
      sample's loss does not depend on the rest of the batch;
    * the relative distance :math:`\tilde d_{ij}` divides by the smallest distance from fake :math:`i` to
      any real :math:`k`, and :math:`RS_{ij}` normalises over the real positions :math:`k` for each fake
      :math:`i`. These are the paper's axes: its :math:`\overline{RS}(v, s) = RS(v, s) / \sum_r RS(v, r)`
      normalises over the target patches :math:`r` for each generated patch :math:`v`, and its
      :math:`RS(v, s) = \exp((\mu(v, s) / (\max_r \mu(v, r) + \epsilon)) / h)` divides by the best
      similarity of :math:`v` to any target. The paper writes that ratio with cosine similarities
      :math:`\mu`; here, as in the contextual loss of Mechrez et al. (2018) on which ID-MRF builds, it is
      a ratio of cosine distances (the nearest real gets :math:`\tilde d \approx 1`, the others more);
      :math:`d` is clamped at 0 against rounding;
    * the maximum is over the fake positions :math:`i` (the best-matching generated patch of each target),
      the mean over the real positions :math:`j`.

    Since :math:`RS_{ij} \le 1`, :math:`L \ge 0`; it is close to 0 when the fake vectors are a
    permutation of distinct real vectors. ``L`` is computed per sample, then averaged over the batch.

    The real features are targets: they are detached here. Computation is in float32 at least and outside
    autocast (the relative distance divides by distances near 0).

    Memory: ``(B, N_f, N_r)`` similarity tensors, about fourteen of them at the peak of forward + backward.
    For the maps of a 112x112 patch (``relu3_2`` 28x28, ``relu4_2`` 14x14) that is about 35 MB per sample
    in float32 (measured on CPU, dominated by ``relu3_2``); the cost grows with the fourth power of the
    side (56x56 maps: about 0.5 GB per sample).

    Args:
        fake_features: ``(B, C, h_f, w_f)`` features of the generated image (gradients flow to it).
        real_features: ``(B, C, h_r, w_r)`` features of the target image; the sizes may differ from the fake.
        bandwidth: :math:`h > 0`; smaller makes the match more selective (0.5 as in DECA).
        eps: :math:`\epsilon > 0` in the relative distance.

    Returns:
        A scalar tensor, the batch mean of :math:`L`, in the promoted dtype of the input (float32 or
        float64).
    """
    _check_features(fake_features, real_features)
    if bandwidth <= 0 or eps <= 0:
        raise ValueError(f"bandwidth and eps must be positive, got {bandwidth} and {eps}")
    dtype = torch.promote_types(fake_features.dtype, torch.float32)
    with torch.autocast(device_type=fake_features.device.type, enabled=False):
        fake = fake_features.to(dtype).flatten(2)
        real = real_features.detach().to(dtype).flatten(2)
        centre = real.mean(dim=2, keepdim=True)
        fake_unit = F.normalize(fake - centre, dim=1)
        real_unit = F.normalize(real - centre, dim=1)
        distance = (1.0 - fake_unit.transpose(1, 2) @ real_unit).clamp(min=0.0)
        relative = distance / (distance.amin(dim=2, keepdim=True) + eps)
        # Normalising the contextual weights over the real positions is a softmax of the relative distances
        # divided by minus the bandwidth: the constant term of the exponent cancels.
        similarity = torch.softmax(relative / -bandwidth, dim=2)
        per_sample = -torch.log(similarity.amax(dim=1).mean(dim=1))
    return per_sample.mean()


def id_mrf(
    fake: Mapping[str, torch.Tensor],
    real: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
    bandwidth: float = 0.5,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``sum_l weight_l * id_mrf_loss(fake[l], real[l])`` over the layers of ``layer_weights``.

    Args:
        fake: ``{layer: (B, C_l, h_l, w_l)}`` features of the generated images (e.g. the output of
            :class:`aucgan.nets.vgg.VGG19Features`); extra layers are ignored.
        real: ``{layer: (B, C_l, h'_l, w'_l)}`` features of the target images.
        layer_weights: ``{layer: weight}``, e.g. ``{"relu3_2": 1.0, "relu4_2": 1.0}``; not empty.
        bandwidth: as in :func:`id_mrf_loss`.
        eps: as in :func:`id_mrf_loss`.

    Returns:
        A scalar tensor.
    """
    if not layer_weights:
        raise ValueError("layer_weights must name at least one layer")
    missing = [name for name in layer_weights if name not in fake or name not in real]
    if missing:
        raise ValueError(
            f"layers {missing} are missing from the features (fake has {list(fake)}, real has {list(real)})"
        )
    terms = [
        weight * id_mrf_loss(fake[name], real[name], bandwidth, eps) for name, weight in layer_weights.items()
    ]
    return torch.stack(terms).sum()

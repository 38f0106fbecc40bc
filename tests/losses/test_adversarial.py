import math

import pytest
import torch

from aucgan.losses.adversarial import discriminator_loss, generator_loss, r1_penalty


def bce(p: float, target: float) -> float:
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_non_saturating_losses_equal_bce_on_sigmoid_with_smoothed_targets():
    real, fake = torch.tensor([1.5, -0.5]), torch.tensor([0.3, -2.0])
    sig = torch.sigmoid
    expected = sum(bce(float(sig(r)), 0.9) for r in real) / 2 + sum(bce(float(sig(f)), 0.1) for f in fake) / 2
    loss = discriminator_loss(real, fake, real_target=0.9, fake_target=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert generator_loss(fake).item() == pytest.approx(
        sum(bce(float(sig(f)), 1.0) for f in fake) / 2, rel=1e-6
    )


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert generator_loss(fake, "hinge").item() == pytest.approx(1.5)


def test_extreme_logits_stay_finite():
    logits = torch.tensor([1e4, -1e4])
    assert torch.isfinite(discriminator_loss(logits, -logits)) and torch.isfinite(generator_loss(logits))


def test_r1_is_the_squared_gradient_norm_of_the_discriminator():
    weight = torch.tensor([[1.0, -2.0, 3.0]])
    images = torch.rand(4, 3, requires_grad=True)
    penalty = r1_penalty(images @ weight.T, images)
    assert penalty.item() == pytest.approx(14.0)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(2), torch.zeros(2, 3))


def test_unknown_kind():
    with pytest.raises(ValueError, match="non-saturating, hinge"):
        generator_loss(torch.zeros(1), "wasserstein")

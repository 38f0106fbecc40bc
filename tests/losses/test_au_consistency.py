import pytest
import torch

from aucgan.losses.au_consistency import au_feature_loss, au_score_loss


def test_score_losses_compare_probabilities_and_only_the_rendering_gets_gradients():
    rendered = torch.tensor([[0.2, 0.9]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0]], requires_grad=True)
    mse = au_score_loss(rendered, target, "mse")
    assert mse.item() == pytest.approx((0.04 + 0.01) / 2)
    mse.backward()
    assert rendered.grad is not None and target.grad is None


def test_bce_is_minimal_when_the_rendering_matches_the_input():
    target = torch.tensor([[0.3, 0.8, 0.05]])
    at_target = au_score_loss(target.clone(), target, "bce")
    assert at_target < au_score_loss(torch.tensor([[0.6, 0.5, 0.2]]), target, "bce")
    assert at_target < au_score_loss(target.clamp(max=0.5), target, "bce")


def test_probabilities_are_never_treated_as_logits():
    # The reference's BCE-with-logits on probabilities is minimised by pushing scores away from the input;
    # as probabilities the loss is zero-gradient exactly at the input.
    target = torch.tensor([[0.2, 0.7]])
    rendered = target.clone().requires_grad_()
    au_score_loss(rendered, target, "mse").backward()
    assert torch.equal(rendered.grad, torch.zeros_like(rendered))


def test_feature_loss_is_one_minus_cosine():
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    b = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])
    assert au_feature_loss(a, b).item() == pytest.approx((0.0 + 1.0) / 2)


def test_shapes_and_kinds_are_checked():
    with pytest.raises(ValueError, match="mse, bce"):
        au_score_loss(torch.zeros(1, 2), torch.zeros(1, 2), "bce_with_logits")
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        au_feature_loss(torch.zeros(1, 2), torch.zeros(1, 2))

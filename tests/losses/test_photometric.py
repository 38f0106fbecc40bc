import pytest
import torch

from aucgan.losses.photometric import masked_l1


def test_masked_l1_is_the_mean_error_over_masked_texels_and_channels():
    prediction = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[0, :, 0, 0] = 0.6  # inside the mask
    target[1, :, 3, 3] = 5.0  # outside: ignored
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2, :2] = 1.0
    assert masked_l1(prediction, target, mask).item() == pytest.approx(0.6 * 3 / (3 * 8))


def test_gradient_reaches_the_prediction_only_inside_the_mask():
    prediction = torch.rand(1, 3, 4, 4, requires_grad=True)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1, 1] = 1.0
    masked_l1(prediction, torch.rand(1, 3, 4, 4), mask).backward()
    assert prediction.grad[..., 1, 1].abs().sum() > 0
    assert prediction.grad.abs().sum() == prediction.grad[..., 1, 1].abs().sum()


def test_a_shared_mask_counts_for_every_image():
    prediction, target = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2)
    assert masked_l1(prediction, target, torch.ones(1, 1, 2, 2)).item() == pytest.approx(1.0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="mask must be"):
        masked_l1(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))

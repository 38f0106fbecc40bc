import pytest
import torch

from aucgan.losses.truth import change_error, displacement_error, displacement_gradient_error


def maps(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    truth = 0.1 * torch.randn(2, 1, size, size, generator=generator)
    prediction = truth + 0.05 * torch.randn(2, 1, size, size, generator=generator)
    mask = (torch.rand(1, 1, size, size, generator=generator) > 0.3).float()
    return prediction, truth, mask


def test_perfect_prediction_costs_nothing():
    _, truth, mask = maps()
    assert displacement_error(truth, truth, mask, 0.05) == 0
    assert displacement_gradient_error(truth, truth, mask, 0.05) == 0


def test_l2_and_l1_match_a_loop_over_the_masked_texels():
    prediction, truth, mask = maps()
    unit = 0.05
    selected = ((prediction - truth) / unit)[mask.expand_as(truth) > 0]
    assert displacement_error(prediction, truth, mask, unit) == pytest.approx(
        float(selected.square().mean()), rel=1e-5
    )
    assert displacement_error(prediction, truth, mask, unit, "l1") == pytest.approx(
        float(selected.abs().mean()), rel=1e-5
    )


def test_on_a_sparse_target_l2_moves_away_from_zero_and_l1_barely_does():
    """The reason the truth loss is L2: on a target that is zero on 99 % of the texels, a prediction that is
    zero but for a small blur of the fold sits near L1's optimum; L2 still pulls it towards the fold."""
    truth = torch.zeros(1, 1, 20, 20)
    truth[..., 5, 5:9] = 1.0
    blur = torch.nn.functional.avg_pool2d(truth, 5, 1, 2)  # the fold spread over its neighbourhood
    mask = torch.ones(1, 1, 20, 20)
    gradients = {}
    for kind in ("l1", "l2"):
        scale = torch.full((), 0.5, requires_grad=True)
        displacement_error(scale * blur, truth, mask, 1.0, kind).backward()
        gradients[kind] = float(scale.grad)
    assert gradients["l2"] < 0  # L2 asks for more of the fold
    assert gradients["l1"] > 0  # L1 asks for less: the zeros around the fold outvote it


def test_a_constant_offset_has_no_gradient_error_and_a_slope_error_scales_with_the_map_size():
    _, truth, mask = maps()
    assert displacement_gradient_error(truth + 0.3, truth, mask, 0.05) == pytest.approx(0.0, abs=1e-9)
    for size in (16, 32):
        ramp = torch.linspace(0, 1, size).expand(1, 1, size, size) * 0.01
        full = torch.ones(1, 1, size, size)
        # the same slope over the UV square costs the same at both sizes
        cost = displacement_gradient_error(ramp, torch.zeros_like(ramp), full, 0.01)
        assert cost == pytest.approx(0.5 * (size / 32.0 / (size - 1)) ** 2, rel=1e-4)


def test_masked_out_texels_do_not_count_and_shapes_are_checked():
    prediction, truth, mask = maps()
    changed = prediction.clone()
    changed[mask.expand_as(prediction) == 0] += 10.0
    assert displacement_error(changed, truth, mask, 0.05) == pytest.approx(
        float(displacement_error(prediction, truth, mask, 0.05))
    )
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\) and \(2, 1, 8, 8\)"):
        displacement_error(prediction, truth[..., :8, :8], mask, 0.05)
    with pytest.raises(ValueError, match="kind"):
        displacement_error(prediction, truth, mask, 0.05, "huber")


def test_change_error_is_zero_for_the_true_change_and_matches_a_loop_per_face():
    change, true_change, mask = maps(1)
    generator = torch.Generator().manual_seed(2)
    scale = torch.randn(2, 1, 16, 16, generator=generator)
    assert change_error(true_change, true_change, scale, mask) == 0
    ratios = []
    for b in range(2):
        inside = mask[0, 0] > 0
        error = (change[b, 0] - true_change[b, 0])[inside].square().sum()
        ratios.append(float(error / scale[b, 0][inside].square().sum()))
    assert change_error(change, true_change, scale, mask) == pytest.approx(sum(ratios) / 2, rel=1e-5)


def test_change_error_weighs_a_faint_fold_as_a_deep_one_and_skips_faces_without_one():
    """Scaling a face's change, its truth and its fold together leaves its error unchanged (a faint AU
    counts as much as a deep one); a face whose fold is zero on the mask is left out, not divided by 0."""
    change, true_change, mask = maps(3)
    scale = true_change.clone()
    factors = torch.tensor([0.01, 7.0])[:, None, None, None]
    base = change_error(change, true_change, scale, mask)
    assert change_error(factors * change, factors * true_change, factors * scale, mask) == pytest.approx(
        float(base), rel=1e-5
    )
    no_fold = scale.clone()
    no_fold[1] = 0.0
    alone = change_error(change[:1], true_change[:1], scale[:1], mask)
    assert change_error(change, true_change, no_fold, mask) == pytest.approx(float(alone), rel=1e-6)
    assert change_error(change, true_change, torch.zeros_like(scale), mask) == 0
    with pytest.raises(ValueError, match="scale must be"):
        change_error(change, true_change, scale[..., :8], mask)


def test_change_error_counts_a_change_outside_the_fold():
    """The true change is zero outside the fold: an edit that moves the rest of the skin pays for it."""
    fold = torch.zeros(1, 1, 16, 16)
    fold[..., 4:8, 4:8] = 1.0
    full = torch.ones(1, 1, 16, 16)
    leak = fold + 0.5 * (1 - fold)
    assert change_error(fold, fold, fold, full) == 0
    assert change_error(leak, fold, fold, full) == pytest.approx(0.25 * (256 - 16) / 16)

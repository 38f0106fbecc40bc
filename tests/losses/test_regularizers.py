import pytest
import torch

from aucgan.losses.regularizers import displacement_magnitude, displacement_symmetry, shading_smoothness


def test_displacement_magnitude_is_the_masked_mean_absolute_value():
    z = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    assert displacement_magnitude(z) == 2.5
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert displacement_magnitude(z, mask) == 2.5
    assert displacement_magnitude(z, torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])) == 1.5


def test_shading_smoothness_matches_a_loop_and_ignores_pairs_leaving_the_mask():
    g = torch.Generator().manual_seed(0)
    shading = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 1, 5, 6, generator=g) > 0.3).double()
    sums, counts = [0.0, 0.0], [0, 0]
    for b in range(2):
        for i in range(5):
            for j in range(6):
                for axis, (di, dj) in enumerate(((0, 1), (1, 0))):
                    if i + di < 5 and j + dj < 6 and mask[b, 0, i, j] and mask[b, 0, i + di, j + dj]:
                        for c in range(3):
                            sums[axis] += float(shading[b, c, i + di, j + dj] - shading[b, c, i, j]) ** 2
                            counts[axis] += 1
    expected = sums[0] / counts[0] + sums[1] / counts[1]
    assert shading_smoothness(shading, mask).item() == pytest.approx(expected, rel=1e-12)
    assert shading_smoothness(torch.ones(1, 3, 4, 4)) == 0


def test_symmetry_is_zero_for_mirror_symmetric_maps_only():
    z = torch.rand(1, 1, 4, 6)
    mask = torch.ones(1, 1, 4, 6)
    assert displacement_symmetry(z + z.flip(-1), mask) == 0
    lopsided = torch.zeros(1, 1, 4, 6)
    lopsided[..., 0] = 1.0
    assert displacement_symmetry(lopsided, mask).item() == pytest.approx(2 * 4 / 24)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        displacement_magnitude(torch.zeros(2, 3, 4))

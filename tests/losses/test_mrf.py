import math

import pytest
import torch

from aucgan.losses.mrf import id_mrf, id_mrf_loss
from aucgan.nets.vgg import VGG19Features


def features(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference_id_mrf(fake, real, bandwidth=0.5, eps=1e-5):
    """The formula of the docstring, one sample and one pair of positions at a time."""
    losses = []
    for b in range(fake.shape[0]):
        fakes = list(fake[b].flatten(1).T)
        reals = list(real[b].flatten(1).T)
        centre = sum(reals) / len(reals)
        xs = [(f - centre) / (f - centre).norm() for f in fakes]
        ys = [(r - centre) / (r - centre).norm() for r in reals]
        rs = []
        for x in xs:
            distances = [1.0 - torch.dot(x, y) for y in ys]
            nearest = min(distances)
            weights = [torch.exp((1.0 - d / (nearest + eps)) / bandwidth) for d in distances]
            total = sum(weights)
            rs.append([w / total for w in weights])
        best = [max(rs[i][j] for i in range(len(xs))) for j in range(len(ys))]
        losses.append(-torch.log(sum(best) / len(best)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("bandwidth", [0.5, 0.2])
def test_batched_loss_equals_the_plain_loop(bandwidth):
    fake = features(3, 6, 4, 5, seed=1, dtype=torch.float64)
    real = features(3, 6, 3, 4, seed=2, dtype=torch.float64)
    torch.testing.assert_close(id_mrf_loss(fake, real, bandwidth), reference_id_mrf(fake, real, bandwidth))


def test_each_sample_is_scored_on_its_own():
    fake, real = features(4, 8, 5, 5, seed=3), features(4, 8, 5, 5, seed=4)
    singles = torch.stack([id_mrf_loss(fake[i : i + 1], real[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(id_mrf_loss(fake, real), singles.mean())


def test_identical_features_give_the_minimum_and_positions_do_not_matter():
    real = features(2, 32, 6, 6, seed=5)
    identical = id_mrf_loss(real.clone(), real)
    assert 0.0 <= identical.item() < 1e-5
    permutation = torch.randperm(36, generator=torch.Generator().manual_seed(6))
    shuffled = real.flatten(2)[..., permutation].view_as(real)
    assert id_mrf_loss(shuffled, real).item() < 1e-5
    fake = features(2, 32, 6, 6, seed=7)
    torch.testing.assert_close(
        id_mrf_loss(fake.flatten(2)[..., permutation].view_as(fake), real), id_mrf_loss(fake, real)
    )
    noise = features(2, 32, 6, 6, seed=8)
    distorted = [id_mrf_loss(real + level * noise, real) for level in (0.0, 0.5, 1.0, 2.0)]
    assert distorted[0] == identical
    assert identical < distorted[1] < distorted[2] < distorted[3]
    assert id_mrf_loss(features(2, 32, 6, 6, seed=9), real) > identical
    assert (
        torch.stack([id_mrf_loss(features(1, 4, 3, 3, seed=s), real[:1, :4, :3, :3]) for s in range(5)]) >= 0
    ).all()


def test_copying_one_patch_everywhere_is_penalised():
    real = features(1, 16, 5, 5, seed=10)
    collapsed = real[:, :, :1, :1].expand_as(real).contiguous()
    # Every fake vector matches real position 0 only: the mean of the maxima is 1 / N and the loss log N.
    torch.testing.assert_close(
        id_mrf_loss(collapsed, real), torch.tensor(math.log(25.0)), rtol=1e-4, atol=1e-4
    )


def test_gradient_steps_move_fake_towards_real():
    real = features(2, 16, 5, 5, seed=11)
    fake = (real + 0.8 * features(2, 16, 5, 5, seed=12)).requires_grad_(True)
    optimiser = torch.optim.Adam([fake], lr=0.05)
    losses = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = id_mrf_loss(fake, real)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert id_mrf_loss(fake.detach(), real) < losses[0]


def test_gradient_reaches_fake_and_not_real():
    fake = features(2, 8, 4, 4, seed=13).requires_grad_(True)
    real = features(2, 8, 4, 4, seed=14).requires_grad_(True)
    id_mrf_loss(fake, real).backward()
    assert real.grad is None
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_gradcheck_float64():
    fake = features(2, 3, 2, 3, seed=15, dtype=torch.float64).requires_grad_(True)
    real = features(2, 3, 3, 2, seed=16, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: id_mrf_loss(f, real, 0.5), (fake,))


def test_low_precision_inputs_are_scored_in_float32():
    fake, real = features(1, 8, 4, 4, seed=17), features(1, 8, 4, 4, seed=18)
    expected = id_mrf_loss(fake, real)
    low = id_mrf_loss(fake.bfloat16(), real.bfloat16())
    assert low.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(id_mrf_loss(fake, real), expected)
    torch.testing.assert_close(low, id_mrf_loss(fake.bfloat16().float(), real.bfloat16().float()))


@pytest.mark.parametrize(
    ("fake_shape", "real_shape"),
    [((2, 4, 3, 3), (1, 4, 3, 3)), ((2, 4, 3, 3), (2, 5, 3, 3)), ((4, 3, 3), (4, 3, 3))],
)
def test_shapes_are_checked(fake_shape, real_shape):
    with pytest.raises(ValueError, match=str(fake_shape).replace("(", r"\(").replace(")", r"\)")):
        id_mrf_loss(torch.zeros(fake_shape), torch.zeros(real_shape))


def test_bad_parameters_are_refused():
    fake = features(1, 4, 3, 3)
    with pytest.raises(ValueError):
        id_mrf_loss(fake, fake, bandwidth=0.0)
    with pytest.raises(ValueError):
        id_mrf_loss(fake, fake, eps=-1.0)


def test_layers_are_weighted_and_summed():
    fake = {"relu3_2": features(2, 8, 6, 6, seed=19), "relu4_2": features(2, 16, 3, 3, seed=20)}
    real = {"relu3_2": features(2, 8, 6, 6, seed=21), "relu4_2": features(2, 16, 3, 3, seed=22)}
    total = id_mrf(fake, real, {"relu3_2": 1.0, "relu4_2": 0.5})
    expected = id_mrf_loss(fake["relu3_2"], real["relu3_2"]) + 0.5 * id_mrf_loss(
        fake["relu4_2"], real["relu4_2"]
    )
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(
        id_mrf(fake, real, {"relu4_2": 2.0}), 2.0 * id_mrf_loss(fake["relu4_2"], real["relu4_2"])
    )
    with pytest.raises(ValueError, match="relu5_4"):
        id_mrf(fake, real, {"relu5_4": 1.0})
    with pytest.raises(ValueError):
        id_mrf(fake, real, {})


def test_through_vgg_features_the_gradient_reaches_the_fake_image():
    torch.manual_seed(23)
    vgg = VGG19Features(("relu3_2", "relu4_2")).freeze()
    fake = torch.rand(2, 3, 32, 32, requires_grad=True)
    real = torch.rand(2, 3, 32, 32)
    loss = id_mrf(vgg(fake), vgg(real), {"relu3_2": 1.0, "relu4_2": 1.0})
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    fake, real = features(2, 16, 6, 6, seed=24), features(2, 16, 6, 6, seed=25)
    torch.testing.assert_close(
        id_mrf_loss(fake.cuda(), real.cuda()).cpu(), id_mrf_loss(fake, real), rtol=1e-4, atol=1e-5
    )

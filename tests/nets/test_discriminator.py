import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from aucgan.au import MAIN_AUS, au_index
from aucgan.nets.detail_decoder import AUCondition
from aucgan.nets.discriminator import (
    DISCRIMINATORS,
    ProjectionDiscriminator,
    Reference3x9Discriminator,
    build_discriminator,
    reference_condition_image,
)

VARIANTS = {
    "reference-3x9": {},
    "projection-patch": {"mode": "patch"},
    "projection-global": {"mode": "global"},
}


def conv_params(k: int, c_in: int, c_out: int) -> int:
    """A k×k convolution with bias: k*k*c_in*c_out weights + c_out biases."""
    return k * k * c_in * c_out + c_out


def make_inputs(batch: int = 2, size: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator)
    features = torch.randn(batch, len(MAIN_AUS), 512, generator=generator)
    intensities = torch.rand(batch, len(MAIN_AUS), generator=generator)
    return images, AUCondition(features, intensities)


def build(variant: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    kind = "reference-3x9" if variant == "reference-3x9" else "projection"
    return build_discriminator(kind, **VARIANTS[variant])


def test_reference_3x9_is_a_28x28_patchgan_at_224():
    images, condition = make_inputs(batch=1, size=224)
    with torch.no_grad():
        logits = build("reference-3x9")(images, condition)
    assert logits.shape == (1, 1, 28, 28)  # 224 → 112 → 56 → 28 (k4 s2 p1) → 28 → 28 (k3 s1 p1)


def test_reference_3x9_parameter_count():
    expected = conv_params(4, 6, 64)  # image (3) + condition picture (3) → 64
    expected += conv_params(4, 64, 128) + conv_params(4, 128, 256)  # stride 2; InstanceNorm affine=False
    expected += conv_params(3, 256, 512) + conv_params(3, 512, 1)  # stride 1
    # 6_208 + 131_200 + 524_544 + 1_180_160 + 4_609
    assert expected == 1_846_721
    model = Reference3x9Discriminator()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert not any(m.affine for m in model.modules() if isinstance(m, nn.InstanceNorm2d))


def test_reference_condition_image_puts_one_au_per_row():
    features = torch.randn(2, 27, 7)
    picture = reference_condition_image(features, 9, 7)  # same size: bilinear resizing is the identity
    for b in range(2):
        for channel in range(3):
            for row in range(9):
                torch.testing.assert_close(picture[b, channel, row], features[b, 9 * channel + row])
    assert reference_condition_image(features, 224, 224).shape == (2, 3, 224, 224)


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_and_no_sigmoid(variant):
    images, condition = make_inputs()
    model = build(variant)
    logits = model(images, condition)
    assert logits.shape == ((2, 1) if variant == "projection-global" else (2, 1, 8, 8))
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_images_and_condition(variant):
    images, condition = make_inputs()
    images.requires_grad_(True)
    condition.features.requires_grad_(True)
    condition.intensities.requires_grad_(True)
    logits = build(variant)(images, condition)
    (logits * torch.randn_like(logits)).sum().backward()
    assert images.grad.abs().sum() > 0 and condition.features.grad.abs().sum() > 0
    if variant == "reference-3x9":
        assert condition.intensities.grad is None
    else:
        assert condition.intensities.grad.abs().sum() > 0


def test_projection_is_spectrally_normalised():
    model = build("projection-patch").train()
    images, condition = make_inputs()
    for _ in range(3):  # each training-mode forward runs one more power iteration
        model(images, condition)
    layers = [m for m in model.trunk if isinstance(m, nn.Conv2d)] + [model.unconditional, model.projection]
    assert len(layers) == 6
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert 0.98 < sigma < 1.05


def test_projection_logits_follow_the_formula():
    model = build("projection-patch").eval()
    images, condition = make_inputs(batch=2, size=32)
    with torch.no_grad():
        logits = model(images, condition)
        phi = model.trunk(images)  # (B, 512, 4, 4)
        tokens = model.tokens(condition)  # (B, 27, 128)
        w_psi, b_psi = model.unconditional.weight[0], model.unconditional.bias[0]
        w_proj = model.projection.weight  # (512, 128)
        for b in range(2):
            for h in range(phi.shape[2]):
                for w in range(phi.shape[3]):
                    feature = phi[b, :, h, w]
                    expected = w_psi @ feature + b_psi
                    expected = expected + sum((w_proj @ tokens[b, k]) @ feature for k in range(27))
                    torch.testing.assert_close(logits[b, 0, h, w], expected, rtol=1e-4, atol=1e-4)


def test_global_logit_is_the_spatial_mean_of_the_patch_logits():
    patch = build("projection-patch").eval()
    pooled = ProjectionDiscriminator(mode="global").eval()
    pooled.load_state_dict(patch.state_dict())
    images, condition = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(pooled(images, condition), patch(images, condition).mean(dim=(2, 3)))


def test_projection_reacts_to_one_au_edit():
    model = build("projection-global").eval()
    images, condition = make_inputs()
    edited = condition.intensities.clone()
    edited[0, au_index("AU4")] = 1.0 - edited[0, au_index("AU4")]
    with torch.no_grad():
        before, after = model(images, condition), model(images, condition.with_intensities(edited))
    assert (after[0] - before[0]).abs() > 1e-6
    torch.testing.assert_close(after[1], before[1])


def test_runs_in_float64():
    model = build("projection-patch").double().eval()
    images, condition = make_inputs(batch=1, size=32)
    condition = AUCondition(condition.features.double(), condition.intensities.double())
    with torch.no_grad():
        assert model(images.double(), condition).dtype == torch.float64


@pytest.mark.parametrize("variant", VARIANTS)
def test_input_errors_quote_the_actual_shape(variant):
    model = build(variant)
    images, condition = make_inputs()
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        model(images[:, :1], condition)
    with pytest.raises(ValueError, match=r"\(2, 27, 500\)"):
        model(images, AUCondition(condition.features[..., :500], condition.intensities))
    with pytest.raises(ValueError, match="AUCondition"):
        model(images, None)


def test_registry_builds_each_kind_and_names_the_valid_ones():
    assert type(build_discriminator("reference-3x9")) is Reference3x9Discriminator
    assert build_discriminator("projection", mode="global").mode == "global"
    assert set(DISCRIMINATORS) == {"reference-3x9", "projection", "uv-projection"}
    with pytest.raises(ValueError, match="projection"):
        build_discriminator("conditional")
    with pytest.raises(ValueError, match="'patch' or 'global'"):
        build_discriminator("projection", mode="pooled")


def test_uv_projection_judges_uv_maps_knowing_where_each_patch_is():
    torch.manual_seed(0)
    critic = build_discriminator("uv-projection").eval()
    assert critic.space == "uv" and build_discriminator("projection").space == "image"
    maps, condition = make_inputs(size=64)
    with torch.no_grad():
        logits = critic(maps, condition)
        assert logits.shape == (2, 1, 8, 8)
        # The same map content placed elsewhere in UV is judged differently: the trunk reads (u, v).
        shifted = critic(maps.roll(shifts=16, dims=-1), condition)
        assert not torch.allclose(shifted.roll(shifts=-2, dims=-1), logits)
        edited = AUCondition(condition.features, condition.intensities.clone())
        edited.intensities[:, au_index("AU12")] += 1.0
        assert (critic(maps, edited) - logits).abs().max() > 0
    assert parametrize.is_parametrized(critic.trunk[0])  # spectrally normalised like its parent

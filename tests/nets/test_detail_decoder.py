import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aucgan.au import MAIN_AUS, au_index
from aucgan.nets.detail_decoder import (
    DETAIL_DECODERS,
    AUCondition,
    AUTokenDecoder,
    AUTokenEmbedding,
    DecaDetailDecoder,
    ReferenceConcatDecoder,
    ScaledTanh,
    TexelNorm,
    UVUNetDecoder,
    build_detail_decoder,
    uv_fourier_features,
)

LATENT_DIM = 3 + 50 + 128  # FLAME jaw pose + expression + detail code
KINDS = tuple(kind for kind, cls in DETAIL_DECODERS.items() if cls is not UVUNetDecoder)  # global-latent
CONDITIONED = ("concat-1x1", "token-attention")


def conv_params(k: int, c_in: int, c_out: int) -> int:
    """A k×k convolution with bias: k*k*c_in*c_out weights + c_out biases."""
    return k * k * c_in * c_out + c_out


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_inputs(batch: int = 2, seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, LATENT_DIM, generator=generator, dtype=dtype)
    features = torch.randn(batch, len(MAIN_AUS), 512, generator=generator, dtype=dtype)
    intensities = torch.rand(batch, len(MAIN_AUS), generator=generator, dtype=dtype)
    return latent, AUCondition(features, intensities)


def build(kind: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build_detail_decoder(kind, LATENT_DIM, **kwargs)


def test_deca_parameter_count():
    widths = (128, 128, 64, 64, 32, 16)
    expected = LATENT_DIM * 128 * 8 * 8 + 128 * 8 * 8  # l1: Linear 181 → 8192 (weights + biases)
    expected += 2 * 128  # first BatchNorm2d(128): weight + bias (running stats are buffers)
    for c_in, c_out in itertools.pairwise(widths):
        expected += conv_params(3, c_in, c_out) + 2 * c_out  # conv 3×3 + BatchNorm2d(c_out, 0.8)
    expected += conv_params(3, 16, 1)  # final conv 16 → 1: 9*16*1 + 1
    # 1_490_944 + 256 + (147_584+256) + (73_792+128) + (36_928+128) + (18_464+64) + (4_624+32) + 145
    assert expected == 1_773_345
    assert count(DecaDetailDecoder(LATENT_DIM)) == expected


def test_deca_state_dict_matches_published_key_names():
    state = DecaDetailDecoder(LATENT_DIM).state_dict()
    convs = {2: (128, 128), 6: (64, 128), 10: (64, 64), 14: (32, 64), 18: (16, 32), 21: (1, 16)}
    norms = {0: 128, 3: 128, 7: 64, 11: 64, 15: 32, 19: 16}
    expected = {"l1.0.weight": (8192, LATENT_DIM), "l1.0.bias": (8192,)}
    for index, (c_out, c_in) in convs.items():
        expected[f"conv_blocks.{index}.weight"] = (c_out, c_in, 3, 3)
        expected[f"conv_blocks.{index}.bias"] = (c_out,)
    for index, c in norms.items():
        for name in ("weight", "bias", "running_mean", "running_var"):
            expected[f"conv_blocks.{index}.{name}"] = (c,)
        expected[f"conv_blocks.{index}.num_batches_tracked"] = ()
    assert {key: tuple(value.shape) for key, value in state.items()} == expected


def test_deca_block_batchnorms_have_eps_0_8_and_upsampling_is_bilinear():
    blocks = DecaDetailDecoder(LATENT_DIM).conv_blocks
    assert len(blocks) == 23
    assert blocks[0].eps == pytest.approx(1e-5)
    assert [blocks[i].eps for i in (3, 7, 11, 15, 19)] == [0.8] * 5
    assert all(blocks[i].momentum == pytest.approx(0.1) for i in (0, 3, 7, 11, 15, 19))
    upsamplers = [m for m in blocks if isinstance(m, nn.Upsample)]
    assert [(m.scale_factor, m.mode, m.align_corners) for m in upsamplers] == [(2.0, "bilinear", False)] * 5
    assert isinstance(blocks[22], ScaledTanh) and blocks[22].gain == 1.0  # DECA's tanh, no parameters
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(blocks[22](x), torch.tanh(x))


def test_deca_ignores_the_condition():
    decoder = build("none").eval()
    latent, condition = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(decoder(latent, condition), decoder(latent, None))
        torch.testing.assert_close(decoder(latent), decoder(latent, None))


def test_reference_concat_parameter_count():
    widths = (LATENT_DIM + 41, 256, 512, 256, 128, 64, 32, 16, 8)  # 222 → … → 8
    expected = conv_params(1, 27 * 512, 41)  # 1×1 conv 13824 → 41: 13824*41 + 41 = 566_825
    for c_in, c_out in itertools.pairwise(widths):
        expected += conv_params(3, c_in, c_out)  # InstanceNorm2d(affine=False) adds nothing
    expected += conv_params(3, 8, 1)  # final conv 8 → 1: 9*8 + 1
    # 566_825 + 511_744 + 1_180_160 + 1_179_904 + 295_040 + 73_792 + 18_464 + 4_624 + 1_160 + 73
    assert expected == 3_831_786
    decoder = ReferenceConcatDecoder(LATENT_DIM)
    assert count(decoder) == expected
    norms = [m for m in decoder.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 8 and not any(m.affine for m in norms)
    upsamplers = [m for m in decoder.modules() if isinstance(m, nn.Upsample)]
    assert [m.mode for m in upsamplers] == ["nearest"] * 8


def test_token_decoder_is_light():
    assert count(build("token-attention")) <= 6_000_000


@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_and_bound_scale_with_max_z(kind):
    latent, condition = make_inputs()
    small, large = build(kind, max_z=0.01).eval(), build(kind, max_z=0.5).eval()
    with torch.no_grad():
        out_small, out_large = small(latent, condition), large(latent, condition)
    assert out_small.shape == (2, 1, 256, 256)
    assert out_small.abs().max() <= 0.01 and out_large.abs().max() <= 0.5
    assert out_small.abs().max() > 0
    torch.testing.assert_close(out_small / 0.01, out_large / 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_latent_and_condition(kind):
    decoder = build(kind).train()
    latent, condition = make_inputs()
    latent.requires_grad_(True)
    condition.features.requires_grad_(True)
    condition.intensities.requires_grad_(True)
    out = decoder(latent, condition)
    (out * torch.randn_like(out)).sum().backward()
    assert latent.grad.abs().sum() > 0
    assert all(p.grad is not None for p in decoder.parameters())
    if kind in CONDITIONED:
        assert condition.features.grad.abs().sum() > 0
    else:
        assert condition.features.grad is None
    if kind == "token-attention":
        assert condition.intensities.grad.abs().sum() > 0
    else:  # neither DECA's nor the reference decoder reads the intensities
        assert condition.intensities.grad is None


def test_token_decoder_reacts_to_one_au_edit_and_only_in_that_sample():
    decoder = build("token-attention").eval()
    latent, condition = make_inputs()
    edited = condition.intensities.clone()
    edited[0, au_index("AU12")] = 1.0 - edited[0, au_index("AU12")]
    with torch.no_grad():
        before = decoder(latent, condition)
        after = decoder(latent, condition.with_intensities(edited))
    assert (after[0] - before[0]).abs().max() > 1e-6
    torch.testing.assert_close(after[1], before[1])


def test_token_decoder_knows_which_au_is_which():
    decoder = build("token-attention").eval()
    latent, condition = make_inputs()
    order = list(range(len(MAIN_AUS)))
    order[0], order[9] = 9, 0
    swapped = AUCondition(condition.features[:, order], condition.intensities[:, order])
    with torch.no_grad():
        assert (decoder(latent, condition) - decoder(latent, swapped)).abs().max() > 1e-6


def test_reference_concat_ignores_intensities():
    decoder = build("concat-1x1").eval()
    latent, condition = make_inputs()
    with torch.no_grad():
        edited = condition.with_intensities(torch.zeros_like(condition.intensities))
        torch.testing.assert_close(decoder(latent, condition), decoder(latent, edited))


def test_token_embedding_matches_per_au_formula():
    torch.manual_seed(1)
    embedding = AUTokenEmbedding(n_aus=5, feature_dim=12, token_dim=8)
    with torch.no_grad():
        embedding.norm.weight.normal_()
        embedding.norm.bias.normal_()
    features, intensities = torch.randn(3, 5, 12), torch.rand(3, 5)
    tokens = embedding(AUCondition(features, intensities))
    w, b = embedding.feature_proj.weight, embedding.feature_proj.bias
    for i in range(3):
        for k in range(5):
            projected = w @ features[i, k] + b
            centred = projected - projected.mean()
            normed = centred / torch.sqrt((centred**2).mean() + embedding.norm.eps)
            normed = normed * embedding.norm.weight + embedding.norm.bias
            expected = normed + intensities[i, k] * embedding.intensity_directions[k] + embedding.identity[k]
            torch.testing.assert_close(tokens[i, k], expected)


def test_uv_fourier_features_follow_the_texel_convention():
    height, width, n_frequencies = 3, 5, 3
    features = uv_fourier_features(height, width, n_frequencies, dtype=torch.float64)
    assert features.shape == (height * width, 2 + 4 * n_frequencies)
    for i in range(height):
        for j in range(width):
            x, y = (2 * j + 1) / width - 1, 1 - (2 * i + 1) / height  # texel centre in NDC
            u, v = (x + 1) / 2, (y + 1) / 2
            expected = [x, y]
            for f in range(n_frequencies):
                a, b = math.pi * 2**f * u, math.pi * 2**f * v
                expected += [math.sin(a), math.cos(a), math.sin(b), math.cos(b)]
            torch.testing.assert_close(features[i * width + j], torch.tensor(expected, dtype=torch.float64))


def test_token_decoder_runs_in_float64():
    decoder = build("token-attention").double().eval()
    latent, condition = make_inputs(batch=1, dtype=torch.float64)
    with torch.no_grad():
        out = decoder(latent, condition)
    assert out.dtype == torch.float64 and out.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("kind", CONDITIONED)
def test_conditioned_decoders_refuse_a_missing_condition(kind):
    latent, _ = make_inputs()
    with pytest.raises(ValueError, match="needs an AUCondition"):
        build(kind)(latent, None)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_errors_quote_the_actual_shape(kind):
    decoder = build(kind)
    latent, condition = make_inputs()
    with pytest.raises(ValueError, match=r"\(2, 180\)"):
        decoder(latent[:, :180], condition)
    if kind in CONDITIONED:
        wrong = AUCondition(condition.features[:, :, :64], condition.intensities)
        with pytest.raises(ValueError, match=r"\(2, 27, 64\)"):
            decoder(latent, wrong)
        with pytest.raises(ValueError, match=r"\(1, 27, 512\)"):
            decoder(latent, AUCondition(condition.features[:1], condition.intensities[:1]))


def test_au_condition_checks_shapes_and_edits_by_copy():
    features, intensities = torch.zeros(2, 27, 4), torch.zeros(2, 27)
    with pytest.raises(ValueError, match=r"\(2, 26\)"):
        AUCondition(features, intensities[:, :26])
    with pytest.raises(ValueError, match=r"\(27, 4\)"):
        AUCondition(features[0], intensities)
    condition = AUCondition(features, intensities)
    edited = condition.with_intensities(torch.ones(2, 27))
    assert condition.intensities.sum() == 0 and edited.intensities.sum() == 54
    assert edited.features is condition.features
    assert (condition.batch_size, condition.n_aus) == (2, 27)


def test_registry_builds_each_kind_and_names_the_valid_ones():
    expected = {
        "none": DecaDetailDecoder,
        "concat-1x1": ReferenceConcatDecoder,
        "token-attention": AUTokenDecoder,
        "uv-unet": UVUNetDecoder,
    }
    for kind, cls in expected.items():
        decoder = build_detail_decoder(kind, LATENT_DIM, 0.02)
        assert type(decoder) is cls and decoder.max_z == 0.02 and decoder.latent_dim == LATENT_DIM
    with pytest.raises(ValueError, match="token-attention"):
        build_detail_decoder("generator3", LATENT_DIM)


@pytest.mark.parametrize("kind", KINDS)
def test_start_flat_predicts_zero_and_learns_from_the_first_step(kind):
    decoder = build(kind).train().start_flat()
    latent, condition = make_inputs()
    out = decoder(latent, condition)
    assert torch.equal(out, torch.zeros_like(out))
    target = 0.001 * torch.randn_like(out)
    ((out - target) ** 2).mean().backward()
    output = [m for m in decoder.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1][-1]
    assert output.weight.grad.abs().sum() > 0
    torch.optim.SGD(decoder.parameters(), lr=1.0).step()
    assert decoder(latent, condition).abs().max() > 0


# The UV U-Net -----------------------------------------------------------------------------------------

UV = 32


def uv_net(paths=("photo", "au", "latent"), **options) -> UVUNetDecoder:
    torch.manual_seed(0)
    return build_detail_decoder("uv-unet", LATENT_DIM, 0.5, uv_size=UV, paths=paths, **options)


def uv_inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 14, UV, UV, generator=torch.Generator().manual_seed(seed))


def test_uv_unet_output_is_at_the_uv_size_within_max_z_and_starts_flat():
    latent, condition = make_inputs()
    net = uv_net().eval()
    with torch.no_grad():
        out = net(latent, condition, uv_inputs())
    assert out.shape == (2, 1, UV, UV) and 0 < out.abs().max() <= 0.5
    assert net.reads_photo and net.conditioned
    net.start_flat()
    assert torch.equal(net(latent, condition, uv_inputs()), torch.zeros(2, 1, UV, UV))


@pytest.mark.parametrize("off", ["photo", "au", "latent"])
def test_uv_unet_paths_switch_off(off):
    paths = tuple(path for path in ("photo", "au", "latent") if path != off)
    net = uv_net(paths).eval()
    if "latent" in paths:  # FiLM starts at zero (the latent has no effect until trained)
        nn.init.normal_(net.film.weight, std=0.1)
    latent, condition = make_inputs()
    other_latent, other_condition = make_inputs(seed=5)
    photo = uv_inputs() if "photo" in paths else None
    with torch.no_grad():
        base = net(latent, condition, photo)
        changed = {
            "photo": net(latent, condition, uv_inputs(seed=9)) if "photo" in paths else base,
            "au": net(latent, other_condition, photo),
            "latent": net(other_latent, condition, photo),
        }
    for path, out in changed.items():
        if path == off:
            torch.testing.assert_close(out, base, rtol=0, atol=0)
        else:
            assert (out - base).abs().max() > 0, path
    assert net.reads_photo == (off != "photo") and net.conditioned == (off != "au")


def test_uv_unet_an_au_at_zero_contributes_nothing_and_its_map_scales_with_intensity():
    net = uv_net(("au",)).eval()
    _, condition = make_inputs()
    with torch.no_grad():
        zero = condition.with_intensities(torch.zeros_like(condition.intensities))
        torch.testing.assert_close(net.au_map(zero), torch.zeros_like(net.au_map(zero)), rtol=0, atol=0)
        one = torch.zeros_like(condition.intensities)
        one[:, au_index("AU12")] = 1.0
        half = one * 0.5
        torch.testing.assert_close(
            net.au_map(condition.with_intensities(half)), 0.5 * net.au_map(condition.with_intensities(one))
        )


def test_uv_unet_gradients_reach_every_parameter_and_the_photo():
    net = uv_net().train()
    latent, condition = make_inputs()
    photo = uv_inputs().requires_grad_(True)
    condition.intensities.requires_grad_(True)
    out = net(latent, condition, photo)
    (out * torch.randn_like(out)).sum().backward()
    assert photo.grad.abs().sum() > 0 and condition.intensities.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_texel_norm_is_a_layer_norm_over_each_texels_channels():
    norm = TexelNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64) * 3 + 1
    last = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x), last.permute(0, 3, 1, 2))


def test_texel_norm_keeps_a_local_change_local_where_group_norm_spreads_it():
    x = torch.randn(1, 8, 9, 9, dtype=torch.float64)
    moved = x.clone()
    moved[:, :, 4, 4] += 5.0
    elsewhere = torch.ones(9, 9, dtype=torch.bool)
    elsewhere[4, 4] = False
    texel = TexelNorm(8).double()
    group = nn.GroupNorm(4, 8).double()
    with torch.no_grad():
        assert torch.equal(texel(moved)[..., elsewhere], texel(x)[..., elsewhere])
        assert (group(moved)[..., elsewhere] - group(x)[..., elsewhere]).abs().max() > 1e-3


def test_uv_unet_with_texel_norm_has_no_group_norm_and_learns_flat_start():
    net = uv_net(norm="texel").eval()
    assert not any(isinstance(m, nn.GroupNorm) for m in net.modules())
    assert sum(isinstance(m, TexelNorm) for m in net.modules()) == 4 * (len(net.down) - 1) + 2
    latent, condition = make_inputs()
    with torch.no_grad():
        out = net(latent, condition, uv_inputs())
    assert out.shape == (2, 1, UV, UV) and 0 < out.abs().max() <= 0.5
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        uv_net(norm="batch")


def test_uv_unet_refuses_missing_photo_bad_sizes_and_unknown_paths():
    net = uv_net()
    latent, condition = make_inputs()
    with pytest.raises(ValueError, match=r"uv_inputs must be \(2, 14, 32, 32\), got None"):
        net(latent, condition, None)
    with pytest.raises(ValueError, match=r"got \(2, 14, 16, 16\)"):
        net(latent, condition, torch.zeros(2, 14, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        build_detail_decoder("uv-unet", LATENT_DIM, 0.5, uv_size=40)
    with pytest.raises(ValueError, match="unknown paths"):
        build_detail_decoder("uv-unet", LATENT_DIM, 0.5, uv_size=UV, paths=("photo", "noise"))

import pytest
import torch
import torch.nn.functional as F

from aucgan.au import MAIN_AUS, SUB_AUS
from aucgan.nets.au_net import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MEFARG,
    SUB_AU_NODES,
    AURelationHead,
    DynamicGraphLayer,
    EdgeExtractor,
    GatedGraphLayer,
)

N_MAIN, N_SUB = len(MAIN_AUS), len(SUB_AUS)


def randomise_batchnorm(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics, so eval-mode BN is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                shape = bn.running_mean.shape
                bn.weight.copy_(0.8 + 0.4 * torch.rand(shape, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(shape, generator=generator))
                bn.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                bn.running_var.copy_(0.8 + 0.4 * torch.rand(shape, generator=generator))
    return module


# ---------------------------------------------------------------- parameter count, from the layer formulas


def linear(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running statistics are buffers


def resnet_trunk(bottleneck: bool, layers: tuple[int, ...]) -> int:
    total = 7 * 7 * 3 * 64 + bn(64)
    cin = 64
    for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        cout = width * (4 if bottleneck else 1)
        for block in range(count):
            stride = 2 if index and block == 0 else 1
            if bottleneck:
                total += cin * width + bn(width) + 9 * width * width + bn(width) + width * cout + bn(cout)
            else:
                total += 9 * cin * width + bn(width) + 9 * width * width + bn(width)
            if stride != 1 or cin != cout:
                total += cin * cout + bn(cout)
            cin = cout
    return total


def mefarg_parameters(bottleneck: bool, layers: tuple[int, ...], stage: int) -> int:
    channels = 512 * (4 if bottleneck else 1)
    d = channels // 4  # global_linear width, C / 4
    nodes, edges = N_MAIN, N_MAIN * N_MAIN
    total = resnet_trunk(bottleneck, layers)
    total += linear(channels, d) + bn(d)  # global_linear: fc + bn
    total += N_MAIN * (linear(d, d) + bn(d))  # head.main_class_linears
    if stage == 2:
        cross_attention = 2 * linear(d, d // 2) + linear(d, d)  # q, k, v
        total += 2 * cross_attention + linear(d, d) + bn(edges)  # FAM, ARM, edge_proj, bn (BatchNorm2d)
        total += 2 * (5 * linear(d, d, bias=False) + bn(nodes) + bn(edges))  # two gated graph layers
    else:
        total += 2 * linear(d, d) + bn(nodes)  # gnn.U, gnn.V (with biases), gnn.bnv
    return total + N_MAIN * d + N_SUB * d  # main_sc, sub_sc


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_resnet50_stage2_matches_the_layer_formulas():
    # trunk 23,508,032 + global_linear 2048*512+512 + 2*512 = 1,050,112
    # + 27 * (512*512+512 + 2*512) = 7,119,360
    # + GEM: FAM and ARM each 2*(512*256+256) + 512*512+512 = 525,312; edge_proj 262,656; BN2d 2*729
    #   = 1,314,738
    # + 2 * (5*512*512 + 2*27 + 2*729) = 2,624,464  + main_sc 27*512 + sub_sc 14*512 = 20,992
    # = 35,637,698
    expected = mefarg_parameters(True, (3, 4, 6, 3), stage=2)
    assert resnet_trunk(True, (3, 4, 6, 3)) == 23_508_032
    assert count(MEFARG("resnet50", stage=2)) == expected == 35_637_698


@pytest.mark.parametrize(("backbone", "stage"), [("resnet18", 1), ("resnet18", 2), ("resnet50", 1)])
def test_parameter_counts_of_the_other_variants(backbone, stage):
    bottleneck, layers = (True, (3, 4, 6, 3)) if backbone == "resnet50" else (False, (2, 2, 2, 2))
    assert count(MEFARG(backbone, stage)) == mefarg_parameters(bottleneck, layers, stage)


# ---------------------------------------------------------------- whole network


@pytest.mark.parametrize(
    ("backbone", "stage", "width"), [("resnet18", 1, 128), ("resnet18", 2, 128), ("resnet50", 2, 512)]
)
def test_output_shapes_and_ranges(backbone, stage, width):
    torch.manual_seed(0)
    net = randomise_batchnorm(MEFARG(backbone, stage)).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 96))
    assert out.scores.shape == (3, N_MAIN + N_SUB) and out.features.shape == (3, N_MAIN, width)
    assert out.main_scores.shape == (3, N_MAIN) and out.sub_scores.shape == (3, N_SUB)
    assert torch.isfinite(out.scores).all() and (out.scores >= 0).all() and (out.scores <= 1 + 1e-6).all()
    assert (out.features >= 0).all() and out.scores.std() > 0


def test_state_dict_keys_follow_the_published_layout():
    keys = set(MEFARG("resnet18", stage=2).state_dict())
    for key in (
        "backbone.layer4.1.conv2.weight",
        "global_linear.fc.weight",
        "global_linear.bn.running_var",
        "head.main_class_linears.26.bn.weight",
        "head.edge_extractor.FAM.linear_q.weight",
        "head.edge_extractor.ARM.linear_v.bias",
        "head.edge_extractor.edge_proj.weight",
        "head.edge_extractor.bn.running_mean",
        "head.gnn.graph_layers.1.E.weight",
        "head.gnn.graph_layers.0.bne.weight",
        "head.main_sc",
        "head.sub_sc",
    ):
        assert key in keys, key
    assert not any("mean" in k and "image" in k for k in keys)  # normalisation constants are not state
    stage1 = set(MEFARG("resnet18", stage=1).state_dict())
    assert {"head.gnn.U.bias", "head.gnn.V.weight", "head.gnn.bnv.weight"} <= stage1
    assert not any(k.startswith("head.edge_extractor") for k in stage1)


def test_imagenet_normalisation_is_applied():
    torch.manual_seed(1)
    net = randomise_batchnorm(MEFARG("resnet18", stage=2)).eval()
    images = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def through_raw_layers(x):
        tokens = net.backbone(x).flatten(2).transpose(1, 2)
        return net.head(net.global_linear(tokens))

    with torch.no_grad():
        out = net(images)
        manual = through_raw_layers((images - mean) / std)
        unnormalised = through_raw_layers(images)
    torch.testing.assert_close(out.scores, manual.scores)
    torch.testing.assert_close(out.features, manual.features)
    assert not torch.allclose(out.features, unnormalised.features, atol=1e-3)


def test_frozen_network_keeps_statistics_and_passes_gradients_to_images():
    torch.manual_seed(2)
    net = randomise_batchnorm(MEFARG("resnet18", stage=2)).freeze()
    net.train()
    assert not any(m.training for m in net.modules())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = net(images)
    (out.scores.sum() + out.features.sum()).backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert MEFARG("resnet18", stage=1, frozen=True).train().training is False


def test_unfrozen_network_in_train_mode_updates_statistics():
    # the contrast to the frozen test: without freeze(), train() does move the running statistics
    net = MEFARG("resnet18", stage=1).train()
    before = net.backbone.bn1.running_mean.clone()
    net(torch.rand(2, 3, 64, 64))
    assert not torch.equal(net.backbone.bn1.running_mean, before)


def test_bad_inputs_name_the_shape():
    net = MEFARG("resnet18", stage=1)
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        net(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 64\)"):
        net(torch.rand(2, 3, 16, 64))
    with pytest.raises(ValueError, match="resnet18, resnet50"):
        MEFARG("swin_transformer_base")
    with pytest.raises(ValueError, match="stage"):
        MEFARG("resnet18", stage=3)


# ---------------------------------------------------------------- parts against plain references


def test_scores_are_cosines_with_relu_prototypes_and_sub_aus_read_their_nodes():
    torch.manual_seed(3)
    head = AURelationHead(channels=16, stage=1).double()
    nodes = torch.rand(4, N_MAIN, 16, dtype=torch.float64)
    nodes[0, 3] = 0.0  # a zero node scores 0, not NaN
    scores = head.score(nodes)
    assert (head.main_sc < 0).any()  # the ReLU on the prototypes matters
    for b in range(4):
        for a in range(N_MAIN):
            expected = F.cosine_similarity(nodes[b, a], F.relu(head.main_sc[a]), dim=0, eps=1e-12)
            torch.testing.assert_close(scores[b, a], expected)
        for k in range(N_SUB):
            node = (0, 1, 2, 4, 7, 8, 11)[k // 2]  # published sub-AU node list, L then R per node
            expected = F.cosine_similarity(nodes[b, node], F.relu(head.sub_sc[k]), dim=0, eps=1e-12)
            torch.testing.assert_close(scores[b, N_MAIN + k], expected)
    assert SUB_AU_NODES == (0, 1, 2, 4, 7, 8, 11)
    assert (scores >= 0).all() and (scores <= 1 + 1e-12).all()


def incidence(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The published edge layout: edge e = i * n + j ends at node i and starts at node j."""
    end = torch.zeros(n * n, n, dtype=torch.float64)
    start = torch.zeros(n * n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            end[i * n + j, i] = 1.0
            start[i * n + j, j] = 1.0
    return start, end


def gated_layer_reference(layer, x, edge):
    n = x.shape[1]
    start, end = incidence(n)
    edge = edge + torch.relu(
        layer.bne(
            torch.einsum("ev,bvc->bec", end, layer.A(x))
            + torch.einsum("ev,bvc->bec", start, layer.B(x))
            + layer.E(edge)
        )
    )
    gate = torch.sigmoid(edge).view(x.shape[0], n, n, -1).softmax(dim=2).view(x.shape[0], n * n, -1)
    source = torch.einsum("ev,bvc->bec", start, layer.V(x))
    update = layer.U(x) + torch.einsum("ve,bec->bvc", end.t(), gate * source) / n
    return x + torch.relu(layer.bnv(update)), edge


@pytest.mark.parametrize("training", [False, True])
def test_gated_graph_layer_matches_the_incidence_matrix_form(training):
    torch.manual_seed(4)
    layer = randomise_batchnorm(GatedGraphLayer(channels=8, num_nodes=5)).double().train(training)
    x = torch.rand(3, 5, 8, dtype=torch.float64)
    edge = torch.randn(3, 25, 8, dtype=torch.float64)
    nodes, edges = layer(x, edge)
    expected_nodes, expected_edges = gated_layer_reference(layer, x, edge)
    torch.testing.assert_close(nodes, expected_nodes)
    torch.testing.assert_close(edges, expected_edges)
    assert (nodes >= 0).all()  # non-negative input nodes stay non-negative


def test_dynamic_graph_layer_matches_a_loop_reference():
    torch.manual_seed(5)
    layer = randomise_batchnorm(DynamicGraphLayer(channels=6, num_nodes=7, neighbours=3)).double().eval()
    x = torch.rand(2, 7, 6, dtype=torch.float64)
    adjacency = torch.zeros(2, 7, 7, dtype=torch.float64)
    for b in range(2):
        for i in range(7):
            similarity = [float(x[b, i] @ x[b, j]) for j in range(7)]
            kth = sorted(similarity, reverse=True)[2]
            for j in range(7):
                adjacency[b, i, j] = 1.0 if similarity[j] >= kth else 0.0
    degree = adjacency.sum(dim=-1)
    normalised = adjacency / torch.sqrt(degree[:, :, None] * degree[:, None, :])
    expected = torch.relu(x + layer.bnv(layer.U(x) + normalised @ layer.V(x)))
    torch.testing.assert_close(layer.adjacency(x), normalised)
    torch.testing.assert_close(layer(x), expected)
    assert (adjacency.sum(dim=-1) >= 3).all()


def test_edge_extractor_fast_eval_path_matches_the_pair_tensor_reference():
    torch.manual_seed(6)
    gem = randomise_batchnorm(EdgeExtractor(channels=8, num_nodes=4)).double().eval()
    class_tokens = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    global_tokens = torch.randn(2, 5, 8, dtype=torch.float64)
    fast = gem(class_tokens, global_tokens)
    assert fast.shape == (2, 16, 8)
    torch.testing.assert_close(fast, gem.reference(class_tokens, global_tokens))
    # the reference itself, written pair by pair: queries from AU j, keys and values from AU i
    attended = gem.FAM(class_tokens, global_tokens[:, None])
    for i in range(4):
        for j in range(4):
            pair = gem.ARM(attended[:, j], attended[:, i])
            projected = gem.edge_proj(pair).mean(dim=1)
            e = i * 4 + j
            scale = gem.bn.weight[e] / torch.sqrt(gem.bn.running_var[e] + gem.bn.eps)
            expected = (projected - gem.bn.running_mean[e]) * scale + gem.bn.bias[e]
            torch.testing.assert_close(fast[:, e], expected)
    gem.train()
    torch.testing.assert_close(gem(class_tokens, global_tokens), gem.reference(class_tokens, global_tokens))


def test_head_features_are_token_means_of_the_per_au_blocks():
    torch.manual_seed(7)
    head = randomise_batchnorm(AURelationHead(channels=16, stage=2)).eval()
    tokens = torch.randn(2, 6, 16)
    out = head(tokens)
    expected = torch.stack([block(tokens).mean(dim=1) for block in head.main_class_linears], dim=1)
    torch.testing.assert_close(out.features, expected)


@pytest.mark.parametrize("size", [32, 96])
def test_input_size_resizes_like_a_plain_resize_before_the_net(size):
    torch.manual_seed(0)
    resized = MEFARG("resnet18", 1, input_size=size).eval()
    plain = MEFARG("resnet18", 1).eval()
    plain.load_state_dict(resized.state_dict())
    images = torch.rand(2, 3, 64, 64)
    expected_images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=size < 64)
    with torch.no_grad():
        torch.testing.assert_close(resized(images).scores, plain(expected_images).scores)
        assert resized.tokens(images).shape[1] == (size // 32) ** 2
        torch.testing.assert_close(resized(expected_images).scores, plain(expected_images).scores)


def test_input_size_passes_gradients_to_the_images_and_refuses_tiny_sizes():
    net = MEFARG("resnet18", 1, input_size=96, frozen=True)
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    net(images).scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"input_size must be 0 .* got 16"):
        MEFARG("resnet18", 1, input_size=16)

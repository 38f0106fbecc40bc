"""The AU recogniser: OpenGraphAU's MEFARG (ResNet trunk + AU relation graph), both published stages.

Parameter names and shapes follow the published checkpoints (after stripping ``module.``), so
:func:`aucgan.loaders.opengraphau.load_au_net` loads them strictly. The computation, for images
``(B, 3, H, W)`` in [0, 1]:

1. ImageNet mean/std normalisation (done here, not by the caller: a defect of the reference was to skip it);
2. ``backbone``: ResNet trunk, its last feature map flattened to ``T = (H / 32) (W / 32)`` tokens
   ``(B, T, C)`` (``T = 49`` at 224²; ``C`` = 2048 for ResNet-50, 512 for ResNet-18);
3. ``global_linear``: :class:`LinearBlock` ``C → D`` with ``D = C / 4`` (512 for ResNet-50, 128 for ResNet-18,
   as in the published code), giving the global tokens ``(B, T, D)``;
4. ``head.main_class_linears``: 27 LinearBlocks ``D → D`` → per-AU tokens ``(B, 27, T, D)``; their mean over
   tokens is the node of each AU ``(B, 27, D)`` — the AU features (the notes' ``afn``);
5. the relation graph (stage 2: :class:`EdgeExtractor` + two :class:`GatedGraphLayer`; stage 1: one
   :class:`DynamicGraphLayer`) refines the nodes;
6. scores: cosine similarity of each refined node with the ReLU of its learnt prototype (``head.main_sc``,
   ``head.sub_sc``) → 27 main + 14 left/right sub-AU scores.

Why the scores lie in [0, 1] without a sigmoid: every LinearBlock ends in a ReLU, so the AU nodes are
non-negative; stage-2 graph layers add ``ReLU(...)`` to them (``x' = x + ReLU(BN(.))``) and the stage-1 layer
ends in a ReLU, so refined nodes stay non-negative; prototypes pass through a ReLU. The cosine of two
non-negative vectors lies in [0, 1] (0 if either vector is zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aucgan.au import MAIN_AUS, SUB_AUS
from aucgan.nets.resnet import build_resnet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SUB_AU_NODES: tuple[int, ...] = (0, 1, 2, 4, 7, 8, 11)
"""Main-AU node (index into :data:`aucgan.au.MAIN_AUS`) scored by each left/right pair of sub AUs.

Sub AU ``k`` (:data:`aucgan.au.SUB_AUS` order ``L_AU1, R_AU1, L_AU2, ...``) reads node
``SUB_AU_NODES[k // 2]``. This is the published list; note that its sixth entry, 8, is the AU11 node
(nasolabial deepener, which is also how OpenGraphAU's README describes the pair it labels L/R AU12), not AU12
(index 9). Reproducing the published scores requires keeping it."""

BACKBONES = ("resnet18", "resnet50")


@dataclass(frozen=True)
class AUOutput:
    """What the AU recogniser says about a batch of images.

    Attributes:
        scores: ``(B, 41)`` in [0, 1]: 27 main AUs (:data:`aucgan.au.MAIN_AUS` order), then 14 sub AUs
            (:data:`aucgan.au.SUB_AUS`). Cosine similarities, not probabilities (no sigmoid).
        features: ``(B, 27, D)``, non-negative: the per-AU node features before the relation graph
            (the notes' ``afn``), ``D`` = 512 for ResNet-50, 128 for ResNet-18. Not L2-normalised.
    """

    scores: torch.Tensor
    features: torch.Tensor

    @property
    def main_scores(self) -> torch.Tensor:
        """``(B, 27)``: the scores of the main AUs."""
        return self.scores[:, : len(MAIN_AUS)]

    @property
    def sub_scores(self) -> torch.Tensor:
        """``(B, 14)``: the scores of the left/right sub AUs."""
        return self.scores[:, len(MAIN_AUS) :]


class LinearBlock(nn.Module):
    """Linear → BatchNorm1d over channels → ReLU, applied to every token.

    Parameters ``fc`` (the Linear) and ``bn`` (BatchNorm1d over the output channels, statistics pooled over
    batch and tokens). The published block has a dropout with p = 0 first, i.e. the identity; it is left out.

    Shape:
        input ``(B, T, in_features)``; output ``(B, T, out_features)``, non-negative.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.normal_(self.fc.weight, 0.0, (2.0 / out_features) ** 0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.fc(tokens).transpose(1, 2))).transpose(1, 2)


class CrossAttention(nn.Module):
    """Single-head cross-attention: queries from one token set attend to another's keys and values.

    ``softmax(q(y) k(x)^T / sqrt(C / 2)) v(x)`` with ``linear_q, linear_k: C → C / 2`` and
    ``linear_v: C → C``; the softmax runs over the keys.

    Shape:
        ``queries (..., Tq, C)`` and ``context (..., Tk, C)`` (leading dimensions broadcast);
        output ``(..., Tq, C)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear_q = nn.Linear(channels, channels // 2)
        self.linear_k = nn.Linear(channels, channels // 2)
        self.linear_v = nn.Linear(channels, channels)
        self.scale = (channels // 2) ** -0.5
        for linear in (self.linear_q, self.linear_k, self.linear_v):
            nn.init.normal_(linear.weight, 0.0, (2.0 / linear.out_features) ** 0.5)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        logits = self.linear_q(queries) @ self.linear_k(context).transpose(-1, -2) * self.scale
        return logits.softmax(dim=-1) @ self.linear_v(context)


class EdgeExtractor(nn.Module):
    """The edge features of every ordered pair of AUs (OpenGraphAU's GEM).

    With ``f_i`` the tokens of AU ``i`` ``(T, D)`` and ``g`` the global tokens:

    * ``FAM``: ``h_i = CrossAttention(f_i, g)`` — each AU's tokens attend to the global tokens;
    * ``ARM``: for the pair ``(i, j)`` (flat index ``i * N + j``), ``a_ij = CrossAttention(h_j, h_i)``:
      the tokens of AU ``j`` query those of AU ``i``;
    * ``edge_ij = mean over tokens of bn(edge_proj(a_ij))`` with ``bn`` a BatchNorm2d over the ``N²`` pairs.

    In eval mode :meth:`forward` takes a fast path that never forms the ``(B, N², T, D)`` pair tensor
    (73 MB per image at 224², float32): ``edge_proj`` and the eval BatchNorm are affine and commute with the
    mean over tokens, and the mean over query tokens of ``softmax(...) v`` is the mean attention row times
    ``v``. In training mode (BatchNorm batch statistics) it computes :meth:`reference`, the plain definition.

    Shape:
        ``class_tokens (B, N, T, D)``, ``global_tokens (B, T, D)``; output ``(B, N * N, D)``.
    """

    def __init__(self, channels: int, num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.FAM = CrossAttention(channels)
        self.ARM = CrossAttention(channels)
        self.edge_proj = nn.Linear(channels, channels)
        self.bn = nn.BatchNorm2d(num_nodes * num_nodes)
        nn.init.normal_(self.edge_proj.weight, 0.0, (2.0 / channels) ** 0.5)

    def forward(self, class_tokens: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.reference(class_tokens, global_tokens)
        return self._eval_fast(class_tokens, global_tokens)

    def reference(self, class_tokens: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        """The plain computation over the full ``(B, N², T, D)`` pair tensor (any mode)."""
        b, n, t, d = class_tokens.shape
        attended = self.FAM(class_tokens, global_tokens.unsqueeze(1))
        end = attended.unsqueeze(2).expand(b, n, n, t, d).reshape(b, n * n, t, d)
        start = attended.unsqueeze(1).expand(b, n, n, t, d).reshape(b, n * n, t, d)
        pairs = self.ARM(start, end)
        return self.bn(self.edge_proj(pairs)).mean(dim=2)

    def _eval_fast(self, class_tokens: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        b, n, _, d = class_tokens.shape
        attended = self.FAM(class_tokens, global_tokens.unsqueeze(1))
        queries = self.ARM.linear_q(attended)
        keys = self.ARM.linear_k(attended)
        values = self.ARM.linear_v(attended)
        logits = torch.einsum("bjtc,bisc->bijts", queries, keys) * self.ARM.scale
        mean_attention = logits.softmax(dim=-1).mean(dim=3)
        pooled = torch.einsum("bijs,bisc->bijc", mean_attention, values).reshape(b, n * n, d)
        bn = self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * gain
        return self.edge_proj(pooled) * gain[:, None] + shift[:, None]


class GatedGraphLayer(nn.Module):
    """A gated graph layer over all ordered AU pairs, updating node and edge features (stage 2).

    With nodes ``x_i`` ``(D,)`` and edges ``e_ij`` ``(D,)`` (flat index ``i * N + j``; ``i`` is the end node,
    ``j`` the start node), bias-free Linears ``U, V, A, B, E`` and BatchNorm1d ``bnv`` (over the ``N`` nodes)
    and ``bne`` (over the ``N²`` edges)::

        e_ij' = e_ij + ReLU(bne(A x_i + B x_j + E e_ij))
        g_ij  = softmax over j of sigmoid(e_ij')            (per channel)
        u_i   = U x_i + (1 / N) sum_j g_ij ⊙ V x_j
        x_i'  = x_i + ReLU(bnv(u_i))

    Shape:
        ``nodes (B, N, D)``, ``edges (B, N * N, D)``; returns the same shapes.
    """

    def __init__(self, channels: int, num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.U = nn.Linear(channels, channels, bias=False)
        self.V = nn.Linear(channels, channels, bias=False)
        self.A = nn.Linear(channels, channels, bias=False)
        self.B = nn.Linear(channels, channels, bias=False)
        self.E = nn.Linear(channels, channels, bias=False)
        self.bnv = nn.BatchNorm1d(num_nodes)
        self.bne = nn.BatchNorm1d(num_nodes * num_nodes)
        for linear in (self.U, self.V, self.A, self.B, self.E):
            nn.init.normal_(linear.weight, 0.0, (2.0 / channels) ** 0.5)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = nodes.shape
        pair_terms = self.A(nodes).unsqueeze(2) + self.B(nodes).unsqueeze(1)
        edges = edges + F.relu(self.bne(pair_terms.reshape(b, n * n, d) + self.E(edges)))
        gates = torch.sigmoid(edges).reshape(b, n, n, d).softmax(dim=2)
        messages = (gates * self.V(nodes).unsqueeze(1)).sum(dim=2) / n
        nodes = nodes + F.relu(self.bnv(self.U(nodes) + messages))
        return nodes, edges


class GatedGraph(nn.Module):
    """A stack of :class:`GatedGraphLayer` (``graph_layers``); returns the refined nodes ``(B, N, D)``."""

    def __init__(self, channels: int, num_nodes: int, num_layers: int = 2) -> None:
        super().__init__()
        self.graph_layers = nn.ModuleList(GatedGraphLayer(channels, num_nodes) for _ in range(num_layers))

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        for layer in self.graph_layers:
            nodes, edges = layer(nodes, edges)
        return nodes


class DynamicGraphLayer(nn.Module):
    """One graph layer over a k-nearest-neighbour graph built from the nodes themselves (stage 1, ANFL).

    With nodes ``x_i``, Linears ``U, V`` (with biases) and BatchNorm1d ``bnv`` over the ``N`` nodes::

        s_ij  = <x_i, x_j>            (no gradient flows through the graph)
        a_ij  = 1 if s_ij >= the k-th largest of s_i. else 0   (ties can give a node more than k neighbours)
        â_ij  = a_ij / sqrt(d_i d_j), d_i = sum_j a_ij
        x_i'  = ReLU(x_i + bnv(U x_i + sum_j â_ij V x_j))

    The checkpoint holds only ``U, V, bnv``; the graph rule and ``k = 4`` are the published defaults
    (dot-product metric, four neighbours).

    Shape:
        ``nodes (B, N, D)``; returns ``(B, N, D)``.
    """

    def __init__(self, channels: int, num_nodes: int, neighbours: int = 4) -> None:
        super().__init__()
        if not 1 <= neighbours <= num_nodes:
            raise ValueError(f"neighbours must be in [1, {num_nodes}], got {neighbours}")
        self.neighbours = neighbours
        self.U = nn.Linear(channels, channels)
        self.V = nn.Linear(channels, channels)
        self.bnv = nn.BatchNorm1d(num_nodes)
        for linear in (self.U, self.V):
            nn.init.normal_(linear.weight, 0.0, (2.0 / channels) ** 0.5)

    def adjacency(self, nodes: torch.Tensor) -> torch.Tensor:
        """``(B, N, N)`` symmetric-degree-normalised k-NN adjacency of ``nodes (B, N, D)`` (no gradient)."""
        similarity = nodes.detach() @ nodes.detach().transpose(1, 2)
        threshold = similarity.topk(self.neighbours, dim=-1).values[..., -1:]
        adjacency = (similarity >= threshold).to(nodes.dtype)
        inv_sqrt_degree = adjacency.sum(dim=-1).rsqrt()
        return inv_sqrt_degree.unsqueeze(2) * adjacency * inv_sqrt_degree.unsqueeze(1)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        messages = self.adjacency(nodes) @ self.V(nodes)
        return F.relu(nodes + self.bnv(self.U(nodes) + messages))


class AURelationHead(nn.Module):
    """Per-AU features, the relation graph and the prototype scores (the published ``head``).

    Args:
        channels: ``D``, the width of the global tokens.
        stage: 2 (MEFL: edge extractor + two gated graph layers) or 1 (ANFL: one dynamic graph layer).
        neighbours: stage 1 only: neighbours per node in the k-NN graph.
    """

    def __init__(self, channels: int, stage: int = 2, neighbours: int = 4) -> None:
        super().__init__()
        num_main, num_sub = len(MAIN_AUS), len(SUB_AUS)
        self.stage = stage
        self.main_class_linears = nn.ModuleList(LinearBlock(channels, channels) for _ in range(num_main))
        self.edge_extractor: EdgeExtractor | None
        self.gnn: GatedGraph | DynamicGraphLayer
        if stage == 2:
            self.edge_extractor = EdgeExtractor(channels, num_main)
            self.gnn = GatedGraph(channels, num_main, num_layers=2)
        elif stage == 1:
            self.edge_extractor = None
            self.gnn = DynamicGraphLayer(channels, num_main, neighbours)
        else:
            raise ValueError(f"stage must be 1 (ANFL) or 2 (MEFL), got {stage!r}")
        self.main_sc = nn.Parameter(torch.empty(num_main, channels))
        self.sub_sc = nn.Parameter(torch.empty(num_sub, channels))
        nn.init.xavier_uniform_(self.main_sc)
        nn.init.xavier_uniform_(self.sub_sc)

    def class_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 27, T, D)``: the tokens ``(B, T, D)`` through each AU's LinearBlock."""
        return torch.stack([linear(tokens) for linear in self.main_class_linears], dim=1)

    def score(self, nodes: torch.Tensor) -> torch.Tensor:
        """``(B, 41)`` cosine similarities of ``nodes (B, 27, D)`` with the ReLU'd prototypes."""
        unit = F.normalize(nodes, dim=-1)
        main = (unit * F.normalize(F.relu(self.main_sc), dim=-1)).sum(dim=-1)
        sub_nodes = unit[:, [SUB_AU_NODES[k // 2] for k in range(self.sub_sc.shape[0])]]
        sub = (sub_nodes * F.normalize(F.relu(self.sub_sc), dim=-1)).sum(dim=-1)
        return torch.cat([main, sub], dim=1)

    def forward(self, tokens: torch.Tensor) -> AUOutput:
        """``tokens (B, T, D)`` (the global tokens) → :class:`AUOutput`."""
        class_tokens = self.class_tokens(tokens)
        features = class_tokens.mean(dim=2)
        if self.edge_extractor is not None:
            nodes = self.gnn(features, self.edge_extractor(class_tokens, tokens))
        else:
            nodes = self.gnn(features)
        return AUOutput(scores=self.score(nodes), features=features)


class MEFARG(nn.Module):
    """OpenGraphAU's AU recogniser, with the published parameter names.

    Args:
        backbone: ``"resnet50"`` (published for both stages) or ``"resnet18"`` (stage 1 published).
        stage: 2 (MEFL, edge features + gated graph) or 1 (ANFL, k-NN graph).
        neighbours: stage 1 only: neighbours per node (published default 4).
        frozen: start frozen (see :meth:`freeze`).
        input_size: side the images are resized to (bilinear, antialiased when shrinking) before the
            trunk; 0 takes them at the size they come. A net reads small details better at a larger size
            (the feature maps are finer), at about ``(input_size / H)²`` times the compute.

    Shape:
        ``images (B, 3, H, W)``, RGB in [0, 1], ``H, W >= 32`` (224² as published); the ImageNet mean/std
        normalisation is applied here. Output: :class:`AUOutput` with ``scores (B, 41)`` and
        ``features (B, 27, D)``, ``D = C / 4`` (512 for ResNet-50, 128 for ResNet-18).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        stage: int = 2,
        neighbours: int = 4,
        frozen: bool = False,
        input_size: int = 0,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        if input_size != 0 and input_size < 32:
            raise ValueError(f"input_size must be 0 (as given) or at least 32, got {input_size}")
        self.backbone_name = backbone
        self.stage = stage
        self.input_size = input_size
        self.backbone = build_resnet(backbone)
        self.channels = self.backbone.out_channels // 4
        self.global_linear = LinearBlock(self.backbone.out_channels, self.channels)
        self.head = AURelationHead(self.channels, stage, neighbours)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._frozen = False
        if frozen:
            self.freeze()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> MEFARG:
        """Fix the network for use as a loss or feature extractor; returns ``self``.

        Eval mode everywhere (BatchNorm uses its running statistics and never updates them), and stays
        so through later ``train()`` calls; parameters get ``requires_grad=False``. Gradients still flow to
        the input images.
        """
        self._frozen = True
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> MEFARG:
        """As :meth:`torch.nn.Module.train`, except that a frozen network stays in eval mode."""
        return super().train(False if self._frozen else mode)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` global tokens of ``images (B, 3, H, W)`` in [0, 1] (``T = (S / 32)²`` with ``S`` the
        ``input_size``, or ``H`` and ``W`` when that is 0)."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < 32:
            raise ValueError(f"images must be (B, 3, H, W) with H, W >= 32, got {tuple(images.shape)}")
        size = self.input_size
        if size and images.shape[2:] != (size, size):
            shrink = min(images.shape[2:]) > size
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
            )
        feature_map = self.backbone((images - self.image_mean) / self.image_std)
        return self.global_linear(feature_map.flatten(2).transpose(1, 2))

    def forward(self, images: torch.Tensor) -> AUOutput:
        return self.head(self.tokens(images))

"""Parameters, FLOPs and CPU forward/backward time of every network, at batch 8.

Usage: python benchmarks/bench_nets.py [--batch 8] [--threads 2] [--repeats 3] [--only NAME ...]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass (a multiply-add is
2 FLOPs); times are medians after one warm-up, forward in ``torch.no_grad`` and forward+backward of the sum
of the outputs, in float32.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from aucgan.bench import median_seconds
from aucgan.nets.au_net import MEFARG
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout, ExpressionEncoder
from aucgan.nets.detail_decoder import AUCondition, build_detail_decoder
from aucgan.nets.detail_encoder import ConvDetailEncoder, ResNetDetailEncoder
from aucgan.nets.discriminator import build_discriminator

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int], tuple]


def condition(batch: int) -> AUCondition:
    return AUCondition(features=torch.rand(batch, 27, 512), intensities=torch.rand(batch, 27))


def images(size: int) -> Callable[[int], tuple]:
    return lambda batch: (torch.rand(batch, 3, size, size),)


CASES = (
    Case("coarse encoder (E_flame, ResNet-50)", lambda: CoarseEncoder(CodeLayout.flame()), images(224)),
    Case("expression encoder (EMOCA, ResNet-50)", lambda: ExpressionEncoder(), images(224)),
    Case("AU net (MEFARG ResNet-50, stage 2)", lambda: MEFARG("resnet50"), images(224)),
    Case("AU net (MEFARG ResNet-18, stage 2)", lambda: MEFARG("resnet18"), images(224)),
    Case("detail encoder (reference 8-conv)", lambda: ConvDetailEncoder(), images(224)),
    Case("detail encoder (DECA ResNet-50)", lambda: ResNetDetailEncoder(), images(224)),
    Case(
        "detail decoder none (DECA)",
        lambda: build_detail_decoder("none", latent_dim=181, max_z=0.01),
        lambda b: (torch.rand(b, 181), None),
    ),
    Case(
        "detail decoder concat-1x1 (reference)",
        lambda: build_detail_decoder("concat-1x1", latent_dim=181, max_z=0.01),
        lambda b: (torch.rand(b, 181), condition(b)),
    ),
    Case(
        "detail decoder token-attention (ours)",
        lambda: build_detail_decoder("token-attention", latent_dim=181, max_z=0.01),
        lambda b: (torch.rand(b, 181), condition(b)),
    ),
    Case(
        "discriminator reference-3x9",
        lambda: build_discriminator("reference-3x9"),
        lambda b: (torch.rand(b, 3, 224, 224), condition(b)),
    ),
    Case(
        "discriminator projection",
        lambda: build_discriminator("projection"),
        lambda b: (torch.rand(b, 3, 224, 224), condition(b)),
    ),
)


def total(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    return sum(v.float().sum() for v in vars(output).values() if isinstance(v, torch.Tensor))


def measure(case: Case, batch: int, repeats: int) -> tuple[int, float, float, float]:
    net = case.build()
    parameters = sum(p.numel() for p in net.parameters())
    inputs = case.inputs(batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    flops = counter.get_total_flops() / batch

    def forward() -> None:
        with torch.no_grad():
            net(*inputs)

    def forward_backward() -> None:
        net.zero_grad(set_to_none=True)
        total(net(*inputs)).backward()

    return (
        parameters,
        flops,
        median_seconds(forward, CPU, repeats),
        median_seconds(forward_backward, CPU, repeats),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="substrings of the network names to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.threads} threads, torch {torch.__version__}, median of {args.repeats}")
    print("| network | parameters | GFLOPs / image | forward ms (batch) | forward+backward ms (batch) |")
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        if args.only and not any(part in case.name for part in args.only):
            continue
        parameters, flops, forward, backward = measure(case, args.batch, args.repeats)
        row = (
            case.name,
            f"{parameters:,}",
            f"{flops / 1e9:.2f}",
            f"{forward * 1e3:.0f}",
            f"{backward * 1e3:.0f}",
        )
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Speed of the pure-PyTorch triangle rasteriser on CPU.

Rasterises a displaced sphere of about 10k triangles that fills most of the image and reports the
median milliseconds per image over repeats, after warm-up, for each batch size and culling setting:
the rasteriser alone, and rasteriser + interpolation + backward pass to the vertices. Then the small
mesh of the synthetic data generator: the built-in face (898 triangles, tens of pixels each), one
image at a time with back faces culled, on ``--face-threads`` threads.

    python benchmarks/bench_raster.py --size 224 --batch 1 8 --threads 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from aucgan.face_model import ProceduralFaceModel
from aucgan.geometry.camera import orthographic_project
from aucgan.geometry.raster import interpolate, rasterize


def displaced_sphere(
    rings: int, segments: int, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV sphere of radius ~0.85 in NDC with random bumps, different per batch element.

    Returns:
        vertices ``(batch, V, 3)`` in NDC and faces ``(F, 3)`` counter-clockwise seen from outside, with
        ``F = 2 * segments * (rings - 1)``.
    """
    generator = torch.Generator().manual_seed(seed)
    theta = torch.linspace(0.0, math.pi, rings + 1)[1:-1]
    phi = torch.arange(segments) * (2.0 * math.pi / segments)
    sin_t, cos_t = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
    ring_points = torch.stack(
        [sin_t * torch.cos(phi), cos_t.expand(-1, segments), sin_t * torch.sin(phi)], dim=-1
    ).reshape(-1, 3)
    directions = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring_points, torch.tensor([[0.0, -1.0, 0.0]])])
    faces = []
    top, bottom = 0, directions.shape[0] - 1
    for s in range(segments):
        t = (s + 1) % segments
        faces.append((top, 1 + t, 1 + s))
        base = 1 + (rings - 2) * segments
        faces.append((bottom, base + s, base + t))
    for r in range(rings - 2):
        for s in range(segments):
            t = (s + 1) % segments
            a, b = 1 + r * segments + s, 1 + r * segments + t
            c, d = a + segments, b + segments
            faces.append((a, b, d))
            faces.append((a, d, c))
    faces = torch.tensor(faces, dtype=torch.long)
    bumps = 0.04 * torch.randn(batch, directions.shape[0], 1, generator=generator)
    vertices = 0.85 * directions * (1.0 + bumps)
    angle = torch.rand(batch, generator=generator) * 2.0 * math.pi
    cos_a, sin_a = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    x, y, z = vertices.unbind(-1)
    vertices = torch.stack([cos_a * x + sin_a * z, y, -sin_a * x + cos_a * z], dim=-1)
    return vertices, faces


def neutral_face() -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in face with zero codes, seen from the front as the synthetic data generator frames it.

    Returns:
        vertices ``(1, 468, 3)`` in NDC and faces ``(898, 3)``.
    """
    model = ProceduralFaceModel()
    geometry = model(torch.zeros(1, 12), torch.zeros(1, 27), torch.zeros(1, 6))
    camera = torch.tensor([[0.09, 0.0, 1.6]])
    return orthographic_project(geometry.vertices, camera), model.faces


def measure(
    vertices: torch.Tensor, faces: torch.Tensor, size: int, cull: bool, repeats: int, grad: bool
) -> float:
    """Median milliseconds per image over ``repeats`` runs after two warm-up runs.

    Without ``grad``: ``rasterize`` alone. With ``grad``: rasterize vertices that require grad,
    interpolate their positions and backpropagate a scalar to the vertices.
    """

    def run() -> None:
        if not grad:
            rasterize(vertices, faces, size, cull_backfaces=cull)
            return
        leaf = vertices.detach().requires_grad_(True)
        fragments = rasterize(leaf, faces, size, cull_backfaces=cull)
        interpolate(leaf, faces, fragments).square().sum().backward()

    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / vertices.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224, help="image height and width in pixels")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to measure")
    parser.add_argument(
        "--rings", type=int, default=71, help="sphere rings (faces = 2 * segments * (rings - 1))"
    )
    parser.add_argument("--segments", type=int, default=71, help="sphere segments")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per setting")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--face-threads", type=int, default=1, help="torch.set_num_threads, face mesh")
    parser.add_argument("--face-repeats", type=int, default=200, help="timed runs, face mesh")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    for batch in args.batch:
        vertices, faces = displaced_sphere(args.rings, args.segments, batch)
        vertices = vertices.to(dtype)
        coverage = rasterize(vertices, faces, args.size).mask.float().mean().item()
        for cull in (False, True):
            forward = measure(vertices, faces, args.size, cull, args.repeats, grad=False)
            backward = measure(vertices, faces, args.size, cull, args.repeats, grad=True)
            rows.append((batch, faces.shape[0], cull, coverage, forward, backward))
    header = f"{'batch':>5} {'faces':>6} {'cull':>5} {'covered':>8} {'ms/image':>9} {'+interp+bwd':>12}"
    lines = [
        f"rasterize {args.size}x{args.size}, {args.dtype}, {args.threads} threads, median of {args.repeats}"
    ]
    lines.append(header)
    for batch, count, cull, coverage, forward, backward in rows:
        lines.append(f"{batch:>5} {count:>6} {cull!s:>5} {coverage:>8.1%} {forward:>9.2f} {backward:>12.2f}")

    torch.set_num_threads(args.face_threads)
    vertices, faces = neutral_face()
    vertices = vertices.to(dtype)
    coverage = rasterize(vertices, faces, args.size).mask.float().mean().item()
    forward = measure(vertices, faces, args.size, True, args.face_repeats, grad=False)
    backward = measure(vertices, faces, args.size, True, args.face_repeats, grad=True)
    lines.append("")
    lines.append(
        f"built-in face {args.size}x{args.size}, {args.dtype}, {args.face_threads} threads, "
        f"median of {args.face_repeats}"
    )
    lines.append(header)
    lines.append(f"{1:>5} {faces.shape[0]:>6} {True!s:>5} {coverage:>8.1%} {forward:>9.2f} {backward:>12.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

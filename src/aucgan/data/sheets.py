"""Pictures of the synthetic world: a contact sheet and an AU sweep sheet (``aucgan synth --preview``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from aucgan.atomic import atomic_path
from aucgan.au import AU_NAMES, MAIN_AUS
from aucgan.data.synthetic import SyntheticSample, SyntheticWorld
from aucgan.data.wrinkles import WRINKLE_AUS, wrinkle_displacement
from aucgan.face_model.regions import AU_WRINKLE_REGIONS, UV_REGIONS, ellipse_radius
from aucgan.geometry.shading import light_from_direction

SWEEP_INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _au_label(expression: torch.Tensor) -> str:
    active = [f"{au} {float(v):.1f}" for au, v in zip(MAIN_AUS, expression, strict=True) if v > 0]
    return "\n".join([", ".join(active[i : i + 3]) for i in range(0, len(active), 3)]) or "neutral"


def contact_sheet(samples: Sequence[SyntheticSample], path: Path, columns: int = 6) -> Path:
    """Images of ``samples`` in a grid, each titled with its identity and AU intensities."""
    rows = (len(samples) + columns - 1) // columns
    fig = Figure(figsize=(2.3 * columns, 2.7 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples, strict=False):
        ax.imshow(sample.image.permute(1, 2, 0).numpy())
        ax.set_title(f"id {int(sample.identity)}: {_au_label(sample.expression)}", fontsize=7)
    fig.suptitle("aucgan synthetic world: samples (identity: AU intensities)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=100)
    return path


def sweep_renders(world: SyntheticWorld, identity: int, aus: Sequence[str], intensities: Sequence[float]):
    """Render one identity, frontal, grey albedo, raking light, with each AU alone at each intensity.

    Returns:
        ``(len(aus), len(intensities), 3, H, W)`` images and ``(len(aus), S, S)`` displacement at intensity 1.
    """
    person = world.identity(identity)
    count = len(aus) * len(intensities)
    expression = torch.zeros(count, len(MAIN_AUS))
    for row, au in enumerate(aus):
        for col, value in enumerate(intensities):
            expression[row * len(intensities) + col, MAIN_AUS.index(au)] = value
    displacement = wrinkle_displacement(expression, person.wrinkle_basis, person.static_detail)
    grey = torch.full_like(person.albedo, 0.72)
    images = []
    for start in range(0, count, 16):
        part = slice(start, min(count, start + 16))
        n = part.stop - part.start
        result = world.render(
            person.shape.expand(n, -1),
            expression[part],
            torch.zeros(n, 6),
            torch.tensor([[0.09, 0.0, 1.6]]).expand(n, -1),
            light_from_direction(torch.tensor([[-0.35, 0.6, 0.7]]).expand(n, -1), 0.75, 0.35),
            displacement[part],
            grey.expand(n, -1, -1, -1),
            torch.full((3,), 0.15),
        )
        images.append(result.rendering.image.clamp(0, 1))
        uv = result.rendering.uv
    images = torch.cat(images).reshape(len(aus), len(intensities), *images[0].shape[1:])
    full = displacement.reshape(len(aus), len(intensities), *displacement.shape[-2:])[:, -1]
    return images, full - person.static_detail, uv[0]


def region_box(uv: torch.Tensor, regions: Sequence[str], margin: float = 0.35) -> tuple[slice, slice]:
    """Square image crop around where ``regions`` appear, from a rendering's per-pixel UV ``(2, H, W)``."""
    size = uv.shape[-1]
    inside = torch.zeros(uv.shape[-2:], dtype=torch.bool)
    for name in regions:
        inside |= ellipse_radius(UV_REGIONS[name], uv.permute(1, 2, 0)) <= 1.0
    rows, cols = inside.nonzero(as_tuple=True)
    if len(rows) == 0:
        return slice(0, size), slice(0, size)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    half = min(
        size // 2, int(max(rows.max() - rows.min(), cols.max() - cols.min(), size // 8) * (0.5 + margin))
    )
    top = int(min(max(0, centre[0] - half), size - 2 * half))
    left = int(min(max(0, centre[1] - half), size - 2 * half))
    return slice(top, top + 2 * half), slice(left, left + 2 * half)


def au_sweep_sheet(world: SyntheticWorld, path: Path, identity: int = 0) -> Path:
    """Each wrinkle-producing AU from 0 to 1 on one identity, cropped to its regions, with its UV
    displacement at intensity 1 (static detail removed)."""
    aus = WRINKLE_AUS
    images, displacement, uv = sweep_renders(world, identity, aus, SWEEP_INTENSITIES)
    columns = len(SWEEP_INTENSITIES) + 1
    fig = Figure(figsize=(1.9 * columns, 1.9 * len(aus)))
    axes = fig.subplots(len(aus), columns, squeeze=False)
    for row, au in enumerate(aus):
        crop = region_box(uv, AU_WRINKLE_REGIONS[au][:1])
        limit = float(displacement[row].abs().max())
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(SWEEP_INTENSITIES):
                ax.imshow(images[row, col][(slice(None), *crop)].permute(1, 2, 0).numpy())
                if row == 0:
                    ax.set_title(f"intensity {SWEEP_INTENSITIES[col]:.2f}", fontsize=9)
            else:
                ax.imshow(displacement[row].numpy(), cmap="RdBu", vmin=-limit, vmax=limit)
                if row == 0:
                    ax.set_title("UV displacement @1", fontsize=9)
        axes[row, 0].set_ylabel(f"{au}\n{AU_NAMES[au]}", fontsize=8)
    fig.suptitle(
        f"aucgan synthetic world: AU sweep on identity {identity} (grey albedo, raking light)", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=100)
    return path

"""Redraw the README's pictures of the reconstruction pipeline from the shipped weights.

    python scripts/make_readme_figures.py [--out aucgan-demo]

runs ``aucgan demo`` into ``--out`` and writes

* ``docs/demo_report.png`` — the top of the demo's report (summary cards, gallery, detail errors), rendered by
  headless Chromium 1280 px wide: ``python -m aucgan.evaluate.screenshot OUT/report/report.html
  docs/demo_report.png --width 1280 --height 2200``;
* ``docs/demo_report_edit.png`` — the report's AU-edit section alone (its table and curves):
  ``python -m aucgan.evaluate.screenshot OUT/report/report.html docs/demo_report_edit.png --width 1280
  --height 2400 --only edit --trim``;
* ``docs/reconstruct_vis.png`` — the ``vis.png`` of the demo's reconstructions, stacked;
* ``docs/edit_au12.png`` — AU12 = 1 on a neutral held-out synthetic face: input | before | after | change of
  the UV displacement, with its colour bar (µm, red raised, blue lowered).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aucgan.build import world_parameters
from aucgan.data.synthetic import identity_in_split
from aucgan.evaluate.run import demo
from aucgan.evaluate.screenshot import screenshot
from aucgan.reconstruct import Reconstructor, edit_face, write_face

DOCS = Path(__file__).resolve().parent.parent / "docs"


def stack(paths: list[Path], out: Path) -> Path:
    rows = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    width = max(row.shape[1] for row in rows)
    gap = np.full((6, width, 3), 255, np.uint8)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    parts = [part for row in padded for part in (row, gap)][:-1]
    Image.fromarray(np.concatenate(parts)).save(out)
    return out


def neutral_edit(reconstructor: Reconstructor, folder: Path) -> Path:
    world = world_parameters(reconstructor.cfg).world()
    sample = world.sample(
        identity_in_split("test", 3) * world.images_per_identity, expression=torch.zeros(27)
    )
    rec = reconstructor(sample.image[None])
    write_face(folder / "neutral", reconstructor, rec, 0, {"source": "neutral held-out synthetic face"})
    edited, _, _ = edit_face(folder / "neutral", reconstructor, {"AU12": 1.0})
    return edited / "before_after.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="aucgan-demo", help="demo output folder (default %(default)s)")
    args = parser.parse_args()
    out = Path(args.out)
    result = demo(out)
    screenshot(result.report, DOCS / "demo_report.png", width=1280, height=2200)
    screenshot(result.report, DOCS / "demo_report_edit.png", width=1280, height=2400, only="edit", trim=True)
    faces = sorted((out / "reconstructions").glob("*/vis.png"))
    stack(faces, DOCS / "reconstruct_vis.png")
    edit = neutral_edit(Reconstructor.load(), out / "neutral-edit")
    Image.open(edit).convert("RGB").save(DOCS / "edit_au12.png")


if __name__ == "__main__":
    main()

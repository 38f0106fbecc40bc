"""Draw docs/face_model_aus.png: the built-in face neutral and under a few Action Units.

Usage: python scripts/make_face_model_figure.py [--out docs/face_model_aus.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from aucgan.au import au_index
from aucgan.face_model import ProceduralFaceModel
from aucgan.preview import FaceScene, render_scene

PANELS = (
    ("neutral", {}),
    ("AU1 + AU2\nbrows raised", {"AU1": 1.0, "AU2": 1.0}),
    ("AU4\nbrow lowerer", {"AU4": 1.0}),
    ("AU6 + AU12\nsmile", {"AU6": 1.0, "AU12": 1.0}),
    ("AU26\njaw drop", {"AU26": 1.0}),
)
VIEWS = (("front", 0.0), ("three-quarter", 35.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/face_model_aus.png"))
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    model = ProceduralFaceModel()
    batch = len(PANELS) * len(VIEWS)
    expression = torch.zeros(batch, model.n_expression)
    pose = torch.zeros(batch, 6)
    for row, (_, yaw) in enumerate(VIEWS):
        for col, (_, aus) in enumerate(PANELS):
            k = row * len(PANELS) + col
            pose[k, 1] = math.radians(yaw)
            for name, value in aus.items():
                expression[k, au_index(name)] = value
    scene = FaceScene(
        torch.zeros(batch, model.n_shape), expression, pose, torch.tensor([[0.3, 0.4, 1.0]] * batch)
    )
    images = render_scene(model, scene, image_size=args.size).rendering.image.clamp(0, 1)
    fig = Figure(figsize=(2.4 * len(PANELS), 2.7 * len(VIEWS)))
    axes = fig.subplots(len(VIEWS), len(PANELS))
    for row in range(len(VIEWS)):
        for col, (title, _) in enumerate(PANELS):
            ax = axes[row, col]
            ax.imshow(images[row * len(PANELS) + col].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=10)
        axes[row, 0].set_ylabel(VIEWS[row][0])
    fig.suptitle("aucgan built-in face model (MediaPipe canonical mesh + procedural AU rig)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()

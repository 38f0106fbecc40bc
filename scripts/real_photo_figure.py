"""Draw docs/real_photos.png: the MediaPipe coarse backend on two public real photos, shipped weights.

For matplotlib's ``grace_hopper.jpg`` and scikit-image's ``astronaut.png``, one row each: the input crop, the
fitted coarse mesh over it (with MediaPipe's landmarks as dots), the detail normal map in UV space, the
detail shading, and the detail shading after an edit to AU12=1. Needs the mediapipe extra and scikit-image.

    python scripts/real_photo_figure.py --out docs/real_photos.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import torch

from aucgan.config import CoarseConfig
from aucgan.data.images import InputItem, prepare_faces
from aucgan.geometry.camera import ndc_to_pixels, orthographic_project
from aucgan.reconstruct import VIS_SIZE, Reconstructor
from aucgan.stages.landmark_fit import landmarks_to_ndc, relative_landmark_error


def photos() -> dict[str, Path]:
    import skimage

    return {
        "grace_hopper.jpg (matplotlib)": Path(matplotlib.get_data_path())
        / "sample_data"
        / "grace_hopper.jpg",
        "astronaut.png (scikit-image)": Path(skimage.__file__).parent / "data" / "astronaut.png",
    }


def panel(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/real_photos.png")
    args = parser.parse_args()
    from matplotlib.figure import Figure

    reconstructor = Reconstructor.load(coarse_settings=CoarseConfig(backend="mediapipe"))
    rows = []
    for title, path in photos().items():
        face = prepare_faces(InputItem(path.stem, path), VIS_SIZE, detector=reconstructor.detector)[0]
        image = torch.from_numpy(np.array(face.image)).permute(2, 0, 1)[None].float() / 255
        landmarks = landmarks_to_ndc(torch.from_numpy(face.landmarks), VIS_SIZE).float()[None]
        rec = reconstructor(image, landmarks)
        edited = reconstructor.edit(rec, {"AU12": 1.0})
        views, after = reconstructor.render_views(rec), reconstructor.render_views(edited)
        error = float(relative_landmark_error(rec.coarse.vertices, rec.coarse.codes.camera, rec.landmarks)[0])
        fitted = ndc_to_pixels(
            orthographic_project(rec.coarse.vertices, rec.coarse.codes.camera), VIS_SIZE, VIS_SIZE
        )
        rows.append(
            {
                "title": title,
                "input": panel(image[0]),
                "coarse": panel(views["coarse"][0]),
                "mediapipe": face.landmarks[:, :2],
                "fitted": fitted[0].numpy(),
                "normals": panel(rec.detail.uv_detail_normals[0] * 0.5 + 0.5),
                "shading": panel(views["shading"][0]),
                "edit": panel(after["shading"][0]),
                "error": error,
            }
        )
    columns = ("input", "coarse", "normals", "shading", "edit")
    headings = (
        "input crop",
        "coarse fit over it\n(dots: MediaPipe's landmarks)",
        "detail normal map (UV)",
        "detail shading",
        "edit: AU12 = 1",
    )
    figure = Figure(figsize=(2.2 * len(columns), 2.6 * len(rows)), dpi=110)
    for r, row in enumerate(rows):
        for c, (name, heading) in enumerate(zip(columns, headings, strict=True)):
            axes = figure.add_subplot(len(rows), len(columns), r * len(columns) + c + 1)
            axes.imshow(row[name])
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(heading, fontsize=8)
            if name == "coarse":
                axes.scatter(*row["mediapipe"].T, s=0.6, c="#39ff14", linewidths=0)
                axes.set_xlabel(
                    f"median landmark distance {100 * row['error']:.1f} % of the face box", fontsize=6.5
                )
            if c == 0:
                axes.set_ylabel(row["title"], fontsize=7)
    figure.suptitle(
        "aucgan reconstruct PHOTO --out DIR coarse.backend=mediapipe (shipped synthetic-world weights)",
        fontsize=9,
    )
    figure.tight_layout(h_pad=1.2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

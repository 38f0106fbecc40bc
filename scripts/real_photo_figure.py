"""Draw docs/real_photos.png: real photos through the MediaPipe backend and the photometric refinement.

For matplotlib's ``grace_hopper.jpg`` and scikit-image's ``astronaut.png`` (the public face photos the test
dependencies ship), one row each, every panel 256 px or more: the input crop; the fitted coarse mesh over it
(MediaPipe's landmarks as dots); the grey shading of the network's detail alone; the grey shading of the
refined detail, relit from the upper left; the refined detail normal map in UV; and the refined detail after
an edit to AU12=1, relit the same way. Needs the mediapipe extra and scikit-image.

    python scripts/real_photo_figure.py --out docs/real_photos.png
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib
import numpy as np
import torch

from aucgan.config import CoarseConfig
from aucgan.data.images import InputItem, prepare_faces
from aucgan.geometry.camera import ndc_to_pixels, orthographic_project
from aucgan.geometry.shading import light_from_direction
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


RELIGHT = (-0.5, 0.6, 1.0)
"""Direction towards the light of the relit panels (upper left, in front): grazing enough to show folds."""


def relit_shading(reconstructor: Reconstructor, rec, normals: torch.Tensor) -> torch.Tensor:
    """``(B, 3, VIS_SIZE, VIS_SIZE)`` grey shading of detail ``normals`` under :data:`RELIGHT`, on white."""
    light = light_from_direction(torch.tensor([RELIGHT]), intensity=0.75, ambient=0.45)
    coarse = dataclasses.replace(
        rec.coarse,
        codes=dataclasses.replace(rec.coarse.codes, light=light.expand(rec.batch_size, -1, -1)),
        uv_albedo=torch.full_like(rec.coarse.uv_albedo, 0.8),
    )
    white = torch.ones(rec.batch_size, 3, VIS_SIZE, VIS_SIZE)
    return reconstructor.coarse.render(coarse, normals, white, image_size=VIS_SIZE).image.clamp(0, 1)


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
        network = reconstructor(image, landmarks, refine=False)
        rec = reconstructor.refine(network, image)
        edited = reconstructor.edit(rec, {"AU12": 1.0})
        views = reconstructor.render_views(rec)
        error = float(relative_landmark_error(rec.coarse.vertices, rec.coarse.codes.camera, rec.landmarks)[0])
        fitted = ndc_to_pixels(
            orthographic_project(rec.coarse.vertices, rec.coarse.codes.camera), VIS_SIZE, VIS_SIZE
        )
        reduction = 1.0 - float(rec.refinement.residual[0] / rec.refinement.residual_coarse[0])
        rows.append(
            {
                "title": title,
                "input": panel(image[0]),
                "coarse": panel(views["coarse"][0]),
                "mediapipe": face.landmarks[:, :2],
                "fitted": fitted[0].numpy(),
                "network": panel(relit_shading(reconstructor, network, network.detail.uv_detail_normals)[0]),
                "refined": panel(relit_shading(reconstructor, rec, rec.detail.uv_detail_normals)[0]),
                "normals": panel(rec.detail.uv_detail_normals[0] * 0.5 + 0.5),
                "edit": panel(relit_shading(reconstructor, edited, edited.detail.uv_detail_normals)[0]),
                "error": error,
                "reduction": reduction,
            }
        )
    columns = ("input", "coarse", "network", "refined", "normals", "edit")
    headings = (
        "input crop",
        "coarse fit over it\n(dots: MediaPipe's landmarks)",
        "network's detail alone\n(grey, relit)",
        "refined detail\n(grey, relit)",
        "refined detail normal map (UV)",
        "refined, edit AU12 = 1\n(grey, relit)",
    )
    figure = Figure(figsize=(2.6 * len(columns), 3.0 * len(rows)), dpi=120)  # panels of 280 px or more
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
            if name == "refined":
                axes.set_xlabel(
                    f"fine residual in UV {100 * row['reduction']:.0f} % below the coarse fit's", fontsize=6.5
                )
            if c == 0:
                axes.set_ylabel(row["title"], fontsize=7)
    figure.suptitle(
        "aucgan reconstruct PHOTO --out DIR (MediaPipe backend, photometric refinement on; shipped "
        "synthetic-world weights)",
        fontsize=9,
    )
    figure.tight_layout(h_pad=1.2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""CPU time of the mediapipe coarse backend: MediaPipe's face mesh per photo and the landmark fit per face.

Usage: python benchmarks/bench_landmark_fit.py [--threads 2] [--repeats 5] [--batches 1 8 32]

Needs the mediapipe extra and scikit-image (for astronaut.png). The fit runs on the landmarks MediaPipe found
on matplotlib's grace_hopper.jpg and scikit-image's astronaut.png, repeated to fill each batch; "geometry" is
:func:`aucgan.stages.landmark_fit.fit_geometry`, "coarse" is the whole
:class:`~aucgan.stages.landmark_fit.LandmarkCoarse` (geometry, then light and albedo at the shipped weights'
224-px input). Times are medians after one warm-up call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from aucgan.bench import median_seconds
from aucgan.config import CoarseConfig
from aucgan.data.images import InputItem, load_image, prepare_faces
from aucgan.reconstruct import VIS_SIZE, Reconstructor
from aucgan.stages.landmark_fit import fit_geometry, landmarks_to_ndc

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import skimage

    photos = [
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        Path(skimage.__file__).parent / "data" / "astronaut.png",
    ]
    reconstructor = Reconstructor.load(coarse_settings=CoarseConfig(backend="mediapipe"))
    detector, fitter = reconstructor.detector, reconstructor.landmark_coarse
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}\n")
    print("| photo | size | MediaPipe face mesh (ms) |\n|---|---|---|")
    crops, landmarks = [], []
    for path in photos:
        image = load_image(path)
        seconds = median_seconds(lambda image=image: detector(image), CPU, args.repeats)
        print(f"| {path.name} | {image.shape[1]}×{image.shape[0]} | {1000 * seconds:.1f} |")
        face = prepare_faces(InputItem(path.stem, path), VIS_SIZE, detector=detector)[0]
        crops.append(torch.from_numpy(np.array(face.image)).permute(2, 0, 1).float() / 255)
        landmarks.append(landmarks_to_ndc(torch.from_numpy(face.landmarks), VIS_SIZE).float())
    size = reconstructor.image_size
    print("\n| batch | geometry fit (ms per face) | geometry + light + albedo (ms per face) |\n|---|---|---|")
    for batch in args.batches:
        points = torch.stack([landmarks[i % 2] for i in range(batch)])
        images = F.interpolate(
            torch.stack([crops[i % 2] for i in range(batch)]), size=(size, size), mode="area"
        )
        geometry = median_seconds(
            lambda points=points: fit_geometry(fitter.stage.face_model, points, fitter.settings),
            CPU,
            args.repeats,
        )
        whole = median_seconds(lambda points=points, images=images: fitter(images, points), CPU, args.repeats)
        print(f"| {batch} | {1000 * geometry / batch:.2f} | {1000 * whole / batch:.2f} |")


if __name__ == "__main__":
    main()

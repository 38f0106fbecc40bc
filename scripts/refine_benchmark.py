"""Measure the photometric refinement (``aucgan.stages.refine``): accuracy where the truth is known, the
photometric residual on real photos, and its cost. Writes JSON and the ``refine`` section of docs/RESULTS.md.

    python scripts/refine_benchmark.py --n 256 --out runs/refine-benchmark.json --results docs/RESULTS.md

* **Synthetic, from flat.** Held-out faces of the synthetic world at the detail benchmark preset
  (``synthetic-deca``: 224 px, UV 256), each read through its true coarse fit (shape, pose, camera, light,
  albedo: what the refinement starts from is then exact, and the detail is all that is measured). The
  refinement starts from a zero displacement; its detail-normal error over the wrinkle regions of each face's
  active AUs is compared with flat's (the coarse surface's normals), as ``aucgan evaluate`` does.
* **Real photos.** ``grace_hopper.jpg`` (matplotlib) and ``astronaut.png`` (scikit-image) through the shipped
  weights with the MediaPipe backend (needs the extra): the high-frequency residual in UV (photo minus
  rendering after a Gaussian high-pass, :func:`aucgan.stages.refine.high_frequency_residual`) over the fitted
  skin, coarse-only rendering against the refined one.
* **Cost.** Wall time per face on ``--threads`` CPU threads at UV 256, one face at a time and in batches of
  ``--batch`` (the synthetic run's own batches).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from aucgan.bench import write_results_section
from aucgan.build import coarse_stage
from aucgan.config import Config, load_config
from aucgan.data.synthetic import SyntheticWorld, collate, identity_in_split
from aucgan.face_model.regions import active_region_mask
from aucgan.geometry.uv import angle_degrees
from aucgan.stages.refine import HIGH_PASS_SIGMA_AT_256, refine_faces

REPO = Path(__file__).resolve().parents[1]


def test_indices(n: int, images_per_identity: int) -> list[int]:
    """The first ``n`` test-split samples, one expression of each test identity in turn."""
    return [
        identity_in_split("test", rank) * images_per_identity + rank % images_per_identity
        for rank in range(n)
    ]


def synthetic(cfg: Config, n: int, batch: int, seed: int) -> dict:
    stage = coarse_stage(cfg, with_encoder=False)
    size = cfg.render.uv_size
    world = SyntheticWorld(
        seed=seed,
        image_size=cfg.render.image_size,
        uv_size=size,
        images_per_identity=cfg.synth.images_per_identity,
        n_identity=cfg.face_model.n_identity,
    )
    skin = stage.uv_space.skin
    flat_faces, refined_faces, flat_skin, refined_skin, seconds = [], [], [], [], []
    indices = test_indices(n, cfg.synth.images_per_identity)
    with tqdm(total=n, desc="refine (synthetic)", unit="face") as bar:
        for start in range(0, n, batch):
            samples = collate([world.sample(i) for i in indices[start : start + batch]])
            with torch.no_grad():
                coarse = stage.decode(
                    samples.coarse_codes(stage.albedo.n_albedo), uv_albedo=samples.uv_albedo
                )
            count = samples.image.shape[0]
            began = time.perf_counter()
            refinement = refine_faces(
                stage, coarse, samples.image, torch.zeros(count, 1, size, size), cfg.refine
            )
            seconds.append((time.perf_counter() - began) / count)
            truth = samples.uv_detail_normals.float()
            regions = active_region_mask(samples.au_occurrence, size) * skin
            for errors, active, whole in (
                (angle_degrees(coarse.surface.normals, truth), flat_faces, flat_skin),
                (angle_degrees(refinement.uv_detail_normals, truth), refined_faces, refined_skin),
            ):
                area = regions.sum((1, 2, 3))
                mean = (errors * regions).sum((1, 2, 3)) / area.clamp(min=1)
                active.append(torch.where(area > 0, mean, torch.nan))
                whole.append((errors * skin).sum((1, 2, 3)) / skin.sum())
            bar.update(count)
    flat, refined = torch.cat(flat_faces), torch.cat(refined_faces)
    seen = ~torch.isnan(flat)  # faces with no active wrinkle AU have no active region
    flat, refined = flat[seen], refined[seen]
    difference = (refined - flat).double()
    return {
        "faces": n,
        "faces_with_active_regions": int(seen.sum()),
        "preset": {"image_size": cfg.render.image_size, "uv_size": size},
        "world_seed": seed,
        "active_normal_error_deg": {"flat": float(flat.mean()), "refined": float(refined.mean())},
        "active_ratio": float(refined.mean() / flat.mean()),
        "active_ratio_se": float(difference.std() / difference.numel() ** 0.5 / flat.mean()),
        "faces_worse_than_flat": int((refined > flat).sum()),
        "skin_normal_error_deg": {
            "flat": float(torch.cat(flat_skin).mean()),
            "refined": float(torch.cat(refined_skin).mean()),
        },
        "seconds_per_face_in_batches": sum(seconds[:-1] or seconds) / len(seconds[:-1] or seconds),
        "batch": batch,
    }


def single_face_seconds(cfg: Config, repeats: int, seed: int) -> float:
    stage = coarse_stage(cfg, with_encoder=False)
    size = cfg.render.uv_size
    world = SyntheticWorld(seed=seed, image_size=cfg.render.image_size, uv_size=size)
    times = []
    for index in test_indices(repeats, cfg.synth.images_per_identity):
        sample = collate([world.sample(index)])
        with torch.no_grad():
            coarse = stage.decode(sample.coarse_codes(stage.albedo.n_albedo), uv_albedo=sample.uv_albedo)
        began = time.perf_counter()
        refine_faces(stage, coarse, sample.image, torch.zeros(1, 1, size, size), cfg.refine)
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def real_photos() -> dict:
    import dataclasses

    import matplotlib
    import numpy as np
    from PIL import Image

    from aucgan.reconstruct import Reconstructor, load_faces

    try:
        reconstructor = Reconstructor.load(backend="mediapipe")
    except Exception as error:  # the extra is optional: say so in the results
        return {"skipped": str(error).splitlines()[0]}
    import skimage.data

    with tempfile.TemporaryDirectory() as folder:
        astronaut = Path(folder) / "astronaut.png"
        Image.fromarray(np.asarray(skimage.data.astronaut())).save(astronaut)
        photos = {
            "grace_hopper.jpg": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
            "astronaut.png": astronaut,
        }
        images, _ = load_faces(list(photos.values()))
    settings = dataclasses.replace(reconstructor.refine_settings, mode="always")
    network = reconstructor(images, refine=False)
    refined = reconstructor.refine(network, images, settings=settings).refinement
    results = {}
    for i, name in enumerate(photos):
        coarse, after = float(refined.residual_coarse[i]), float(refined.residual[i])
        results[name] = {
            "residual_coarse": coarse,
            "residual_refined": after,
            "reduction": 1.0 - after / coarse,
            "fitted_texels": int(refined.mask[i].sum()),
        }
    results["uv_size"] = reconstructor.coarse.uv_space.size
    results["photo_size"] = images.shape[-1]
    return results


def markdown(results: dict, command: str) -> str:
    s, photos = results["synthetic"], results["photos"]
    deg = s["active_normal_error_deg"]
    lines = [
        "## Photometric refinement of the detail",
        "",
        "Shape from shading in UV space (`aucgan.stages.refine`, `refine.*` settings; on by default for "
        "photos read with MediaPipe). Measured by `scripts/refine_benchmark.py`:",
        "",
        f"**Synthetic test split, from flat** ({s['faces']} held-out faces, world seed {s['world_seed']}, "
        f"{s['preset']['image_size']} px / UV {s['preset']['uv_size']}, true coarse fits):",
        "",
        "| | active-region detail-normal error | ÷ flat | skin-wide normal error |",
        "|---|---|---|---|",
        f"| flat | {deg['flat']:.2f}° | 1 | {s['skin_normal_error_deg']['flat']:.3f}° |",
        f"| refined from flat | {deg['refined']:.2f}° | {s['active_ratio']:.3f} ± {s['active_ratio_se']:.3f} "
        f"| {s['skin_normal_error_deg']['refined']:.3f}° |",
        "",
        f"({s['faces_worse_than_flat']} of {s['faces_with_active_regions']} faces with active AUs end worse "
        "than flat in their active regions; "
        "± is the standard error over faces.)",
        "",
    ]
    if "skipped" in photos:
        lines += [f"**Real photos:** not measured ({photos['skipped']}).", ""]
    else:
        lines += [
            f"**Real photos** (shipped weights, MediaPipe backend, {photos['photo_size']} px crops, "
            f"UV {photos['uv_size']}): the high-frequency residual in UV (photo minus rendering after a "
            f"Gaussian high-pass of sigma {HIGH_PASS_SIGMA_AT_256:g} texels at UV 256, scaled to the UV "
            "size) over the fitted skin:",
            "",
            "| photo | coarse-only rendering | refined | reduction |",
            "|---|---|---|---|",
        ]
        for name, row in photos.items():
            if isinstance(row, dict):
                lines.append(
                    f"| {name} | {row['residual_coarse']:.4f} | {row['residual_refined']:.4f} | "
                    f"{100 * row['reduction']:.0f} % |"
                )
        lines.append("")
    lines += [
        f"**Cost** on {results['threads']} CPU threads ({results['machine']}), UV {s['preset']['uv_size']}, "
        f"{results['settings']['steps']} steps: {results['single_face_seconds']:.2f} s for one face alone, "
        f"{s['seconds_per_face_in_batches']:.2f} s per face in batches of {s['batch']}"
        + (f" (timed on {s['timing_faces']} faces)." if "timing_faces" in s else "."),
        "",
        f"    {command}",
        *([f"    (accuracy: {s['accuracy_command']})"] if "accuracy_command" in s else []),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256, help="synthetic test faces")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--config", default="synthetic-deca", help="the preset of the synthetic part")
    parser.add_argument("--single", type=int, default=3, help="faces timed alone (the median is reported)")
    parser.add_argument("--out", required=True, help="JSON file")
    parser.add_argument("--results", help="also rewrite the refine section of this markdown file")
    parser.add_argument(
        "--accuracy-from",
        help="take the synthetic accuracy from this earlier run's JSON (same settings, more faces) and time "
        "the batches on --n faces here: for timings on an idle machine without redoing a long run",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. refine.steps=60"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(Config, args.config, args.overrides)
    measured = synthetic(cfg, args.n, args.batch, args.seed)
    if args.accuracy_from:
        earlier = json.loads(Path(args.accuracy_from).read_text(encoding="utf-8"))
        if earlier["settings"] != vars(cfg.refine):
            parser.error(f"{args.accuracy_from}: made with other refine settings; rerun it")
        timing = {key: measured[key] for key in ("seconds_per_face_in_batches", "batch")}
        measured = {
            **earlier["synthetic"],
            **timing,
            "timing_faces": args.n,
            "accuracy_command": earlier.get("command", args.accuracy_from),
        }
    results = {
        "threads": args.threads,
        "machine": f"{platform.machine()}, torch {torch.__version__}",
        "settings": vars(cfg.refine),
        "synthetic": measured,
        "single_face_seconds": single_face_seconds(cfg, args.single, args.seed),
        "photos": real_photos(),
    }
    command = "python scripts/refine_benchmark.py " + " ".join(sys.argv[1:])
    results["command"] = command
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results, command))
    if args.results:
        write_results_section(args.results, "refine", markdown(results, command))


if __name__ == "__main__":
    main()

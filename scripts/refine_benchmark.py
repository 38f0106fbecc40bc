"""Measure the photometric refinement (``aucgan.stages.refine``): accuracy where the truth is known, the
photometric residual on real photos, and its cost. Writes JSON and the ``refine`` section of docs/RESULTS.md.

    python scripts/refine_benchmark.py --n 256 --out runs/refine-benchmark.json --results docs/RESULTS.md

* **Synthetic, from flat.** Held-out faces of the synthetic world at the detail benchmark preset
  (``synthetic-deca``: 224 px, UV 256), each read through its true coarse fit (shape, pose, camera, light,
  albedo: what the refinement starts from is then exact, and the detail is all that is measured). The
  refinement starts from a zero displacement; its detail-normal error over the wrinkle regions of each face's
  active AUs is compared with flat's (the coarse surface's normals), as ``aucgan evaluate`` does.
  The same faces are refined again with a **smooth albedo**: the world's albedo map blurred over the skin
  (``--smooth-albedo`` texels at UV 256), which is what any coarse fit of a photo knows (an albedo model,
  a smooth gain), while the exact map hands the refinement every fine blotch of the skin. Beside it, the
  RMS after the fit's high-pass, over the active regions, of the wrinkles' shading and of the albedo's fine
  texture: how strong the signal is against what a smooth albedo cannot explain.
* **Real photos.** ``grace_hopper.jpg`` (matplotlib) and ``astronaut.png`` (scikit-image) through the shipped
  weights with the MediaPipe backend (needs the extra): the high-frequency residual in UV (photo minus
  rendering after a Gaussian high-pass, :func:`aucgan.stages.refine.high_frequency_residual`) over the fitted
  skin, coarse-only rendering against the refined one.
* **Cost.** Wall time per face on ``--threads`` CPU threads at UV 256, one face at a time and in batches of
  ``--batch`` (the synthetic run's own batches), of the displacement fit alone; and of each part of
  ``Reconstructor.refine`` (coarse fit, AU fit, displacement fit) and all of it, with the preset's networks.
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
from aucgan.geometry.shading import sh_shading
from aucgan.geometry.uv import angle_degrees
from aucgan.stages.refine import BEFORE_DISPLACEMENT, HIGH_PASS_SIGMA_AT_256, masked_blur, refine_faces

REPO = Path(__file__).resolve().parents[1]


def test_indices(n: int, images_per_identity: int) -> list[int]:
    """The first ``n`` test-split samples, one expression of each test identity in turn."""
    return [
        identity_in_split("test", rank) * images_per_identity + rank % images_per_identity
        for rank in range(n)
    ]


def smooth_albedo(albedo: torch.Tensor, skin: torch.Tensor, sigma: float) -> torch.Tensor:
    """``albedo (B, 3, S, S)`` blurred over ``skin (1, 1, S, S)`` by ``sigma`` texels; the rest kept."""
    mask = skin.expand(albedo.shape[0], 1, -1, -1)
    return torch.where(mask > 0, masked_blur(albedo, mask, sigma), albedo)


def _active_mean(errors: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    area = regions.sum((1, 2, 3))
    return torch.where(area > 0, (errors * regions).sum((1, 2, 3)) / area.clamp(min=1), torch.nan)


def _ratio(refined: torch.Tensor, flat: torch.Tensor) -> dict:
    difference = (refined - flat).double()
    return {
        "refined": float(refined.mean()),
        "ratio": float(refined.mean() / flat.mean()),
        "ratio_se": float(difference.std() / difference.numel() ** 0.5 / flat.mean()),
        "faces_worse_than_flat": int((refined > flat).sum()),
    }


def synthetic(cfg: Config, n: int, batch: int, seed: int, albedo_sigma: float) -> dict:
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
    sigma, band = albedo_sigma * size / 256.0, cfg.refine.band * size / 256.0
    active = {"flat": [], "exact": [], "smooth": []}
    whole = {"flat": [], "exact": [], "smooth": []}
    power = {"wrinkle_shading": 0.0, "albedo_texture": 0.0, "texels": 0.0}
    seconds = []
    indices = test_indices(n, cfg.synth.images_per_identity)
    with tqdm(total=n, desc="refine (synthetic)", unit="face") as bar:
        for start in range(0, n, batch):
            samples = collate([world.sample(i) for i in indices[start : start + batch]])
            count = samples.image.shape[0]
            truth = samples.uv_detail_normals.float()
            regions = active_region_mask(samples.au_occurrence, size) * skin
            albedos = {"exact": samples.uv_albedo, "smooth": smooth_albedo(samples.uv_albedo, skin, sigma)}
            for name, albedo in albedos.items():
                with torch.no_grad():
                    coarse = stage.decode(samples.coarse_codes(stage.albedo.n_albedo), uv_albedo=albedo)
                began = time.perf_counter()
                refinement = refine_faces(
                    stage, coarse, samples.image, torch.zeros(count, 1, size, size), cfg.refine
                )
                if name == "exact":
                    seconds.append((time.perf_counter() - began) / count)
                errors = angle_degrees(refinement.uv_detail_normals, truth)
                active[name].append(_active_mean(errors, regions))
                whole[name].append((errors * skin).sum((1, 2, 3)) / skin.sum())
            flat = angle_degrees(coarse.surface.normals, truth)
            active["flat"].append(_active_mean(flat, regions))
            whole["flat"].append((flat * skin).sum((1, 2, 3)) / skin.sum())
            with torch.no_grad():  # grey levels, high-passed as the fit sees them
                light, normals = coarse.codes.light, coarse.surface.normals
                shading = sh_shading(normals, light)
                parts = {
                    "wrinkle_shading": samples.uv_albedo * (sh_shading(truth, light) - shading),
                    "albedo_texture": (samples.uv_albedo - albedos["smooth"]) * shading,
                }
                for key, part in parts.items():
                    grey = part.mean(1, keepdim=True)
                    high = (grey - masked_blur(grey, regions, band)) * regions
                    power[key] += float((high**2).sum())
                power["texels"] += float(regions.sum())
            bar.update(count)
    seen = ~torch.isnan(torch.cat(active["flat"]))  # faces with no active wrinkle AU have no active region
    flat = torch.cat(active["flat"])[seen]
    exact, smooth = (torch.cat(active[name])[seen] for name in ("exact", "smooth"))
    texels = max(power.pop("texels"), 1.0)
    with_exact = _ratio(exact, flat)
    return {
        "faces": n,
        "faces_with_active_regions": int(seen.sum()),
        "preset": {"image_size": cfg.render.image_size, "uv_size": size},
        "world_seed": seed,
        "active_normal_error_deg": {"flat": float(flat.mean()), "refined": with_exact["refined"]},
        "active_ratio": with_exact["ratio"],
        "active_ratio_se": with_exact["ratio_se"],
        "faces_worse_than_flat": with_exact["faces_worse_than_flat"],
        "skin_normal_error_deg": {
            "flat": float(torch.cat(whole["flat"]).mean()),
            "refined": float(torch.cat(whole["exact"]).mean()),
        },
        "smooth_albedo": {
            "sigma_texels_at_256": albedo_sigma,
            "active_normal_error_deg": _ratio(smooth, flat),
            "skin_normal_error_deg": float(torch.cat(whole["smooth"]).mean()),
        },
        "active_rms_after_high_pass": {key: (value / texels) ** 0.5 for key, value in power.items()},
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


def whole_refinement_seconds(cfg: Config, batch: int, seed: int) -> dict:
    """Per face, each part of ``Reconstructor.refine`` (the coarse fit, the AU fit, the displacement fit: the
    others' steps set to 0) and all of it, at ``cfg``'s image and UV size, on test faces of the world in a
    batch of ``batch`` and one face alone. The stages have random weights (seed 0) of ``cfg``'s design: the
    cost does not depend on their values, and no weights are shipped at this preset."""
    import dataclasses

    from aucgan.build import detail_stage
    from aucgan.nets.au_net import MEFARG
    from aucgan.reconstruct import Reconstructor

    with torch.random.fork_rng():
        torch.manual_seed(0)
        coarse = coarse_stage(cfg)
        au = MEFARG(cfg.model.au_backbone, cfg.model.au_stage)
        detail = detail_stage(cfg, coarse.uv_space, au, coarse.face_model.n_expression)
    reconstructor = Reconstructor(coarse, detail, cfg, "random weights, for timing")
    world = SyntheticWorld(seed=seed, image_size=cfg.render.image_size, uv_size=cfg.render.uv_size)
    images = collate([world.sample(i) for i in test_indices(batch, cfg.synth.images_per_identity)]).image
    settings = dataclasses.replace(cfg.refine, mode="always")
    parts = {
        "coarse_fit": dataclasses.replace(settings, au_steps=0, steps=0),
        "au_fit": dataclasses.replace(settings, coarse_steps=0, steps=0),
        "displacement_fit": dataclasses.replace(settings, coarse_steps=0, au_steps=0),
        "all": settings,
    }
    timings: dict[str, dict[str, float]] = {}
    for faces, label in ((images, "in_batch"), (images[:1], "alone")):
        network = reconstructor(faces, refine=False)
        for name, part in parts.items():
            if label == "alone" and name != "all":
                continue
            began = time.perf_counter()
            reconstructor.refine(network, settings=part)
            timings.setdefault(label, {})[name] = (time.perf_counter() - began) / faces.shape[0]
    return {
        "image_size": cfg.render.image_size,
        "uv_size": cfg.render.uv_size,
        "batch": batch,
        "steps": {"coarse": settings.coarse_steps, "au": settings.au_steps, "displacement": settings.steps},
        "seconds_per_face": timings,
    }


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
        "The displacement fit, shape from shading in UV space (`aucgan.stages.refine`, `refine.*` "
        "settings; on by default for photos read with MediaPipe, after the coarse fit and the AU fit, which "
        "the next section measures). On synthetic faces it runs alone here, without a network. Measured by "
        "`scripts/refine_benchmark.py`:",
        "",
        f"**Synthetic test split, from flat** ({s['faces']} held-out faces, world seed {s['world_seed']}, "
        f"{s['preset']['image_size']} px / UV {s['preset']['uv_size']}, true coarse fits):",
        "",
        "| | active-region detail-normal error | ÷ flat | skin-wide normal error |",
        "|---|---|---|---|",
        f"| flat | {deg['flat']:.2f}° | 1 | {s['skin_normal_error_deg']['flat']:.3f}° |",
        f"| refined from flat | {deg['refined']:.2f}° | {s['active_ratio']:.3f} ± {s['active_ratio_se']:.3f} "
        f"| {s['skin_normal_error_deg']['refined']:.3f}° |",
    ]
    smooth = s.get("smooth_albedo")
    if smooth is not None:
        row = smooth["active_normal_error_deg"]
        lines.append(
            "| refined from flat, smooth albedo (the map blurred by "
            f"{smooth['sigma_texels_at_256']:g} texels at UV 256) | {row['refined']:.2f}° "
            f"| {row['ratio']:.3f} ± {row['ratio_se']:.3f} "
            f"| {smooth['skin_normal_error_deg']:.3f}° |"
        )
    lines += [
        "",
        f"({s['faces_worse_than_flat']} of {s['faces_with_active_regions']} faces with active AUs end worse "
        "than flat in their active regions with the exact albedo"
        + (f", {row['faces_worse_than_flat']} with the smooth one" if smooth else "")
        + "; ± is the standard error over faces.)",
        "",
    ]
    if "active_rms_after_high_pass" in s:
        rms = s["active_rms_after_high_pass"]
        lines += [
            "The exact albedo is the world's own map, fine blotches included: no fit of a photo knows "
            "it. With a smooth albedo the fit must tell the photo's fine albedo texture from the wrinkles' "
            "shading; in the active regions, after the fit's high-pass, their RMS grey levels are "
            f"{rms['albedo_texture']:.4f} (texture) and {rms['wrinkle_shading']:.4f} (wrinkles), a ratio "
            f"of {rms['albedo_texture'] / rms['wrinkle_shading']:.2f}.",
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
        f"**Cost** on {results['threads']} CPU threads ({results['machine']}) of the displacement fit, UV "
        f"{s['preset']['uv_size']}, {results['settings']['steps']} steps: "
        f"{results['single_face_seconds']:.2f} s for one face alone, "
        f"{s['seconds_per_face_in_batches']:.2f} s per face in batches of {s['batch']}"
        + (f" (timed on {s['timing_faces']} faces)." if "timing_faces" in s else "."),
    ]
    if "whole" in results:
        whole = results["whole"]
        batch, alone, steps = (
            whole["seconds_per_face"]["in_batch"],
            whole["seconds_per_face"]["alone"],
            whole["steps"],
        )
        lines += [
            "",
            "The whole refinement (`Reconstructor.refine`, "
            f"{whole['image_size']} px / UV {whole['uv_size']}, the preset's networks with random weights: "
            "the cost does not depend on their values), per face "
            f"in a batch of {whole['batch']}: the coarse fit ({steps['coarse']} steps) "
            f"{batch['coarse_fit']:.2f} s, the AU fit ({steps['au']} steps) {batch['au_fit']:.2f} s, the "
            f"displacement fit ({steps['displacement']} steps) {batch['displacement_fit']:.2f} s; all three "
            f"{batch['all']:.2f} s per face in the batch, {alone['all']:.2f} s for one face alone.",
        ]
    lines += [
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
    parser.add_argument(
        "--smooth-albedo",
        type=float,
        default=8.0,
        help="sigma, in texels at UV 256, of the blur that makes the smooth albedo (default 8)",
    )
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
    measured = synthetic(cfg, args.n, args.batch, args.seed, args.smooth_albedo)
    if args.accuracy_from:
        earlier = json.loads(Path(args.accuracy_from).read_text(encoding="utf-8"))
        used = {key: value for key, value in vars(cfg.refine).items() if key not in BEFORE_DISPLACEMENT}
        if {key: earlier["settings"][key] for key in used} != used:
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
        "whole": whole_refinement_seconds(cfg, args.batch, args.seed),
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

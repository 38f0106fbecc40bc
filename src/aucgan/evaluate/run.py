"""``aucgan evaluate`` and ``aucgan demo``: measure a reconstructor on the synthetic test split and write
the report (``metrics.json``, ``report.html``, plots, example face folders)."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from aucgan.build import world_parameters
from aucgan.config import RefineConfig
from aucgan.data.shards import SyntheticFaces
from aucgan.data.synthetic import SyntheticSample, collate
from aucgan.evaluate.metrics import detail_errors, edit_metrics, refine_settings_used
from aucgan.evaluate.report import GalleryItem, write_report
from aucgan.export import write_image
from aucgan.face_model.regions import AU_WRINKLE_REGIONS
from aucgan.reconstruct import (
    MICROMETRES_PER_UNIT,
    VIS_SIZE,
    Reconstruction,
    Reconstructor,
    colour_bar,
    edit_face,
    panel_image,
    reconstruct_inputs,
    vis_grid,
    write_face,
)

log = logging.getLogger(__name__)

DEMO_EDIT = {"AU12": 1.0}


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict
    report: Path
    faces: list[Path]


def test_batches(
    reconstructor: Reconstructor,
    n_faces: int,
    batch_size: int,
    split: str = "test",
    image_size: int | None = None,
) -> DataLoader:
    """Batches of ``n_faces`` ground-truth samples of ``split`` from the reconstructor's synthetic world,
    rendered at ``image_size`` (default the world's): the same faces at any size, as the world's draws do
    not depend on it."""
    parameters = world_parameters(reconstructor.cfg)
    if image_size is not None:
        parameters = dataclasses.replace(parameters, image_size=image_size)
    dataset = SyntheticFaces(parameters, split, n_faces)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


def _refine_settings(reconstructor: Reconstructor, refine: RefineConfig, ground_truth_coarse: bool) -> dict:
    """The ``refine.*`` settings a run was given, with where its AU fit started resolved (``au_start``, as
    :func:`~aucgan.evaluate.metrics.refine_settings_used` and the reconstructor resolve it)."""
    start = reconstructor.resolved_au_start(refine_settings_used(refine, ground_truth_coarse))
    return {**dataclasses.asdict(refine), "au_start": start}


def _to_panel(image: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image[None].float(), size=(VIS_SIZE,) * 2, mode="nearest")[0].clamp(0, 1)


def _grey(values: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` black (-1) - grey (0) - white (1) picture of ``values (H, W)``."""
    return (0.5 + 0.5 * values).clamp(0, 1).expand(3, -1, -1)


def truth_comparison(
    batch: SyntheticSample, rec: Reconstruction, max_z: float, rows: int, micrometres: float
) -> list:
    """Rows of ``input | true displacement | predicted | true normals | predicted normals`` pictures, each
    followed by the displacement pictures' grey scale (±``max_z``, stated in µm: ``micrometres`` per
    face-model unit)."""
    bar = colour_bar(_grey, max_z * micrometres, "µm", "UV displacement", "white raised\nblack lowered")
    pictures = []
    for i in range(min(rows, batch.image.shape[0])):
        panels = [
            batch.image[i],
            _grey(batch.uv_displacement[i, 0] / max_z),
            _grey(rec.detail.uv_displacement[i, 0].cpu() / max_z),
            batch.uv_detail_normals[i].float() * 0.5 + 0.5,
            rec.detail.uv_detail_normals[i].cpu() * 0.5 + 0.5,
        ]
        pictures.append(vis_grid([*(panel_image(_to_panel(p)) for p in panels), bar]))
    return pictures


def evaluate(
    reconstructor: Reconstructor,
    out: str | os.PathLike[str],
    n_faces: int = 32,
    batch_size: int = 16,
    gallery: int = 4,
    edit_faces: int = 16,
    edit_aus: Sequence[str] = tuple(AU_WRINKLE_REGIONS),
    extra_gallery: Sequence[GalleryItem] = (),
    extra_images: dict[str, Path] | None = None,
    progress: bool = True,
    title: str = "aucgan evaluation — synthetic test split",
    ground_truth_coarse: bool = False,
    refine: RefineConfig | None = None,
    photo_size: int | None = None,
) -> EvaluationResult:
    """Measure ``reconstructor`` on ``n_faces`` held-out synthetic faces; write the report into ``out``.
    With ``ground_truth_coarse`` the faces' true coarse fits replace the coarse stage (the detail stage
    alone is measured). With ``refine`` settings the photometric refinement is measured too, on top of the
    network and from flat (the ``refined`` parts of the error sections); ``photo_size`` renders the same
    faces at that size for the refinement to compare with (a photo's full-resolution crop: the network reads
    the world's render at its own input size, so its rows do not change)."""
    import numpy as np

    if n_faces < 1:
        raise ValueError(f"n_faces must be at least 1, got {n_faces}")
    if photo_size is not None and refine is None:
        raise ValueError("a photo size is only read by the refinement: measure it too (--refine)")
    if photo_size is not None and photo_size < 16:
        raise ValueError(f"the photo size must be at least 16 pixels, got {photo_size}")
    out = Path(out)
    batches = list(test_batches(reconstructor, n_faces, batch_size))
    photos = None
    if photo_size is not None:
        larger = test_batches(reconstructor, n_faces, batch_size, image_size=photo_size)
        photos = (batch.image for batch in larger)
    start = time.perf_counter()
    with tqdm(total=n_faces, desc="evaluate", unit="face", disable=not progress) as bar:
        sections, consistency, reconstructions = detail_errors(
            reconstructor,
            batches,
            bar.update,
            ground_truth_coarse=ground_truth_coarse,
            refine=refine,
            photos=photos,
        )
    inference_seconds = time.perf_counter() - start
    edited = first_faces(reconstructions, edit_faces)
    with tqdm(total=len(edit_aus), desc="AU edits", unit="AU", disable=not progress) as bar:
        edits = edit_metrics(
            reconstructor,
            edited,
            edit_aus,
            progress=bar.update,
            wrinkle_bases=wrinkle_bases(reconstructor, batches, sum(r.batch_size for r in edited)),
        )
    faces: list[Path] = []
    items: list[GalleryItem] = []
    first, rec = batches[0], reconstructions[0]
    views = reconstructor.render_views(rec)
    for i in range(min(gallery, first.image.shape[0])):
        index = int(first.index[i])
        folder = write_face(
            out / "faces" / f"test-{index:05d}",
            reconstructor,
            rec,
            i,
            {"source": f"test sample {index}"},
            views,
        )
        faces.append(folder)
        items.append(
            GalleryItem(
                f"test face {index}",
                folder / "vis.png",
                "input | coarse | detail | detail shading | AU scores",
            )
        )
    micrometres = MICROMETRES_PER_UNIT[reconstructor.cfg.face_model.kind]
    comparison = truth_comparison(first, rec, reconstructor.cfg.model.max_z, gallery, micrometres)
    figures = dict(extra_images or {})
    if comparison:
        caption = "truth vs prediction (input | true displacement | predicted | true normals | predicted)"
        figures[caption] = write_image(out / "truth_vs_prediction.png", np.concatenate(comparison, axis=0))
    metrics = {
        "title": title,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": {
            "detail_decoder": reconstructor.cfg.model.detail_decoder,
            "detail_encoder": reconstructor.cfg.model.detail_encoder,
            "au_backbone": reconstructor.cfg.model.au_backbone,
            "image_size": reconstructor.cfg.render.image_size,
            "uv_size": reconstructor.cfg.render.uv_size,
            "face_model": reconstructor.cfg.face_model.kind,
            "world_seed": reconstructor.cfg.seed,
            "coarse": "ground truth" if ground_truth_coarse else "the coarse stage",
            **(
                {}
                if refine is None
                else {
                    "refine": _refine_settings(reconstructor, refine, ground_truth_coarse),
                    "refine_photo_size": photo_size or reconstructor.cfg.render.image_size,
                }
            ),
        },
        "weights": {"source": reconstructor.source},
        "n_faces": n_faces,
        "units": {"displacement": "mm", "normal_error": "degrees", "energy": "mm²"},
        **sections,
        "au_consistency": consistency,
        "edit": edits,
        "timings": {
            "faces_per_second": n_faces / inference_seconds,
            "seconds": time.perf_counter() - start,
        },
    }
    report = write_report(out, metrics, [*items, *extra_gallery], figures)
    return EvaluationResult(metrics, report, faces)


def wrinkle_bases(reconstructor: Reconstructor, batches: Sequence[SyntheticSample], n: int) -> torch.Tensor:
    """``(n, 27, S, S)`` cm: the world's displacement per AU at intensity 1 for the identities of the first
    ``n`` faces of ``batches`` — the true change of each AU edit on those faces."""
    world = world_parameters(reconstructor.cfg).world()
    identities = torch.cat([batch.identity for batch in batches])[:n]
    return torch.stack([world.identity(int(identity)).wrinkle_basis for identity in identities])


def first_faces(reconstructions: Sequence[Reconstruction], n: int) -> list[Reconstruction]:
    """The reconstructions of the first ``n`` faces (whole batches; the last one cut)."""
    kept, count = [], 0
    for rec in reconstructions:
        if count >= n:
            break
        take = min(rec.batch_size, n - count)
        kept.append(rec if take == rec.batch_size else rec.take(take))
        count += take
    return kept


def demo_inputs(
    reconstructor: Reconstructor, folder: str | os.PathLike[str], n_synthetic: int = 3
) -> tuple[Path, Path]:
    """Images to reconstruct, as a user's files: ``folder/synthetic`` holds held-out synthetic renders
    (face crops already) and ``folder/photos`` matplotlib's sample photo of Grace Hopper, when matplotlib
    ships it (found and cropped by the face detector)."""
    import shutil

    import matplotlib

    folder = Path(folder)
    dataset = SyntheticFaces(world_parameters(reconstructor.cfg), "test", 64)
    for i in range(n_synthetic):
        sample = dataset[len(dataset) - 1 - 8 * i]
        write_image(folder / "synthetic" / f"synthetic_{int(sample.index):05d}.png", sample.image)
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if photo.is_file():
        shutil.copyfile(photo, photos / photo.name)
    return folder / "synthetic", photos


def demo(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    n_faces: int = 32,
    progress: bool = True,
) -> EvaluationResult:
    """The whole tour: load the models, reconstruct images from files, edit one face's AUs, evaluate on
    held-out synthetic faces and write the report."""
    out = Path(out)
    reconstructor = Reconstructor.load(weights)
    synthetic, photos = demo_inputs(reconstructor, out / "inputs")
    written: list[Path] = []
    with tqdm(desc="reconstruct", unit="image", disable=not progress) as bar:
        for folder, crop in ((synthetic, False), (photos, True)):
            report = reconstruct_inputs(
                reconstructor,
                folder,
                out / "reconstructions",
                crop=crop,
                progress=bar.update,
                on_total=lambda n: setattr(bar, "total", (bar.total or 0) + n),
            )
            written += report.written
            for name, message in report.failed:
                log.warning("%s: %s", name, message)
    caption = "input | coarse | detail | detail shading | AU scores"
    gallery = [GalleryItem(f"reconstructed from {f.name}", f / "vis.png", caption) for f in written]
    extra: dict[str, Path] = {}
    if written:
        edited, _, _ = edit_face(written[0], reconstructor, DEMO_EDIT)
        panels = "input | detail shading before | after | change of the UV displacement, with its colour bar"
        extra[f"AU edit of {written[0].name}: {edited.name} ({panels})"] = edited / "before_after.png"
    return evaluate(
        reconstructor,
        out / "report",
        n_faces=n_faces,
        extra_gallery=gallery,
        extra_images=extra,
        progress=progress,
        title="aucgan demo — synthetic world, held-out faces",
    )

"""Metrics of a reconstructor against the synthetic world's ground truth, and of its AU edits.

* **Detail error** — displacement MAE and detail-normal angular error over the skin and in each wrinkle
  region of the UV layout, beside the same errors of a *flat* prediction (zero displacement), which says
  how much detail there is to recover.
* **AU consistency** — the frozen AU net on the detailed rendering vs on the input (F1 of the render's
  occurrences, taking the input's as labels), and each against the ground-truth occurrences.
* **Edits** — each wrinkle AU raised from 0 to 1 on the neutralised faces (every AU set to 0): the mean
  squared displacement inside the AU's wrinkle regions and outside them at each intensity; *locality* is
  the share of the displacement change (sum of squares) that lies inside the regions; *monotonic* says the
  region energy never falls as the intensity rises.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from aucgan.au import MAIN_AUS
from aucgan.config import RefineConfig
from aucgan.data.synthetic import SyntheticSample
from aucgan.face_model.regions import (
    AU_WRINKLE_REGIONS,
    UV_REGIONS,
    active_region_mask,
    au_region_mask,
    region_mask,
)
from aucgan.geometry.uv import angle_degrees
from aucgan.reconstruct import Reconstruction, Reconstructor
from aucgan.stages.coarse import CoarseOutput

CM_TO_MM = 10.0
"""The built-in face is in centimetres; the report shows millimetres."""

EDIT_INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
MONOTONIC_TOLERANCE = 1e-3
"""Relative fall in region energy between intensity steps still counted as monotonic (float noise)."""


def binary_f1(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-column F1 of bool ``predicted`` vs ``target`` ``(N, K)``; NaN where ``target`` has no positive."""
    predicted, target = predicted.bool(), target.bool()
    true_positive = (predicted & target).sum(0).double()
    positives = target.sum(0).double()
    denominator = predicted.sum(0).double() + positives
    f1 = torch.where(denominator > 0, 2 * true_positive / denominator.clamp(min=1), torch.nan)
    return torch.where(positives > 0, f1, torch.nan)


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def half_resolution(displacement: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` → the same map averaged down to half its size and bilinearly back: the detail a UV
    map of half the resolution could hold (the *half-resolution truth* when given the truth)."""
    size = displacement.shape[-2:]
    half = F.interpolate(displacement, scale_factor=0.5, mode="area")
    return F.interpolate(half, size=size, mode="bilinear", align_corners=False)


class _ActiveSums:
    """Running sums of errors over each face's own mask (the wrinkle regions of its active AUs), with each
    face's mean for the spread."""

    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0.0
        self.per_face: list[torch.Tensor] = []

    def add(self, errors: torch.Tensor, masks: torch.Tensor) -> None:
        """``errors`` and ``masks`` ``(B, S, S)``."""
        weighted = (errors * masks).sum((1, 2)).double()
        counts = masks.sum((1, 2)).double()
        self.sum += float(weighted.sum())
        self.count += float(counts.sum())
        self.per_face.append(torch.where(counts > 0, weighted / counts.clamp(min=1), torch.nan))

    def mean(self, scale: float = 1.0) -> float:
        return scale * self.sum / self.count if self.count > 0 else float("nan")

    def faces(self) -> torch.Tensor:
        return torch.cat(self.per_face)


class _Sums:
    """Running sums of masked errors: total and per region, and each face's mean over the ``"face"`` mask."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks
        self.sums = {name: 0.0 for name in masks}
        self.counts = {name: 0.0 for name in masks}
        self.per_face: list[torch.Tensor] = []

    def add(self, errors: torch.Tensor) -> None:
        for name, mask in self.masks.items():
            self.sums[name] += float((errors * mask).sum())
            self.counts[name] += float(mask.sum()) * errors.shape[0]
        face = self.masks["face"]
        self.per_face.append((errors * face).sum((1, 2)).double() / face.sum().clamp(min=1))

    def means(self, scale: float = 1.0) -> dict[str, float]:
        return {name: scale * self.sums[name] / max(self.counts[name], 1.0) for name in self.masks}


def paired_standard_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standard error of the mean of ``a - b`` over faces ``(N,)`` (NaN for fewer than 2 faces)."""
    difference = (a - b).double()
    if difference.numel() < 2:
        return float("nan")
    return float(difference.std(unbiased=True) / difference.numel() ** 0.5)


def true_coarse(reconstructor: Reconstructor, batch: SyntheticSample) -> CoarseOutput:
    """The coarse output of ``batch``'s true codes and albedo through the reconstructor's coarse stage."""
    codes = batch.coarse_codes(reconstructor.coarse.albedo.n_albedo)
    codes = type(codes)(**{name: value.to(reconstructor.device) for name, value in vars(codes).items()})
    with torch.inference_mode():
        return reconstructor.coarse.decode(codes, uv_albedo=batch.uv_albedo.to(reconstructor.device))


def refine_settings_used(refine: RefineConfig, ground_truth_coarse: bool) -> RefineConfig:
    """The ``refine`` settings :func:`detail_errors` refines with: with ``ground_truth_coarse`` the true fit
    is kept (``coarse_steps=0``: the detail alone is measured) and, since on the built-in face the true
    expression is the true AU intensities, the AU fit starts from the AU net's (``au_start="au-net"``)."""
    if not ground_truth_coarse:
        return refine
    return dataclasses.replace(refine, coarse_steps=0, au_start="au-net")


def detail_errors(
    reconstructor: Reconstructor,
    batches: Iterable[SyntheticSample],
    progress: Callable[[int], object] | None = None,
    ground_truth_coarse: bool = False,
    refine: RefineConfig | None = None,
    photos: Iterable[torch.Tensor] | None = None,
) -> tuple[dict, dict, list[Reconstruction]]:
    """Detail errors (mm, degrees) and AU consistency over ``batches`` of ground-truth samples; with
    ``ground_truth_coarse`` the detail stage reads each face through its true coarse fit (the detail stage
    alone is measured: the flat baseline's error is then the detail's own).

    Returns the ``displacement_mae`` / ``normal_error_deg`` sections (``face`` and ``flat`` over the skin,
    ``face_vs_flat_se`` the standard error over faces of the per-face difference between the two, and the
    same per region; ``active``, ``active_flat`` and ``active_half_res`` over the wrinkle regions of the AUs
    active in each face, for the model, a flat prediction and the half-resolution truth
    (:func:`half_resolution`: how much of the detail the UV resolution allows), ``active_vs_flat_se``;
    the normal section's ``active_true_detail``, the world's own displacement laid on the reconstruction's
    coarse surface (the lowest error a detail stage reaches without correcting the coarse fit: about 0 on
    the true coarse fits, the coarse fit's share of the error through the coarse stage);
    normals are compared by :func:`~aucgan.geometry.uv.angle_degrees`, on the reconstruction's coarse
    surface for flat and half-resolution), the ``au_consistency`` section and the reconstructions (for
    pictures and edits).

    With ``refine`` settings each section also has a ``refined`` part: the errors (``face`` over the skin,
    ``active``) of the photometric refinement (:meth:`~aucgan.reconstruct.Reconstructor.refine`) on top
    of the network's prediction and, as ``from_flat_face`` and ``from_flat_active``, started from flat;
    ``active_vs_network_se``, the standard error over faces of the refined-minus-network difference (with
    ``ground_truth_coarse`` the true coarse fit is not refitted: ``refine.coarse_steps`` counts as 0, and
    the AU fit starts from the AU net's intensities, ``refine.au_start=au-net``, not from the true
    expression); the normal section's ``coarse_flat_face`` and ``coarse_flat_active`` are a flat
    prediction's errors on the refitted coarse surface (``refine.coarse_steps``: what the coarse fit alone
    gives). The network's own rows are always the network's alone. ``photos``, one ``(B, 3, P, P)`` per
    batch, are the photos the refinement compares with (the same faces at another size, e.g. larger, as a
    photo's full-resolution crop; default each batch's own image).
    """
    if refine is not None:
        refine = refine_settings_used(refine, ground_truth_coarse)
    uv_space = reconstructor.coarse.uv_space
    skin = uv_space.skin.cpu()
    size = uv_space.size
    masks = {"face": skin[0, 0]}
    masks.update({name: region_mask(name, size) * skin[0, 0] for name in UV_REGIONS})
    displacement, displacement_flat = _Sums(masks), _Sums(masks)
    normals, normals_flat = _Sums(masks), _Sums(masks)
    active = {name: _ActiveSums() for name in ("d", "d_flat", "d_half", "n", "n_flat", "n_half", "n_truth")}
    refined = {
        f"{key}_{where}": _ActiveSums()
        for key in ("d", "n", "d_flat_start", "n_flat_start")
        for where in ("face", "active")
    }
    refined.update({f"n_coarse_{where}": _ActiveSums() for where in ("face", "active")})
    input_scores, render_scores, truth = [], [], []
    reconstructions = []
    photos = iter(photos) if photos is not None else None
    for batch in batches:
        photo = next(photos) if photos is not None else None
        rec = reconstructor(
            batch.image,
            coarse=true_coarse(reconstructor, batch) if ground_truth_coarse else None,
            refine=False,
        )
        predicted = rec.detail.uv_displacement.cpu()
        displacement.add((predicted - batch.uv_displacement).abs()[:, 0])
        displacement_flat.add(batch.uv_displacement.abs()[:, 0])
        normals.add(angle_degrees(rec.detail.uv_detail_normals.cpu(), batch.uv_detail_normals.float())[:, 0])
        normals_flat.add(
            angle_degrees(rec.coarse.surface.normals.cpu(), batch.uv_detail_normals.float())[:, 0]
        )
        truth_normals = batch.uv_detail_normals.float()
        regions = (active_region_mask(batch.au_occurrence, size) * skin)[:, 0]
        half = half_resolution(batch.uv_displacement)
        with torch.inference_mode():
            half_normals = uv_space.detail_normals(rec.coarse.surface, half.to(rec.images.device)).cpu()
            true_detail_normals = uv_space.detail_normals(
                rec.coarse.surface, batch.uv_displacement.to(rec.images.device)
            ).cpu()
        active["d"].add((predicted - batch.uv_displacement).abs()[:, 0], regions)
        active["d_flat"].add(batch.uv_displacement.abs()[:, 0], regions)
        active["d_half"].add((half - batch.uv_displacement).abs()[:, 0], regions)
        active["n"].add(angle_degrees(rec.detail.uv_detail_normals.cpu(), truth_normals)[:, 0], regions)
        active["n_flat"].add(angle_degrees(rec.coarse.surface.normals.cpu(), truth_normals)[:, 0], regions)
        active["n_half"].add(angle_degrees(half_normals, truth_normals)[:, 0], regions)
        active["n_truth"].add(angle_degrees(true_detail_normals, truth_normals)[:, 0], regions)
        if refine is not None:
            face_skin = skin[:, 0].expand_as(regions)
            # the coarse fit does not depend on where the detail starts: once for both starts
            refitted = reconstructor.refit_coarse(rec, photo, settings=refine)
            flat_refitted = angle_degrees(refitted.coarse.surface.normals.cpu(), truth_normals)[:, 0]
            refined["n_coarse_face"].add(flat_refitted, face_skin)
            refined["n_coarse_active"].add(flat_refitted, regions)
            detail_fits = dataclasses.replace(refine, coarse_steps=0)
            for start, from_flat in (("", False), ("_flat_start", True)):
                detail = reconstructor.refine(refitted, photo, detail_fits, from_flat=from_flat).detail
                errors = {
                    "d": (detail.uv_displacement.cpu() - batch.uv_displacement).abs()[:, 0],
                    "n": angle_degrees(detail.uv_detail_normals.cpu(), truth_normals)[:, 0],
                }
                for key, error in errors.items():
                    refined[f"{key}{start}_face"].add(error, face_skin)
                    refined[f"{key}{start}_active"].add(error, regions)
        with torch.inference_mode():
            rendering = reconstructor.coarse.render(
                rec.coarse, uv_normals=rec.detail.uv_detail_normals, background=rec.images
            )
            render_scores.append(reconstructor.detail.read_aus(rendering.image).main_scores.cpu())
        input_scores.append(rec.au.main_scores.cpu())
        truth.append(batch.au_occurrence.bool())
        reconstructions.append(rec)
        if progress is not None:
            progress(batch.image.shape[0])

    def section(model: _Sums, flat: _Sums, scale: float, key: str) -> dict:
        ours, baseline = model.means(scale), flat.means(scale)
        spread = paired_standard_error(torch.cat(model.per_face), torch.cat(flat.per_face))
        faces, flat_faces = active[key].faces(), active[f"{key}_flat"].faces()
        seen = ~torch.isnan(faces)
        return {
            "face": ours.pop("face"),
            "flat": baseline.pop("face"),
            "face_vs_flat_se": scale * spread,
            "active": active[key].mean(scale),
            "active_flat": active[f"{key}_flat"].mean(scale),
            "active_half_res": active[f"{key}_half"].mean(scale),
            **({"active_true_detail": active["n_truth"].mean(scale)} if key == "n" else {}),
            "active_vs_flat_se": scale * paired_standard_error(faces[seen], flat_faces[seen]),
            "regions": ours,
            "regions_flat": baseline,
            **({} if refine is None else {"refined": refined_section(scale, key)}),
        }

    def refined_section(scale: float, key: str) -> dict:
        network, ours = active[key].faces(), refined[f"{key}_active"].faces()
        seen = ~torch.isnan(network)
        return {
            "face": refined[f"{key}_face"].mean(scale),
            "active": refined[f"{key}_active"].mean(scale),
            "from_flat_face": refined[f"{key}_flat_start_face"].mean(scale),
            "from_flat_active": refined[f"{key}_flat_start_active"].mean(scale),
            **(
                {
                    "coarse_flat_face": refined["n_coarse_face"].mean(scale),
                    "coarse_flat_active": refined["n_coarse_active"].mean(scale),
                }
                if key == "n"
                else {}
            ),
            "active_vs_network_se": scale * paired_standard_error(ours[seen], network[seen]),
        }

    inputs = torch.cat(input_scores) >= 0.5
    renders = torch.cat(render_scores) >= 0.5
    labels = torch.cat(truth)
    per_au = binary_f1(renders, inputs)
    consistency = {
        "f1_mean": _nanmean(per_au),
        "per_au": {name: float(value) for name, value in zip(MAIN_AUS, per_au.tolist(), strict=True)},
        "input_vs_truth_f1": _nanmean(binary_f1(inputs, labels)),
        "render_vs_truth_f1": _nanmean(binary_f1(renders, labels)),
    }
    return (
        {
            "displacement_mae": section(displacement, displacement_flat, CM_TO_MM, "d"),
            "normal_error_deg": section(normals, normals_flat, 1.0, "n"),
        },
        consistency,
        reconstructions,
    )


def neutral(reconstructor: Reconstructor, rec: Reconstruction) -> Reconstruction:
    """``rec`` with every AU intensity (and, on the built-in face, the expression) set to 0."""
    return reconstructor.edit(rec, dict.fromkeys(MAIN_AUS, 0.0))


def edit_response(
    reconstructor: Reconstructor,
    base: Reconstruction,
    au: str,
    intensities: Sequence[float] = EDIT_INTENSITIES,
    true_change: torch.Tensor | None = None,
) -> dict:
    """How ``au``'s wrinkle regions respond when ``au`` alone is raised on ``base`` (e.g. neutral faces).

    Args:
        true_change: optional ``(B, S, S)`` (cm): the world's own displacement change of each face when
            ``au`` goes from the first to the last intensity (its wrinkle basis times the intensity step).

    Returns ``region_energy`` and ``outside_energy`` (mean squared displacement, mm², per intensity),
    ``locality`` (share of the first → last displacement change inside the regions) and ``monotonic``;
    with ``true_change`` also ``gain`` (root-mean-square of the edit's change inside the regions over the
    world's, both over the same faces: 1 draws folds as deep as the world's) and ``agreement`` (the cosine
    of the two changes inside the regions: 1 also puts every groove where the world does).
    """
    skin = reconstructor.coarse.uv_space.skin.cpu()[0, 0]
    inside = au_region_mask(au, skin.shape[-1]) * skin
    outside = (1 - au_region_mask(au, skin.shape[-1])) * skin
    displacements = []
    for value in intensities:
        edited = reconstructor.edit(base, {au: value})
        displacements.append(edited.detail.uv_displacement.cpu()[:, 0] * CM_TO_MM)

    def energy(values: torch.Tensor, mask: torch.Tensor) -> float:
        return float((values.square() * mask).sum() / (mask.sum() * values.shape[0]).clamp(min=1))

    difference = displacements[-1] - displacements[0]
    change = difference.square()
    total_change = float((change * skin).sum())
    region = [energy(d, inside) for d in displacements]
    tolerance = MONOTONIC_TOLERANCE * max(max(region), 1e-12)
    return {
        "region_energy": region,
        "outside_energy": [energy(d, outside) for d in displacements],
        "locality": float((change * inside).sum()) / total_change if total_change > 0 else float("nan"),
        "monotonic": all(b >= a - tolerance for a, b in itertools.pairwise(region)),
        **(
            _versus_truth(difference, true_change.cpu() * CM_TO_MM, inside) if true_change is not None else {}
        ),
    }


def _versus_truth(change: torch.Tensor, truth: torch.Tensor, inside: torch.Tensor) -> dict[str, float]:
    """``gain`` and ``agreement`` of an edit's ``change`` against the world's ``truth`` ``(B, S, S)``."""
    predicted, true = (change * inside).double(), (truth * inside).double()
    true_energy, predicted_energy = float(true.square().sum()), float(predicted.square().sum())
    if true_energy <= 0:
        return {"gain": float("nan"), "agreement": float("nan")}
    agreement = float((predicted * true).sum()) / max((true_energy * predicted_energy) ** 0.5, 1e-30)
    return {"gain": (predicted_energy / true_energy) ** 0.5, "agreement": agreement}


def edit_metrics(
    reconstructor: Reconstructor,
    reconstructions: Sequence[Reconstruction],
    aus: Sequence[str] = tuple(AU_WRINKLE_REGIONS),
    intensities: Sequence[float] = EDIT_INTENSITIES,
    progress: Callable[[int], object] | None = None,
    wrinkle_bases: torch.Tensor | None = None,
) -> dict:
    """The ``edit`` section: :func:`edit_response` of each AU on the neutralised reconstructions; with
    ``wrinkle_bases`` ``(N, 27, S, S)`` (cm, each face's identity's displacement per AU at intensity 1,
    :func:`aucgan.data.wrinkles.au_wrinkle_basis`) also each AU's ``gain`` and ``agreement``."""
    bases = [neutral(reconstructor, rec) for rec in reconstructions]
    base = Reconstruction.concatenate(bases)
    step = intensities[-1] - intensities[0]
    per_au = {}
    for au in aus:
        truth = None if wrinkle_bases is None else wrinkle_bases[:, MAIN_AUS.index(au)] * step
        per_au[au] = edit_response(reconstructor, base, au, intensities, truth)
        if progress is not None:
            progress(1)
    return {"intensities": list(intensities), "per_au": per_au}

"""Tests of the evaluation metrics: F1, angles, detail errors against ground truth, AU-edit response."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aucgan.au import MAIN_AUS
from aucgan.build import world_parameters
from aucgan.data.shards import SyntheticFaces
from aucgan.data.synthetic import collate
from aucgan.evaluate.metrics import (
    CM_TO_MM,
    EDIT_INTENSITIES,
    angle_degrees,
    binary_f1,
    detail_errors,
    edit_metrics,
    edit_response,
    half_resolution,
    neutral,
    true_coarse,
)
from aucgan.face_model.regions import AU_WRINKLE_REGIONS, region_mask

# F1 ------------------------------------------------------------------------------------------------------


def reference_f1(predicted: np.ndarray, target: np.ndarray) -> list[float]:
    """F1 = 2 TP / (2 TP + FP + FN) per column, NaN for a column without positives, by counting."""
    scores = []
    for k in range(target.shape[1]):
        tp = fp = fn = 0
        for n in range(target.shape[0]):
            p, t = bool(predicted[n, k]), bool(target[n, k])
            tp += p and t
            fp += p and not t
            fn += t and not p
        scores.append(math.nan if tp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return scores


def test_binary_f1_of_a_hand_computed_case():
    # columns: 2 TP, 1 FP, 1 FN | no positive (one FP) | 1 FN only | perfect
    target = torch.tensor([[1, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    predicted = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    f1 = binary_f1(predicted, target)

    assert f1.shape == (4,)
    assert f1[0].item() == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert math.isnan(f1[1].item())
    assert f1[2].item() == 0.0
    assert f1[3].item() == 1.0


def test_binary_f1_matches_a_counting_loop():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(40, len(MAIN_AUS), generator=generator) < 0.3
    target[:, [3, 11]] = False  # AUs that never occur
    predicted = torch.rand(40, len(MAIN_AUS), generator=generator) < 0.4
    expected = torch.tensor(reference_f1(predicted.numpy(), target.numpy()), dtype=torch.float64)

    torch.testing.assert_close(binary_f1(predicted, target), expected, equal_nan=True)
    assert torch.isnan(binary_f1(predicted, target)[[3, 11]]).all()


def test_binary_f1_of_nothing_predicted_and_nothing_true_is_nan():
    empty = torch.zeros(6, 2, dtype=torch.bool)
    assert torch.isnan(binary_f1(empty, empty)).all()


def test_angle_degrees():
    x, y = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    diagonal = torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2)
    a = torch.stack([x, x, x, x]).T.reshape(1, 3, 2, 2)
    b = torch.stack([x, y, -x, diagonal]).T.reshape(1, 3, 2, 2)
    angles = angle_degrees(a, b)

    assert angles.shape == (1, 1, 2, 2)
    torch.testing.assert_close(angles.flatten(), torch.tensor([0.0, 90.0, 180.0, 45.0]), atol=1e-3, rtol=0)


# Detail errors ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truth_batch(random_reconstructor):
    dataset = SyntheticFaces(world_parameters(random_reconstructor.cfg), "test", 3)
    return collate([dataset[i] for i in range(len(dataset))])


def test_detail_errors_against_an_independent_computation(random_reconstructor, truth_batch):
    calls = []
    sections, consistency, reconstructions = detail_errors(random_reconstructor, [truth_batch], calls.append)

    skin = random_reconstructor.coarse.uv_space.skin[0, 0].double()
    predicted = random_reconstructor(truth_batch.image).detail.uv_displacement[:, 0].double()
    truth = truth_batch.uv_displacement[:, 0].double()
    n = truth.shape[0]

    def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
        return float((values * mask).sum() / (mask.sum() * n))

    mae = sections["displacement_mae"]
    assert calls == [n]
    assert len(reconstructions) == 1
    assert mae["face"] == pytest.approx(CM_TO_MM * masked_mean((predicted - truth).abs(), skin), rel=1e-5)
    assert mae["flat"] == pytest.approx(CM_TO_MM * masked_mean(truth.abs(), skin), rel=1e-5)
    chin = region_mask("chin", skin.shape[-1]).double() * skin
    assert mae["regions"]["chin"] == pytest.approx(CM_TO_MM * masked_mean((predicted - truth).abs(), chin))
    assert mae["regions_flat"]["chin"] == pytest.approx(CM_TO_MM * masked_mean(truth.abs(), chin))
    per_face = ((predicted - truth).abs() - truth.abs()).mul(skin).sum((1, 2)) / skin.sum()
    expected_se = CM_TO_MM * float(per_face.std(unbiased=True)) / math.sqrt(n)
    assert mae["face_vs_flat_se"] == pytest.approx(expected_se, rel=1e-4)
    assert mae["face_vs_flat_se"] > 0
    normals = sections["normal_error_deg"]
    assert 0.0 <= normals["face"] <= 180.0
    assert 0.0 <= normals["flat"] <= 180.0
    assert set(consistency["per_au"]) == set(MAIN_AUS)
    for key in ("f1_mean", "input_vs_truth_f1", "render_vs_truth_f1"):
        value = consistency[key]
        assert math.isnan(value) or 0.0 <= value <= 1.0, key


# Edit response ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def neutral_faces(random_reconstructor):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    return neutral(random_reconstructor, random_reconstructor(images))


def test_neutral_sets_every_au_to_zero(neutral_faces):
    assert torch.equal(neutral_faces.condition.intensities, torch.zeros(2, len(MAIN_AUS)))
    assert torch.equal(neutral_faces.coarse.codes.expression, torch.zeros(2, len(MAIN_AUS)))


def _nasolabial(size: int) -> torch.Tensor:
    return torch.maximum(region_mask("nasolabial_right", size), region_mask("nasolabial_left", size))


def test_edit_response_of_the_random_reconstructor(random_reconstructor, neutral_faces):
    response = edit_response(random_reconstructor, neutral_faces, "AU12")

    assert len(response["region_energy"]) == len(EDIT_INTENSITIES)
    assert len(response["outside_energy"]) == len(EDIT_INTENSITIES)
    assert all(value >= 0 for value in response["region_energy"] + response["outside_energy"])
    assert 0.0 <= response["locality"] <= 1.0
    assert isinstance(response["monotonic"], bool)
    # Region energy at intensity 1, computed from an edit made here.
    skin = random_reconstructor.coarse.uv_space.skin[0, 0]
    inside = _nasolabial(skin.shape[-1]) * skin
    edited = random_reconstructor.edit(neutral_faces, {"AU12": 1.0}).detail.uv_displacement[:, 0] * CM_TO_MM
    expected = float((edited.square() * inside).sum() / (inside.sum() * 2))
    assert response["region_energy"][-1] == pytest.approx(expected, rel=1e-5)
    base = neutral_faces.detail.uv_displacement[:, 0] * CM_TO_MM
    assert response["region_energy"][0] == pytest.approx(
        float((base.square() * inside).sum() / (inside.sum() * 2))
    )


def test_edit_response_takes_the_intensities_given(random_reconstructor, neutral_faces):
    response = edit_response(random_reconstructor, neutral_faces, "AU1", intensities=(0.0, 1.0))
    assert len(response["region_energy"]) == 2


SIZE = 64


def fake_reconstructor(displacement_at) -> SimpleNamespace:
    """A stand-in with ``.edit`` and ``.coarse.uv_space.skin``: ``displacement_at(intensity)`` gives the
    ``(S, S)`` displacement (cm) of its one face after setting the AU to that intensity."""
    skin = torch.ones(1, 1, SIZE, SIZE)
    skin[..., :, :4] = 0  # a margin that is not skin

    def edit(base, intensities):
        ((_, value),) = intensities.items()
        return SimpleNamespace(detail=SimpleNamespace(uv_displacement=displacement_at(value)[None, None]))

    return SimpleNamespace(edit=edit, coarse=SimpleNamespace(uv_space=SimpleNamespace(skin=skin)))


def test_edit_inside_the_region_only_is_local_and_monotonic():
    inside = _nasolabial(SIZE)
    background = torch.zeros(SIZE, SIZE)
    background[:8, 10:20] = 0.01  # displacement outside the region, the same at every intensity
    amplitude = 0.02
    response = edit_response(fake_reconstructor(lambda v: background + v * amplitude * inside), None, "AU12")

    assert response["locality"] == pytest.approx(1.0)
    assert response["monotonic"] is True
    expected = [(CM_TO_MM * amplitude * v) ** 2 for v in EDIT_INTENSITIES]
    assert response["region_energy"] == pytest.approx(expected)
    outside = (1 - inside)[:, 4:]
    expected_outside = float((CM_TO_MM * background[:, 4:]).square().sum() / outside.sum())
    assert response["outside_energy"] == pytest.approx([expected_outside] * len(EDIT_INTENSITIES))


def test_edit_that_spills_outside_has_the_share_inside_as_locality():
    inside = _nasolabial(SIZE)
    spill = torch.zeros(SIZE, SIZE)
    spill[:6, :12] = 1.0  # 6 x 8 skin texels (4 columns are not skin), none in the region
    assert float((spill * inside).sum()) == 0
    a, b = 0.02, 0.01
    response = edit_response(fake_reconstructor(lambda v: v * (a * inside + b * spill)), None, "AU12")

    n_inside, n_spill = float(inside[:, 4:].sum()), 6 * 8
    assert response["locality"] == pytest.approx(a**2 * n_inside / (a**2 * n_inside + b**2 * n_spill))


def test_edit_whose_wrinkles_fade_as_the_au_rises_is_not_monotonic():
    inside = _nasolabial(SIZE)
    response = edit_response(fake_reconstructor(lambda v: (1 - v) * 0.02 * inside), None, "AU12")

    assert response["monotonic"] is False
    assert response["region_energy"] == sorted(response["region_energy"], reverse=True)


@pytest.mark.parametrize(("dip", "monotonic"), [(1e-6, True), (0.05, False)])
def test_monotonic_tolerates_float_noise_only(dip, monotonic):
    inside = _nasolabial(SIZE)
    scale = {0.0: 0.0, 0.5: 1.0, 1.0: 1.0 - dip}
    response = edit_response(
        fake_reconstructor(lambda v: scale[v] * 0.02 * inside), None, "AU12", intensities=(0.0, 0.5, 1.0)
    )
    assert response["monotonic"] is monotonic


def test_edit_with_no_change_has_nan_locality():
    response = edit_response(fake_reconstructor(lambda v: torch.zeros(SIZE, SIZE)), None, "AU12")
    assert math.isnan(response["locality"])


def test_edit_metrics_sections(random_reconstructor, neutral_faces):
    done = []
    section = edit_metrics(
        random_reconstructor, [neutral_faces, neutral_faces], ("AU12", "AU4"), (0.0, 1.0), done.append
    )

    assert section["intensities"] == [0.0, 1.0]
    assert list(section["per_au"]) == ["AU12", "AU4"]
    assert done == [1, 1]
    both = edit_response(random_reconstructor, neutral_faces, "AU4", (0.0, 1.0))
    # Two copies of the same faces: the same means.
    assert section["per_au"]["AU4"]["region_energy"] == pytest.approx(both["region_energy"], rel=1e-5)


def test_edit_gain_and_agreement_against_the_worlds_change():
    inside = _nasolabial(SIZE)
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(SIZE, SIZE, generator=generator) * 0.02 * inside
    other = torch.randn(SIZE, SIZE, generator=generator) * 0.02 * inside
    step = EDIT_INTENSITIES[-1] - EDIT_INTENSITIES[0]

    exact = edit_response(
        fake_reconstructor(lambda v: v * truth), None, "AU12", true_change=truth[None] * step
    )
    assert exact["gain"] == pytest.approx(1.0) and exact["agreement"] == pytest.approx(1.0)
    half = edit_response(fake_reconstructor(lambda v: 0.5 * v * truth), None, "AU12", true_change=truth[None])
    assert half["gain"] == pytest.approx(0.5) and half["agreement"] == pytest.approx(1.0)
    # A change of the right size in the wrong place: full gain, agreement the cosine of the two maps.
    wrong = edit_response(fake_reconstructor(lambda v: v * other), None, "AU12", true_change=truth[None])
    cosine = float((other * truth).sum() / (other.norm() * truth.norm()))
    assert wrong["agreement"] == pytest.approx(cosine, abs=1e-6) and abs(cosine) < 0.2
    assert wrong["gain"] == pytest.approx(float(other.norm() / truth.norm()), rel=1e-5)
    assert "gain" not in edit_response(fake_reconstructor(lambda v: v * truth), None, "AU12")


def test_half_resolution_keeps_what_half_the_texels_hold_and_loses_finer_detail():
    smooth = torch.linspace(0, 1, 32)[None, None, None].expand(2, 1, 32, 32)
    torch.testing.assert_close(
        half_resolution(smooth)[..., 2:-2, 2:-2], smooth[..., 2:-2, 2:-2], atol=1e-6, rtol=0
    )
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 1.0
    assert half_resolution(checker[None, None]).std() < 1e-6  # a texel-scale pattern averages away


def test_active_region_errors_against_an_independent_computation(random_reconstructor, truth_batch):
    sections, _, _ = detail_errors(random_reconstructor, [truth_batch])
    rec = random_reconstructor(truth_batch.image)
    size = random_reconstructor.coarse.uv_space.size
    skin = random_reconstructor.coarse.uv_space.skin[0].double()
    masks = []
    for occurrence in truth_batch.au_occurrence:
        union = torch.zeros(size, size, dtype=torch.float64)
        for au, present in zip(MAIN_AUS, occurrence.tolist(), strict=True):
            if present and au in AU_WRINKLE_REGIONS:
                for name in AU_WRINKLE_REGIONS[au]:
                    union = torch.maximum(union, region_mask(name, size).double())
        masks.append(union * skin[0])
    mask = torch.stack(masks)
    assert mask.sum() > 0
    truth = truth_batch.uv_displacement[:, 0].double()
    predicted = rec.detail.uv_displacement[:, 0].double()
    mae = sections["displacement_mae"]
    assert mae["active"] == pytest.approx(
        CM_TO_MM * float(((predicted - truth).abs() * mask).sum() / mask.sum())
    )
    assert mae["active_flat"] == pytest.approx(CM_TO_MM * float((truth.abs() * mask).sum() / mask.sum()))
    half = half_resolution(truth_batch.uv_displacement)[:, 0].double()
    assert mae["active_half_res"] == pytest.approx(
        CM_TO_MM * float(((half - truth).abs() * mask).sum() / mask.sum())
    )
    normals = sections["normal_error_deg"]
    flat = angle_degrees(rec.coarse.surface.normals, truth_batch.uv_detail_normals.float())[:, 0].double()
    assert normals["active_flat"] == pytest.approx(float((flat * mask).sum() / mask.sum()), rel=1e-5)
    assert normals["active"] >= 0 and normals["active_half_res"] >= 0
    assert mae["active_vs_flat_se"] > 0
    on_coarse = random_reconstructor.coarse.uv_space.detail_normals(
        rec.coarse.surface, truth_batch.uv_displacement
    )
    exact = angle_degrees(on_coarse, truth_batch.uv_detail_normals.float())[:, 0].double()
    assert normals["active_true_detail"] == pytest.approx(float((exact * mask).sum() / mask.sum()), rel=1e-5)
    assert "active_true_detail" not in mae  # the truth's own displacement error is zero by definition


def test_ground_truth_coarse_measures_the_detail_stage_alone(random_reconstructor, truth_batch):
    sections, _, (rec,) = detail_errors(random_reconstructor, [truth_batch], ground_truth_coarse=True)
    coarse = true_coarse(random_reconstructor, truth_batch)
    torch.testing.assert_close(rec.coarse.vertices, coarse.vertices)
    skin = random_reconstructor.coarse.uv_space.skin[0, 0].double()
    truth = truth_batch.uv_detail_normals.float()
    flat = angle_degrees(coarse.surface.normals, truth)[:, 0].double()
    expected = float((flat * skin).sum() / (skin.sum() * flat.shape[0]))
    assert sections["normal_error_deg"]["flat"] == pytest.approx(expected, rel=1e-5)
    # Through the true fit, a flat prediction's error is the detail's own: well under the coarse stage's.
    through_network, _, _ = detail_errors(random_reconstructor, [truth_batch])
    assert sections["normal_error_deg"]["flat"] < through_network["normal_error_deg"]["flat"]
    # The true detail on the true coarse fit is the truth (up to the float16 truth normals); through the
    # coarse stage the coarse fit's error stays in it.
    assert sections["normal_error_deg"]["active_true_detail"] < 0.1
    assert through_network["normal_error_deg"]["active_true_detail"] > 1.0


def test_with_the_true_coarse_fit_the_au_fit_never_starts_from_the_true_expression(
    random_reconstructor, truth_batch, monkeypatch
):
    from aucgan.config import RefineConfig

    seen = []
    real_refine = random_reconstructor.refine

    def refine(reconstruction, photo=None, settings=None, from_flat=False, progress=None):
        seen.append(settings)
        return real_refine(reconstruction, photo, settings, from_flat, progress)

    monkeypatch.setattr(random_reconstructor, "refine", refine)
    settings = RefineConfig(mode="always", steps=1, au_steps=1, coarse_steps=2, au_start="expression")
    detail_errors(random_reconstructor, [truth_batch], ground_truth_coarse=True, refine=settings)
    assert seen and all(s.au_start == "au-net" and s.coarse_steps == 0 for s in seen)
    seen.clear()
    detail_errors(random_reconstructor, [truth_batch], refine=settings)
    assert seen and all(s.au_start == "expression" for s in seen)

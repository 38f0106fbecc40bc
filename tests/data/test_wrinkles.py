"""Tests of the synthetic world's ground-truth wrinkles (:mod:`aucgan.data.wrinkles`).

The central property (issue "Done when" 3): for each wrinkle-producing AU, on several identities, the
displacement energy inside the AU's regions grows strictly with its intensity while the displacement outside
them does not change at all.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from aucgan.au import MAIN_AUS
from aucgan.data.synthetic import SyntheticWorld
from aucgan.data.wrinkles import (
    FOLDS,
    WRINKLE_AUS,
    Fold,
    au_wrinkle_basis,
    fold_pattern,
    max_displacement,
    neutral_style,
    sample_style,
    static_detail,
    wrinkle_displacement,
)
from aucgan.face_model.regions import AU_WRINKLE_REGIONS, UV_REGIONS, region_mask, texel_centres

SIZE = 128
INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
IDENTITIES = (0, 1, 5)


@pytest.fixture(scope="module")
def identities():
    world = SyntheticWorld(seed=11, image_size=32, uv_size=SIZE)
    return [world.identity(i) for i in IDENTITIES]


def regions_of(au: str, size: int = SIZE) -> torch.Tensor:
    """Union of the hard masks of the AU's regions, ``(size, size)`` bool."""
    inside = torch.zeros(size, size, dtype=torch.bool)
    for name in AU_WRINKLE_REGIONS[au]:
        inside |= region_mask(name, size) > 0
    return inside


def only(au: str, intensity: float) -> torch.Tensor:
    expression = torch.zeros(len(MAIN_AUS))
    expression[MAIN_AUS.index(au)] = intensity
    return expression


def test_wrinkle_aus_are_exactly_the_aus_with_folds():
    assert set(WRINKLE_AUS) == set(FOLDS) == set(AU_WRINKLE_REGIONS)
    assert list(WRINKLE_AUS) == [au for au in MAIN_AUS if au in FOLDS]  # OpenGraphAU order


@pytest.mark.parametrize("au", sorted(FOLDS))
def test_every_au_folds_exactly_its_regions(au):
    assert {fold.region for fold in FOLDS[au]} == set(AU_WRINKLE_REGIONS[au])


@pytest.mark.parametrize("au", WRINKLE_AUS)
def test_energy_grows_with_intensity_inside_the_regions_and_nothing_changes_outside(identities, au):
    inside = regions_of(au)
    assert inside.any() and not inside.all()
    for person in identities:
        energy_in, energy_out = [], []
        for intensity in INTENSITIES:
            displacement = wrinkle_displacement(
                only(au, intensity), person.wrinkle_basis, person.static_detail
            )
            assert displacement.shape == (1, SIZE, SIZE)
            displacement = displacement[0]
            energy_in.append(float(displacement[inside].square().mean()))
            energy_out.append(float(displacement[~inside].square().mean()))
            driven = displacement - person.static_detail
            assert torch.count_nonzero(driven[~inside]) == 0, f"{au} changes the displacement outside"
            if intensity > 0:
                assert torch.count_nonzero(driven[inside]) > 0
        assert all(b > a for a, b in itertools.pairwise(energy_in)), (au, energy_in)
        # The folds dominate the resting detail of their own region at full intensity.
        assert energy_in[-1] > 2.0 * energy_in[0], (au, energy_in)
        assert energy_out[0] > 0.0  # pores everywhere: the relative bound below is not vacuous
        for energy in energy_out:
            assert abs(energy - energy_out[0]) < 0.05 * energy_out[0], (au, energy_out)


def test_displacement_matches_a_plain_sum_over_aus(identities):
    person = identities[0]
    generator = torch.Generator().manual_seed(3)
    intensities = torch.rand(4, len(MAIN_AUS), generator=generator) * (
        torch.rand(4, len(MAIN_AUS), generator=generator) < 0.3
    )
    batched = wrinkle_displacement(intensities, person.wrinkle_basis, person.static_detail)
    assert batched.shape == (4, 1, SIZE, SIZE)
    for row in range(4):
        reference = person.static_detail.clone()
        for k in range(len(MAIN_AUS)):
            reference = reference + intensities[row, k] * person.wrinkle_basis[k]
        torch.testing.assert_close(batched[row, 0], reference, rtol=1e-5, atol=1e-7)
        single = wrinkle_displacement(intensities[row], person.wrinkle_basis, person.static_detail)
        torch.testing.assert_close(single, batched[row], rtol=1e-6, atol=1e-8)
    # each face its own basis and static detail: the same as one face at a time
    people = list(identities)
    bases = torch.stack([p.wrinkle_basis for p in people])
    statics = torch.stack([p.static_detail for p in people])
    own = wrinkle_displacement(intensities[: len(people)], bases, statics)
    assert own.shape == (len(people), 1, SIZE, SIZE)
    for row, p in enumerate(people):
        alone = wrinkle_displacement(intensities[row], p.wrinkle_basis, p.static_detail)
        torch.testing.assert_close(own[row], alone, rtol=1e-6, atol=1e-8)


def test_displacement_rejects_a_wrong_number_of_aus(identities):
    person = identities[0]
    with pytest.raises(ValueError, match=r"\(26,\)"):
        wrinkle_displacement(torch.zeros(26), person.wrinkle_basis, person.static_detail)


def test_basis_is_zero_for_aus_without_folds_and_outside_each_aus_regions(identities):
    for person in identities:
        assert person.wrinkle_basis.shape == (len(MAIN_AUS), SIZE, SIZE)
        for k, au in enumerate(MAIN_AUS):
            if au not in FOLDS:
                assert torch.count_nonzero(person.wrinkle_basis[k]) == 0, au
                continue
            inside = regions_of(au)
            assert torch.count_nonzero(person.wrinkle_basis[k][~inside]) == 0, au
            # Folds press the skin inwards (negative) more than they push it out.
            assert person.wrinkle_basis[k][inside].min() < -0.5 * person.wrinkle_basis[k].abs().max(), au


def test_identities_wrinkle_differently(identities):
    first, second = identities[0], identities[1]
    for au in WRINKLE_AUS:
        k = MAIN_AUS.index(au)
        assert not torch.equal(first.wrinkle_basis[k], second.wrinkle_basis[k]), au
    assert not torch.equal(first.static_detail, second.static_detail)


def test_average_identity_folds_have_the_table_depth():
    """Furrows and pits reach their full table depth (cm at intensity 1) at their centre line."""
    basis = au_wrinkle_basis(neutral_style(), 256)
    for au in ("AU10", "AU11", "AU12", "AU14"):
        expected = max(fold.depth for fold in FOLDS[au])
        deepest = -float(basis[MAIN_AUS.index(au)].min())
        assert math.isclose(deepest, expected, rel_tol=0.05), (au, deepest, expected)


def test_neutral_style_has_no_static_detail():
    assert torch.count_nonzero(static_detail(neutral_style(), 64)) == 0


def test_parallel_lines_follow_the_groove_profile_across_their_direction():
    """A straight ``lines`` fold at angle 0 equals ``-((1 + cos(2π (v - v0) / spacing)) / 2)^4`` where its
    soft mask is 1 (reference computed texel by texel)."""
    fold = Fold("forehead_centre", "lines", depth=1.0, angle=0.0, spacing=0.02)
    uv = texel_centres(SIZE)
    pattern = fold_pattern(fold, uv, spacing=1.1, phase=0.4)
    core = region_mask(fold.region, SIZE, soft=True) == 1.0
    assert core.sum() > 50
    centre_v = UV_REGIONS[fold.region].centre[1]
    for i, j in core.nonzero().tolist():
        v = 1.0 - (i + 0.5) / SIZE
        x = 2.0 * math.pi * (v - centre_v) / (0.02 * 1.1) + 0.4
        expected = -(((1.0 + math.cos(x)) / 2.0) ** 4)
        assert math.isclose(float(pattern[i, j]), expected, abs_tol=2e-4), (i, j)
    assert float(pattern.min()) >= -1.0 and float(pattern.max()) <= 0.0


@pytest.mark.parametrize("au", [au for au in WRINKLE_AUS if FOLDS[au][0].region.endswith("_right")])
def test_left_folds_mirror_the_right_ones(au):
    right, left = FOLDS[au]
    assert left.region == right.region.replace("_right", "_left")
    uv = texel_centres(SIZE)
    mirrored = fold_pattern(left, uv, spacing=0.9, phase=1.3).flip(-1)
    torch.testing.assert_close(mirrored, fold_pattern(right, uv, spacing=0.9, phase=1.3), atol=1e-4, rtol=0)


def test_every_fold_pattern_is_bounded_and_confined_to_its_region():
    # 512 texels resolve the finest grooves (period 0.014 UV); coarser maps point-sample them.
    size = 512
    uv = texel_centres(size)
    for au, folds in FOLDS.items():
        for fold in folds:
            pattern = fold_pattern(fold, uv, seed=5)
            outside = region_mask(fold.region, size) == 0
            assert torch.count_nonzero(pattern[outside]) == 0, (au, fold.region)
            assert pattern.abs().max() <= 1.0 and pattern.abs().max() > 0.2, (au, fold.kind)


def test_unknown_fold_kind_is_refused():
    with pytest.raises(ValueError, match="spiral"):
        fold_pattern(Fold("chin", "spiral", 0.1), texel_centres(16))


def test_style_is_deterministic_and_in_its_documented_ranges():
    styles = [sample_style(torch.Generator().manual_seed(seed)) for seed in range(20)]
    again = sample_style(torch.Generator().manual_seed(0))
    assert torch.equal(again.depth, styles[0].depth) and again.seed == styles[0].seed
    for style in styles:
        assert style.depth.shape == style.spacing.shape == style.phase.shape == (len(MAIN_AUS),)
        assert (style.depth > 0).all()
        assert ((style.spacing >= 0.85) & (style.spacing <= 1.15)).all()
        assert ((style.phase >= 0) & (style.phase < 2 * math.pi)).all()
        assert 0.0 <= style.static_lines <= 0.6
        assert 0.001 <= style.pore_depth <= 0.004
    assert len({style.seed for style in styles}) == len(styles)
    # Age scales depth and resting lines together.
    ages = torch.tensor([style.static_lines for style in styles])
    depths = torch.stack([style.depth.mean() for style in styles])
    assert torch.corrcoef(torch.stack([ages, depths]))[0, 1] > 0.5


def test_no_face_of_the_world_displaces_beyond_max_displacement():
    bound = max_displacement(64)
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(12):
        style = sample_style(generator)
        basis = au_wrinkle_basis(style, 64)
        everything = wrinkle_displacement(torch.ones(len(MAIN_AUS)), basis, static_detail(style, 64))
        worst = max(worst, float(everything.abs().max()))
    assert 0.1 < worst <= bound  # every AU at 1 on random identities: deep, and never past the bound
    assert bound == pytest.approx(max_displacement(256), rel=0.2)  # a property of the world, not the grid


@pytest.mark.parametrize("preset", ["default", "synthetic", "synthetic-tiny"])
def test_the_built_in_face_presets_can_represent_the_worlds_deepest_fold(preset):
    from aucgan.config import Config, load_config

    cfg = load_config(Config, preset, [])
    assert cfg.face_model.kind == "procedural"
    assert cfg.model.max_z >= max_displacement(256)

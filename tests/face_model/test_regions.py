import pytest
import torch

from aucgan.au import MAIN_AUS
from aucgan.face_model.appearance import BROW_RIGHT, default_albedo
from aucgan.face_model.procedural import load_canonical_mesh
from aucgan.face_model.regions import (
    AU_WRINKLE_REGIONS,
    UV_REGIONS,
    active_region_mask,
    au_region_mask,
    polygon_mask,
    region_mask,
    texel_centres,
)

SIZE = 128


@pytest.fixture(scope="module")
def mesh():
    return load_canonical_mesh()


def uv_of(mesh, indices):
    return torch.as_tensor(mesh.uvs[list(indices)], dtype=torch.float32)


def polygon_reference(polygon: torch.Tensor, point: torch.Tensor) -> bool:
    inside = False
    n = len(polygon)
    for k in range(n):
        (ua, va), (ub, vb) = polygon[k].tolist(), polygon[(k + 1) % n].tolist()
        if (va > point[1]) != (vb > point[1]):
            cross = ua + (point[1] - va) * (ub - ua) / (vb - va)
            if point[0] < cross:
                inside = not inside
    return inside


def test_polygon_mask_matches_plain_reference():
    g = torch.Generator().manual_seed(0)
    angles = torch.sort(torch.rand(9, generator=g) * 6.283)[0]
    radii = 0.2 + 0.25 * torch.rand(9, generator=g)
    polygon = torch.stack([0.5 + radii * angles.cos(), 0.5 + radii * angles.sin()], dim=-1)
    mask = polygon_mask(polygon, 32)
    centres = texel_centres(32)
    expected = torch.tensor(
        [[polygon_reference(polygon, centres[i, j]) for j in range(32)] for i in range(32)]
    )
    assert torch.equal(mask, expected)


def test_texel_centres_convention():
    c = texel_centres(4)
    assert torch.allclose(c[0, 0], torch.tensor([0.125, 0.875]))
    assert torch.allclose(c[3, 1], torch.tensor([0.375, 0.125]))


def test_every_region_lies_on_the_face_and_is_mirrored(mesh):
    face = polygon_mask(uv_of(mesh, mesh.rims["outer"]), SIZE)
    for name in UV_REGIONS:
        mask = region_mask(name, SIZE).bool()
        assert mask.sum() > 20, name
        assert (mask & face).sum() / mask.sum() > 0.97, name
        if name.endswith("_right"):
            twin = region_mask(name[: -len("right")] + "left", SIZE).bool()
            assert torch.equal(twin, mask.flip(-1)), name
        elif not name.endswith("_left"):
            assert torch.equal(mask, mask.flip(-1)), name


def test_soft_masks_fade_out_inside_the_hard_masks():
    for name in UV_REGIONS:
        hard, soft = region_mask(name, SIZE), region_mask(name, SIZE, soft=True)
        assert (soft <= hard).all() and soft.max() == 1.0 and soft.min() == 0.0
        assert soft[hard > 0].mean() > 0.5, name


def centroid(name):
    mask = region_mask(name, SIZE).bool()
    return texel_centres(SIZE)[mask].mean(0)


def test_regions_are_anatomically_placed(mesh):
    brow_top = uv_of(mesh, BROW_RIGHT)[:, 1].max()
    eye_r = uv_of(mesh, mesh.rims["eye_right"])
    outer_corner_u = eye_r[:, 0].min()
    mouth = uv_of(mesh, mesh.rims["mouth"])
    nose_wing = uv_of(mesh, (129,))[0]
    mouth_corner = uv_of(mesh, (61,))[0]
    assert centroid("forehead_centre")[1] > brow_top
    assert centroid("forehead_lateral_right")[1] > brow_top and centroid("forehead_lateral_right")[0] < 0.4
    assert centroid("crows_feet_right")[0] < outer_corner_u
    assert not (region_mask("crows_feet_right", SIZE).bool() & polygon_mask(eye_r, SIZE)).any()
    assert eye_r[:, 1].min() > centroid("lower_lid_right")[1] > uv_of(mesh, (4,))[0, 1]
    nasolabial = centroid("nasolabial_right")
    assert mouth_corner[1] < nasolabial[1] < nose_wing[1] and nasolabial[0] < nose_wing[0]
    assert centroid("chin")[1] < mouth[:, 1].min() and centroid("glabella")[1] > eye_r[:, 1].max()
    assert centroid("mouth_corner_right")[0] < mouth_corner[0]
    assert centroid("below_mouth_corner_right")[1] < mouth_corner[1]


def test_au_regions_name_real_aus_and_regions():
    for au, regions in AU_WRINKLE_REGIONS.items():
        assert au in MAIN_AUS
        assert set(regions) <= set(UV_REGIONS)


def test_unknown_region_is_named_in_the_error():
    with pytest.raises(ValueError, match="forehead_centre"):
        region_mask("forehead", SIZE)


def test_default_albedo_colours_the_parts(mesh):
    rims = {k: torch.as_tensor(v) for k, v in mesh.rims.items()}
    albedo = default_albedo(torch.as_tensor(mesh.uvs), rims, SIZE)
    assert albedo.shape == (3, SIZE, SIZE) and albedo.min() >= 0 and albedo.max() <= 1
    centres = texel_centres(SIZE)

    def at(uv):
        index = ((centres - torch.as_tensor(uv)) ** 2).sum(-1).argmin()
        return albedo.reshape(3, -1)[:, index]

    skin, lip = at(mesh.uvs[205]), at((mesh.uvs[0] + mesh.uvs[13]) / 2)
    brow = at(mesh.uvs[[105, 52]].mean(0))
    assert lip[0] > lip[1] + 0.2 and brow.sum() < 0.5 * skin.sum()


def test_active_region_mask_is_the_union_of_the_occurring_aus_regions():
    occurrence = torch.zeros(3, len(MAIN_AUS), dtype=torch.bool)
    occurrence[0, MAIN_AUS.index("AU12")] = True
    occurrence[1, MAIN_AUS.index("AU1")] = occurrence[1, MAIN_AUS.index("AU4")] = True
    occurrence[2, MAIN_AUS.index("AU5")] = True  # no folds
    masks = active_region_mask(occurrence, 64)
    assert masks.shape == (3, 1, 64, 64)
    torch.testing.assert_close(masks[0, 0], au_region_mask("AU12", 64))
    expected = torch.maximum(region_mask("forehead_centre", 64), region_mask("glabella", 64))
    expected = torch.maximum(expected, region_mask("nasion", 64))
    torch.testing.assert_close(masks[1, 0], expected)
    assert masks[2].sum() == 0
    with pytest.raises(ValueError, match=r"\(3, 26\)"):
        active_region_mask(occurrence[:, :26], 64)

"""Tests of the synthetic world's preview pictures (:mod:`aucgan.data.sheets`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aucgan.au import MAIN_AUS
from aucgan.data.sheets import (
    SWEEP_INTENSITIES,
    au_sweep_sheet,
    contact_sheet,
    region_box,
    sweep_renders,
)
from aucgan.data.synthetic import SyntheticWorld
from aucgan.data.wrinkles import WRINKLE_AUS
from aucgan.face_model.regions import AU_WRINKLE_REGIONS, UV_REGIONS, ellipse_radius

SIZE = 128


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(seed=2, image_size=SIZE, uv_size=SIZE)


def load_png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_contact_sheet_is_a_png_grid_of_the_samples(world, tmp_path):
    samples = [world.sample(i) for i in range(5)]
    path = tmp_path / "nested" / "contact.png"
    assert contact_sheet(samples, path, columns=3) == path
    pixels = load_png(path)
    height, width = pixels.shape[:2]
    # Two rows of three cells, each large enough to show a face.
    assert width >= 3 * 150 and height >= 2 * 150
    assert width / 3 > 0.6 * height / 2
    assert pixels.std() > 20  # faces and titles, not a blank page


def test_sweep_renders_show_each_au_alone_on_one_identity(world):
    aus = ("AU1", "AU12", "AU17")
    images, displacement, uv = sweep_renders(world, 0, aus, SWEEP_INTENSITIES)
    assert images.shape == (len(aus), len(SWEEP_INTENSITIES), 3, SIZE, SIZE)
    assert displacement.shape == (len(aus), SIZE, SIZE)
    assert uv.shape == (2, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1
    person = world.identity(0)
    for row, au in enumerate(aus):
        # At intensity 0 every row is the same neutral face; at 1 the AU's wrinkles are its basis.
        torch.testing.assert_close(images[row, 0], images[0, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(
            displacement[row], person.wrinkle_basis[MAIN_AUS.index(au)], rtol=0, atol=1e-6
        )
        region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        for name in AU_WRINKLE_REGIONS[au]:
            region |= ellipse_radius(UV_REGIONS[name], uv.permute(1, 2, 0)) <= 1.0
        assert region.any(), au
        change = (images[row, -1] - images[row, 0]).abs().amax(0)
        assert change[region].mean() > 0.01, au


def test_region_box_is_a_square_crop_around_the_region(world):
    _, _, uv = sweep_renders(world, 0, ("AU4",), (0.0,))
    for au in ("AU1", "AU4", "AU12", "AU17"):
        regions = AU_WRINKLE_REGIONS[au][:1]
        rows, cols = region_box(uv, regions)
        assert 0 <= rows.start < rows.stop <= SIZE and 0 <= cols.start < cols.stop <= SIZE
        assert rows.stop - rows.start == cols.stop - cols.start
        inside = ellipse_radius(UV_REGIONS[regions[0]], uv.permute(1, 2, 0)) <= 1.0
        ys, xs = inside.nonzero(as_tuple=True)
        assert len(ys) > 0
        assert rows.start <= ys.min() and ys.max() < rows.stop, au
        assert cols.start <= xs.min() and xs.max() < cols.stop, au
    off_face = torch.full((2, SIZE, SIZE), -5.0)
    assert region_box(off_face, ("chin",)) == (slice(0, SIZE), slice(0, SIZE))


def test_au_sweep_sheet_has_a_row_per_wrinkle_au(world, tmp_path):
    path = tmp_path / "sweep" / "au_sweep.png"
    assert au_sweep_sheet(world, path, identity=1) == path
    pixels = load_png(path)
    height, width = pixels.shape[:2]
    columns = len(SWEEP_INTENSITIES) + 1
    assert width >= columns * 100 and height >= len(WRINKLE_AUS) * 100
    assert height > width  # 18 rows of 6 columns
    assert pixels.std() > 20

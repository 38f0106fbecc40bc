"""The weights shipped for the synthetic world: they load, and an AU edit does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aucgan.build import world_parameters
from aucgan.cli import main
from aucgan.data.synthetic import identity_in_split
from aucgan.export import write_image
from aucgan.face_model.regions import region_mask
from aucgan.reconstruct import SHIPPED_WEIGHTS, Reconstructor

NASOLABIAL = ("nasolabial_left", "nasolabial_right")
FOREHEAD = ("forehead_centre", "forehead_lateral_left", "forehead_lateral_right")


@pytest.fixture(scope="module")
def reconstructor() -> Reconstructor:
    assert SHIPPED_WEIGHTS.is_file(), f"{SHIPPED_WEIGHTS} is missing from the checkout"
    return Reconstructor.load()


def region(names: tuple[str, ...], skin: torch.Tensor) -> np.ndarray:
    size = skin.shape[-1]
    mask = torch.stack([region_mask(name, size) for name in names]).amax(0) * skin[0, 0]
    return mask.numpy() > 0.5


def test_shipped_weights_carry_their_config_and_provenance(reconstructor: Reconstructor) -> None:
    from aucgan.weights import read_weights

    packed = read_weights(SHIPPED_WEIGHTS)
    assert packed.config.model.detail_decoder == reconstructor.cfg.model.detail_decoder
    assert "aucgan train detail" in packed.provenance


def test_au12_edit_raises_nasolabial_detail_and_leaves_the_forehead(reconstructor, tmp_path) -> None:
    world = world_parameters(reconstructor.cfg).world()
    index = identity_in_split("test", 3) * world.images_per_identity
    neutral = world.sample(index, expression=torch.zeros(27))
    write_image(tmp_path / "neutral.png", neutral.image)
    argv = ["reconstruct", str(tmp_path / "neutral.png"), "--out", str(tmp_path / "out"), "--no-crop"]
    assert main([*argv, "coarse.backend=network"]) == 0  # a synthetic render: its network, not MediaPipe
    face = tmp_path / "out" / "neutral"
    assert main(["edit", str(face), "--au", "AU12=1.0"]) == 0
    before = np.load(face / "displacement.npy")
    after = np.load(face / "edits" / "AU12=1" / "displacement.npy")
    skin = reconstructor.coarse.uv_space.skin
    nasolabial, forehead = region(NASOLABIAL, skin), region(FOREHEAD, skin)

    def energy(values: np.ndarray, mask: np.ndarray) -> float:
        return float(np.mean(values[mask] ** 2))

    assert energy(after, nasolabial) > 1.2 * energy(before, nasolabial)
    # local: the forehead moves by a twentieth of the folds' change at most (measured: 1.3 um against
    # 49.6 um), and by a tenth of its own (static) detail at most (measured 6 %: the uv-unet's AU12 map
    # leaks a little; the previous weights held 5 %)
    forehead_change = np.sqrt(energy(after - before, forehead))
    assert forehead_change < 0.05 * np.sqrt(energy(after - before, nasolabial))
    assert forehead_change < 0.1 * np.sqrt(energy(before, forehead))

"""Tests of ``aucgan evaluate``'s engine: the report folder it writes and the flat baseline it measures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from aucgan.build import world_parameters
from aucgan.data.shards import SyntheticFaces
from aucgan.evaluate.metrics import EDIT_INTENSITIES
from aucgan.evaluate.run import demo_inputs, evaluate
from aucgan.evaluate.run import test_batches as split_batches
from aucgan.reconstruct import COLOUR_BAR_WIDTH, VIS_SIZE, is_finished

N_FACES = 4
GALLERY = 2


@pytest.fixture(scope="module")
def evaluation(random_reconstructor, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    result = evaluate(
        random_reconstructor,
        out,
        n_faces=N_FACES,
        batch_size=4,
        gallery=GALLERY,
        edit_aus=("AU12",),
        progress=False,
    )
    return out, result


def test_evaluate_writes_report_metrics_and_gallery(evaluation):
    out, result = evaluation
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))

    assert result.report == out / "report.html"
    assert result.report.is_file()
    for key in ("displacement_mae", "normal_error_deg", "au_consistency", "edit"):
        assert key in metrics, key
    assert metrics["n_faces"] == N_FACES
    assert metrics["title"] == "aucgan evaluation — synthetic test split"
    for key in ("displacement_mae", "normal_error_deg"):
        assert metrics[key]["face_vs_flat_se"] >= 0, key
    assert metrics["weights"] == {"source": "random"}
    assert list(metrics["edit"]["per_au"]) == ["AU12"]
    assert len(metrics["edit"]["per_au"]["AU12"]["region_energy"]) == len(EDIT_INTENSITIES)
    assert metrics["displacement_mae"]["face"] == pytest.approx(result.metrics["displacement_mae"]["face"])

    assert len(result.faces) == GALLERY
    html = result.report.read_text(encoding="utf-8")
    for folder in result.faces:
        assert folder.parent == out / "faces"
        assert is_finished(folder)
        assert f"faces/{folder.name}/vis.png" in html
    with Image.open(out / "truth_vs_prediction.png") as comparison:
        assert comparison.size == (5 * VIS_SIZE + COLOUR_BAR_WIDTH + 5 * 4, GALLERY * VIS_SIZE)


def test_gallery_faces_are_the_first_test_samples(random_reconstructor, evaluation):
    _, result = evaluation
    dataset = SyntheticFaces(world_parameters(random_reconstructor.cfg), "test", GALLERY)
    expected = [f"test-{int(dataset[i].index):05d}" for i in range(GALLERY)]

    assert [folder.name for folder in result.faces] == expected
    with np.load(result.faces[0] / "codes.npz", allow_pickle=False) as data:
        assert str(data["record_source"]) == f"test sample {int(dataset[0].index)}"


def test_flat_baseline_is_the_mean_true_displacement_in_mm(random_reconstructor, evaluation):
    _, result = evaluation
    dataset = SyntheticFaces(world_parameters(random_reconstructor.cfg), "test", N_FACES)
    skin = dataset.world.uv_space.skin[0, 0].numpy().astype(np.float64) > 0.5
    total, count = 0.0, 0
    for i in range(N_FACES):
        displacement_mm = dataset[i].uv_displacement[0].numpy().astype(np.float64) * 10.0
        total += np.abs(displacement_mm[skin]).sum()
        count += int(skin.sum())

    flat = result.metrics["displacement_mae"]["flat"]
    assert flat == pytest.approx(total / count, rel=1e-5)
    assert flat > 0


def test_evaluate_refuses_no_faces(random_reconstructor, tmp_path):
    with pytest.raises(ValueError, match="n_faces"):
        evaluate(random_reconstructor, tmp_path, n_faces=0, progress=False)
    assert not any(tmp_path.iterdir())


def test_demo_inputs_are_synthetic_renders_and_the_photo(random_reconstructor, tmp_path):
    synthetic, photos = demo_inputs(random_reconstructor, tmp_path / "inputs", n_synthetic=2)
    names = sorted(path.name for path in synthetic.iterdir())

    assert len(names) == 2 and all(name.startswith("synthetic_") for name in names)
    size = random_reconstructor.image_size
    for name in names:
        with Image.open(synthetic / name) as image:
            assert image.size == (size, size)
    shipped = (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").is_file()
    assert sorted(path.name for path in photos.iterdir()) == (["grace_hopper.jpg"] if shipped else [])


def test_evaluate_with_refine_measures_it_beside_the_network(random_reconstructor, tmp_path):
    from aucgan.config import RefineConfig

    result = evaluate(
        random_reconstructor,
        tmp_path,
        n_faces=2,
        batch_size=2,
        gallery=1,
        edit_faces=1,
        edit_aus=("AU12",),
        progress=False,
        refine=RefineConfig(steps=3, coarse_steps=3),
    )
    alone = evaluate(
        random_reconstructor, tmp_path / "alone", n_faces=2, batch_size=2, gallery=1, edit_faces=1,
        edit_aus=("AU12",), progress=False,
    )  # fmt: skip
    for key in ("normal_error_deg", "displacement_mae"):
        refined = result.metrics[key]["refined"]
        expected = {"face", "active", "from_flat_face", "from_flat_active", "active_vs_network_se"}
        if key == "normal_error_deg":  # flat on the refitted coarse surface
            expected |= {"coarse_flat_face", "coarse_flat_active"}
            assert refined["coarse_flat_face"] != pytest.approx(result.metrics[key]["flat"], rel=1e-6)
        assert set(refined) == expected
        assert math.isfinite(refined["face"]) and refined["face"] >= 0
        # the network's own rows are the network's alone, refinement or not
        assert result.metrics[key]["face"] == pytest.approx(alone.metrics[key]["face"], rel=1e-5)
        assert "refined" not in alone.metrics[key]
    assert result.metrics["config"]["refine"]["steps"] == 3
    # the built-in face's expression is the AU rig: the AU fit started there, and the run says so
    assert result.metrics["config"]["refine"]["au_start"] == "expression"


def test_test_batches_render_the_same_faces_at_any_size(random_reconstructor):
    native = next(iter(split_batches(random_reconstructor, 2, 2)))
    size = 2 * random_reconstructor.image_size
    larger = next(iter(split_batches(random_reconstructor, 2, 2, image_size=size)))
    assert larger.image.shape[-2:] == (size, size)
    for field in ("expression", "pose", "camera", "light", "uv_displacement", "uv_albedo"):
        torch.testing.assert_close(getattr(larger, field), getattr(native, field))
    # the larger render, shrunk, is the native one up to the pixels' sampling
    shrunk = torch.nn.functional.interpolate(larger.image, size=native.image.shape[-2:], mode="area")
    assert float((shrunk - native.image).abs().mean()) < 0.02


def test_photo_size_gives_the_refinement_the_larger_photo_only(random_reconstructor, tmp_path, monkeypatch):
    from aucgan.config import RefineConfig

    seen = []
    real_refine = random_reconstructor.refine

    def refine(reconstruction, photo=None, settings=None, from_flat=False, progress=None):
        seen.append(None if photo is None else tuple(photo.shape))
        return real_refine(reconstruction, photo, settings, from_flat, progress)

    monkeypatch.setattr(random_reconstructor, "refine", refine)
    size = 2 * random_reconstructor.image_size
    settings = RefineConfig(steps=2, coarse_steps=0, au_steps=1)
    common = dict(n_faces=2, batch_size=2, gallery=1, edit_faces=1, edit_aus=("AU12",), progress=False)
    larger = evaluate(random_reconstructor, tmp_path / "larger", refine=settings, photo_size=size, **common)
    assert seen and all(shape == (2, 3, size, size) for shape in seen)
    assert larger.metrics["config"]["refine_photo_size"] == size
    seen.clear()
    native = evaluate(random_reconstructor, tmp_path / "native", refine=settings, **common)
    assert seen and all(shape is None for shape in seen)
    assert native.metrics["config"]["refine_photo_size"] == random_reconstructor.image_size
    for key in ("normal_error_deg", "displacement_mae"):
        # the network reads the world's render at its own size either way
        assert larger.metrics[key]["active"] == pytest.approx(native.metrics[key]["active"], rel=1e-5)
        assert larger.metrics[key]["face"] == pytest.approx(native.metrics[key]["face"], rel=1e-5)
    with pytest.raises(ValueError, match="refinement"):
        evaluate(random_reconstructor, tmp_path / "none", photo_size=size, **common)

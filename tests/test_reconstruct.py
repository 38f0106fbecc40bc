"""Tests of reconstruction for users: the Reconstructor, face folders (write/read), AU edits, batch jobs."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from aucgan import build
from aucgan.au import MAIN_AUS, SUB_AUS, au_index
from aucgan.data.synthetic import collate
from aucgan.export import read_displacement_png
from aucgan.nets.coarse_encoder import CODE_NAMES
from aucgan.reconstruct import (
    COLOUR_BAR_WIDTH,
    FACE_FILES,
    VIS_SIZE,
    FaceFolderError,
    Reconstructor,
    _signed_map,
    colour_bar,
    edit_face,
    is_finished,
    read_face,
    reconstruct_inputs,
    write_face,
)

GOOD_INPUTS = ("alpha", "cmyk", "grey", "photo")
BAD_INPUTS = ("broken.jpg", "notes.txt")


def _images(batch: int, height: int, width: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def reconstruction(random_reconstructor):
    return random_reconstructor(_images(2, 64, 64))


# Reconstructor ---------------------------------------------------------------------------------------------


def test_output_shapes(random_reconstructor, reconstruction):
    cfg = random_reconstructor.cfg
    rec = reconstruction
    size, uv = cfg.render.image_size, cfg.render.uv_size
    n_vertices = random_reconstructor.coarse.face_model.template.shape[0]

    assert rec.batch_size == 2
    assert rec.images.shape == (2, 3, size, size)
    assert rec.coarse.vertices.shape == (2, n_vertices, 3)
    assert rec.au.scores.shape == (2, len(MAIN_AUS) + len(SUB_AUS))
    assert rec.au.features.shape[:2] == (2, len(MAIN_AUS))
    assert rec.condition.intensities.shape == (2, len(MAIN_AUS))
    assert rec.detail.detail_code.shape == (2, cfg.model.n_detail)
    assert rec.detail.uv_displacement.shape == (2, 1, uv, uv)
    for name in ("uv_detail_normals", "uv_shading", "uv_texture"):
        assert getattr(rec.detail, name).shape == (2, 3, uv, uv), name
    skin = random_reconstructor.coarse.uv_space.skin
    assert torch.all(rec.detail.uv_displacement.abs() <= cfg.model.max_z)
    assert torch.all(rec.detail.uv_displacement[(skin == 0).expand_as(rec.detail.uv_displacement)] == 0)
    assert torch.equal(rec.condition.intensities, rec.au.scores[:, : len(MAIN_AUS)])


def test_inputs_of_another_size_are_resized(random_reconstructor):
    size = random_reconstructor.image_size
    small = _images(2, size, size, seed=3)
    # Each pixel repeated over a 2x2 block: an area resize gives back exactly the small images.
    large = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = random_reconstructor(small)
    got = random_reconstructor(large)

    assert got.images.shape == (2, 3, size, size)
    torch.testing.assert_close(got.images, small)
    torch.testing.assert_close(got.detail.uv_displacement, expected.detail.uv_displacement)
    for height, width in ((size // 2, size // 2), (size + 32, size + 16)):
        other = random_reconstructor(_images(1, height, width, dtype=torch.float64))
        assert other.images.shape == (1, 3, size, size)
        assert other.images.dtype == torch.float32
        assert torch.isfinite(other.detail.uv_displacement).all()


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 4, 64, 64), (1, 1, 64, 64)])
def test_call_refuses_wrong_shapes(random_reconstructor, shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        random_reconstructor(torch.rand(shape))


def test_edit_sets_intensity_and_expression_of_the_au(random_reconstructor, reconstruction):
    rec = reconstruction
    before_intensities = rec.condition.intensities.clone()
    index = au_index("AU12")
    edited = random_reconstructor.edit(rec, {"AU12": 1.0, "AU4": 0.25})

    expected = before_intensities.clone()
    expected[:, index] = 1.0
    expected[:, au_index("AU4")] = 0.25
    assert torch.equal(edited.condition.intensities, expected)
    assert torch.equal(edited.condition.features, rec.condition.features)
    assert random_reconstructor.coarse.face_model.expression_is_au_rig
    expression = rec.coarse.codes.expression.clone()
    expression[:, index] = 1.0
    expression[:, au_index("AU4")] = 0.25
    assert torch.equal(edited.coarse.codes.expression, expression)
    for name in CODE_NAMES:
        if name != "expression":
            assert torch.equal(getattr(edited.coarse.codes, name), getattr(rec.coarse.codes, name)), name
    assert torch.equal(edited.detail.detail_code, rec.detail.detail_code)
    assert not torch.equal(edited.detail.uv_displacement, rec.detail.uv_displacement)
    # The reconstruction edited is left as it was.
    assert torch.equal(rec.condition.intensities, before_intensities)


def test_edit_matches_a_redecode_with_the_new_codes(random_reconstructor, reconstruction):
    import dataclasses

    rec = reconstruction
    index = au_index("AU6")
    intensities = rec.condition.intensities.clone()
    intensities[:, index] = 0.75
    expression = rec.coarse.codes.expression.clone()
    expression[:, index] = 0.75
    codes = dataclasses.replace(rec.coarse.codes, expression=expression)
    expected = random_reconstructor.redecode(rec, codes, rec.condition.with_intensities(intensities))

    edited = random_reconstructor.edit(rec, {"AU6": 0.75})
    assert torch.equal(edited.detail.uv_displacement, expected.detail.uv_displacement)
    assert torch.equal(edited.coarse.vertices, expected.coarse.vertices)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"AU99": 1.0}, "unknown action unit"),
        ({"AU12": 1.5}, r"\[0, 1\]"),
        ({"AU12": -0.1}, r"\[0, 1\]"),
        ({"AU12": math.nan}, r"\[0, 1\]"),
    ],
)
def test_edit_refuses_unknown_aus_and_intensities_outside_unit_range(
    random_reconstructor, reconstruction, edit, says
):
    with pytest.raises(ValueError, match=says):
        random_reconstructor.edit(reconstruction, edit)


def test_redecode_with_unchanged_codes_reproduces_the_detail(random_reconstructor, reconstruction):
    rec = reconstruction
    again = random_reconstructor.redecode(rec, rec.coarse.codes, rec.condition)

    assert torch.equal(again.detail.uv_displacement, rec.detail.uv_displacement)
    assert torch.equal(again.detail.uv_detail_normals, rec.detail.uv_detail_normals)
    assert torch.equal(again.coarse.vertices, rec.coarse.vertices)


# Face folders ----------------------------------------------------------------------------------------------

RECORD = {"source": "a test", "frame": "7"}


@pytest.fixture(scope="module")
def face_folder(random_reconstructor, reconstruction, tmp_path_factory) -> Path:
    """Face 1 of :func:`reconstruction`, written."""
    folder = tmp_path_factory.mktemp("face") / "face"
    return write_face(folder, random_reconstructor, reconstruction, 1, RECORD)


def test_write_face_writes_every_file(face_folder, tmp_path):
    assert sorted(path.name for path in face_folder.iterdir()) == sorted(FACE_FILES)
    assert is_finished(face_folder)
    for name in FACE_FILES:
        partial = tmp_path / name
        shutil.copytree(face_folder, partial)
        (partial / name).unlink()
        assert not is_finished(partial), name


def test_displacement_files_hold_the_displacement(random_reconstructor, reconstruction, face_folder):
    expected = reconstruction.detail.uv_displacement[1, 0].numpy()
    stored = np.load(face_folder / "displacement.npy")
    png = read_displacement_png(face_folder / "displacement.png")
    max_z = random_reconstructor.cfg.model.max_z

    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, expected)
    assert png.shape == stored.shape
    # 16 bits over [-max_z, max_z]: half a level of rounding.
    np.testing.assert_allclose(png, stored, rtol=0, atol=max_z / 65535 + 1e-9)


def test_images_have_the_documented_sizes(random_reconstructor, face_folder):
    uv = random_reconstructor.cfg.render.uv_size
    sizes = {name: Image.open(face_folder / name).size for name in FACE_FILES if name.endswith(".png")}

    assert sizes["input.png"] == (VIS_SIZE, VIS_SIZE)
    assert sizes["texture.png"] == (uv, uv)
    assert sizes["normal_map.png"] == (uv, uv)
    assert sizes["displacement.png"] == (uv, uv)
    # input | coarse | detail | shading | AU chart, 4-pixel gaps
    assert sizes["vis.png"] == (5 * VIS_SIZE + 4 * 4, VIS_SIZE)


def _assert_textured(mesh: trimesh.Trimesh, path: Path) -> None:
    assert isinstance(mesh, trimesh.Trimesh), path
    assert len(mesh.faces) > 0, path
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals), path
    assert mesh.visual.uv is not None and mesh.visual.uv.shape == (len(mesh.vertices), 2), path
    assert mesh.visual.material is not None and mesh.visual.material.image is not None, path
    assert np.all((mesh.visual.uv >= 0) & (mesh.visual.uv <= 1)), path


def test_meshes_load_with_texture_and_uvs(reconstruction, face_folder):
    for name in ("coarse.obj", "detail.obj"):
        _assert_textured(trimesh.load(face_folder / name, process=False), face_folder / name)

    # The detail mesh: one vertex per covered texel (row-major), displaced along the coarse normal.
    surface = reconstruction.coarse.surface
    normals = surface.normals[1]
    covered = normals.norm(dim=0) > 0.5
    displaced = surface.positions[1] + reconstruction.detail.uv_displacement[1] * normals
    expected = displaced[:, covered].T.numpy()
    detail = trimesh.load(face_folder / "detail.obj", process=False, maintain_order=True)
    np.testing.assert_allclose(detail.vertices, expected, rtol=0, atol=1e-5)


def test_codes_hold_every_code_and_the_record(reconstruction, face_folder):
    with np.load(face_folder / "codes.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for name in CODE_NAMES:
        np.testing.assert_array_equal(arrays[name], getattr(reconstruction.coarse.codes, name)[1].numpy())
    np.testing.assert_array_equal(arrays["detail_code"], reconstruction.detail.detail_code[1].numpy())
    np.testing.assert_array_equal(arrays["au_scores"], reconstruction.au.scores[1].numpy())
    assert list(arrays["au_names"]) == [*MAIN_AUS, *SUB_AUS]
    assert str(arrays["record_weights"]) == "random"
    assert str(arrays["record_source"]) == RECORD["source"]


def test_read_face_rebuilds_the_reconstruction(random_reconstructor, reconstruction, face_folder):
    rebuilt, record = read_face(face_folder, random_reconstructor)
    written = torch.from_numpy(np.load(face_folder / "displacement.npy"))

    assert record == {"weights": "random", **RECORD}
    assert rebuilt.batch_size == 1
    assert rebuilt.images.shape == (1, 3, random_reconstructor.image_size, random_reconstructor.image_size)
    torch.testing.assert_close(rebuilt.detail.uv_displacement[0, 0], written, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        rebuilt.detail.uv_detail_normals[0], reconstruction.detail.uv_detail_normals[1], rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        rebuilt.coarse.vertices[0], reconstruction.coarse.vertices[1], rtol=0, atol=1e-5
    )
    assert torch.equal(rebuilt.condition.intensities[0], reconstruction.condition.intensities[1])


def test_read_face_of_an_edited_face_keeps_the_edit(random_reconstructor, reconstruction, tmp_path):
    edited = random_reconstructor.edit(reconstruction, {"AU12": 1.0})
    folder = write_face(tmp_path / "edited", random_reconstructor, edited, 0)
    rebuilt, _ = read_face(folder, random_reconstructor)

    assert float(rebuilt.condition.intensities[0, au_index("AU12")]) == 1.0
    torch.testing.assert_close(
        rebuilt.detail.uv_displacement[0], edited.detail.uv_displacement[0], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("missing", ["detail_code", "expression", "au_features"])
def test_read_face_refuses_codes_lacking_a_key(random_reconstructor, face_folder, tmp_path, missing):
    folder = tmp_path / "face"
    shutil.copytree(face_folder, folder)
    with np.load(folder / "codes.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files if key != missing}
    np.savez(folder / "codes.npz", **arrays)

    with pytest.raises(FaceFolderError) as error:
        read_face(folder, random_reconstructor)
    message = str(error.value)
    assert "\n" not in message
    assert missing in message
    assert str(folder) in message


def test_read_face_refuses_a_folder_without_codes(random_reconstructor, tmp_path):
    with pytest.raises(FaceFolderError, match=r"no codes\.npz") as error:
        read_face(tmp_path, random_reconstructor)
    assert "\n" not in str(error.value)


def test_read_face_refuses_codes_of_other_weights(random_reconstructor, face_folder, tmp_path):
    folder = tmp_path / "face"
    shutil.copytree(face_folder, folder)
    with np.load(folder / "codes.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["detail_code"] = np.zeros(arrays["detail_code"].shape[0] + 5, np.float32)
    np.savez(folder / "codes.npz", **arrays)

    with pytest.raises(FaceFolderError, match="does not fit these weights") as error:
        read_face(folder, random_reconstructor)
    assert "\n" not in str(error.value)


# Batch jobs ------------------------------------------------------------------------------------------------


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def cropped_run(random_reconstructor, photo_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cropped")
    return out, reconstruct_inputs(random_reconstructor, photo_inputs, out, batch_size=3)


def test_reconstruct_inputs_writes_the_faces_and_reports_bad_files(photo_inputs, cropped_run):
    out, report = cropped_run

    assert sorted(folder.name for folder in report.written) == sorted(GOOD_INPUTS)
    assert all(folder.parent == out and is_finished(folder) for folder in report.written)
    assert report.skipped == []
    assert sorted(Path(name).name for name, _ in report.failed) == sorted(BAD_INPUTS)
    for name, message in report.failed:
        assert "\n" not in message
        assert name in message
    assert sorted(path.name for path in out.iterdir()) == sorted(GOOD_INPUTS)
    with np.load(out / "photo" / "codes.npz", allow_pickle=False) as data:
        assert str(data["record_source"]) == str(photo_inputs / "photo.jpg")
        assert len(str(data["record_crop_box"]).split()) == 3


def test_rerun_skips_finished_faces_and_rewrites_nothing(random_reconstructor, photo_inputs, cropped_run):
    out, _ = cropped_run
    before = _mtimes(out)
    report = reconstruct_inputs(random_reconstructor, photo_inputs, out)

    assert report.written == []
    assert sorted(report.skipped) == sorted(GOOD_INPUTS)
    assert sorted(Path(name).name for name, _ in report.failed) == sorted(BAD_INPUTS)
    assert _mtimes(out) == before


def test_unfinished_face_is_redone(random_reconstructor, photo_inputs, tmp_path, cropped_run):
    out = tmp_path / "out"
    shutil.copytree(cropped_run[0], out)
    (out / "grey" / "codes.npz").unlink()
    report = reconstruct_inputs(random_reconstructor, photo_inputs, out)

    assert [folder.name for folder in report.written] == ["grey"]
    assert sorted(report.skipped) == sorted(set(GOOD_INPUTS) - {"grey"})
    assert is_finished(out / "grey")


def test_no_crop_takes_the_whole_image(random_reconstructor, photo_inputs, tmp_path, cropped_run):
    report = reconstruct_inputs(random_reconstructor, photo_inputs, tmp_path, crop=False)

    assert sorted(folder.name for folder in report.written) == sorted(GOOD_INPUTS)
    assert len(report.failed) == len(BAD_INPUTS)
    with Image.open(photo_inputs / "photo.jpg") as photo:
        width, height = photo.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = photo.crop((left, top, left + side, top + side))
        expected = np.asarray(square.resize((VIS_SIZE, VIS_SIZE), Image.Resampling.BOX), dtype=float)
    whole = np.asarray(Image.open(tmp_path / "photo" / "input.png"), dtype=float)
    cropped = np.asarray(Image.open(cropped_run[0] / "photo" / "input.png"), dtype=float)

    assert np.abs(whole - expected).mean() < 1.0
    assert np.abs(cropped - expected).mean() > 10.0
    with np.load(tmp_path / "photo" / "codes.npz", allow_pickle=False) as data:
        assert "record_crop_box" not in data.files


def test_edit_face_writes_the_edit_beside_the_face(random_reconstructor, tmp_path, cropped_run):
    face = tmp_path / "photo"
    shutil.copytree(cropped_run[0] / "photo", face)
    target, before, after = edit_face(face, random_reconstructor, {"au12": 1.0})

    assert target == face / "edits" / "AU12=1"
    assert is_finished(target)
    assert (target / "before_after.png").is_file()
    assert float(before.condition.intensities[0, au_index("AU12")]) != 1.0
    assert float(after.condition.intensities[0, au_index("AU12")]) == 1.0
    np.testing.assert_array_equal(
        np.load(target / "displacement.npy"), after.detail.uv_displacement[0, 0].numpy()
    )


def _where(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 10) -> np.ndarray:
    """Row indices of the pixels of ``image (H, W, 3)`` within ``tolerance`` of ``colour``."""
    return np.nonzero(np.abs(image.astype(int) - np.array(colour)).max(-1) <= tolerance)[0]


def test_colour_bar_shows_the_map_colours_red_up_blue_down():
    bar = colour_bar(_signed_map, 12.5, "µm", "displacement change", "red raised\nblue lowered")
    assert bar.shape == (VIS_SIZE, COLOUR_BAR_WIDTH, 3) and bar.dtype == np.uint8
    red, blue, white = (
        _where(bar, (255, 0, 0)),
        _where(bar, (0, 0, 255)),
        _where(bar[:, :40], (255, 255, 255)),
    )
    assert red.size and blue.size and white.size
    assert red.mean() < VIS_SIZE / 2 < blue.mean()  # +limit at the top, -limit at the bottom


def test_edit_face_before_after_shows_the_change_with_its_colour_bar(
    random_reconstructor, tmp_path, cropped_run
):
    face = tmp_path / "photo"
    shutil.copytree(cropped_run[0] / "photo", face)
    target, before, after = edit_face(face, random_reconstructor, {"AU12": 1.0})
    picture = np.asarray(Image.open(target / "before_after.png").convert("RGB"))

    assert picture.shape == (VIS_SIZE, 4 * VIS_SIZE + COLOUR_BAR_WIDTH + 4 * 4, 3)
    change = picture[:, 3 * (VIS_SIZE + 4) : 4 * VIS_SIZE + 3 * 4]
    bar = picture[:, -COLOUR_BAR_WIDTH:]
    assert (after.detail.uv_displacement != before.detail.uv_displacement).any()
    # the range is symmetric about the largest change, so that change is drawn fully red or fully blue
    assert _where(change, (255, 0, 0), 2).size + _where(change, (0, 0, 255), 2).size > 0
    assert _where(bar, (255, 0, 0)).size and _where(bar, (0, 0, 255)).size


def test_edit_face_keeps_the_input_picture_sharp(random_reconstructor, tmp_path, cropped_run):
    face = tmp_path / "photo"
    shutil.copytree(cropped_run[0] / "photo", face)
    target, _, _ = edit_face(face, random_reconstructor, {"AU12": 1.0})
    original = np.asarray(Image.open(face / "input.png"), dtype=float)
    edited = np.asarray(Image.open(target / "input.png"), dtype=float)

    assert np.abs(edited - original).mean() < 1.0


def test_channels_last_matches_the_contiguous_reference(random_weights):
    fast = Reconstructor.load(random_weights)
    stages = Reconstructor.load(random_weights)
    plain = Reconstructor(
        stages.coarse.to(memory_format=torch.contiguous_format),
        stages.detail.to(memory_format=torch.contiguous_format),
        stages.cfg, "plain", channels_last=False,
    )  # fmt: skip
    convs = [m for m in fast.detail.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(m.weight.is_contiguous() for m in plain.detail.modules() if isinstance(m, torch.nn.Conv2d))
    images = torch.rand(2, 3, fast.image_size, fast.image_size, generator=torch.Generator().manual_seed(4))
    a, b = fast(images), plain(images)
    torch.testing.assert_close(a.coarse.vertices, b.coarse.vertices, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.au.main_scores, b.au.main_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.detail.uv_displacement, b.detail.uv_displacement, rtol=1e-4, atol=1e-6)


# Photometric refinement -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refining_reconstructor(random_reconstructor):
    from aucgan.config import RefineConfig

    rec = random_reconstructor
    # random coarse weights render nothing like the photo: no texel would pass the outlier test
    settings = RefineConfig(mode="always", steps=5, au_steps=5, coarse_steps=5, outlier=100.0)
    return Reconstructor(rec.coarse, rec.detail, rec.cfg, "random, refining", refine_settings=settings)


def test_refinement_runs_when_asked_and_only_then(random_reconstructor, refining_reconstructor):
    images = _images(2, 64, 64, seed=3)
    assert not random_reconstructor.refines  # auto, with the coarse network
    assert random_reconstructor(images).refinement is None
    refined = refining_reconstructor(images)
    assert refined.refinement is not None and refined.photo_detail is not None
    # faces of the world (noise would leave no skin for the AU fit to read)
    world = build.world_parameters(refining_reconstructor.cfg).world()
    faces = collate([world.sample(i) for i in range(2)]).image
    refined = refining_reconstructor(faces)
    network = refining_reconstructor(faces, refine=False)
    assert network.refinement is None
    # the coarse fit moved the surface, the AU fit the intensities; the detail is the network's at those
    # (read through the refitted surface) plus what the photo added
    assert not torch.equal(refined.coarse.vertices, network.coarse.vertices)
    assert not torch.equal(refined.condition.intensities, network.condition.intensities)
    unrefined = dataclasses.replace(refined, photo_detail=None)
    redrawn = refining_reconstructor.redecode(unrefined, refined.coarse.codes, refined.condition)
    torch.testing.assert_close(
        refined.detail.uv_displacement,
        redrawn.detail.uv_displacement + refined.photo_detail,
        rtol=1e-5,
        atol=1e-6,
    )
    kept = dataclasses.replace(
        refining_reconstructor.refine_settings, au_steps=0, coarse_steps=0, au_start="au-net"
    )
    unfitted = refining_reconstructor.refine(network, settings=kept)
    assert torch.equal(unfitted.condition.intensities, network.condition.intensities)
    assert torch.equal(unfitted.coarse.vertices, network.coarse.vertices)
    assert float(refined.detail.uv_displacement.abs().max()) <= refining_reconstructor.cfg.model.max_z


def test_the_au_fit_starts_from_the_coarse_expression_where_it_is_the_au_rig(
    refining_reconstructor, monkeypatch
):
    rec = refining_reconstructor
    world = build.world_parameters(rec.cfg).world()
    network = rec(collate([world.sample(i) for i in range(2)]).image, refine=False)
    start_only = dataclasses.replace(
        rec.refine_settings, au_steps=0, coarse_steps=0, steps=0, au_start="expression"
    )
    started = rec.refine(network, settings=start_only)
    expected = network.coarse.codes.expression.clamp(0.0, 1.0)
    torch.testing.assert_close(started.condition.intensities, expected)
    assert not torch.allclose(expected, network.condition.intensities, atol=1e-3)
    # the detail is the decoder's at those intensities (no displacement step moved it)
    condition = network.condition.with_intensities(expected)
    with torch.inference_mode():
        redrawn = rec.detail.decode(network.coarse, network.detail.detail_code, condition, network.evidence)
    torch.testing.assert_close(started.detail.uv_displacement, redrawn.uv_displacement, rtol=1e-4, atol=1e-6)
    # from flat the fit starts from zero intensities, whatever au_start says: the network's are kept here
    flat = rec.refine(network, settings=start_only, from_flat=True)
    assert torch.equal(flat.condition.intensities, network.condition.intensities)
    auto = dataclasses.replace(start_only, au_start="auto")
    assert rec.resolved_au_start(auto) == "expression"
    monkeypatch.setattr(rec.coarse.face_model, "expression_is_au_rig", False)  # as FLAME's PCA expression
    assert rec.resolved_au_start(auto) == "au-net"
    with pytest.raises(ValueError, match="au_start=expression needs a face model"):
        rec.refine(network, settings=start_only)


def test_an_edit_of_a_refined_face_keeps_its_own_lines(refining_reconstructor):
    rec = refining_reconstructor(_images(1, 64, 64, seed=4))
    unchanged = refining_reconstructor.edit(rec, {})
    torch.testing.assert_close(
        unchanged.detail.uv_displacement, rec.detail.uv_displacement, rtol=1e-4, atol=1e-6
    )
    edited = refining_reconstructor.edit(rec, {"AU12": 1.0})
    network_change = (
        refining_reconstructor.edit(
            dataclasses.replace(rec, photo_detail=None), {"AU12": 1.0}
        ).detail.uv_displacement
        - refining_reconstructor.redecode(
            dataclasses.replace(rec, photo_detail=None), rec.coarse.codes, rec.condition
        ).detail.uv_displacement
    )
    torch.testing.assert_close(
        edited.detail.uv_displacement - rec.detail.uv_displacement, network_change, rtol=1e-3, atol=1e-5
    )


def test_a_refined_face_folder_reads_back_refined(refining_reconstructor, tmp_path):
    rec = refining_reconstructor(_images(1, 64, 64, seed=5))
    folder = write_face(tmp_path / "face", refining_reconstructor, rec, 0)
    back, _ = read_face(folder, refining_reconstructor)
    assert back.photo_detail is not None
    torch.testing.assert_close(back.photo_detail, rec.photo_detail, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(back.coarse.uv_albedo, rec.coarse.uv_albedo, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(back.detail.uv_displacement, rec.detail.uv_displacement, rtol=1e-3, atol=1e-5)

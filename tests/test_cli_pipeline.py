"""Tests of the pipeline commands of the ``aucgan`` command line: pack, reconstruct, edit, evaluate."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from aucgan.au import au_index
from aucgan.cli import main
from aucgan.config import preset_path
from aucgan.evaluate import run as evaluate_run
from aucgan.reconstruct import COLOUR_BAR_WIDTH, FACE_FILES, VIS_SIZE, is_finished
from aucgan.weights import read_weights

TINY_CONFIG = preset_path("synthetic-tiny")
GOOD_INPUTS = ("alpha", "cmyk", "grey", "photo")
BAD_INPUTS = ("broken.jpg", "notes.txt")


@dataclasses.dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> Run:
    """``main(argv)`` with its stdout and stderr captured (progress bars and logs go to stderr too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return Run(status, out.getvalue(), err.getvalue())


def error_lines(text: str) -> list[str]:
    """The lines of ``text`` that are not progress bars (tqdm redraws its bar after a carriage return)."""
    return [line for line in text.split("\n") if line.strip() and "\r" not in line]


def _assert_textured_obj(path: Path) -> None:
    mesh = trimesh.load(path, process=False)
    assert isinstance(mesh, trimesh.Trimesh), path
    assert len(mesh.faces) > 0, path
    assert mesh.visual.uv is not None and mesh.visual.uv.shape == (len(mesh.vertices), 2), path
    assert mesh.visual.material is not None and mesh.visual.material.image is not None, path


# reconstruct -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reconstructed(photo_inputs, random_weights, tmp_path_factory) -> tuple[Path, Run]:
    out = tmp_path_factory.mktemp("cli") / "out"
    return out, run_cli("reconstruct", photo_inputs, "--out", out, "--weights", random_weights)


def test_reconstruct_reports_failures_and_returns_1(reconstructed, photo_inputs, capsys):
    out, result = reconstructed

    assert result.status == 1
    lines = result.stderr.splitlines()
    header = f"{len(BAD_INPUTS)} of {len(GOOD_INPUTS) + len(BAD_INPUTS)} inputs failed:"
    assert header in lines
    failures = lines[lines.index(header) + 1 :]
    assert len(failures) == len(BAD_INPUTS)
    for name, line in zip(sorted(BAD_INPUTS), sorted(failures), strict=True):
        assert str(photo_inputs / name) in line
    assert sorted(path.name for path in out.iterdir()) == sorted(GOOD_INPUTS)
    assert all(is_finished(out / name) for name in GOOD_INPUTS)


def test_reconstruct_output_meshes_load_with_their_textures(reconstructed):
    out, _ = reconstructed
    meshes = sorted(out.rglob("*.obj"))

    assert len(meshes) >= 2 * len(GOOD_INPUTS)
    for path in meshes:
        _assert_textured_obj(path)


def test_reconstruct_of_only_bad_files_prints_the_summary(photo_inputs, random_weights, tmp_path, capsys):
    inputs = tmp_path / "bad"
    inputs.mkdir()
    for name in BAD_INPUTS:
        (inputs / name).write_bytes((photo_inputs / name).read_bytes())
    status = main(
        ["reconstruct", str(inputs), "--out", str(tmp_path / "out"), "--weights", str(random_weights)]
    )
    captured = capsys.readouterr()

    assert status == 1
    summary = captured.err[captured.err.index(f"{len(BAD_INPUTS)} of {len(BAD_INPUTS)} inputs failed:") :]
    failures = summary.split("\n")[1:-1]
    assert len(failures) == len(BAD_INPUTS)
    assert {Path(line.split(":")[0].strip()).name for line in failures} == set(BAD_INPUTS)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_reconstruct_no_crop(photo_inputs, random_weights, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "photo.jpg").write_bytes((photo_inputs / "photo.jpg").read_bytes())
    result = run_cli(
        "reconstruct", inputs, "--out", tmp_path / "out", "--weights", random_weights, "--no-crop"
    )

    assert result.status == 0, result.stderr
    assert is_finished(tmp_path / "out" / "photo")
    with np.load(tmp_path / "out" / "photo" / "codes.npz", allow_pickle=False) as data:
        assert "record_crop_box" not in data.files


def test_reconstruct_of_a_missing_source_is_one_line(random_weights, tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("reconstruct", missing, "--out", tmp_path / "out", "--weights", random_weights)

    assert result.status == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith("aucgan reconstruct:")
    assert str(missing) in lines[0]


def test_reconstruct_with_unusable_weights_is_one_line(photo_inputs, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_text("<!DOCTYPE html><html><body>Sign in</body></html>\n")
    result = run_cli("reconstruct", photo_inputs, "--out", tmp_path / "out", "--weights", weights)

    assert result.status == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert str(weights) in lines[0]
    assert not (tmp_path / "out").exists()


def test_reconstruct_a_video_every_nth_frame(photo_inputs, random_weights, tmp_path):
    """A video written with OpenCV's own writer (what the declared opencv-python-headless reads back)."""
    import cv2

    with Image.open(photo_inputs / "photo.jpg") as opened:
        photo = np.asarray(opened.convert("RGB").resize((160, 188), Image.Resampling.BILINEAR))
    path = tmp_path / "interview.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 188))
    assert writer.isOpened()
    for k in range(5):
        frame = photo.copy()
        frame[:6] = 50 * k  # frame k's number, as a grey band above the face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    result = run_cli("reconstruct", path, "--out", out, "--every", "2", "--weights", random_weights)

    assert result.status == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "interview_f00000",
        "interview_f00002",
        "interview_f00004",
    ]
    for k in (0, 2, 4):
        folder = out / f"interview_f{k:05d}"
        assert is_finished(folder)
        with np.load(folder / "codes.npz", allow_pickle=False) as data:
            assert str(data["record_frame"]) == str(k)
            assert str(data["record_source"]) == str(path)


# edit ------------------------------------------------------------------------------------------------------


def test_edit_writes_before_after_and_every_face_file(reconstructed, random_weights):
    out, _ = reconstructed
    face = out / "photo"
    result = run_cli("edit", face, "--au", "AU12=1", "--weights", random_weights)

    assert result.status == 0, result.stderr
    target = face / "edits" / "AU12=1"
    assert is_finished(target)
    assert {name for name in FACE_FILES} <= {path.name for path in target.iterdir()}
    with Image.open(target / "before_after.png") as picture:
        assert picture.size == (4 * VIS_SIZE + COLOUR_BAR_WIDTH + 4 * 4, VIS_SIZE)  # + the colour bar
    with np.load(target / "codes.npz", allow_pickle=False) as data:
        assert float(data["au_intensities"][au_index("AU12")]) == 1.0
        assert float(data["expression"][au_index("AU12")]) == 1.0
        assert str(data["record_edit"]) == "AU12=1"
    for name in ("coarse.obj", "detail.obj"):
        _assert_textured_obj(target / name)
    before = np.load(face / "displacement.npy")
    after = np.load(target / "displacement.npy")
    assert before.shape == after.shape
    assert not np.array_equal(before, after)


def test_edit_without_weights_uses_the_recorded_ones(reconstructed, tmp_path):
    out, _ = reconstructed
    result = run_cli("edit", out / "grey", "--au", "AU4=0.5", "--out", tmp_path / "edited")

    assert result.status == 0, result.stderr
    assert is_finished(tmp_path / "edited")
    assert (tmp_path / "edited" / "before_after.png").is_file()


@pytest.mark.parametrize("assignment", ["AU99=1", "AU12=x", "AU12=1.5", "AU12", "AU12=nan"])
def test_edit_refuses_bad_assignments_in_one_line(reconstructed, random_weights, assignment):
    out, _ = reconstructed
    face = out / "cmyk"
    result = run_cli("edit", face, "--au", assignment, "--weights", random_weights)

    assert result.status == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0].startswith("aucgan edit:")
    assert not (face / "edits").exists()


def test_edit_of_a_folder_that_is_no_face_is_one_line(random_weights, tmp_path):
    result = run_cli("edit", tmp_path, "--au", "AU12=1", "--weights", random_weights)

    assert result.status == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "codes.npz" in lines[0]


# pack ------------------------------------------------------------------------------------------------------


def with_coarse_source(cfg, source: str):
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, coarse_source=source))


def _detail_checkpoint(path: Path, reconstructor, with_coarse_encoder: bool = True) -> Path:
    """A checkpoint laid out as ``aucgan train detail`` writes one (Lightning state dict + ``aucgan``)."""
    state = {
        f"{part}.{name}": tensor
        for part, module in (("coarse", reconstructor.coarse), ("detail", reconstructor.detail))
        for name, tensor in module.state_dict().items()
        if with_coarse_encoder or not name.startswith("encoder.") or part != "coarse"
    }
    state["discriminator.head.weight"] = torch.zeros(1, 4)
    cfg = with_coarse_source(reconstructor.cfg, "network" if with_coarse_encoder else "ground-truth")
    torch.save({"state_dict": state, "aucgan": {"steps_done": 12, "config": dataclasses.asdict(cfg)}}, path)
    return path


def test_pack_writes_the_checkpoints_stages(random_reconstructor, tmp_path):
    checkpoint = _detail_checkpoint(tmp_path / "last.ckpt", random_reconstructor)
    target = tmp_path / "packed.safetensors"
    result = run_cli(
        "pack", TINY_CONFIG, "--checkpoint", checkpoint, "--out", target, "--provenance", "from a test"
    )

    assert result.status == 0, result.stderr
    weights = read_weights(target)
    assert weights.provenance == "from a test"
    assert weights.config == with_coarse_source(random_reconstructor.cfg, "network")
    for part, module in (("coarse", random_reconstructor.coarse), ("detail", random_reconstructor.detail)):
        parameters = dict(module.named_parameters())
        for name, tensor in module.state_dict().items():
            expected = tensor.half() if name in parameters else tensor
            assert torch.equal(weights.states[part][name], expected), f"{part}.{name}"


def test_pack_of_a_ground_truth_coarse_checkpoint_says_why(random_reconstructor, tmp_path):
    checkpoint = _detail_checkpoint(tmp_path / "last.ckpt", random_reconstructor, with_coarse_encoder=False)
    result = run_cli("pack", TINY_CONFIG, "--checkpoint", checkpoint, "--out", tmp_path / "p.safetensors")

    assert result.status == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "coarse_source" in lines[0]
    assert "strict=False" not in lines[0]


# evaluate --------------------------------------------------------------------------------------------------


def test_evaluate_writes_the_report(random_weights, tmp_path, monkeypatch):
    every_au = evaluate_run.edit_metrics

    def one_au(reconstructor, reconstructions, aus, **options):
        return every_au(reconstructor, reconstructions, ("AU12",), **options)

    monkeypatch.setattr(evaluate_run, "edit_metrics", one_au)  # 1 edited AU of 18 keeps it fast
    result = run_cli(
        "evaluate", "--out", tmp_path, "--n", "1", "--batch-size", "1", "--weights", random_weights
    )

    assert result.status == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_faces"] == 1
    assert metrics["weights"]["source"] == str(random_weights)
    assert (tmp_path / "report.html").is_file()
    assert list(metrics["edit"]["per_au"]) == ["AU12"]


def test_evaluate_refuses_n_below_1(random_weights, tmp_path):
    result = run_cli("evaluate", "--out", tmp_path, "--n", "0", "--weights", random_weights)

    assert result.status == 2
    assert len(error_lines(result.stderr)) == 1

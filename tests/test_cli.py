"""Tests of the ``aucgan`` command line: ``aucgan render`` outputs and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from aucgan import __version__
from aucgan.au import au_index
from aucgan.cli import main
from aucgan.config import Config, load_config
from aucgan.face_model import ProceduralFaceModel

# Small sizes keep each render well under a second.
FAST = ["render.image_size=40", "render.uv_size=32"]


@pytest.fixture(scope="module")
def model() -> ProceduralFaceModel:
    return ProceduralFaceModel(n_identity=Config().face_model.n_identity)


def run_render(out: Path, *options: str) -> int:
    return main(["render", "--out", str(out), *options, *FAST])


def obj_mesh(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, process=False, maintain_order=True)
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def expected_vertices(model: ProceduralFaceModel, shape=None, expression=None, pose=None) -> np.ndarray:
    with torch.no_grad():
        geometry = model(
            torch.zeros(1, model.n_shape) if shape is None else shape,
            torch.zeros(1, model.n_expression) if expression is None else expression,
            torch.zeros(1, 6) if pose is None else pose,
        )
    return geometry.vertices[0].double().numpy()


def test_render_writes_image_mesh_texture_and_config(tmp_path, model, capsys):
    out = tmp_path / "render"
    assert (
        main(["render", "--out", str(out), "--au", "AU12=1", "render.image_size=48", "render.uv_size=64"])
        == 0
    )

    image = Image.open(out / "face.png")
    assert image.size == (48, 48)
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # a face, not a blank picture

    cfg = load_config(Config, out / "config.yaml")
    assert cfg.render.image_size == 48 and cfg.render.uv_size == 64

    mtl = (out / "face.mtl").read_text()
    assert "mtllib face.mtl" in (out / "face.obj").read_text()
    texture_names = [
        line.split(maxsplit=1)[1].strip() for line in mtl.splitlines() if line.startswith("map_Kd")
    ]
    assert len(texture_names) == 1
    texture = Image.open(out / texture_names[0])
    assert texture.size == (64, 64)

    mesh = obj_mesh(out / "face.obj")
    assert mesh.vertices.shape == tuple(model.template.shape)
    np.testing.assert_array_equal(mesh.faces, model.faces.numpy())
    uv = np.asarray(mesh.visual.uv)
    assert uv.shape == tuple(model.uvs.shape)
    np.testing.assert_allclose(uv, model.uvs.numpy(), atol=1e-6)

    smile = torch.zeros(1, model.n_expression)
    smile[0, au_index("AU12")] = 1.0
    np.testing.assert_allclose(mesh.vertices, expected_vertices(model, expression=smile), atol=1e-5)
    assert np.abs(mesh.vertices - expected_vertices(model)).max() > 1e-2  # AU12 moved the mesh
    assert capsys.readouterr().out == ""


def test_options_reach_the_face_codes(tmp_path, model):
    out = tmp_path / "posed"
    name = model.identity_names[0]
    options = ["--identity", f"{name}=2", "--au", "6=0.5", "--yaw", "20", "--pitch", "-10", "--jaw", "5"]
    assert run_render(out, *options) == 0
    shape = torch.zeros(1, model.n_shape)
    shape[0, 0] = 2.0
    expression = torch.zeros(1, model.n_expression)
    expression[0, au_index("AU6")] = 0.5
    pose = torch.tensor([[math.radians(-10.0), math.radians(20.0), 0.0, math.radians(5.0), 0.0, 0.0]])
    expected = expected_vertices(model, shape, expression, pose)
    np.testing.assert_allclose(obj_mesh(out / "face.obj").vertices, expected, atol=1e-5)


def test_light_direction_changes_the_image(tmp_path):
    images = []
    for light in ("-1,0,0.5", "1,0,0.5"):
        out = tmp_path / light
        assert run_render(out, f"--light={light}") == 0  # "=": argparse reads a leading "-1," as an option
        images.append(np.asarray(Image.open(out / "face.png").convert("L"), dtype=np.float64))
    half = images[0].shape[1] // 2
    # Lit from the left, the left half is brighter than when lit from the right, and vice versa.
    assert images[0][:, :half].sum() > images[1][:, :half].sum()
    assert images[1][:, half:].sum() > images[0][:, half:].sum()


@pytest.mark.parametrize("colour", [(1.0, 1.0, 1.0), (0.0, 0.5, 1.0)])
def test_background_comes_from_the_config(tmp_path, colour):
    out = tmp_path / "background"
    assert run_render(out, f"render.background=[{colour[0]},{colour[1]},{colour[2]}]") == 0
    corner = np.asarray(Image.open(out / "face.png").convert("RGB"))[0, 0]
    np.testing.assert_allclose(corner, np.round(np.asarray(colour) * 255), atol=1)


def test_config_file_is_read(tmp_path):
    config = tmp_path / "preset.yaml"
    config.write_text("render:\n  image_size: 24\n  uv_size: 16\n")
    out = tmp_path / "from-file"
    assert main(["render", "--out", str(out), "--config", str(config)]) == 0
    assert Image.open(out / "face.png").size == (24, 24)
    assert load_config(Config, out / "config.yaml").render.image_size == 24


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--au", "AU99=1"], "AU99"),
        (["--au", "AU3=1"], "AU3"),
        (["--au", "AU12"], "AU12"),
        (["--au", "AU12=lots"], "AU12=lots"),
        (["--au", "AU12=nan"], "AU12=nan"),
        (["--identity", "nope=1"], "nope"),
        (["render.imag_size=3"], "did you mean 'render.image_size'"),
        (["render.image_size=3"], "render.image_size"),
        (["--config", "{tmp}/missing.yaml"], "missing.yaml"),
        (["--light", "1,2"], "1,2"),
        (["--light", "1,2,x"], "1,2,x"),
        (["--light", "0,inf,1"], "0,inf,1"),
        (["--yaw", "nan"], "--yaw"),
    ],
)
def test_bad_input_gives_one_line_and_exit_status_two(tmp_path, capsys, options, expected):
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    out = tmp_path / "never"
    assert main(["render", "--out", str(out), *options]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("aucgan render: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (out / "face.png").exists()


def test_output_path_that_is_a_file_gives_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_render(blocker / "sub") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aucgan render: ")


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aucgan {__version__}"


def test_console_script_prints_the_version():
    script = Path(sys.executable).with_name("aucgan")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "aucgan.cli"]
    completed = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"aucgan {__version__}"


# aucgan synth ---------------------------------------------------------------------------------------------

SYNTH_FAST = ["synth.workers=0", "render.image_size=64", "render.uv_size=64"]


@pytest.mark.parametrize("n", [0, 1, 5, 10, 20, 37, 1000])
def test_split_counts_are_80_10_10_and_add_up(n):
    from aucgan.cli import split_counts

    counts = split_counts(n)
    assert list(counts) == ["train", "val", "test"]
    assert sum(counts.values()) == n and min(counts.values()) >= 0
    assert abs(counts["train"] - 0.8 * n) <= 0.5 and abs(counts["val"] - 0.1 * n) <= 0.5
    assert abs(counts["test"] - 0.1 * n) <= 1.0


def test_synth_writes_manifest_shards_and_config(tmp_path, capsys):
    from dataclasses import asdict

    from aucgan.data.shards import ShardedFaces, SyntheticFaces, WorldParameters

    out = tmp_path / "synth"
    assert main(["synth", "--n", "20", "--out", str(out), *SYNTH_FAST]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {
        "train": 16,
        "val": 2,
        "test": 2,
    }
    for entry in manifest["splits"].values():
        assert all((out / shard["file"]).is_file() for shard in entry["shards"])
    cfg = load_config(Config, out / "config.yaml")
    assert cfg.render.image_size == 64 and cfg.render.uv_size == 64 and cfg.synth.workers == 0
    parameters = WorldParameters(
        seed=cfg.seed,
        image_size=64,
        uv_size=64,
        images_per_identity=cfg.synth.images_per_identity,
        n_identity=cfg.face_model.n_identity,
    )
    assert manifest["world"] == asdict(parameters)
    stored, generated = ShardedFaces(out, "test")[1], SyntheticFaces(parameters, "test", 2)[1]
    for name, value in stored.to_dict().items():
        assert torch.equal(value, getattr(generated, name)), name
    assert len(ShardedFaces(out, "train")) == 16
    assert not (out / "preview").exists()
    assert capsys.readouterr().out == ""


def test_synth_stopped_by_sigterm_says_so_in_one_line_and_the_same_command_continues(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "stopped"
    fast = [option for option in SYNTH_FAST if not option.startswith("synth.workers=")]
    command = ["synth", "--n", "300", "--out", str(out), *fast, "synth.shard_size=8", "synth.workers=2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "aucgan", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "train-00001.npz").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)  # as `timeout` or a job scheduler: the workers get it too
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("aucgan synth:")]
    assert len(lines) == 1 and lines[0].startswith("aucgan synth: interrupted with "), stderr[-3000:]
    assert lines[0].endswith(f"of 300 samples generated; the shards written in {out} are kept, and the same "
                             "command continues from them")  # fmt: skip
    assert not (out / "manifest.json").exists()
    kept = {path.name: path.stat().st_mtime_ns for path in out.glob("train-*.npz")}
    assert len(kept) >= 2
    assert main(command) == 0
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(entry["count"] for entry in manifest["splits"].values()) == 300


def test_synth_seed_option_sets_the_world_seed(tmp_path):
    out = tmp_path / "seeded"
    assert main(["synth", "--n", "10", "--seed", "9", "--out", str(out), *SYNTH_FAST]) == 0
    assert json.loads((out / "manifest.json").read_text())["world"]["seed"] == 9
    assert load_config(Config, out / "config.yaml").seed == 9


def test_synth_preview_writes_both_sheets(tmp_path):
    out = tmp_path / "preview-only"
    assert main(["synth", "--preview", "--out", str(out), *SYNTH_FAST]) == 0
    for name in ("contact_sheet.png", "au_sweep.png"):
        with Image.open(out / "preview" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 500
            assert np.asarray(image.convert("L")).std() > 10
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--n", "-1"], "--n"),
        ([], "nothing to do"),
        (["--n", "0"], "nothing to do"),
        (["--n", "4", "synth.workers=-1"], "synth.workers"),
    ],
)
def test_synth_bad_input_gives_one_line_and_exit_status_two(tmp_path, capsys, options, expected):
    out = tmp_path / "never"
    assert main(["synth", "--out", str(out), *options]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("aucgan synth: ") and expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


def test_overrides_may_follow_options_and_other_extras_are_refused(tmp_path, capsys):
    out = tmp_path / "late"
    options = ["--yaw", "10", "render.image_size=24", "--pitch", "0", "render.uv_size=16"]
    assert main(["render", "--out", str(out), *options]) == 0
    assert Image.open(out / "face.png").size == (24, 24)
    assert load_config(Config, out / "config.yaml").render.uv_size == 16
    for extra in ("stray", "--bogus"):
        with pytest.raises(SystemExit) as info:
            main(["render", "--out", str(out), "render.uv_size=16", "--yaw", "0", extra])
        assert info.value.code == 2 and f"unrecognized arguments: {extra}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--n", "1", "seed=3"])
    assert "unrecognized arguments: seed=3" in capsys.readouterr().err


def test_evaluate_reports_a_face_it_cannot_fit_in_one_line(tmp_path, monkeypatch, capsys):
    import aucgan.evaluate.run

    def no_face(*args, **kwargs):
        raise ValueError("MediaPipe finds no face in image 3 of the batch\nmore detail")

    monkeypatch.setattr(aucgan.evaluate.run, "evaluate", no_face)
    assert main(["evaluate", "--out", str(tmp_path / "report"), "--n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["aucgan evaluate: MediaPipe finds no face in image 3 of the batch"]


def test_evaluate_photo_size_without_refine_is_refused_in_one_line(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "report"), "--photo-size", "320"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["aucgan evaluate: --photo-size is read by the refinement only: add --refine"]
    assert not (tmp_path / "report").exists()


def test_presets_load_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    import aucgan

    monkeypatch.chdir(tmp_path)  # far from the repository: only the installed presets can be found
    assert main(["render", "--config", "synthetic-tiny", "--out", "tiny", "render.uv_size=32"]) == 0
    written = load_config(Config, tmp_path / "tiny" / "config.yaml")
    assert written.render.image_size == 64 and written.model.n_detail == 32  # synthetic-tiny's values
    capsys.readouterr()

    # doctor reads the preset's assets; package:// names the weights shipped inside the package
    weights = "assets.weights=package://pretrained/synthetic.safetensors"
    assert main(["doctor", "--config", "synthetic", weights]) == 0
    report = capsys.readouterr().out
    assert report.startswith("aucgan doctor: assets of synthetic ")
    (line,) = [line for line in report.splitlines() if line.startswith("assets.weights ")]
    shipped = Path(aucgan.__file__).parent / "pretrained" / "synthetic.safetensors"
    assert line.split()[1:] == ["valid", str(shipped)]

    # every command that takes a config takes a preset's name; an unknown name lists the presets
    for argv in (
        ["doctor", "--config", "synthetc"],
        ["train", "detail", "synthetc"],
        ["pack", "synthetc", "--out", "w.safetensors"],
        ["synth", "--config", "synthetc", "--n", "1", "--out", "s"],
        ["reconstruct", "tiny/face.png", "--out", "r", "--config", "synthetc"],
        ["evaluate", "--out", "e", "--config", "synthetc"],
        ["bench", "--config", "synthetc"],
        ["render", "--config", "synthetc", "--out", "x"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"aucgan {argv[0]}: no config file or preset named 'synthetc'; presets: default, flame-deca, "
            "synthetic, synthetic-deca, synthetic-tiny"
        ], argv
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny"]


def test_train_and_pack_read_a_preset_by_name(tmp_path, monkeypatch, capsys):
    # Stopped by a bad override after the preset is read: the error names the key, not a missing file.
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "detail", "synthetic-tiny"], ["pack", "synthetic", "--out", "w.safetensors"]):
        assert main([*argv, "model.n_detial=4"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "model.n_detial" in line and "did you mean" in line and "preset" not in line, line

"""Tests of aucgan.assets (``aucgan doctor``) and of the FLAME setting the assets unlock, end to end:
``aucgan reconstruct --config flame-deca`` on format-faithful fake assets.

The fakes have the published files' formats and sizes (FLAME 2020: 5023 vertices, 9976 triangles, 400
blend shapes, posedirs (5023, 3, 36), a sparse (5, 5023) joint regressor; DECA's landmark embedding, UV
template and mask; a FLAMETex ``.npz``; ``deca_model.tar`` with E_flame, E_detail, D_detail; an OpenGraphAU
file) but made-up values: a grid-shaped face patch with two small eyeballs, and a texture model at 128²
(the published one is 512²; any square size is read). DECA's E_flame regresses fixed sane codes (its last
layer's weights are zero) so that the face lands in the picture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aucgan.assets import ASSET_SPECS, asset_hint, check_assets
from aucgan.cli import main
from aucgan.config import AssetsConfig, Config, ConfigError, load_config, preset_path
from aucgan.nets.au_net import MEFARG
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout
from aucgan.nets.detail_decoder import DecaDetailDecoder
from aucgan.nets.detail_encoder import ResNetDetailEncoder

sparse = pytest.importorskip("scipy.sparse")
trimesh = pytest.importorskip("trimesh")

FLAME_DECA = preset_path("flame-deca")
N_VERTICES, N_FACES = 5023, 9976
GRID_ROWS, GRID_COLS = 70, 71
TEXTURE_SIDE, TEXTURE_COMPONENTS = 128, 60
CAMERA_SCALE = 7.0


@contextlib.contextmanager
def chumpy_stand_in():
    """A ``chumpy.ch.Ch`` that pickles as chumpy's does (its value under ``"x"``), only while pickling."""

    class Ch:
        def __init__(self, value):
            self.x = np.asarray(value, dtype=np.float64)
            self._dirty_vars = set()

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    modules = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch")}
    modules["chumpy.ch"].Ch = Ch
    try:
        sys.modules.update(modules)
        yield Ch
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def grid(rows: int, cols: int, offset: int) -> np.ndarray:
    """Counter-clockwise (seen from +z) triangles of a rows x cols vertex grid, row-major, y growing."""
    index = np.arange(rows * cols).reshape(rows, cols) + offset
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def patch(rows: int, cols: int, centre, half_size) -> np.ndarray:
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    return np.stack([x * half_size[0] + centre[0], y * half_size[1] + centre[1]], -1).reshape(-1, 2)


def fake_head() -> dict:
    """A face patch (70 x 71 grid on a half ellipsoid, metres) and two eyeball patches: 5023 vertices;
    9976 triangles (the list is padded to FLAME's count by repeating grid triangles)."""
    face_xy = patch(GRID_ROWS, GRID_COLS, (0.0, 0.0), (0.08, 0.1))
    depth = 0.06 * np.sqrt(np.clip(1 - (face_xy[:, 0] / 0.09) ** 2 - (face_xy[:, 1] / 0.11) ** 2, 0, 1))
    left, right = patch(3, 9, (0.03, 0.025), (0.012, 0.006)), patch(2, 13, (-0.03, 0.025), (0.012, 0.006))
    eyes_xy = np.concatenate([left, right])
    vertices = np.concatenate(
        [np.column_stack([face_xy, depth]), np.column_stack([eyes_xy, np.full(len(eyes_xy), 0.065)])]
    )
    face_count = GRID_ROWS * GRID_COLS
    faces = np.concatenate(
        [grid(GRID_ROWS, GRID_COLS, 0), grid(3, 9, face_count), grid(2, 13, face_count + len(left))]
    )
    faces = np.concatenate([faces, faces[: N_FACES - len(faces)]])
    assert vertices.shape == (N_VERTICES, 3) and faces.shape == (N_FACES, 3)
    eye_joint = np.zeros(N_VERTICES, dtype=np.int64)
    eye_joint[face_count : face_count + len(left)] = 3
    eye_joint[face_count + len(left) :] = 4
    return {"vertices": vertices, "faces": faces, "eye_joint": eye_joint, "face_count": face_count}


def flame_pickle(path: Path, head: dict, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vertices, eye_joint = head["vertices"], head["eye_joint"]
    weights = np.zeros((N_VERTICES, 5))
    jaw = np.clip((-0.02 - vertices[:, 1]) / 0.04, 0, 1)
    weights[:, 0], weights[:, 2] = 1 - jaw, jaw
    weights[eye_joint > 0] = 0
    weights[eye_joint == 3, 3] = 1
    weights[eye_joint == 4, 4] = 1
    regressor = np.zeros((5, N_VERTICES))
    regressor[0, : head["face_count"]] = 1
    regressor[1, :GRID_COLS] = 1
    regressor[2, jaw > 0.5] = 1
    regressor[3, eye_joint == 3] = 1
    regressor[4, eye_joint == 4] = 1
    regressor /= regressor.sum(1, keepdims=True)
    with chumpy_stand_in() as ch:
        data = {
            "f": head["faces"].astype(np.uint32),
            "v_template": ch(vertices),
            "shapedirs": ch(rng.normal(size=(N_VERTICES, 3, 400)) * 1e-3),
            "posedirs": rng.normal(size=(N_VERTICES, 3, 36)) * 1e-4,
            "J_regressor": sparse.csc_matrix(regressor),
            "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
            "weights": ch(weights),
            "J": ch(regressor @ vertices),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
        }
        path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def landmark_embedding(path: Path, seed: int = 1) -> Path:
    """DECA's layout; the landmarks sit on grid triangles of the central face."""
    rng = np.random.default_rng(seed)
    central = np.flatnonzero(np.arange(N_FACES) < 2 * (GRID_ROWS - 1) * (GRID_COLS - 1))[1000:8000]

    def bary(*shape):
        values = rng.random((*shape, 3)) + 0.1
        return values / values.sum(-1, keepdims=True)

    np.save(
        path,
        {
            "static_lmk_faces_idx": rng.choice(central, 51),
            "static_lmk_bary_coords": bary(51),
            "dynamic_lmk_faces_idx": torch.from_numpy(rng.choice(central, (79, 17))),
            "dynamic_lmk_bary_coords": torch.from_numpy(bary(79, 17)).float(),
            "full_lmk_faces_idx": rng.choice(central, (1, 68)),
            "full_lmk_bary_coords": bary(1, 68),
        },
        allow_pickle=True,
    )
    return path


def uv_template(path: Path, head: dict) -> Path:
    """FLAME's triangles with a planar projection as UVs (eyeballs in a corner of their own), written
    like Blender's export: ``v``, ``vt`` then ``f v/vt`` lines."""
    vertices, face_count = head["vertices"], head["face_count"]
    uvs = 0.05 + 0.9 * (vertices[:, :2] - vertices[:face_count, :2].min(0)) / np.ptp(
        vertices[:face_count, :2], 0
    )
    uvs[face_count:] = 0.01 + 0.03 * (uvs[face_count:] - uvs[face_count:].min(0))
    lines = ["# Blender OBJ File", "mtllib template.mtl"]
    lines += [f"v {x:.6f} {y + 1.5:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += ["usemtl None", "s off"]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in head["faces"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def face_mask(path: Path) -> Path:
    """512² RGB, white inside a centred ellipse (the face), black elsewhere."""
    y, x = np.mgrid[0:512, 0:512] / 511.0
    inside = ((x - 0.5) / 0.38) ** 2 + ((y - 0.5) / 0.42) ** 2 < 1
    Image.fromarray(np.repeat((inside * 255).astype(np.uint8)[..., None], 3, -1)).save(path)
    return path


def flame_texture(path: Path, seed: int = 2) -> Path:
    """``FLAME_albedo_from_BFM.npz``'s layout: MU (1, S·S·3) in [0, 1] (B, G, R), PC (S·S·3, K)."""
    rng = np.random.default_rng(seed)
    skin_bgr = np.array([0.45, 0.55, 0.75])
    mean = np.broadcast_to(skin_bgr, (TEXTURE_SIDE, TEXTURE_SIDE, 3)).reshape(1, -1)
    components = rng.normal(size=(mean.size, TEXTURE_COMPONENTS)).astype(np.float32) * 0.01
    np.savez(path, MU=mean, PC=components)
    return path


def sane_codes() -> torch.Tensor:
    """E_flame's regressed vector for every image: a frontal face, camera scale 7, white ambient light
    with some light from the front."""
    layout = CodeLayout.flame()
    codes = torch.zeros(layout.total)
    codes[layout.slice("camera")] = torch.tensor([CAMERA_SCALE, 0.0, 0.0])
    light = torch.zeros(9, 3)
    light[0], light[3] = 3.0, 0.6
    codes[layout.slice("light")] = light.reshape(-1)
    return codes


def deca_tar(path: Path) -> Path:
    torch.manual_seed(0)
    coarse = CoarseEncoder(CodeLayout.flame())
    with torch.no_grad():
        coarse.network.layers[2].weight.zero_()
        coarse.network.layers[2].bias.copy_(sane_codes())
    state = {
        "E_flame": coarse.network.state_dict(),
        "E_detail": ResNetDetailEncoder(128).state_dict(),
        "D_detail": DecaDetailDecoder(181).state_dict(),
        "opt": {"lr": 1e-4},
    }
    torch.save(state, path)
    return path


def opengraphau_file(path: Path) -> Path:
    """A stage-1 ResNet-18 MEFARG in OpenGraphAU's layout (smaller than the published ResNet-50)."""
    torch.manual_seed(1)
    net = MEFARG("resnet18", 1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def fake_assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    (folder / "FLAME2020").mkdir()
    head = fake_head()
    return {
        "flame_model": flame_pickle(folder / "FLAME2020" / "generic_model.pkl", head),
        "flame_landmarks": landmark_embedding(folder / "landmark_embedding.npy"),
        "head_template": uv_template(folder / "head_template.obj", head),
        "uv_face_mask": face_mask(folder / "uv_face_eye_mask.png"),
        "flame_albedo": flame_texture(folder / "FLAME_albedo_from_BFM.npz"),
        "deca": deca_tar(folder / "deca_model.tar"),
        "au_net": opengraphau_file(folder / "OpenGprahAU-ResNet18_first_stage.pth"),
    }


def overrides(assets: dict[str, Path]) -> list[str]:
    return [f"assets.{key}={path}" for key, path in assets.items()]


def doctor_output(capsys, *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def flat(report: str) -> str:
    """The report with its line wrapping undone."""
    return " ".join(report.split())


def statuses(report: str) -> dict[str, str]:
    found = {}
    for line in report.splitlines():
        match = re.match(r"^(assets\.\w+)\s+(valid|invalid|missing|not set)\b", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_every_asset_key_has_a_spec_in_config_order_of_the_report():
    keys = [item.name for item in dataclasses.fields(AssetsConfig)]
    assert sorted(spec.key for spec in ASSET_SPECS) == sorted(keys)
    assert all(spec.obtain and spec.unlocks and spec.file for spec in ASSET_SPECS)
    assert "flame.is.tue.mpg.de" in asset_hint("flame_model")


def test_doctor_without_assets(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, report = doctor_output(capsys)
    assert code == 0
    assert statuses(report) == {f"assets.{spec.key}": "not set" for spec in ASSET_SPECS}
    assert report.count("get it:") >= len(ASSET_SPECS)
    code, report = doctor_output(capsys, "--config", str(FLAME_DECA))
    found = statuses(report)
    assert code == 0 and found["assets.flame_model"] == "missing" and found["assets.detail"] == "not set"
    assert "aucgan reconstruct with face_model.kind=flame (model.detail_decoder=none): needs" in flat(report)


def test_doctor_with_the_fake_assets(capsys, fake_assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, report = doctor_output(capsys, "--config", str(FLAME_DECA), *overrides(fake_assets))
    assert code == 0
    found = statuses(report)
    assert {key: found[f"assets.{key}"] for key in fake_assets} == dict.fromkeys(fake_assets, "valid")
    assert found["assets.vgg19"] == "missing" and found["assets.weights"] == "not set"
    assert "its triangles are the FLAME model's" in flat(report)
    assert "MEFARG resnet18, stage 1" in flat(report)
    assert "(model.detail_decoder=none): ready" in flat(report)


class Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_doctor_refuses_code_in_a_flame_pickle(capsys, fake_assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / "generic_model.pkl"
    evil.write_bytes(pickle.dumps({"f": Payload(marker)}, protocol=2))
    code, report = doctor_output(
        capsys, f"assets.flame_model={evil}", f"assets.head_template={fake_assets['head_template']}"
    )
    assert code == 0 and not marker.exists()
    assert statuses(report)["assets.flame_model"] == "invalid"
    assert re.search(r"refused to unpickle (posix|os|nt)\.system \(FLAME model\)", flat(report))
    assert statuses(report)["assets.head_template"] == "valid"


@pytest.mark.parametrize("key", [spec.key for spec in ASSET_SPECS])
def test_a_payload_pickle_at_any_asset_path_is_refused_and_never_runs(key, capsys, tmp_path, monkeypatch):
    """Whatever the asset, a file carrying code is reported invalid and its code does not run: pickles go
    through the restricted unpickler or ``weights_only`` loading, arrays through ``allow_pickle=False``."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / f"evil-{key}"
    evil.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    code, report = doctor_output(capsys, f"assets.{key}={evil}")
    assert code == 0 and not marker.exists()
    assert statuses(report)[f"assets.{key}"] == "invalid"


def test_doctor_reports_invalid_files_with_the_loader_reason(capsys, fake_assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    html = tmp_path / "deca_model.tar"
    html.write_text("<!DOCTYPE html><html>Google Drive: sign in</html>", encoding="utf-8")
    wrong_template = tmp_path / "head_template.obj"
    wrong_template.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/1\n", encoding="utf-8")
    code, report = doctor_output(
        capsys,
        f"assets.deca={html}",
        f"assets.flame_model={fake_assets['flame_model']}",
        f"assets.head_template={wrong_template}",
    )
    found = statuses(report)
    assert code == 0 and found["assets.deca"] == "invalid" and found["assets.head_template"] == "invalid"
    assert (
        "an HTML page" in report and "has 3 vertices and 1 triangles, the FLAME model 5023 and 9976" in report
    )


def test_doctor_exits_2_on_a_bad_config(capsys):
    assert main(["doctor", "assets.flame_modle=x"]) == 2
    assert "did you mean 'assets.flame_model'" in capsys.readouterr().err


def test_flame_assets_not_given_are_named_in_one_line(tmp_path):
    from aucgan.build import coarse_stage

    cfg = load_config(
        Config, FLAME_DECA, [f"assets.flame_model={tmp_path / 'nope.pkl'}", 'assets.head_template=""']
    )
    with pytest.raises(ConfigError) as info:
        coarse_stage(cfg)
    message = str(info.value)
    assert "\n" not in message and "assets.flame_model=" in message and "no such file" in message
    assert "assets.head_template is not set" in message and "flame.is.tue.mpg.de" in message


def test_check_assets_shares_what_it_found(fake_assets):
    cfg = load_config(
        Config, None, [f"assets.{k}={fake_assets[k]}" for k in ("flame_model", "flame_landmarks")]
    )
    checks = {check.name: check for check in check_assets(cfg)}
    assert checks["assets.flame_landmarks"].ok and "79 yaws" in checks["assets.flame_landmarks"].detail


def photo(path: Path) -> Path:
    y, x = np.mgrid[0:224, 0:224]
    image = np.stack([x, y, 224 - x], -1) / 224 * 200 + 30
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def test_reconstruct_with_the_flame_deca_config_end_to_end(fake_assets, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "reconstruct",
        str(photo(tmp_path / "face.png")),
        "--config",
        str(FLAME_DECA),
        *overrides(fake_assets),
    ]
    assert main([*args, "--out", str(out), "--no-crop"]) == 0, capsys.readouterr().err
    coarse = trimesh.load(out / "face" / "coarse.obj", process=False, force="mesh")
    assert coarse.vertices.shape == (N_VERTICES, 3) and coarse.faces.shape == (N_FACES, 3)
    detail = trimesh.load(out / "face" / "detail.obj", process=False, force="mesh")
    assert len(detail.vertices) > 1000 and len(detail.faces) > 1000
    with np.load(out / "face" / "codes.npz", allow_pickle=False) as codes:
        assert codes["shape"].shape == (100,) and codes["expression"].shape == (50,)
        assert codes["albedo"].shape == (50,) and codes["detail_code"].shape == (128,)
        np.testing.assert_allclose(codes["camera"], [CAMERA_SCALE, 0, 0], atol=1e-5)
        assert str(codes["record_weights"]) == f"config {FLAME_DECA}"
    vis = np.asarray(Image.open(out / "face" / "vis.png"))
    assert vis.shape[0] == 256 and vis.std() > 0


def test_from_assets_keeps_flame_out_of_the_state_dicts(fake_assets):
    from aucgan.reconstruct import Reconstructor

    cfg = load_config(Config, FLAME_DECA, overrides(fake_assets))
    rec = Reconstructor.from_assets(cfg)
    keys = list(rec.coarse.state_dict())
    assert keys and all(key.startswith("encoder.") for key in keys)
    assert rec.coarse.face_model.n_shape == 100 and rec.coarse.albedo.n_albedo == 50
    assert rec.coarse.albedo.size == cfg.render.uv_size
    with pytest.raises(ConfigError, match=r"model\.max_z=0\.01"):
        Reconstructor.from_assets(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_z=0.05)))


def test_from_assets_with_our_detail_stage_from_a_checkpoint(fake_assets, tmp_path):
    from aucgan.build import detail_stage, flame_coarse_stage, flame_encoder
    from aucgan.reconstruct import Reconstructor

    ours = [
        "model.detail_decoder=token-attention",
        "model.coarse_backbone=resnet18",
        "model.detail_encoder=conv",
        "model.n_detail=16",
        "model.au_backbone=resnet18",
        "model.au_stage=1",
    ]
    cfg = load_config(Config, FLAME_DECA, [*overrides(fake_assets), *ours])
    torch.manual_seed(3)
    coarse = flame_coarse_stage(cfg, flame_encoder(cfg))
    detail = detail_stage(cfg, coarse.uv_space, MEFARG("resnet18", 1), cfg.face_model.n_expression)
    state = {f"coarse.{k}": v for k, v in coarse.state_dict().items()}
    state |= {f"detail.{k}": v for k, v in detail.state_dict().items()}
    trained = dataclasses.replace(cfg, assets=AssetsConfig())
    checkpoint = tmp_path / "last.ckpt"
    torch.save(
        {"aucgan": {"config": dataclasses.asdict(trained), "steps_done": 1}, "state_dict": state}, checkpoint
    )
    deca_only = load_config(
        Config, FLAME_DECA, [*overrides(fake_assets), "model.detail_decoder=token-attention"]
    )
    with pytest.raises(ConfigError, match=r"assets\.detail is not set"):
        Reconstructor.from_assets(deca_only)
    deca_only.assets.detail = str(checkpoint)
    rec = Reconstructor.from_assets(deca_only)
    assert rec.cfg.model.n_detail == 16 and rec.cfg.assets.detail == str(checkpoint)
    for name, tensor in detail.state_dict().items():
        torch.testing.assert_close(rec.detail.state_dict()[name], tensor, rtol=0, atol=0)
    result = rec(torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert result.detail.uv_displacement.shape == (1, 1, 256, 256)
    assert result.detail.uv_displacement.abs().max() <= cfg.model.max_z + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_from_assets_on_cuda_matches_cpu(fake_assets):
    from aucgan.reconstruct import Reconstructor

    cfg = load_config(Config, FLAME_DECA, overrides(fake_assets))
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    on_cpu = Reconstructor.from_assets(cfg)(images)
    on_gpu = Reconstructor.from_assets(cfg, device="cuda")(images)
    torch.testing.assert_close(on_gpu.coarse.vertices.cpu(), on_cpu.coarse.vertices, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(on_gpu.coarse.uv_albedo.cpu(), on_cpu.coarse.uv_albedo, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(
        on_gpu.detail.uv_displacement.cpu(), on_cpu.detail.uv_displacement, atol=1e-4, rtol=1e-2
    )


def test_doctor_says_whether_the_mediapipe_extra_is_there(monkeypatch):
    from aucgan.assets import check_tools

    def mediapipe_check():
        return next(check for check in check_tools() if check.name == "MediaPipe face mesh")

    with monkeypatch.context() as hidden:  # puts sys.modules back as it was (mediapipe is not re-imported)
        hidden.setitem(sys.modules, "mediapipe", None)
        missing = mediapipe_check()
    assert not missing.ok and "[mediapipe]" in missing.obtain
    assert "coarse.backend=mediapipe" in missing.unlocks
    if importlib.util.find_spec("mediapipe") is not None:
        assert mediapipe_check().ok


def _shipped_block(report: str) -> list[str]:
    lines = report.splitlines()
    start = lines.index("SHIPPED WITH AUCGAN") + 1
    return lines[start : lines.index("", start)]


def test_doctor_summarises_the_shipped_weights_in_a_few_lines(capsys):
    from aucgan.evaluate.report import format_quantity
    from aucgan.evaluate.shipped import SCORES_COMMAND, SCORES_FILE, read_scores
    from aucgan.reconstruct import SHIPPED_WEIGHTS

    code, report = doctor_output(capsys)
    block = _shipped_block(report)
    scores = read_scores(SCORES_FILE)

    assert code == 0 and block[0].startswith("synthetic weights") and str(SHIPPED_WEIGHTS) in block[0]
    detail = [line for line in block[1:] if not line.strip().startswith("unlocks:")]
    detail = detail[: next(i for i, line in enumerate(detail) if "details:" in line) + 1]
    assert len(detail) <= 8, "\n".join(block)
    text = flat("\n".join(block))
    assert "trained on aucgan's synthetic face world" in text
    assert f"displacement MAE {format_quantity(scores['displacement_mae']['model'], 'µm')}" in text, text
    assert f"{scores['edit']['monotonic']} of {scores['edit']['of']} AU edits monotonic" in text
    assert "README.md" in text and SCORES_FILE.name in text
    assert "How they were made" not in report and "issue" not in text and SCORES_COMMAND not in text


def test_doctor_says_what_chromium_unlocks(capsys):
    _, report = doctor_output(capsys)
    text = flat(report)
    assert "report.png" not in text
    assert "python -m aucgan.evaluate.screenshot REPORT.html OUT.png" in text

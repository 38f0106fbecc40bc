"""Every public function that takes a path takes a ``str`` as well as an ``os.PathLike`` (a
:class:`~pathlib.Path` here), as the README's example ``aucgan.write_face(f"out/{name}", ...)`` does."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from aucgan.bench import write_results_section
from aucgan.config import Config, load_config, save_config
from aucgan.data.images import collect_inputs, load_image
from aucgan.data.shards import ShardedFaces, WorldParameters, write_dataset
from aucgan.evaluate.run import demo_inputs
from aucgan.evaluate.screenshot import screenshot
from aucgan.export import (
    read_displacement_png,
    read_normal_map,
    write_displacement,
    write_image,
    write_normal_map,
    write_obj,
)
from aucgan.loaders.common import read_checkpoint
from aucgan.loaders.opengraphau import load_au_net, save_au_net
from aucgan.nets.au_net import MEFARG
from aucgan.reconstruct import (
    Reconstructor,
    edit_face,
    is_finished,
    load_faces,
    read_face,
    reconstruct_inputs,
    write_face,
)
from aucgan.weights import read_weights, save_weights, stored_config_yaml

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
KINDS = pytest.mark.parametrize("kind", [str, Path], ids=["str", "Path"])


@KINDS
def test_reconstruction_functions_take_str_and_path(kind, random_reconstructor, random_weights, tmp_path):
    loaded = Reconstructor.load(kind(random_weights))
    assert loaded.source == str(random_weights)
    images, faces = load_faces([kind(PHOTO)])
    assert images.shape[0] == len(faces) == 1
    reconstruction = random_reconstructor(images)

    folder = write_face(kind(tmp_path / "faces" / faces[0].name), random_reconstructor, reconstruction, 0)
    assert folder == tmp_path / "faces" / "grace_hopper" and isinstance(folder, Path)
    assert is_finished(kind(folder)) and not is_finished(kind(tmp_path))
    rebuilt, _ = read_face(kind(folder), random_reconstructor)
    assert rebuilt.batch_size == 1
    target, _, _ = edit_face(kind(folder), random_reconstructor, {"AU12": 1.0}, out=kind(tmp_path / "edited"))
    assert target == tmp_path / "edited" and is_finished(target)

    report = reconstruct_inputs(random_reconstructor, kind(PHOTO), kind(tmp_path / "batch"))
    assert not report.failed and report.written == [tmp_path / "batch" / "grace_hopper"]


@KINDS
def test_file_functions_take_str_and_path(kind, random_reconstructor, random_weights, tmp_path):
    rec = random_reconstructor
    # Weights files.
    assert read_weights(kind(random_weights)).provenance
    assert "model:" in stored_config_yaml(kind(random_weights))
    written = save_weights(
        kind(tmp_path / "w.safetensors"), {"coarse": rec.coarse, "detail": rec.detail}, rec.cfg
    )
    assert written == tmp_path / "w.safetensors" and written.is_file()
    # Images, normal maps, displacements and meshes.
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    assert write_image(kind(tmp_path / "image.png"), pixels).is_file()
    assert load_image(kind(tmp_path / "image.png")).shape == (32, 32, 3)
    assert [item.name for item in collect_inputs(kind(tmp_path / "image.png"))] == ["image"]
    normals = torch.nn.functional.normalize(torch.rand(3, 4, 4) + 0.1, dim=0)
    write_normal_map(kind(tmp_path / "normals.png"), normals)
    assert read_normal_map(kind(tmp_path / "normals.png")).shape == (3, 4, 4)
    png, npy = write_displacement(kind(tmp_path / "displacement.png"), torch.zeros(4, 4), 0.05)
    assert png.is_file() and npy.is_file()
    assert read_displacement_png(kind(png)).shape == (4, 4)
    triangle = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2]])
    assert Path(write_obj(kind(tmp_path / "triangle.obj"), *triangle)).is_file()
    # Checkpoints.
    net = MEFARG("resnet18", 1)
    assert save_au_net(net, kind(tmp_path / "au.ckpt")) == tmp_path / "au.ckpt"
    assert load_au_net(kind(tmp_path / "au.ckpt")).stage == 1
    assert "state_dict" in read_checkpoint(kind(tmp_path / "au.ckpt"))
    # Configs.
    config = save_config(rec.cfg, kind(tmp_path / "run"))
    assert load_config(Config, kind(config)) == rec.cfg
    # Data sets, the demo's inputs and the report's screenshot.
    parameters = WorldParameters(seed=5, image_size=32, uv_size=32, images_per_identity=2)
    write_dataset(kind(tmp_path / "data"), parameters, {"train": 2, "val": 2, "test": 2}, workers=0)
    assert len(ShardedFaces(kind(tmp_path / "data"), "test")) == 2
    synthetic, _ = demo_inputs(rec, kind(tmp_path / "demo"), n_synthetic=1)
    assert synthetic == tmp_path / "demo" / "synthetic" and len(list(synthetic.iterdir())) == 1
    with pytest.raises(FileNotFoundError, match="no HTML file"):
        screenshot(kind(tmp_path / "missing.html"), kind(tmp_path / "shot.png"))
    # The benchmark's section of a results file.
    results = tmp_path / "RESULTS.md"
    write_results_section(kind(results), "bench", "## Speed")
    assert "<!-- bench -->\n## Speed\n<!-- /bench -->" in results.read_text(encoding="utf-8")

import re

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from aucgan.export import (
    DISPLACEMENT_RANGE_KEY,
    read_displacement_png,
    read_normal_map,
    write_displacement,
    write_image,
    write_normal_map,
    write_obj,
)
from aucgan.geometry.uv import dense_mesh

TETRAHEDRON_VERTICES = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRAHEDRON_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _load(path) -> trimesh.Trimesh:
    return trimesh.load(path, process=False, maintain_order=True)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


def _random_mesh(generator: np.random.Generator, n_vertices: int = 30, n_faces: int = 40):
    """float32 vertices and uvs; every vertex is used by some face, no face repeats a vertex."""
    vertices = generator.normal(size=(n_vertices, 3)).astype(np.float32)
    faces = np.stack([generator.choice(n_vertices, 3, replace=False) for _ in range(n_faces)])
    faces[: n_vertices // 3] = np.arange(n_vertices // 3 * 3).reshape(-1, 3)
    uvs = generator.uniform(size=(n_vertices, 2)).astype(np.float32)
    return vertices, faces, uvs


def test_write_obj_with_texture_round_trips_through_trimesh(tmp_path):
    generator = np.random.default_rng(0)
    vertices, faces, uvs = _random_mesh(generator)
    texture = torch.from_numpy(generator.uniform(size=(3, 16, 24)).astype(np.float32))
    path = write_obj(
        tmp_path / "coarse.obj", torch.from_numpy(vertices), torch.from_numpy(faces), uvs=uvs, texture=texture
    )
    assert path == tmp_path / "coarse.obj"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coarse.mtl", "coarse.obj", "coarse_texture.png"]

    mesh = _load(path)
    np.testing.assert_array_equal(mesh.vertices.astype(np.float32), vertices)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.visual.uv.astype(np.float32), uvs)
    image = np.asarray(mesh.visual.material.image.convert("RGB"))
    expected = np.round(np.moveaxis(texture.numpy(), 0, -1).astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert "mtllib coarse.mtl" in lines and "usemtl material" in lines


def test_write_obj_uint8_texture_custom_names_and_normals(tmp_path):
    generator = np.random.default_rng(1)
    vertices, faces, uvs = _random_mesh(generator)
    normals = generator.normal(size=vertices.shape)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    texture = generator.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    path = write_obj(
        tmp_path / "detail.obj",
        vertices,
        faces,
        uvs=uvs,
        normals=normals,
        texture=texture,
        material_name="skin",
        texture_name="texture.png",
    )
    assert (tmp_path / "texture.png").is_file() and (tmp_path / "detail.mtl").is_file()
    mesh = _load(path)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.vertex_normals, normals, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(mesh.visual.material.image.convert("RGB")), texture)
    assert "newmtl skin" in (tmp_path / "detail.mtl").read_text(encoding="utf-8").splitlines()


def test_write_obj_with_separate_uv_indices_keeps_every_corner(tmp_path):
    generator = np.random.default_rng(2)
    uvs = generator.uniform(size=(7, 2))
    uv_faces = np.array([[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4]])
    path = write_obj(
        tmp_path / "seams.obj", TETRAHEDRON_VERTICES, TETRAHEDRON_FACES, uvs=uvs, uv_faces=uv_faces
    )
    mesh = trimesh.load(path, process=False)
    np.testing.assert_array_equal(mesh.vertices[mesh.faces], TETRAHEDRON_VERTICES[TETRAHEDRON_FACES])
    np.testing.assert_array_equal(mesh.visual.uv[mesh.faces], uvs[uv_faces])


def test_write_obj_geometry_only(tmp_path):
    path = write_obj(tmp_path / "plain.obj", TETRAHEDRON_VERTICES, TETRAHEDRON_FACES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.obj"]
    mesh = _load(path)
    np.testing.assert_array_equal(mesh.vertices, TETRAHEDRON_VERTICES)
    np.testing.assert_array_equal(mesh.faces, TETRAHEDRON_FACES)
    assert mesh.is_watertight and mesh.volume > 0


def test_dense_mesh_exports_with_uvs(tmp_path):
    size = 32
    u = (torch.arange(size) + 0.5) / size
    grid_v, grid_u = torch.meshgrid(1.0 - u, u, indexing="ij")
    positions = torch.stack([grid_u, grid_v, 0.1 * torch.sin(6.0 * grid_u)])
    mask = (grid_u - 0.5) ** 2 + (grid_v - 0.5) ** 2 < 0.2
    vertices, faces, uvs = dense_mesh(positions, mask)
    texture = torch.rand(3, size, size, generator=torch.Generator().manual_seed(3))
    mesh = _load(write_obj(tmp_path / "detail.obj", vertices, faces, uvs=uvs, texture=texture))
    assert mesh.visual.uv is not None and mesh.visual.uv.shape == (vertices.shape[0], 2)
    np.testing.assert_array_equal(mesh.visual.uv.astype(np.float32), uvs.numpy())
    np.testing.assert_array_equal(mesh.faces, faces.numpy())
    assert mesh.visual.material.image.size == (size, size)


def test_displacement_png_round_trip(tmp_path):
    generator = np.random.default_rng(4)
    max_abs = 0.01
    displacement = generator.uniform(-1.2 * max_abs, 1.2 * max_abs, size=(64, 48)).astype(np.float32)
    displacement[0, :3] = [-max_abs, 0.0, max_abs]
    png, npy = write_displacement(
        tmp_path / "displacement.png", torch.from_numpy(displacement)[None], max_abs
    )
    assert png == tmp_path / "displacement.png" and npy == tmp_path / "displacement.npy"

    np.testing.assert_array_equal(np.load(npy), displacement)
    decoded = read_displacement_png(png)
    clipped = np.clip(displacement.astype(np.float64), -max_abs, max_abs)
    assert decoded.shape == displacement.shape
    # Half a level at most; the slack is float64 rounding for values that fall exactly between two levels.
    assert np.abs(decoded - clipped).max() <= max_abs / 65535 * (1 + 1e-9)
    with Image.open(png) as image:
        assert image.mode == "I;16"
        levels = np.asarray(image)
        assert image.text[DISPLACEMENT_RANGE_KEY].split() == [repr(-max_abs), repr(max_abs)]
    assert levels[0, 0] == 0 and levels[0, 2] == 65535 and levels[0, 1] in (32767, 32768)
    assert levels.min() == 0 and levels.max() == 65535


def test_sixteen_bit_png_keeps_every_level(tmp_path):
    levels = np.arange(65536, dtype=np.float64).reshape(256, 256)
    max_abs = 2.0
    png, _ = write_displacement(tmp_path / "levels.png", levels / 65535 * 2 * max_abs - max_abs, max_abs)
    with Image.open(png) as image:
        np.testing.assert_array_equal(np.asarray(image).astype(np.int64), levels.astype(np.int64))


def test_read_displacement_png_refuses_other_pngs(tmp_path):
    write_image(tmp_path / "plain.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=re.escape(DISPLACEMENT_RANGE_KEY)):
        read_displacement_png(tmp_path / "plain.png")


def test_normal_map_round_trip(tmp_path):
    generator = np.random.default_rng(5)
    normals = generator.normal(size=(3, 20, 30))
    normals /= np.linalg.norm(normals, axis=0, keepdims=True)
    normals[:, 0, 0] = 0.0
    path = write_normal_map(tmp_path / "normals.png", torch.from_numpy(normals))
    decoded = read_normal_map(path)
    assert decoded.shape == normals.shape and decoded.dtype == np.float32
    assert np.abs(decoded - normals).max() <= 2 / 255
    with Image.open(path) as image:
        assert image.mode == "RGB"
        pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == (128, 128, 128)
    np.testing.assert_array_equal(pixels[..., 2], np.round((normals[2] + 1) / 2 * 255).astype(np.uint8))


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 5, 7), (5, 7)])
def test_write_image_float_layouts(tmp_path, shape):
    generator = np.random.default_rng(6)
    image = generator.uniform(-0.1, 1.1, size=shape)
    with Image.open(write_image(tmp_path / "image.png", image)) as loaded:
        assert loaded.mode == ("RGB" if len(shape) == 3 and shape[0] == 3 else "L")
        pixels = np.asarray(loaded)
    expected = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    expected = np.moveaxis(expected, 0, -1) if len(shape) == 3 and shape[0] == 3 else expected.reshape(5, 7)
    np.testing.assert_array_equal(pixels, expected)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    generator = np.random.default_rng(7)
    vertices, faces, uvs = _random_mesh(generator)
    folder = tmp_path / "a" / "b"
    write_obj(folder / "mesh.obj", vertices, faces, uvs=uvs, texture=np.zeros((4, 4, 3), np.uint8))
    write_displacement(folder / "displacement.png", np.zeros((8, 8)), 0.01)
    write_normal_map(folder / "normals.png", np.zeros((3, 8, 8)))
    write_image(folder / "image.png", np.zeros((8, 8)))
    assert _leftovers(tmp_path) == []
    assert len(list(folder.iterdir())) == 7


def test_failed_write_keeps_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    path = write_image(tmp_path / "image.png", np.ones((4, 4)))
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(path, np.zeros((4, 4)))
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_paths_with_spaces_and_non_ascii(tmp_path):
    generator = np.random.default_rng(8)
    vertices, faces, uvs = _random_mesh(generator)
    folder = tmp_path / "résultats 面 1" / "visage été"
    path = write_obj(
        str(folder / "détail mesh.obj"), vertices, faces, uvs=uvs, texture=np.full((4, 4, 3), 7, np.uint8)
    )
    mesh = _load(path)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(mesh.visual.uv.astype(np.float32), uvs)
    assert np.asarray(mesh.visual.material.image.convert("RGB")).max() == 7
    png, npy = write_displacement(folder / "déplacement ü.png", np.full((4, 4), 0.005), 0.01)
    assert np.abs(read_displacement_png(png) - 0.005).max() <= 0.01 / 65535 * (1 + 1e-9) and npy.is_file()
    assert read_normal_map(write_normal_map(folder / "normales 法線.png", np.ones((3, 2, 2)))).shape == (
        3,
        2,
        2,
    )


def test_shape_and_value_errors(tmp_path):
    with pytest.raises(ValueError, match=re.escape("(4, 2)")):
        write_obj(tmp_path / "m.obj", TETRAHEDRON_VERTICES[:, :2], TETRAHEDRON_FACES)
    with pytest.raises(ValueError, match=re.escape("(4, 4)")):
        write_obj(tmp_path / "m.obj", TETRAHEDRON_VERTICES, np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match=re.escape("0..3")):
        write_obj(tmp_path / "m.obj", TETRAHEDRON_VERTICES, TETRAHEDRON_FACES + 1)
    with pytest.raises(ValueError, match=re.escape("(5, 2)")):
        write_obj(tmp_path / "m.obj", TETRAHEDRON_VERTICES, TETRAHEDRON_FACES, uvs=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="texture needs uvs"):
        write_obj(tmp_path / "m.obj", TETRAHEDRON_VERTICES, TETRAHEDRON_FACES, texture=np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="texture_name"):
        write_obj(
            tmp_path / "m.obj",
            TETRAHEDRON_VERTICES,
            TETRAHEDRON_FACES,
            uvs=np.zeros((4, 2)),
            texture=np.zeros((3, 4, 4)),
            texture_name="sub/texture.png",
        )
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4)")):
        write_image(tmp_path / "i.png", np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=re.escape("(4, 4, 3)")):
        write_normal_map(tmp_path / "n.png", np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4)")):
        write_displacement(tmp_path / "d.png", np.zeros((2, 4, 4)), 0.01)
    with pytest.raises(ValueError, match="max_abs"):
        write_displacement(tmp_path / "d.png", np.zeros((4, 4)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        write_displacement(tmp_path / "d.png", np.full((4, 4), np.nan), 0.01)
    assert list(tmp_path.iterdir()) == []

"""File writers for reconstruction outputs: Wavefront OBJ (+ MTL + texture), 8-bit PNG images, normal maps
and 16-bit displacement maps, with the readers needed to load the maps back.

Every writer is atomic: it writes a hidden temporary file in the destination folder and moves it into
place with :func:`os.replace`, so a reader never sees a half-written file and an interrupted run leaves no
partial output. Parent folders are created. Paths may be ``str`` or :class:`os.PathLike`; array arguments
may be NumPy arrays or torch tensors (on any device; they are detached and copied to the CPU).

Images are written with row 0 at the top. A UV map therefore lands in the file with the largest v on the
first row, which is how OBJ texture coordinates (v up) address an image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from aucgan.atomic import atomic_open

DISPLACEMENT_RANGE_KEY = "aucgan:displacement_range"
"""PNG text chunk holding ``"<low> <high>"``: the displacements that 0 and 65535 stand for."""

_UINT16_MAX = 65535


def _to_numpy(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy array, array-like or torch tensor (detached, copied to the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _as_path(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path))


def _save_png(path: Path, image: Image.Image, text: dict[str, str] | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_open(path, binary=True) as handle:
        image.save(handle, format="PNG", pnginfo=info)
    return path


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")


def _to_uint8_image(image: Any, name: str = "image") -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8 from a float ``(3, H, W)``, ``(1, H, W)``, ``(H, W)`` in [0, 1]
    (clipped, rounded to the nearest of 256 levels) or a uint8 ``(H, W, 3)``, ``(H, W)``."""
    array = _to_numpy(image)
    if array.dtype == np.uint8:
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3):
            return array
        raise ValueError(f"{name} as uint8 must be (H, W, 3) or (H, W), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be float in [0, 1] or uint8, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    elif array.ndim != 2:
        raise ValueError(f"{name} as float must be (3, H, W), (1, H, W) or (H, W), got {array.shape}")
    _check_finite(name, array)
    return np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_file_name(name: str, value: str) -> None:
    if not value or any(c in value for c in "/\\\n\r") or value.strip() != value:
        raise ValueError(f"{name} must be a plain file name without folders or line breaks, got {value!r}")


def write_image(path: str | os.PathLike[str], image: Any) -> Path:
    """Write an image as an 8-bit PNG (RGB or grayscale).

    Args:
        path: destination ``.png``.
        image: float ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)`` in [0, 1] (clipped), or uint8 ``(H, W, 3)``
            or ``(H, W)``. Row 0 is the top of the image.

    Returns:
        The written path.
    """
    return _save_png(_as_path(path), Image.fromarray(_to_uint8_image(image)))


def write_normal_map(path: str | os.PathLike[str], normals: Any) -> Path:
    """Write a normal map as an RGB PNG with ``rgb = (n + 1) / 2`` (8 bits per channel).

    The vectors are stored in the frame they are given in: aucgan's ``uv_normals`` and
    ``uv_detail_normals`` are object-space normals of the face model in world axes (x to the viewer's
    right, y up, z towards the viewer), so R, G, B hold x, y, z; it is not a tangent-space map. A zero
    vector (texels outside the face) becomes mid grey (128, 128, 128).

    Args:
        path: destination ``.png``.
        normals: ``(3, H, W)`` unit vectors (components in [-1, 1], clipped), e.g. a UV map with row 0 at
            the largest v.

    Returns:
        The written path.
    """
    array = _to_numpy(normals)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"normals must be (3, H, W), got {array.shape}")
    _check_finite("normals", array)
    rgb = (np.clip(array.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0
    return write_image(path, rgb)


def read_normal_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a normal map written by :func:`write_normal_map`.

    Returns:
        ``(3, H, W)`` float32 vectors ``2 * rgb / 255 - 1`` (unit length up to 8-bit quantisation).
    """
    with Image.open(_as_path(path)) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.moveaxis(rgb / 255.0 * 2.0 - 1.0, -1, 0).astype(np.float32)


def write_displacement(
    path_png: str | os.PathLike[str], displacement: Any, max_abs: float
) -> tuple[Path, Path]:
    """Write a displacement map as a 16-bit grayscale PNG and as float32 ``.npy`` beside it (same stem).

    The PNG maps ``[-max_abs, max_abs]`` linearly onto ``[0, 65535]`` (values outside are clipped; zero
    displacement is 32767.5, stored as 32768) and records the range in the text chunk
    ``"aucgan:displacement_range"`` as ``"<low> <high>"``; :func:`read_displacement_png` inverts it. The
    quantisation error is at most ``max_abs / 65535``. The ``.npy`` holds the exact values, unclipped.

    Args:
        path_png: destination ending in ``.png``.
        displacement: ``(H, W)`` or ``(1, H, W)`` float displacement in model units, row 0 = largest v.
        max_abs: positive half-width of the stored range, in the same units (e.g. the model's ``max_z``).

    Returns:
        ``(png_path, npy_path)``.
    """
    png_path = _as_path(path_png)
    if png_path.suffix.lower() != ".png":
        raise ValueError(f"path_png must end in .png, got {str(png_path)!r}")
    array = _to_numpy(displacement)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"displacement must be (H, W) or (1, H, W), got {_to_numpy(displacement).shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"displacement must be a float array, got dtype {array.dtype}")
    _check_finite("displacement", array)
    max_abs = float(max_abs)
    if not (np.isfinite(max_abs) and max_abs > 0.0):
        raise ValueError(f"max_abs must be positive and finite, got {max_abs}")

    scaled = (np.clip(array.astype(np.float64), -max_abs, max_abs) + max_abs) / (2.0 * max_abs)
    levels = np.round(scaled * _UINT16_MAX).astype(np.uint16)
    _save_png(png_path, Image.fromarray(levels), {DISPLACEMENT_RANGE_KEY: f"{-max_abs!r} {max_abs!r}"})

    npy_path = png_path.with_suffix(".npy")
    with atomic_open(npy_path, binary=True) as handle:
        np.save(handle, array.astype(np.float32))
    return png_path, npy_path


def read_displacement_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 16-bit displacement PNG written by :func:`write_displacement`.

    Returns:
        ``(H, W)`` float64 displacement, ``low + level / 65535 * (high - low)`` with the stored range.
    """
    path = _as_path(path)
    with Image.open(path) as image:
        text = getattr(image, "text", {})
        if DISPLACEMENT_RANGE_KEY not in text:
            raise ValueError(
                f"{path} has no {DISPLACEMENT_RANGE_KEY!r} text chunk; not written by write_displacement"
            )
        if image.mode not in ("I;16", "I"):
            raise ValueError(f"{path} must be a 16-bit grayscale PNG, got mode {image.mode!r}")
        levels = np.asarray(image).astype(np.float64)
    low, high = (float(value) for value in text[DISPLACEMENT_RANGE_KEY].split())
    return low + levels / _UINT16_MAX * (high - low)


def _format_rows(array: np.ndarray, prefix: str) -> str:
    """OBJ lines ``prefix x y ...`` with enough digits to read back the exact float32 or float64 values."""
    fmt = "%.17g" if array.dtype == np.float64 else "%.9g"
    columns = " ".join([fmt] * array.shape[1])
    return "".join(f"{prefix} {columns}\n" % tuple(row) for row in array.astype(np.float64).tolist())


def _face_lines(faces: np.ndarray, uv_faces: np.ndarray | None, with_normals: bool) -> str:
    corners = [faces + 1]
    if uv_faces is not None:
        corners.append(uv_faces + 1)
    if with_normals:
        corners.append(faces + 1)
    corner_format = "%d//%d" if uv_faces is None and with_normals else "/".join(["%d"] * len(corners))
    interleaved = np.stack(corners, axis=-1).reshape(faces.shape[0], -1)
    line = "f " + " ".join([corner_format] * 3) + "\n"
    return "".join(line % tuple(row) for row in interleaved.tolist())


def _check_indices(name: str, indices: np.ndarray, count: int, rows: int | None = None) -> None:
    if indices.ndim != 2 or indices.shape[1] != 3 or (rows is not None and indices.shape[0] != rows):
        expected = "(F, 3)" if rows is None else f"({rows}, 3)"
        raise ValueError(f"{name} must be {expected}, got {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name} must be integer indices, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        raise ValueError(f"{name} must index 0..{count - 1}, got range {indices.min()}..{indices.max()}")


def write_obj(
    path: str | os.PathLike[str],
    vertices: Any,
    faces: Any,
    uvs: Any | None = None,
    uv_faces: Any | None = None,
    normals: Any | None = None,
    texture: Any | None = None,
    material_name: str = "material",
    texture_name: str | None = None,
) -> Path:
    """Write a triangle mesh as Wavefront OBJ, with a material and texture image when ``texture`` is given.

    With a texture, three files land in the same folder: the OBJ (with ``mtllib`` and ``usemtl`` lines),
    ``<stem>.mtl`` (one material: white diffuse ``Kd 1 1 1`` modulated by ``map_Kd``) and the texture PNG.
    The OBJ is written last, so its presence means the set is complete.

    Args:
        path: destination ``.obj``.
        vertices: ``(V, 3)`` float positions (model units).
        faces: ``(F, 3)`` int 0-based vertex indices, counter-clockwise seen from outside.
        uvs: ``(U, 2)`` float texture coordinates, v up (OBJ convention), or None.
        uv_faces: ``(F, 3)`` int 0-based indices into ``uvs``; defaults to ``faces`` when ``U == V``.
        normals: ``(V, 3)`` per-vertex normals, or None.
        texture: float ``(3, H, W)`` in [0, 1] or uint8 ``(H, W, 3)``, row 0 = largest v; needs ``uvs``.
        material_name: name of the material (no whitespace).
        texture_name: file name of the texture PNG beside the OBJ; defaults to ``"<stem>_texture.png"``.

    Returns:
        The path of the OBJ.
    """
    path = _as_path(path)
    vertex_array = _to_numpy(vertices)
    face_array = _to_numpy(faces)
    if vertex_array.ndim != 2 or vertex_array.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertex_array.shape}")
    _check_finite("vertices", vertex_array)
    n_vertices = vertex_array.shape[0]
    _check_indices("faces", face_array, n_vertices)

    uv_array = uv_face_array = None
    if uvs is not None:
        uv_array = _to_numpy(uvs)
        if uv_array.ndim != 2 or uv_array.shape[1] != 2:
            raise ValueError(f"uvs must be (U, 2), got {uv_array.shape}")
        _check_finite("uvs", uv_array)
        if uv_faces is not None:
            uv_face_array = _to_numpy(uv_faces)
        elif uv_array.shape[0] == n_vertices:
            uv_face_array = face_array
        else:
            raise ValueError(
                f"uv_faces is required when uvs {uv_array.shape} do not match vertices {vertex_array.shape}"
            )
        _check_indices("uv_faces", uv_face_array, uv_array.shape[0], rows=face_array.shape[0])
    elif uv_faces is not None:
        raise ValueError("uv_faces given without uvs")

    normal_array = None
    if normals is not None:
        normal_array = _to_numpy(normals)
        if normal_array.shape != (n_vertices, 3):
            raise ValueError(f"normals must be ({n_vertices}, 3), got {normal_array.shape}")
        _check_finite("normals", normal_array)

    header = ["# written by aucgan"]
    if texture is not None:
        if uv_array is None:
            raise ValueError("texture needs uvs")
        if not material_name or any(c.isspace() for c in material_name):
            raise ValueError(f"material_name must be non-empty without whitespace, got {material_name!r}")
        texture_name = f"{path.stem}_texture.png" if texture_name is None else texture_name
        _check_file_name("texture_name", texture_name)
        if not texture_name.lower().endswith(".png"):
            raise ValueError(f"texture_name must end in .png, got {texture_name!r}")
        mtl_name = f"{path.stem}.mtl"
        _check_file_name("mtl file name", mtl_name)
        texture_pixels = _to_uint8_image(texture, "texture")
        _save_png(path.with_name(texture_name), Image.fromarray(texture_pixels))
        material = [
            "# written by aucgan",
            f"newmtl {material_name}",
            "Kd 1 1 1",
            "Ks 0 0 0",
            "illum 1",
            f"map_Kd {texture_name}",
            "",
        ]
        with atomic_open(path.with_name(mtl_name), binary=False) as handle:
            handle.write("\n".join(material))
        header.append(f"mtllib {mtl_name}")

    with atomic_open(path, binary=False) as handle:
        handle.write("\n".join(header) + "\n")
        handle.write(_format_rows(vertex_array, "v"))
        if uv_array is not None:
            handle.write(_format_rows(uv_array, "vt"))
        if normal_array is not None:
            handle.write(_format_rows(normal_array, "vn"))
        if texture is not None:
            handle.write(f"usemtl {material_name}\n")
        handle.write(_face_lines(face_array.astype(np.int64), uv_face_array, normal_array is not None))
    return path

"""Render the built-in face from explicit codes, for people to look at (``aucgan render``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from aucgan.export import write_image, write_obj
from aucgan.face_model.appearance import default_albedo
from aucgan.face_model.procedural import ProceduralFaceModel
from aucgan.geometry.render import Rendering, render
from aucgan.geometry.shading import light_from_direction

# Orthographic camera (scale, tx, ty) that frames the built-in head (about 18 cm tall) in the image.
FRAMING_CAMERA = (0.105, 0.0, 0.45)
# Dark grey behind the face when no background is given.
PREVIEW_BACKGROUND = (0.12, 0.12, 0.14)


@dataclass(frozen=True)
class FaceScene:
    """Codes of one or more faces to render.

    Attributes:
        shape: ``(B, n_shape)`` identity code. expression: ``(B, 27)`` AU intensities.
        pose: ``(B, 6)`` global + jaw axis-angle (radians). light_direction: ``(B, 3)`` towards the light.
    """

    shape: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    light_direction: torch.Tensor


@dataclass(frozen=True)
class SceneRender:
    """A rendered scene: the posed vertices ``(B, V, 3)``, the UV albedo ``(3, S, S)`` and the rendering."""

    vertices: torch.Tensor
    albedo: torch.Tensor
    rendering: Rendering


@torch.no_grad()
def render_scene(
    model: ProceduralFaceModel,
    scene: FaceScene,
    image_size: int = 224,
    uv_size: int = 256,
    background: tuple[float, float, float] = PREVIEW_BACKGROUND,
) -> SceneRender:
    """Pose the built-in face with ``scene``'s codes and render it with the default albedo.

    ``background`` is the RGB colour behind the face, each channel in [0, 1].
    """
    geometry = model(scene.shape, scene.expression, scene.pose)
    batch = scene.shape.shape[0]
    albedo = default_albedo(model.uvs, model.rims, uv_size)
    rendering = render(
        geometry.vertices,
        model.faces,
        model.uvs,
        model.uv_faces,
        camera=torch.tensor([FRAMING_CAMERA]).expand(batch, -1),
        light=light_from_direction(scene.light_direction, intensity=0.6, ambient=0.55),
        albedo_map=albedo.expand(batch, -1, -1, -1),
        image_size=image_size,
        background=torch.tensor(background, dtype=geometry.vertices.dtype),
    )
    return SceneRender(vertices=geometry.vertices, albedo=albedo, rendering=rendering)


def write_scene(model: ProceduralFaceModel, result: SceneRender, out: Path, index: int = 0) -> list[Path]:
    """Write ``face.png`` and ``face.obj`` (+ ``.mtl`` and texture) for item ``index`` of a rendered scene."""
    image = result.rendering.image[index].clamp(0.0, 1.0)
    return [
        write_image(out / "face.png", image),
        write_obj(
            out / "face.obj",
            result.vertices[index],
            model.faces,
            uvs=model.uvs,
            uv_faces=model.uv_faces,
            texture=result.albedo,
        ),
    ]

"""Face models behind one interface: the built-in procedural head (default) and FLAME (your files)."""

from aucgan.face_model.base import FaceGeometry, FaceModel
from aucgan.face_model.flame import FlameFaceModel, FlameLayer, load_flame, load_flame_face_model
from aucgan.face_model.procedural import ProceduralFaceModel

__all__ = [
    "FaceGeometry",
    "FaceModel",
    "FlameFaceModel",
    "FlameLayer",
    "ProceduralFaceModel",
    "load_flame",
    "load_flame_face_model",
]

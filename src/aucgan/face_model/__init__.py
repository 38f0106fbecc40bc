"""Face models behind one interface: the built-in procedural head (default) and, later, FLAME."""

from aucgan.face_model.base import FaceGeometry, FaceModel
from aucgan.face_model.procedural import ProceduralFaceModel

__all__ = ["FaceGeometry", "FaceModel", "ProceduralFaceModel"]

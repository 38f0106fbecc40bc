"""aucgan: detailed 3D face reconstruction from one image, with wrinkles driven by facial Action Units."""

__version__ = "0.1.0.dev0"

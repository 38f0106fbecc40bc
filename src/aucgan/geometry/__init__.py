"""Pure tensor geometry: camera, rasteriser, mesh and UV-space operations, spherical-harmonics shading.

Conventions shared by every module here (see :mod:`aucgan.geometry.camera`):

* world space: x to the viewer's right, y up, z towards the viewer (right-handed);
* normalised device coordinates (NDC): x right, y up, both in [-1, 1] across the image; a larger z is
  nearer the viewer;
* images are ``(B, C, H, W)`` with row 0 at the top; pixel (i, j) has its centre at
  ``x = (2j + 1) / W - 1``, ``y = 1 - (2i + 1) / H``;
* UV maps are images over the unit square with u to the right and v up (the OBJ convention), so the
  texel in row 0 has the largest v. Rasterising UV coordinates ``(2u - 1, 2v - 1)`` as NDC positions
  yields exactly that layout.
"""

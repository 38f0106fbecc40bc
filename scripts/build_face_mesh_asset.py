"""Regenerate ``src/aucgan/face_model/data/canonical_face_mesh.npz`` from the MediaPipe npm tarball.

The MediaPipe canonical face mesh (Apache-2.0, see NOTICE) ships inside the npm package
``@mediapipe/face_mesh@0.4.1657299874`` as ``geometry_pipeline_metadata_landmarks.binarypb``, packed into
``face_mesh_solution_packed_assets.data``. Its first protobuf field is a ``Mesh3d`` message: the vertex
buffer holds 468 x (x, y, z, u, v) floats and the index buffer 898 triangles.

Usage::

    npm pack @mediapipe/face_mesh@0.4.1657299874
    python scripts/build_face_mesh_asset.py mediapipe-face_mesh-0.4.1657299874.tgz

The script derives the asset with plain numpy: vertices (about cm; x to the viewer's right, y up, z towards
the viewer), UVs (v flipped so that v grows upward, the OBJ convention), triangles, which triangles close
the eye and mouth holes, and the ordered rim loops of those holes and of the outer face outline.
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from pathlib import Path

import numpy as np

MEMBER = "package/face_mesh_solution_packed_assets.data"
LOADER = "package/face_mesh_solution_packed_assets_loader.js"
ASSET = "geometry_pipeline_metadata_landmarks.binarypb"
# Vertex indices of the rims of the eye and mouth holes (MediaPipe's published contour indices). The
# script checks them against the topology: dropping the triangles spanned by one rim must open exactly
# that rim as a new boundary loop.
RIMS = {
    "eye_right": [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173],
    "eye_left": [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398],
    "mouth": [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415],
}
OUT = Path(__file__).resolve().parents[1] / "src/aucgan/face_model/data/canonical_face_mesh.npz"


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(buf: bytes):
    """Yield (field number, wire type, payload) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = read_varint(buf, pos)
        out.append(value)
    return out


def extract_metadata(tarball: Path) -> bytes:
    with tarfile.open(tarball) as tar:
        loader = tar.extractfile(LOADER).read().decode()
        match = re.search(
            r'"filename":\s*"[^"]*' + re.escape(ASSET) + r'",\s*"start":\s*(\d+),\s*"end":\s*(\d+)', loader
        )
        if match is None:
            raise SystemExit(f"{tarball}: {ASSET} not listed in {LOADER}")
        start, end = int(match.group(1)), int(match.group(2))
        data = tar.extractfile(MEMBER).read()
    return data[start:end]


def parse_mesh(metadata: bytes) -> tuple[np.ndarray, np.ndarray]:
    number, wire, mesh = next(fields(metadata))
    if (number, wire) != (1, 2):
        raise SystemExit("unexpected metadata layout: first field is not the canonical mesh")
    vertex_buffer, index_buffer = [], []
    for number, wire, value in fields(mesh):
        if number == 3:
            vertex_buffer.append(np.frombuffer(value, "<f4"))
        elif number == 4:
            index_buffer.extend(packed_varints(value) if wire == 2 else [value])
    vertices = np.concatenate(vertex_buffer).reshape(-1, 5)
    faces = np.asarray(index_buffer, dtype=np.int64).reshape(-1, 3)
    return vertices, faces


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Closed loops of edges used by exactly one triangle."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    nxt: dict[int, list[int]] = {}
    for a, b in unique[counts == 1]:
        nxt.setdefault(int(a), []).append(int(b))
        nxt.setdefault(int(b), []).append(int(a))
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            step = [n for n in nxt[cur] if n != prev]
            if not step or step[0] == start:
                break
            prev, cur = cur, step[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", type=Path, help="mediapipe-face_mesh-0.4.1657299874.tgz from `npm pack`")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    vertices, faces = parse_mesh(extract_metadata(args.tarball))
    if vertices.shape != (468, 5) or faces.shape != (898, 3):
        raise SystemExit(f"unexpected mesh sizes {vertices.shape}, {faces.shape}")
    outer = boundary_loops(faces)
    if len(outer) != 1:
        raise SystemExit(f"expected one boundary loop on the closed-hole mesh, found {len(outer)}")
    hole = np.zeros(len(faces), dtype=bool)
    rims = {}
    for name, rim in RIMS.items():
        closing = np.isin(faces, rim).all(axis=1)
        loops = [loop for loop in boundary_loops(faces[~closing]) if sorted(loop) != sorted(outer[0])]
        if len(loops) != 1 or sorted(loops[0]) != sorted(rim):
            raise SystemExit(f"removing the {name} triangles does not open exactly the {name} hole")
        hole |= closing
        rims[name] = np.asarray(loops[0], dtype=np.int32)
    uv = vertices[:, 3:].astype(np.float64)
    uv[:, 1] = 1.0 - uv[:, 1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        vertices=vertices[:, :3].astype(np.float32),
        uvs=uv.astype(np.float32),
        faces=faces.astype(np.int32),
        hole_faces=hole,
        outer_rim=np.asarray(outer[0], dtype=np.int32),
        **{f"{name}_rim": loop for name, loop in rims.items()},
        source=np.array(json.dumps({"npm": "@mediapipe/face_mesh@0.4.1657299874", "file": ASSET})),
    )
    print(f"wrote {args.out}: {len(vertices)} vertices, {len(faces)} faces, {hole.sum()} hole faces")


if __name__ == "__main__":
    main()

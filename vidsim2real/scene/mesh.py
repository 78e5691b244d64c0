"""Mesh loading (anything trimesh reads) with the checks a scene file needs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError, warn


@dataclass
class MeshData:
    """A triangle mesh in its own (rest-pose, object-local) frame, in metres.

    vertices: [V, 3] float64; faces: [F, 3] int64 (counter-clockwise = outward normal);
    uv: optional [V, 2] texture coordinates from the file.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    source: str = ""
    dropped_faces: int = 0
    digest: str = field(default="")
    file_units: str = "m"


def _merge_duplicate_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge bit-identical vertex positions (STL stores triangle soups), keeping first-occurrence
    order so that indexed formats (OBJ, PLY) come through unchanged."""
    uniq, first, inverse = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    if len(uniq) == len(vertices):
        return vertices, faces
    order = np.argsort(first)               # new index -> unique row, in first-occurrence order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return vertices[first[order]], rank[inverse.reshape(-1)][faces]


def load_mesh(path: str | Path, *, scale: float, file: str, field: str) -> MeshData:
    """Load a mesh file, convert to metres (``scale`` = metres per file unit) and check it.

    Raises UserError(file, field, ...) for missing, unreadable or empty meshes, non-finite
    vertices and out-of-range indices; degenerate faces are dropped with a warning.
    """
    import trimesh

    path = Path(path)
    if not path.exists():
        raise UserError(f"mesh file not found: {path}", file=file, field=field)
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise UserError(f"cannot read mesh {path.name}: {type(exc).__name__}: {exc}".strip(),
                        file=file, field=field) from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise UserError(f"mesh {path.name} holds no triangles", file=file, field=field)
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(loaded.faces, dtype=np.int64)
    if len(faces) == 0 or len(vertices) == 0:
        raise UserError(f"mesh {path.name} is empty (no faces)", file=file, field=field)
    if not np.all(np.isfinite(vertices)):
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise UserError(f"mesh {path.name} has {bad} vertices with NaN/inf coordinates", file=file, field=field)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise UserError(f"mesh {path.name} has face indices outside its {len(vertices)} vertices",
                        file=file, field=field)
    uv = None
    visual_uv = getattr(getattr(loaded, "visual", None), "uv", None)
    if visual_uv is not None and len(visual_uv) == len(vertices):
        uv = np.asarray(visual_uv, dtype=np.float64)
    else:
        vertices, faces = _merge_duplicate_vertices(vertices, faces)
    vertices = vertices * scale

    # Degenerate faces (repeated index or zero area) carry no surface; drop them, keep vertices
    # so that per-frame vertex arrays still index the file's vertices.
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    area2 = np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1)
    extent = float(np.ptp(vertices, axis=0).max()) or 1.0
    degenerate = ((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
                  | (area2 <= (extent * 1e-9) ** 2))
    dropped = int(degenerate.sum())
    if dropped:
        faces = faces[~degenerate]
        warn(f"{file}: {field}: dropped {dropped} degenerate face{'s' if dropped > 1 else ''} of {path.name}")
        if len(faces) == 0:
            raise UserError(f"mesh {path.name} has only degenerate faces", file=file, field=field)
    digest = hashlib.sha1(vertices.tobytes() + faces.tobytes()).hexdigest()[:16]
    return MeshData(vertices, faces, uv, str(path), dropped, digest)

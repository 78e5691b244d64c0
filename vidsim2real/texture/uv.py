"""UV atlases for the UV-mode neural texture: the mesh's own UVs or xatlas, guarded.

xatlas is known to crash (segfault) on some perfectly regular meshes, which would take the
whole training run down. It therefore runs in a child process; a crash is retried with a
tiny vertex jitter and, if it keeps failing, reported as a clear error. Results are cached
on disk by mesh digest.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from ..errors import UserError


def cache_dir() -> Path:
    root = os.environ.get("VIDSIM2REAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidsim2real")
    return Path(root) / "uv"


def _xatlas_child(vertices: np.ndarray, faces: np.ndarray, queue) -> None:
    import xatlas
    vmap, idx, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    queue.put((vmap, idx, uvs))


def run_xatlas(vertices: np.ndarray, faces: np.ndarray, timeout: float = 600.0, _child=_xatlas_child):
    """(vmap [V'], indices [F, 3], uvs [V', 2]) from xatlas in a child process; None if it died."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(vertices, faces, queue), daemon=True)
    proc.start()
    import queue as queue_mod
    import time
    result, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = queue.get(timeout=0.2)
            break
        except queue_mod.Empty:
            if not proc.is_alive() and queue.empty():  # crashed (e.g. segfault) without a result
                break
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
    return result


def face_corner_uvs(vertices: np.ndarray, faces: np.ndarray, *, name: str, digest: str,
                    uv: np.ndarray | None = None, attempts: int = 3, _child=_xatlas_child) -> np.ndarray:
    """Per-face-corner UVs [F, 3, 2] in [0, 1]: the mesh's own ``uv`` when given, else xatlas."""
    if uv is not None:
        return np.asarray(uv, np.float32)[faces]
    path = cache_dir() / f"{digest}_{len(faces)}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape == (len(faces), 3, 2):
            return cached
    scale = float(np.ptp(vertices, axis=0).max()) or 1.0
    rng = np.random.default_rng(0)
    for attempt in range(attempts):
        v = vertices if attempt == 0 else vertices + rng.normal(scale=1e-6 * scale, size=vertices.shape)
        out = run_xatlas(v, faces, _child=_child)
        if out is None:
            continue
        _, idx, uvs = out
        if len(idx) != len(faces):
            continue
        corners = uvs[idx].astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, corners)
        os.replace(tmp, path)
        return corners
    raise UserError(f"xatlas could not unwrap mesh '{name}' ({attempts} attempts, crashed or gave a different "
                    "face count); use texture kind 'triplanar', or give the mesh UVs", field="texture.kind")

"""``--save-gbuffer DIR``: per-frame face ids, depth and labels plus cameras.json.

Layout (t = the scene's frame index):
  DIR/{t:06d}_face.npy   int32 [H, W], scene face id (object order), -1 = background
  DIR/{t:06d}_depth.npy  float32 [H, W], camera-space depth z in metres, 0 = background
  DIR/{t:06d}_label.png  uint8 [H, W], class id, 0 = background
  DIR/cameras.json       per frame: K, world_to_camera 4x4, width, height (metres, OpenCV axes)
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG encoding of uint8/uint16 [H, W] or uint8 [H, W, 3] (OpenCV; RGB order in, RGB on disk)."""
    import cv2
    if arr.ndim == 3:
        arr = arr[..., ::-1]
    ok, enc = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return enc.tobytes()


def write_png(path, arr: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(arr))


class GBufferWriter:
    """Writes per-frame G-buffer files as frames stream by, and cameras.json at the end."""

    def __init__(self, out_dir: str | Path, K: np.ndarray, width: int, height: int, meta: dict | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.K = np.asarray(K, float)
        self.width, self.height = width, height
        self.meta = meta or {}
        self.cameras: dict[int, dict] = {}

    def write(self, buf) -> None:
        """buf: render.FrameBuffers (any batch size)."""
        faces = buf.fragments.pix_to_face.cpu().numpy()
        depth = buf.depth.cpu().numpy().astype(np.float32)
        labels = buf.labels.cpu().numpy()
        for i, t in enumerate(buf.frames):
            atomic_write_bytes(self.dir / f"{t:06d}_face.npy", _npy_bytes(faces[i].astype(np.int32)))
            atomic_write_bytes(self.dir / f"{t:06d}_depth.npy", _npy_bytes(depth[i]))
            write_png(self.dir / f"{t:06d}_label.png", labels[i].astype(np.uint8))
        self.add_cameras(buf.frames, buf.fragments.w2c)

    def add_cameras(self, frames, w2c) -> None:
        """Record the cameras (world-to-camera w2c [B, 4, 4]) of ``frames`` for cameras.json."""
        for t, m in zip(frames, w2c.cpu().numpy()):
            self.cameras[int(t)] = {"K": self.K.tolist(), "world_to_camera": m.tolist(),
                                    "width": self.width, "height": self.height}

    def close(self) -> None:
        doc = {"units": "m", "axes": "OpenCV (x right, y down, z forward); pixel centres at integers",
               **self.meta, "frames": {f"{t:06d}": c for t, c in sorted(self.cameras.items())}}
        atomic_write_text(self.dir / "cameras.json", json.dumps(doc, indent=1))

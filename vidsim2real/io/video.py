"""The one video writer and reader: H.264 MP4 (yuv420p) through imageio-ffmpeg.

Writes go to a temporary file next to the target and are renamed on success; every video
gets a sidecar ``OUT.mp4.json`` (scene, frame range, size, fps, checkpoint, style, seed,
tool version) so that commands reading it can line frames up with the scene.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import UserError
from .atomic import atomic_path, atomic_write_text


def to_uint8(frames) -> np.ndarray:
    """[N, H, W, 3] float in [0, 1] (tensor or array) or uint8 -> uint8 array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_even(width: int, height: int, option: str = "--size") -> None:
    if width % 2 or height % 2:
        raise UserError(f"H.264 yuv420p video needs an even width and height, got {width}x{height}", field=option)


class VideoWriter:
    """Streaming MP4 writer. Use as a context manager; frames are [N, H, W, 3] in [0, 1] or uint8.

    quality: imageio-ffmpeg's 0-10 scale (8 is visually lossless for our content).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], meta: dict | None = None,
                 quality: float = 8.0):
        self.path = Path(path)
        self.fps = float(fps)
        self.width, self.height = int(size[0]), int(size[1])
        check_even(self.width, self.height)
        self.meta = dict(meta or {})
        self.quality = quality
        self.count = 0
        self._ctx = None
        self._gen = None

    def __enter__(self) -> "VideoWriter":
        import imageio_ffmpeg
        self._ctx = atomic_path(self.path, suffix=".mp4")
        tmp = self._ctx.__enter__()
        self._gen = imageio_ffmpeg.write_frames(str(tmp), (self.width, self.height), fps=self.fps, codec="libx264",
                                                pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=self.quality,
                                                macro_block_size=2, ffmpeg_log_level="error",
                                                output_params=["-movflags", "+faststart"])
        self._gen.send(None)
        return self

    def write(self, frames) -> None:
        frames = to_uint8(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frames.shape[1:]} != {(self.height, self.width, 3)}")
        for f in frames:
            self._gen.send(np.ascontiguousarray(f))
            self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._gen.close()
        finally:
            self._ctx.__exit__(exc_type, exc, tb)
        if exc_type is None:
            meta = {"tool": f"vidsim2real {__version__}", "fps": self.fps, "width": self.width,
                    "height": self.height, "frames_written": self.count, **self.meta}
            write_sidecar(self.path, meta)


def sidecar_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".json") if p.suffix else p / "meta.json"


def write_sidecar(path: str | os.PathLike, meta: dict) -> None:
    atomic_write_text(sidecar_path(path), json.dumps(meta, indent=2, default=str))


def read_sidecar(path: str | os.PathLike) -> dict | None:
    p = sidecar_path(path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read sidecar: {exc}", file=p) from None


def _open(path: Path):
    """An imageio-ffmpeg frame reader and its metadata; unreadable files -> UserError."""
    import imageio_ffmpeg
    if not path.exists():
        raise UserError("video not found", file=path)
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        return reader, next(reader)
    except (RuntimeError, StopIteration, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot read video: {text[0] if text else type(exc).__name__}", file=path) from None


def video_info(path: str | os.PathLike) -> tuple[int, float, tuple[int, int]]:
    """(frame count, fps, (W, H)) of a video file."""
    import imageio_ffmpeg
    path = Path(path)
    reader, meta = _open(path)
    reader.close()
    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError) as exc:
        raise UserError(f"cannot count frames: {type(exc).__name__}", file=path) from None
    return int(n), float(meta.get("fps", 0.0)), tuple(int(s) for s in meta["size"])


def read_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None):
    """Yield frames [H, W, 3] uint8 of a video, streaming (memory flat in clip length)."""
    reader, meta = _open(Path(path))
    W, H = meta["size"]
    try:
        for i, raw in enumerate(reader):
            if stop is not None and i >= stop:
                break
            if i >= start:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(H, W, 3)
    finally:
        reader.close()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames [T, H, W, 3] uint8 (small clips, tests)."""
    return np.stack(list(read_frames(path)))

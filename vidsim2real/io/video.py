"""The one video writer and reader: H.264 MP4 (yuv420p) through imageio-ffmpeg.

Writes go to a temporary file next to the target and are renamed on success; every video
gets a sidecar ``OUT.mp4.json`` (scene, frame range, size, fps, checkpoint, style, seed,
tool version) so that commands reading it can line frames up with the scene.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import UserError
from .atomic import atomic_path, atomic_write_text, claim_parts, file_stamp


def to_uint8(frames) -> np.ndarray:
    """[N, H, W, 3] float in [0, 1] (tensor or array) or uint8 -> uint8 array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_even(width: int, height: int) -> None:
    """H.264 (yuv420p) needs even sizes; UserError on field ``size`` otherwise."""
    if width % 2 or height % 2:
        raise UserError(f"H.264 yuv420p video needs an even width and height, got {width}x{height}", field="size")


class VideoWriter:
    """Streaming MP4 writer. Use as a context manager; frames are [N, H, W, 3] in [0, 1] or uint8.

    quality: imageio-ffmpeg's 0-10 scale (8 is visually lossless for our content).
    lossless: FFV1 in Matroska (bit-exact RGB; for intermediate files, not for delivery).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], meta: dict | None = None,
                 quality: float = 8.0, sidecar: bool = True, lossless: bool = False):
        self.path = Path(path)
        self.sidecar = sidecar
        self.lossless = lossless
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
        if self.lossless:
            kw = dict(codec="ffv1", pix_fmt_out="bgr0", macro_block_size=1)
        else:
            kw = dict(codec="libx264", pix_fmt_out="yuv420p", quality=self.quality, macro_block_size=2,
                      output_params=["-movflags", "+faststart"])
        self._ctx = atomic_path(self.path, suffix=self.path.suffix)
        tmp = self._ctx.__enter__()
        try:
            self._gen = imageio_ffmpeg.write_frames(str(tmp), (self.width, self.height), fps=self.fps,
                                                    pix_fmt_in="rgb24", ffmpeg_log_level="error", **kw)
            self._gen.send(None)
        except BaseException as exc:        # the temporary file goes, nothing half-written stays
            self._ctx.__exit__(type(exc), exc, None)
            raise self._failed(exc) from None
        return self

    def _failed(self, exc: BaseException) -> BaseException:
        """ffmpeg's failures (disk full, unwritable place) as one line naming the file."""
        if isinstance(exc, (OSError, RuntimeError)):
            text = str(exc).strip().splitlines()
            return UserError(f"cannot write video ({text[-1][:160] if text else type(exc).__name__}; disk full or "
                             f"not writable?)", file=self.path)
        return exc

    def write(self, frames) -> None:
        frames = to_uint8(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frames.shape[1:]} != {(self.height, self.width, 3)}")
        for f in frames:
            try:
                self._gen.send(np.ascontiguousarray(f))
            except (OSError, RuntimeError) as exc:
                raise self._failed(exc) from None
            self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._gen.close()
        except (OSError, RuntimeError) as close_exc:   # ffmpeg failed to finish: do not publish the file
            self._ctx.__exit__(type(close_exc), close_exc, None)
            if exc_type is None:
                raise self._failed(close_exc) from None
            return
        except BaseException as close_exc:
            self._ctx.__exit__(type(close_exc), close_exc, None)
            raise
        self._ctx.__exit__(exc_type, exc, tb)
        if exc_type is None and self.sidecar:
            write_sidecar(self.path, sidecar_meta(self.fps, self.width, self.height, self.count, self.meta))


def sidecar_meta(fps: float, width: int, height: int, count: int, meta: dict) -> dict:
    return {"tool": f"vidsim2real {__version__}", "fps": fps, "width": width, "height": height,
            "frames_written": count, **meta}


class ResumableVideoWriter:
    """MP4 writer for long jobs that can be interrupted and resumed.

    Frames go to lossless (FFV1) segments of ``segment`` frames in ``OUT.mp4.parts/``, each
    written atomically. A rerun of the same job (same meta, size, fps, frame count and unchanged ``inputs`` files)
    keeps the finished segments: ``start`` is the index of the first frame still to write, and
    the caller produces frames from there. When all ``total`` frames are written the segments
    are encoded once into ``OUT.mp4`` (atomically, with its sidecar; the same bytes as a
    one-pass run) and the parts folder is removed. A different job in the same place starts
    over.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], total: int,
                 meta: dict | None = None, inputs=(), segment: int = 100, quality: float = 8.0):
        if segment < 1:
            raise UserError("must be >= 1", field="segment_frames")
        self.path = Path(path)
        self.fps, self.size, self.total, self.segment = float(fps), (int(size[0]), int(size[1])), int(total), segment
        check_even(*self.size)
        self.meta = dict(meta or {})
        self.quality = quality
        self.parts = self.path.with_name(self.path.name + ".parts")
        stamp = {str(Path(f).resolve()): file_stamp(f) for f in inputs}
        self.job = {"meta": self.meta, "fps": self.fps, "size": list(self.size), "total": self.total,
                    "segment": segment, "inputs": stamp, "tool": __version__}
        self.start = 0
        self._seg = None
        self._in_seg = 0

    def _segment_path(self, k: int) -> Path:
        return self.parts / f"{k:05d}.mkv"

    def __enter__(self) -> "ResumableVideoWriter":
        claim_parts(self.parts, self.job)
        done = 0
        while self._segment_path(done).exists():
            done += 1
        self.start = min(done * self.segment, self.total)
        self._next = done
        self.written = self.start
        return self

    def write(self, frames) -> None:
        frames = to_uint8(frames)
        frames = frames[None] if frames.ndim == 3 else frames
        if self.written + len(frames) > self.total:
            raise ValueError(f"more than the announced {self.total} frames")
        self.written += len(frames)
        i = 0
        while i < len(frames):
            if self._seg is None:
                self._seg = VideoWriter(self._segment_path(self._next), self.fps, self.size,
                                        sidecar=False, lossless=True).__enter__()
                self._in_seg = 0
            n = min(self.segment - self._in_seg, len(frames) - i)
            self._seg.write(frames[i:i + n])
            self._in_seg += n
            i += n
            if self._in_seg == self.segment:
                self._close_segment(None)

    def _close_segment(self, exc) -> None:
        seg, self._seg = self._seg, None
        if seg is not None:
            seg.__exit__(type(exc) if exc else None, exc, None)
            if exc is None:
                self._next += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_segment(exc)
        if exc_type is not None:
            return
        if self.written < self.total:
            raise RuntimeError(f"{self.path}: {self.written} of {self.total} frames written")
        with VideoWriter(self.path, self.fps, self.size, meta=self.meta, quality=self.quality) as final:
            for k in range(self._next):
                for frame in read_frames(self._segment_path(k)):
                    final.write(frame)
            if final.count != self.total:     # raised inside: the final file is not published
                raise UserError(f"segments hold {final.count} frames, expected {self.total}; delete "
                                f"{self.parts} and rerun", file=self.path)
        shutil.rmtree(self.parts, ignore_errors=True)


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


def _decode(path: Path):
    """Every frame [H, W, 3] uint8 RGB. imageio-ffmpeg decodes; where it is not installed (a GPU
    machine without a package index: its ffmpeg is 29 MB), OpenCV's own ffmpeg does, which
    gives the same pixels on the bundled clips."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        import cv2
        if not path.exists():
            raise UserError("video not found", file=path) from None
        video = cv2.VideoCapture(str(path))
        if not video.isOpened():
            raise UserError("cannot read video: OpenCV cannot open it", file=path) from None
        try:
            while True:
                ok, bgr = video.read()
                if not ok:
                    return
                yield np.ascontiguousarray(bgr[..., ::-1])
        finally:
            video.release()
        return
    reader, meta = _open(path)
    W, H = meta["size"]
    try:
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(H, W, 3)
    finally:
        reader.close()


def read_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None):
    """Yield frames [H, W, 3] uint8 RGB of a video, streaming (memory flat in clip length)."""
    frames = _decode(Path(path))
    try:
        for i, frame in enumerate(frames):
            if stop is not None and i >= stop:
                break
            if i >= start:
                yield frame
    finally:
        frames.close()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames [T, H, W, 3] uint8 (small clips, tests)."""
    return np.stack(list(read_frames(path)))


class VideoFrames:
    """A video decoded once into a raw uint8 file (in ``workdir``) and read back frame by frame,
    so metrics can visit frames in any order while memory stays flat in the clip's length.

    ``frames[t]`` -> float tensor [H, W, 3] in [0, 1]; ``frames[a:b]`` / ``frames[[i, j]]`` ->
    [N, H, W, 3]. ``right_half``: keep the right half of each frame (side-by-side videos).
    """

    def __init__(self, path: str | os.PathLike, workdir: str | os.PathLike, right_half: bool = False):
        self.path = Path(path)
        self.raw = Path(workdir) / (self.path.name + ".raw")
        count = 0
        with open(self.raw, "wb") as f:
            for frame in read_frames(self.path):
                if right_half:
                    frame = frame[:, frame.shape[1] // 2:]
                f.write(np.ascontiguousarray(frame).tobytes())
                self.shape = frame.shape
                count += 1
        if count == 0:
            raise UserError("video has no frames", file=self.path)
        self.count = count
        self.frame_bytes = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.count

    def _read(self, t: int) -> np.ndarray:
        if not 0 <= t < self.count:
            raise IndexError(t)
        with open(self.raw, "rb") as f:
            f.seek(t * self.frame_bytes)
            return np.frombuffer(f.read(self.frame_bytes), dtype=np.uint8).reshape(self.shape)

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = list(range(*index.indices(self.count)))
        if isinstance(index, (list, tuple)):
            return torch.from_numpy(np.stack([self._read(int(t)) for t in index])).float() / 255.0
        return torch.from_numpy(self._read(int(index)).copy()).float() / 255.0

    def subset(self, limit: int) -> torch.Tensor:
        """At most ``limit`` frames, evenly spaced: [N, H, W, 3] (set measures: SWD, C2ST)."""
        return self[np.unique(np.linspace(0, self.count - 1, min(limit, self.count)).round().astype(int)).tolist()]

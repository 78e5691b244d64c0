"""Video jobs: render a scene, or render and translate it, to an MP4 (resumable, streamed).

Both write lossless segments first (``io.video.ResumableVideoWriter``): an interrupted job
rerun with the same arguments continues after the last finished segment.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import info
from ..io.gbuffer import GBufferWriter
from ..io.video import ResumableVideoWriter
from ..render import Renderer
from ..translate.inference import LoadedModel, translate_buffers


@dataclass
class VideoJob:
    """What a video job did: output, frames written in total, size (W, H), seconds, device."""

    path: Path
    frames: int
    size: tuple[int, int]
    seconds: float
    device: str

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def _progress(total: int, start: int, batch: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(range(start, total, batch), desc=desc, unit="batch", disable=not progress)


def _note_resume(video: ResumableVideoWriter) -> None:
    if video.start:
        info(f"resuming {video.path}: {video.start} of {video.total} frames already written")


def interrupted_style(out: str | Path) -> dict | None:
    """The style choice of an interrupted translate job at ``out`` (its unfinished segments),
    so that resuming a ``--style random`` job keeps the seed it drew."""
    import json
    job = Path(out).with_name(Path(out).name + ".parts") / "job.json"
    try:
        meta = json.loads(job.read_text())["meta"]
        return {"style": meta["style"], "seed": meta["seed"]} if meta.get("kind") == "translated" else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def render_video(renderer: Renderer, frames: range, out: str | Path, *, batch: int = 4, segment_frames: int = 100,
                 gbuffer_dir: str | Path | None = None, progress: bool = True) -> VideoJob:
    """The sim render of ``frames`` (scene frame indices) to ``out`` (MP4 + sidecar); with
    ``gbuffer_dir`` also per-frame face ids, depth, labels and cameras.json."""
    out, scene = Path(out), renderer.scene
    size = (renderer.width, renderer.height)
    meta = {"kind": "sim", "scene": str(Path(scene.path).resolve()), "frames": [frames.start, frames.stop],
            "checkpoint": None, "style": None, "seed": None}
    gbuf = None
    if gbuffer_dir:
        gbuf = GBufferWriter(gbuffer_dir, renderer.intrinsics.K(), size[0], size[1], meta={"scene": meta["scene"]})
    t0 = time.perf_counter()
    with torch.no_grad(), ResumableVideoWriter(out, scene.fps, size, len(frames), meta=meta, inputs=[scene.path],
                                               segment=segment_frames) as video:
        _note_resume(video)
        if gbuf is not None and video.start:     # cameras of the frames written before the interruption
            gbuf.add_cameras(list(frames[:video.start]), renderer.cameras(list(frames[:video.start]))[1])
        for i in _progress(len(frames), video.start, batch, f"render {scene.name}", progress):
            buf = renderer.render(list(frames[i:i + batch]))
            video.write(buf.sim_rgb)
            if gbuf is not None:
                gbuf.write(buf)
    if gbuf is not None:
        gbuf.close()
    return VideoJob(out, len(frames), size, time.perf_counter() - t0, renderer.device.type)


def translate_video(model: LoadedModel, renderer: Renderer, frames: range, out: str | Path, style: torch.Tensor,
                    style_meta: dict, *, side_by_side: bool = False, batch: int = 4, segment_frames: int = 100,
                    inputs: list = (), progress: bool = True) -> VideoJob:
    """Render + translate ``frames`` to ``out`` with one ``style`` [1, style_dim] for the whole
    video; ``style_meta`` ({"style": ..., "seed": ...}) goes into the sidecar so the video can
    be reproduced. ``side_by_side`` writes sim | translated. ``inputs``: files whose change
    invalidates an interrupted job's segments (scene, checkpoint, style image)."""
    out, scene = Path(out), renderer.scene
    size = (renderer.width, renderer.height)
    out_size = (size[0] * 2, size[1]) if side_by_side else size
    meta = {"kind": "translated", "scene": str(Path(scene.path).resolve()), "frames": [frames.start, frames.stop],
            "checkpoint": str(Path(model.path).resolve()), **style_meta, "side_by_side": bool(side_by_side),
            "model": model.net.kind, "features": model.uses_features}
    t0 = time.perf_counter()
    with torch.no_grad(), ResumableVideoWriter(out, scene.fps, out_size, len(frames), meta=meta,
                                               inputs=[scene.path, model.path, *inputs],
                                               segment=segment_frames) as video:
        _note_resume(video)
        for i in _progress(len(frames), video.start, batch, f"translate {scene.name}", progress):
            buf = renderer.render(list(frames[i:i + batch]))
            img = translate_buffers(model, renderer, buf, style, noise_seed=style_meta.get("seed") or 0)
            if side_by_side:
                img = torch.cat([buf.sim_rgb, img], 2)
            video.write(img)
    return VideoJob(out, len(frames), out_size, time.perf_counter() - t0, renderer.device.type)

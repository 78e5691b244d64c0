"""``vidsim2real render SCENE -o OUT.mp4``: simulated render to H.264 MP4 (+ G-buffers)."""
from __future__ import annotations

import time
from pathlib import Path

from .common import add_video_job_options, check_video_job_args, load_checked_scene, pick_device


def register(sub) -> None:
    p = sub.add_parser("render", help="render a scene's simulated view to MP4 (and G-buffers)")
    p.add_argument("scene", metavar="SCENE.yaml")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4")
    p.add_argument("--frames", default=None, metavar="A:B", help="scene frames A..B-1 (Python-style)")
    p.add_argument("--size", default=None, metavar="WxH", help="output size (default: the scene camera's)")
    p.add_argument("--save-gbuffer", default=None, metavar="DIR",
                   help="also write per-frame face ids, depth, labels and cameras.json")
    add_video_job_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..io.gbuffer import GBufferWriter
    from ..io.video import ResumableVideoWriter
    from ..render import Renderer

    out = check_video_job_args(args)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size)
    device = pick_device(args.device)
    renderer = Renderer(scene, size=size, device=device, backend=args.backend)
    meta = {"kind": "sim", "scene": str(Path(args.scene).resolve()), "frames": [frames.start, frames.stop],
            "checkpoint": None, "style": None, "seed": None}
    gbuf = None
    if args.save_gbuffer:
        gbuf = GBufferWriter(args.save_gbuffer, renderer.intrinsics.K(), size[0], size[1],
                             meta={"scene": meta["scene"]})
    t0 = time.perf_counter()
    with torch.no_grad(), ResumableVideoWriter(out, scene.fps, size, len(frames), meta=meta, inputs=[args.scene],
                                               segment=args.segment_frames) as video:
        if gbuf is not None and video.start:     # cameras of the frames written before the interruption
            gbuf.add_cameras(list(frames[:video.start]), renderer.cameras(list(frames[:video.start]))[1])
        for i in tqdm(range(video.start, len(frames), args.batch), desc=f"render {scene.name}", unit="batch"):
            buf = renderer.render(list(frames[i:i + args.batch]))
            video.write(buf.sim_rgb)
            if gbuf is not None:
                gbuf.write(buf)
    if gbuf is not None:
        gbuf.close()
    dt = time.perf_counter() - t0
    print(f"wrote {out} ({len(frames)} frames, {size[0]}x{size[1]}, {scene.fps:g} fps; "
          f"{len(frames) / dt:.1f} frames/s on {device.type})")
    if gbuf is not None:
        print(f"wrote G-buffers to {args.save_gbuffer}")
    return 0

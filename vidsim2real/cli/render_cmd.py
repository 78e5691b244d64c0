"""``vidsim2real render SCENE -o OUT.mp4``: simulated render to H.264 MP4 (+ G-buffers)."""
from __future__ import annotations

from .common import VIDEO_FLAGS, add_video_job_options, check_video_job_args, load_checked_scene, pick_device


def register(sub) -> None:
    p = sub.add_parser("render", help="render a scene's simulated view to MP4 (and G-buffers)")
    p.add_argument("scene", metavar="SCENE.yaml", help="the scene to render")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="the video (and OUT.mp4.json)")
    p.add_argument("--frames", default=None, metavar="A:B", help="scene frames A..B-1, Python-style; default: all")
    p.add_argument("--size", default=None, metavar="WxH", help="output size; default: the scene camera's")
    p.add_argument("--save-gbuffer", default=None, metavar="DIR",
                   help="also write per-frame face ids, depth, labels and cameras.json")
    add_video_job_options(p)
    p.set_defaults(func=run, flags=VIDEO_FLAGS)


def run(args) -> int:
    from ..pipeline.video import render_video
    from ..render import Renderer
    out = check_video_job_args(args)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size)
    renderer = Renderer(scene, size=size, device=pick_device(args.device), backend=args.backend)
    job = render_video(renderer, frames, out, batch=args.batch, segment_frames=args.segment_frames,
                       gbuffer_dir=args.save_gbuffer)
    print(f"wrote {out} ({job.frames} frames, {size[0]}x{size[1]}, {scene.fps:g} fps; {job.fps:.3g} frames/s "
          f"on {job.device})")
    if args.save_gbuffer:
        print(f"wrote G-buffers to {args.save_gbuffer}")
    return 0

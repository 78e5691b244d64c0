"""``vidsim2real translate CKPT SCENE.yaml -o OUT.mp4``: render + translate, streamed to MP4."""
from __future__ import annotations

from pathlib import Path

from .common import (VIDEO_FLAGS, add_video_job_options, check_video_job_args, load_checked_scene,
                     load_model_for_scene, pick_device)


def register(sub) -> None:
    p = sub.add_parser("translate", help="render a scene and translate it to realistic video (MP4)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("scene", metavar="SCENE.yaml")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4")
    p.add_argument("--side-by-side", action="store_true", help="write sim | translated")
    p.add_argument("--style", default="random", help="random | SEED | IMAGE (one style for the whole video)")
    p.add_argument("--size", default=None, metavar="WxH", help="default: the scene camera's size")
    p.add_argument("--frames", default=None, metavar="A:B", help="scene frames A..B-1 (default: all)")
    add_video_job_options(p)
    p.set_defaults(func=run, flags=VIDEO_FLAGS)


def run(args) -> int:
    from ..pipeline.video import translate_video
    from ..render import Renderer
    from ..translate.inference import make_style
    out = check_video_job_args(args)
    device = pick_device(args.device)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size)
    model = load_model_for_scene(args.checkpoint, scene, device)
    style = make_style(model, args.style, device)
    renderer = Renderer(scene, size=size, device=device, backend=args.backend)
    style_file = [args.style] if Path(args.style).is_file() else []
    job = translate_video(model, renderer, frames, out, style, {"style": args.style, "seed": None},
                          side_by_side=args.side_by_side, batch=args.batch, segment_frames=args.segment_frames,
                          inputs=style_file)
    print(f"wrote {out} ({job.frames} frames, {job.size[0]}x{job.size[1]}; {job.fps:.1f} frames/s on {job.device})")
    return 0

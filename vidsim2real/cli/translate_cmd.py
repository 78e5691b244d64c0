"""``vidsim2real translate CKPT SCENE.yaml -o OUT.mp4``: render + translate, streamed to MP4."""
from __future__ import annotations

from .common import (VIDEO_FLAGS, add_video_job_options, check_video_job_args, load_checked_scene,
                     load_model_for_scene, pick_device)


def register(sub) -> None:
    p = sub.add_parser("translate", help="render a scene and translate it to realistic video (MP4)")
    p.add_argument("checkpoint", metavar="CKPT", help="a trained model (e.g. checkpoints/cpu_small.pt)")
    p.add_argument("scene", metavar="SCENE.yaml", help="the scene to render and translate")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="the video (and OUT.mp4.json)")
    p.add_argument("--side-by-side", action="store_true", help="write sim | translated")
    p.add_argument("--style", default="random",
                   help="one style for the whole video: random (a fresh seed, recorded in the sidecar), "
                        "an integer seed, or a real image whose style is encoded")
    p.add_argument("--size", default=None, metavar="WxH", help="output size; default: the scene camera's")
    p.add_argument("--frames", default=None, metavar="A:B", help="scene frames A..B-1, Python-style; default: all")
    add_video_job_options(p)
    p.set_defaults(func=run, flags=VIDEO_FLAGS)


def run(args) -> int:
    from pathlib import Path

    from ..pipeline.video import interrupted_style, translate_video
    from ..render import Renderer
    from ..translate.inference import make_style, style_choice
    out = check_video_job_args(args)
    device = pick_device(args.device)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size)
    model = load_model_for_scene(args.checkpoint, scene, device)
    choice = style_choice(args.style)
    previous = interrupted_style(out)
    if args.style == "random" and previous and previous["style"] == "random":
        choice = previous                  # resuming: the seed the interrupted job drew
    style = make_style(model, choice, device)
    renderer = Renderer(scene, size=size, device=device, backend=args.backend)
    style_file = [choice["style"]] if choice["seed"] is None else []
    job = translate_video(model, renderer, frames, out, style, choice, side_by_side=args.side_by_side,
                          batch=args.batch, segment_frames=args.segment_frames, inputs=style_file)
    seed = f", style seed {choice['seed']}" if choice["seed"] is not None else f", style of {Path(choice['style']).name}"
    print(f"wrote {out} ({job.frames} frames, {job.size[0]}x{job.size[1]}{seed}; {job.fps:.3g} frames/s on "
          f"{job.device})")
    return 0

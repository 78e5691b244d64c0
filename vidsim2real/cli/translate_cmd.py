"""``vidsim2real translate CKPT SCENE.yaml -o OUT.mp4``: render + translate, streamed to MP4."""
from __future__ import annotations

import time
from pathlib import Path

from .common import (add_video_job_options, check_video_job_args, load_checked_scene, load_model_for_scene,
                     pick_device)


def register(sub) -> None:
    p = sub.add_parser("translate", help="render a scene and translate it to realistic video (MP4)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("scene", metavar="SCENE.yaml")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4")
    p.add_argument("--side-by-side", action="store_true", help="write sim | translated")
    p.add_argument("--style", default="random", help="random | SEED | IMAGE (one style for the whole video)")
    p.add_argument("--size", default=None, metavar="WxH", help="default: the scene camera's size")
    p.add_argument("--frames", default=None, metavar="A:B")
    add_video_job_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..io.video import ResumableVideoWriter
    from ..render import Renderer
    from ..translate.inference import make_style, translate_buffers

    out = check_video_job_args(args)
    device = pick_device(args.device)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size)
    model = load_model_for_scene(args.checkpoint, scene, device)
    style = make_style(model, args.style, device)
    renderer = Renderer(scene, size=size, device=device, backend=args.backend)
    out_size = (size[0] * 2, size[1]) if args.side_by_side else size
    meta = {"kind": "translated", "scene": str(Path(args.scene).resolve()), "frames": [frames.start, frames.stop],
            "checkpoint": str(Path(args.checkpoint).resolve()), "style": args.style, "seed": None,
            "side_by_side": bool(args.side_by_side), "model": model.net.kind,
            "features": model.uses_features}
    t0 = time.perf_counter()
    inputs = [args.scene, args.checkpoint] + ([args.style] if Path(args.style).is_file() else [])
    with torch.no_grad(), ResumableVideoWriter(out, scene.fps, out_size, len(frames), meta=meta, inputs=inputs,
                                               segment=args.segment_frames) as video:
        for i in tqdm(range(video.start, len(frames), args.batch), desc=f"translate {scene.name}", unit="batch"):
            buf = renderer.render(list(frames[i:i + args.batch]))
            img = translate_buffers(model, renderer, buf, style)
            if args.side_by_side:
                img = torch.cat([buf.sim_rgb, img], 2)
            video.write(img)
    dt = time.perf_counter() - t0
    print(f"wrote {out} ({len(frames)} frames, {out_size[0]}x{out_size[1]}; {len(frames) / dt:.1f} frames/s "
          f"on {device.type})")
    return 0

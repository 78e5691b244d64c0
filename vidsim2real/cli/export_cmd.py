"""``vidsim2real export CKPT SCENE.yaml -o DIR``: translated frames + exact labels (resumable)."""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..errors import UserError
from .common import VIDEO_FLAGS, add_force_option, load_checked_scene, load_model_for_scene, pick_device


def register(sub) -> None:
    p = sub.add_parser("export", help="export a labelled data set: translated frames, segmentation, depth, "
                                      "normals, flow, cameras")
    p.add_argument("checkpoint", metavar="CKPT", help="a trained model")
    p.add_argument("scene", metavar="SCENE.yaml", help="the scene to export")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the data set folder (see README)")
    p.add_argument("--frames", default=None, metavar="A:B", help="scene frames A..B-1, Python-style; default: all")
    p.add_argument("--size", default=None, metavar="WxH", help="default: the scene camera's size")
    p.add_argument("--style", default="random",
                   help="one style for the whole set: random (a fresh seed, recorded in meta.json), an integer "
                        "seed, or a real image")
    p.add_argument("--batch", type=int, default=4, help="frames rendered at once")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_force_option(p)
    p.set_defaults(func=run, flags=VIDEO_FLAGS)


def run(args) -> int:
    from ..pipeline.export import export, prepare
    from ..render import Renderer
    from ..translate.inference import make_style, style_choice

    if args.batch < 1:
        raise UserError("must be >= 1", field="--batch")
    device = pick_device(args.device)
    scene, frames, size = load_checked_scene(args.scene, args.frames, args.size, even=False)
    model = load_model_for_scene(args.checkpoint, scene, device)
    job = {"scene": str(Path(args.scene).resolve()), "frames": [frames.start, frames.stop], "width": size[0],
           "height": size[1], "checkpoint": str(Path(args.checkpoint).resolve()), **style_choice(args.style)}
    job = prepare(Path(args.output), job, list(frames), force=args.force)
    renderer = Renderer(scene, size=size, device=device)
    style = make_style(model, job, device)
    meta = {"tool": f"vidsim2real {__version__}", **job, "fps": scene.fps}
    n = export(model, renderer, frames, Path(args.output), style, meta, batch=args.batch)
    print(f"exported {n} new frames ({len(frames) - n} already there) to {args.output} (style seed {job['seed']})")
    return 0

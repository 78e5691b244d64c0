"""``vidsim2real metrics VIDEO.mp4 --scene SCENE.yaml [--real DIR] [--reference VIDEO] -o DIR``."""
from __future__ import annotations

from pathlib import Path

from ..domains.real import DEFAULT_REAL
from ..errors import UserError
from ..io.atomic import check_writable
from .common import add_force_option, parse_frames, pick_device, refuse_existing


def register(sub) -> None:
    p = sub.add_parser("metrics", help="temporal-consistency and realism metrics of a video of a scene")
    p.add_argument("video", metavar="VIDEO.mp4", help="a video written by render or translate (or any MP4)")
    p.add_argument("--scene", default=None, metavar="SCENE.yaml", help="default: the scene in VIDEO.mp4.json")
    p.add_argument("--frames", default=None, metavar="A:B",
                   help="scene frames the video shows (default: from the sidecar, else 0:T)")
    p.add_argument("--real", default=None, metavar="DIR",
                   help="real frames (with labels/ for per-class measures) for the realism measures; "
                        "default: the bundled real-domain set")
    p.add_argument("--reference", action="append", default=[], metavar="VIDEO",
                   help="more videos of the same frames (e.g. the sim render, the surrogate render)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="metrics.json, plots and index.html")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--c2st-steps", type=int, default=3000, metavar="N",
                   help="most training steps of each classifier of the two-sample test (each stops earlier "
                        "when its held-out accuracy stops rising; fewer: faster, weaker)")
    p.add_argument("--c2st-seeds", type=int, default=3, metavar="N",
                   help="classifier seeds of the two-sample test (its spread is over folds and seeds)")
    add_force_option(p)
    p.set_defaults(func=run, flags={"real": "--real", "frames": "--frames", "scene": "--scene",
                                    "reference": "--reference", "device": "--device", "output": "-o",
                                    "c2st_steps": "--c2st-steps", "c2st_seeds": "--c2st-seeds"})


def run(args) -> int:
    from ..metrics.c2st import describe_power
    from ..metrics.report import evaluate_video, format_value
    from ..scene import load_scene
    for name in ("c2st_steps", "c2st_seeds"):
        if getattr(args, name) < 1:
            raise UserError("must be >= 1", field=name)
    refuse_existing(Path(args.output) / "metrics.json", args.force)
    check_writable(args.output)                # before minutes of measuring
    frames = None
    if args.frames:
        scene_path = args.scene or _sidecar_scene(args.video)
        frames = parse_frames(args.frames, load_scene(scene_path).frames, file=scene_path)
    real = args.real
    if real is None:
        real = str(DEFAULT_REAL)
        print(f"realism measured against the bundled real-domain set {DEFAULT_REAL} (give --real DIR for yours)")
    results = evaluate_video(args.video, args.output, args.scene, frames, real, args.reference,
                             pick_device(args.device), c2st_steps=args.c2st_steps, c2st_seeds=args.c2st_seeds)
    out = Path(args.output)
    print(f"wrote {out / 'metrics.json'} and {out / 'index.html'}")
    first = next(iter(results.values()))
    for k in ("warp_error", "texel_std", "orb_consistent_ratio", "tof", "ms_ssim_lum_vs_sim", "outline_auc", "c2st_accuracy", "c2st_auc",
              "class_delta_e", "swd"):
        if k in first:
            print(f"  {k:<22} " + "  ".join(f"{n}: {format_value(r, k)}" for n, r in results.items()))
    pw = first.get("c2st_power")
    if pw:
        print(f"  {describe_power(pw)}")
    return 0


def _sidecar_scene(video: str) -> str:
    from ..io.video import read_sidecar
    scene = (read_sidecar(video) or {}).get("scene")
    if not scene:
        raise UserError("no --scene given and the video has no sidecar naming one", file=video, field="--scene")
    return scene

"""``vidsim2real metrics VIDEO.mp4 --scene SCENE.yaml [--real DIR] [--reference VIDEO] -o DIR``."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import parse_frames, pick_device


def register(sub) -> None:
    p = sub.add_parser("metrics", help="temporal-consistency and realism metrics of a video of a scene")
    p.add_argument("video", metavar="VIDEO.mp4")
    p.add_argument("--scene", default=None, metavar="SCENE.yaml", help="default: the scene in VIDEO.mp4.json")
    p.add_argument("--frames", default=None, metavar="A:B",
                   help="scene frames the video shows (default: from the sidecar, else 0:T)")
    p.add_argument("--real", default=None, metavar="DIR", help="real frames for SWD and colour histograms")
    p.add_argument("--reference", action="append", default=[], metavar="VIDEO",
                   help="more videos of the same frames (e.g. the sim render, the surrogate render)")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.set_defaults(func=run, flags={"real": "--real", "frames": "--frames", "scene": "--scene",
                                    "reference": "--reference", "device": "--device"})


def run(args) -> int:
    from ..metrics.gt import SceneGT
    from ..metrics.report import compute, load_real_frames, load_video_frames, write_report
    from ..scene import load_scene

    frames, meta = load_video_frames(args.video)
    scene_path = args.scene or meta.get("scene")
    if not scene_path:
        raise UserError("no --scene given and the video has no sidecar naming one", file=args.video, field="--scene")
    scene = load_scene(scene_path)
    T, H, W = frames.shape[:3]
    if args.frames:
        rng = parse_frames(args.frames, scene.frames, file=scene_path)
    elif meta.get("frames"):
        rng = range(*meta["frames"])
    else:
        rng = range(0, T)
    if len(rng) != T:
        raise UserError(f"video has {T} frames but the frame range {rng.start}:{rng.stop} has {len(rng)}",
                        file=args.video, field="--frames")
    if rng.stop > scene.frames:
        raise UserError(f"frames {rng.start}:{rng.stop} outside the scene's 0:{scene.frames}", file=args.video,
                        field="--frames")
    if T < 2:
        raise UserError("needs at least 2 frames", file=args.video)
    device = pick_device(args.device)
    gt = SceneGT(scene, rng, (W, H), device=device)
    real = load_real_frames(args.real, (W, H)) if args.real else None
    name = Path(args.video).stem
    results = {name: compute(frames, gt, real)}
    paths = {name: args.video}
    for ref in args.reference:
        rf, rmeta = load_video_frames(ref)
        if rf.shape != frames.shape:
            raise UserError(f"reference has shape {tuple(rf.shape)}, the video {tuple(frames.shape)}", file=ref,
                            field="--reference")
        rname = Path(ref).stem if Path(ref).stem not in results else f"{Path(ref).stem}_{len(results)}"
        results[rname] = compute(rf, gt, real)
        paths[rname] = ref
    out = Path(args.output)
    write_report(out, results, paths, {"scene": str(scene_path), "frames": [rng.start, rng.stop], "size": [W, H],
                                       "real": args.real})
    first = results[name]
    print(f"wrote {out / 'metrics.json'} and {out / 'index.html'}")
    for k in ("warp_error", "texel_std", "orb_consistent_ratio", "tof", "swd", "ms_ssim_lum_vs_sim"):
        if k in first:
            print(f"  {k:<22} " + "  ".join(f"{n}: {r.get(k, float('nan')):.4g}" for n, r in results.items()))
    return 0

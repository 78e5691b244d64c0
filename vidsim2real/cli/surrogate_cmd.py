"""``vidsim2real surrogate SCENE... -o DIR``: frames / clips of the surrogate real domain."""
from __future__ import annotations

import argparse

from .common import parse_size, pick_device

FLAGS = {"views": "--views", "random_scenes": "--random-scenes", "scenes": "SCENE", "size": "--size"}


def register(sub) -> None:
    p = sub.add_parser("surrogate", help="render the procedural 'real' domain (PNG frames, MP4 clips, manifest)")
    p.add_argument("scenes", nargs="*", metavar="SCENE.yaml", help="scenes to render (and/or --random-scenes)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the set (resumable: finished frames stay)")
    p.add_argument("--seed", type=int, default=0, help="drives view choice, patients, grading and noise")
    p.add_argument("--views", type=int, default=8, help="frames per scene (random frames of its path)")
    p.add_argument("--random-scenes", type=int, default=0, metavar="K",
                   help="also generate K random scenes (seeds from --scene-seed) and render them")
    p.add_argument("--scene-seed", type=int, default=None,
                   help="first random-scene seed (default 100000 + 1000 * SEED: disjoint from training scenes)")
    p.add_argument("--frames", type=int, default=60, help="frames of each random scene's path")
    p.add_argument("--clips", action="store_true", help="also write each scene's whole trajectory as an MP4 clip")
    p.add_argument("--as-video", action="store_true",
                   help="write each scene's views as one short H.264 clip instead of PNG frames (smaller)")
    p.add_argument("--size", default="256x256", metavar="WxH", help="frame size")
    p.add_argument("--scope-mask", action=argparse.BooleanOptionalAction, default=True,
                   help="circular scope mask")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run, flags=FLAGS)


def run(args) -> int:
    from ..domains.surrogate_set import write_surrogate_set
    manifest = write_surrogate_set(args.output, args.scenes, seed=args.seed, views=args.views,
                                   random_scenes=args.random_scenes, scene_seed=args.scene_seed, frames=args.frames,
                                   clips=args.clips, size=parse_size(args.size), scope_mask=args.scope_mask,
                                   device=pick_device(args.device), as_video=args.as_video)
    print(f"wrote {len(manifest['frames'])} frames and {len(manifest['clips'])} clips to {args.output} (manifest.json)")
    return 0

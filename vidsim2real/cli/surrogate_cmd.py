"""``vidsim2real surrogate SCENE... -o DIR``: frames / clips of the surrogate real domain."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import parse_size, pick_device


def register(sub) -> None:
    p = sub.add_parser("surrogate", help="render the procedural 'real' domain (PNG frames, MP4 clips, manifest)")
    p.add_argument("scenes", nargs="*", metavar="SCENE.yaml")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0, help="drives view choice, patients, grading and noise")
    p.add_argument("--views", type=int, default=8, help="PNG frames per scene (random frames of its path)")
    p.add_argument("--random-scenes", type=int, default=0, metavar="K",
                   help="also generate K random scenes (seeds from --scene-seed) and render them")
    p.add_argument("--scene-seed", type=int, default=None,
                   help="first random-scene seed (default 100000 + 1000 * SEED: disjoint from training scenes)")
    p.add_argument("--frames", type=int, default=60, help="frames of each random scene's path")
    p.add_argument("--clips", action="store_true", help="also write each scene as an MP4 clip")
    p.add_argument("--size", default="256x256", metavar="WxH")
    p.add_argument("--scope-mask", action=argparse.BooleanOptionalAction, default=True,
                   help="circular scope mask")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..domains.surrogate import SurrogateRenderer
    from ..io.atomic import atomic_write_text
    from ..io.gbuffer import write_png
    from ..io.video import VideoWriter, check_even, to_uint8
    from ..scene import check_camera_path, load_scene
    from ..scene.random_scene import write_random_scenes

    if args.views < 0 or args.random_scenes < 0:
        raise UserError("must be >= 0", field="--views" if args.views < 0 else "--random-scenes")
    if not args.scenes and args.random_scenes == 0:
        raise UserError("give scene files and/or --random-scenes K", field="SCENE")
    size = parse_size(args.size)
    if args.clips:
        check_even(*size)
    device = pick_device(args.device)
    out = Path(args.output)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    scene_paths = [Path(s) for s in args.scenes]
    if args.random_scenes:
        first = args.scene_seed if args.scene_seed is not None else 100000 + 1000 * args.seed
        for s in tqdm(range(first, first + args.random_scenes), desc="random scenes", unit="scene"):
            name = f"random_{s:05d}.yaml"
            if (out / "scenes" / name).exists():          # resume
                scene_paths.append(out / "scenes" / name)
                continue
            scene_paths += write_random_scenes(s, out / "scenes", 1, frames=args.frames)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"frames": [], "clips": []}
    done = {e["file"] for e in manifest["frames"]} | {e["file"] for e in manifest["clips"]}
    scenes = []
    for p in scene_paths:
        scene = load_scene(p)
        check_camera_path(scene)
        scenes.append(scene)
    for k, scene in enumerate(tqdm(scenes, desc="surrogate", unit="scene")):
        patient, video = args.seed * 1000 + k, args.seed * 1000 + k + 500
        sr = SurrogateRenderer(scene, size=size, device=device, patient_seed=patient, video_seed=video,
                               scope_mask=args.scope_mask)
        rng = np.random.default_rng([args.seed, k])
        picks = sorted(rng.choice(scene.frames, size=min(args.views, scene.frames), replace=False).tolist())
        for f in picks:
            rel = f"frames/{scene.name}_{f:06d}.png"
            if rel in done:
                continue
            with torch.no_grad():
                img, _ = sr.render([f])
            write_png(out / rel, to_uint8(img)[0])
            manifest["frames"].append({"file": rel, "scene": str(scene.path), "frame": f, "patient_seed": patient,
                                       "video_seed": video})
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
        if args.clips:
            rel = f"clips/{scene.name}.mp4"
            if rel not in done:
                meta = {"kind": "surrogate", "scene": str(Path(scene.path).resolve()), "frames": [0, scene.frames],
                        "checkpoint": None, "style": {"patient_seed": patient, "video_seed": video},
                        "seed": args.seed}
                with torch.no_grad(), VideoWriter(out / rel, scene.fps, size, meta=meta) as vw:
                    for f0 in range(0, scene.frames, 4):
                        img, _ = sr.render(list(range(f0, min(f0 + 4, scene.frames))))
                        vw.write(img)
                manifest["clips"].append({"file": rel, "scene": str(scene.path), "frames": scene.frames,
                                          "patient_seed": patient, "video_seed": video})
                atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    print(f"wrote {len(manifest['frames'])} frames and {len(manifest['clips'])} clips to {out} (manifest.json)")
    return 0

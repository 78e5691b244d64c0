"""``vidsim2real scene check|mesh|random``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import add_force_option, refuse_existing


def register(sub) -> None:
    p = sub.add_parser("scene", help="check, export or generate scene files")
    ssub = p.add_subparsers(dest="scene_command", metavar="SUBCOMMAND")
    ssub.required = True

    c = ssub.add_parser("check", help="validate scene files and print a summary")
    c.add_argument("files", nargs="+", metavar="FILE", help="scene files")
    c.set_defaults(func=cmd_check)

    m = ssub.add_parser("mesh", help="write the world-space geometry of one frame as PLY")
    m.add_argument("file", metavar="FILE", help="a scene file")
    m.add_argument("--frame", type=int, default=0, metavar="T", help="scene frame (deformation applied)")
    m.add_argument("-o", "--output", required=True, metavar="OUT.ply", help="PLY with a per-face object_id")
    add_force_option(m)
    m.set_defaults(func=cmd_mesh, flags={"output": "-o"})

    r = ssub.add_parser("random", help="generate random laparoscope scenes (deterministic per seed)")
    r.add_argument("--seed", type=int, required=True, help="first scene seed (one scene per seed)")
    r.add_argument("-o", "--output", required=True, metavar="DIR", help="writes DIR/random_<seed>.yaml")
    r.add_argument("--count", type=int, default=1, help="scenes with seeds SEED .. SEED+COUNT-1")
    r.add_argument("--base", default=None, metavar="SCENE.yaml", help="anatomy, camera and lighting to use; "
                   "default: scenes/liver_overview.yaml")
    r.add_argument("--frames", type=int, default=100, help="frames of each camera path")
    r.add_argument("--fps", type=float, default=25.0, help="frames per second")
    r.add_argument("--instrument-probability", type=float, default=0.5,
                   help="chance that a grasper sweeps through the view")
    add_force_option(r)
    r.set_defaults(func=cmd_random, flags={"output": "-o"})


def cmd_check(args) -> int:
    from ..scene import check_camera_path, load_scene, summary
    failed = 0
    for f in args.files:
        try:
            scene = load_scene(f)
            report = check_camera_path(scene)
            print(summary(scene, report))
        except UserError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            failed += 1
    sys.stdout.flush()
    return 2 if failed else 0


def cmd_mesh(args) -> int:
    import trimesh

    from ..io.atomic import atomic_write_bytes, atomic_write_text
    from ..scene import load_scene
    scene = load_scene(args.file)
    if not 0 <= args.frame < scene.frames:
        raise UserError(f"frame {args.frame} outside the scene's 0..{scene.frames - 1}", file=args.file, field="--frame")
    out = Path(args.output)
    if out.suffix.lower() != ".ply":
        raise UserError("output must end in .ply", field="-o")
    refuse_existing(out, args.force)
    verts = scene.vertices(args.frame)
    mesh = trimesh.Trimesh(verts, scene.faces, process=False)
    mesh.face_attributes["object_id"] = scene.face_object.astype(np.int32)
    atomic_write_bytes(out, trimesh.exchange.ply.export_ply(mesh, encoding="binary", include_attributes=True))
    side = {"scene": str(Path(args.file)), "frame": args.frame, "units": "m",
            "faces": int(scene.num_faces), "vertices": int(len(verts)),
            "face_attribute": "object_id (index into objects)",
            "objects": [{"name": o.name, "class_id": o.class_id, "class_name": o.class_name,
                         "first_face": int(scene.face_offsets[i]), "faces": int(len(o.mesh.faces))}
                        for i, o in enumerate(scene.objects)]}
    atomic_write_text(str(out) + ".json", json.dumps(side, indent=2))
    print(f"wrote {out} ({scene.num_faces:,} faces, frame {args.frame}) and {out}.json")
    return 0


def cmd_random(args) -> int:
    from ..scene import check_camera_path, load_scene
    from ..scene.random_scene import write_random_scenes
    if args.count < 1:
        raise UserError("must be >= 1", field="--count")
    if args.frames < 1:
        raise UserError("must be >= 1", field="--frames")
    if args.fps <= 0:
        raise UserError("must be > 0", field="--fps")
    if not 0.0 <= args.instrument_probability <= 1.0:
        raise UserError("must lie in [0, 1]", field="--instrument-probability")
    from tqdm import tqdm
    for s in range(args.seed, args.seed + args.count):
        refuse_existing(Path(args.output) / f"random_{s:05d}.yaml", args.force)
    paths = []
    for s in tqdm(range(args.seed, args.seed + args.count), desc="random scenes", unit="scene",
                  disable=args.count < 2):
        p = write_random_scenes(s, args.output, 1, base_path=args.base, frames=args.frames, fps=args.fps,
                                instrument_probability=args.instrument_probability)[0]
        check_camera_path(load_scene(p))  # the written file passes the same check users run
        paths.append(p)
    for p in paths:
        print(p)
    return 0

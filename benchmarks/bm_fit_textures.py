"""How long fitting a new anatomy takes, as a new user meets it (issue: fit-textures in minutes).

Builds a scene no model saw — the OpenHELP liver with a gallbladder (an ellipsoid mesh written
here, tucked under the inferior liver edge) as a new anatomy — and times the whole command
``vidsim2real fit-textures CKPT SCENE`` in a fresh process with the defaults (bundled real-domain
set, 300 steps). ``--cold`` also points the kernel cache at an empty folder, so the one-time
C++ compile of a fresh install is counted. Then translates frames of the fitted scene into
``--out`` (PNG) to look at.

    python benchmarks/bm_fit_textures.py [--checkpoint checkpoints/cpu_small.pt] [--cold] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0

SCENE = """\
name: liver_gallbladder
anatomy: liver_gallbladder
units: mm
camera: {{width: 256, height: 256, fov: 70, near: 2, far: 400}}
trajectory:
  fps: 25
  frames: 100
  keyframes:
    - {{time: 0.0, position: [-55, -100, 215], look_at: [-85, -15, 150], up: [0, 1, 0.4]}}
    - {{time: 4.0, position: [-85, -80, 200], look_at: [-90, -15, 150], up: [0, 1, 0.4]}}
objects:
  - {{name: liver, mesh: {liver}, class_id: 2, class_name: liver, color: [0.55, 0.17, 0.13]}}
  - {{name: gallbladder, mesh: {gallbladder}, class_id: 8, class_name: gallbladder, color: [0.45, 0.55, 0.3]}}
"""


def write_scene(folder: Path) -> Path:
    """The liver + gallbladder scene in ``folder``; returns the scene file."""
    import numpy as np
    import trimesh
    gb = trimesh.creation.icosphere(subdivisions=4)
    gb.apply_scale([32.0, 14.0, 14.0])                    # a 64 x 28 mm pear-less gallbladder, in mm
    rot = trimesh.transformations.rotation_matrix(np.radians(35), [0, 0, 1])
    gb.apply_transform(rot)
    gb.apply_translation([-88.0, -22.0, 150.0])
    gb.export(folder / "gallbladder.stl")
    path = folder / "liver_gallbladder.yaml"
    path.write_text(SCENE.format(liver=ROOT / "scenes/meshes/openhelp/Liver.stl", gallbladder=folder / "gallbladder.stl"))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints/cpu_small.pt"))
    ap.add_argument("--cold", action="store_true", help="count the first-use C++ compile too")
    ap.add_argument("--out", default=str(ROOT / "out/bm_fit_textures"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = write_scene(tmp)
        env = dict(os.environ)
        if args.cold:
            env["VIDSIM2REAL_EXT_DIR"] = str(tmp / "ext")
        fitted = out / "fitted.pt"
        cmd = [sys.executable, "-m", "vidsim2real", "fit-textures", args.checkpoint, str(scene), "-o", str(fitted), "--force"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            print(f"fit-textures failed (exit {r.returncode})", file=sys.stderr)
            return 1
        print(r.stdout.strip())
        # sanity: the new anatomy's textures are in the output, or the timing measured nothing
        from vidsim2real.io.checkpoint import load_checkpoint
        if "liver_gallbladder" not in load_checkpoint(fitted)["textures"]:
            print("sanity check failed: no 'liver_gallbladder' textures in the fitted checkpoint", file=sys.stderr)
            return 1
        video = out / "liver_gallbladder.mp4"
        subprocess.run([sys.executable, "-m", "vidsim2real", "translate", str(fitted), str(scene), "-o", str(video),
                        "--side-by-side", "--force", "--style", "0"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
    import imageio.v3 as iio
    frames = iio.imread(video)
    iio.imwrite(out / "liver_gallbladder.png", frames[::33].reshape(-1, *frames.shape[2:]))
    row = {"wall_s": round(wall, 1), "target_s": TARGET_S, "cold": args.cold, "checkpoint": args.checkpoint}
    print(json.dumps(row))
    print(f"fit-textures on a new anatomy: {wall:.0f} s (target <= {TARGET_S:.0f} s): "
          + ("met" if wall <= TARGET_S else "NOT met") + f"; frames: {out / 'liver_gallbladder.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

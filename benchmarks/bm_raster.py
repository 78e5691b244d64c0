"""Rasterizer throughput: torch reference vs C++ kernel vs trimesh+Embree first-hit ray casting.

Same meshes (OpenHELP liver, 30k faces, and its 4x subdivision, 123k faces), same four scope
poses, same run. Prints frames/s and ratios against Embree.  Usage: python benchmarks/bm_raster.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, timeit  # noqa: E402

from vidsim2real.raster import rasterize  # noqa: E402
from vidsim2real.scene.camera import Intrinsics, look_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POSES = [([-0.04, -0.08, 0.26], [-0.04, 0.07, 0.15], [0, 0, 1]),
         ([-0.09, -0.05, 0.20], [-0.09, 0.0, 0.15], [0, 1, 0.4]),
         ([0.0, 0.02, 0.26], [-0.03, 0.08, 0.19], [0, 1, 0]),
         ([-0.15, 0.05, 0.22], [-0.05, 0.08, 0.17], [0, 0, 1])]


def meshes():
    import trimesh
    m = trimesh.load(ROOT / "scenes/meshes/openhelp/Liver.stl")
    v, f = np.asarray(m.vertices) * 1e-3, np.asarray(m.faces)
    v2, f2 = trimesh.remesh.subdivide(v, f)
    return {"30k": (v, f), "120k": (v2, f2)}


def embree_fn(v, f, K, poses, size):
    import trimesh
    mesh = trimesh.Trimesh(v, f, process=False)
    ys, xs = np.mgrid[0:size, 0:size]
    d_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(xs.shape)], -1).reshape(-1, 3)
    rays = []
    for w2c in poses:
        R = w2c[:3, :3]
        d = d_cam @ R
        rays.append((np.repeat((-R.T @ w2c[:3, 3])[None], len(d), 0), d / np.linalg.norm(d, axis=1, keepdims=True)))
    mesh.ray.intersects_first(*rays[0])  # build the BVH outside the timing

    def run():
        for o, d in rays:
            mesh.ray.intersects_first(o, d)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for name, (v, f) in meshes().items():
        for size in (256, 512):
            intr = Intrinsics.from_fov(size, size, 70, 0.002, 1.0)
            K = intr.K()
            poses = np.stack([look_at(*p) for p in POSES])
            Vt, Ft = torch.tensor(v), torch.tensor(f)
            Kt, Pt = torch.tensor(K), torch.tensor(poses)
            res = {}
            for backend in ("torch", "cpu"):
                # one frame at a time, as a renderer streaming a video does
                fn = lambda b=backend: [rasterize(Vt, Ft, Kt, Pt[i], (size, size), intr.near, intr.far,  # noqa: E731
                                                  backend=b) for i in range(len(POSES))]
                res[backend] = timeit(fn, repeat=args.repeat) / len(POSES)
            res["embree"] = timeit(embree_fn(v, f, K, poses, size), repeat=max(2, args.repeat // 2)) / len(POSES)
            fps = {k: 1.0 / t for k, t in res.items()}
            rows.append([f"{len(f):,}", f"{size}²",
                         f"{res['torch'] * 1e3:.1f} ms ({fps['torch']:.0f}/s)",
                         f"{res['cpu'] * 1e3:.1f} ms ({fps['cpu']:.0f}/s)",
                         f"{res['embree'] * 1e3:.1f} ms ({fps['embree']:.0f}/s)",
                         f"{res['embree'] / res['cpu']:.1f}x", f"{res['embree'] / res['torch']:.2f}x"])
    print(f"# Rasterizer throughput, 1 frame per call, median of {args.repeat} ({machine()}, "
          f"{torch.get_num_threads()} threads)\n")
    print(table(["faces", "size", "torch reference", "C++ kernel", "Embree first hit", "C++ vs Embree",
                 "torch vs Embree"], rows))


if __name__ == "__main__":
    main()

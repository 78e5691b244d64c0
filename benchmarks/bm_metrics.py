"""Temporal metrics on a clip longer than the ground truth's cache: warp error and ORB in one
pass over the frame pairs (offsets up to the cache's reach visited together, frame by frame)
against the baseline in the same run, each measure on its own one offset at a time (how
``metrics`` visited them before): seconds, G-buffer renders, and the check that both give the
same figures. The clip is the sim render of a bundled scene, decoded into memory first.
Usage: python benchmarks/bm_metrics.py [--frames 150] [--size 128] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fail, machine, table  # noqa: E402

from vidsim2real.metrics.gt import SceneGT  # noqa: E402
from vidsim2real.metrics.temporal import pair_measures  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def counted(gt: SceneGT) -> list:
    """Every scene frame ``gt`` renders from now on, appended to the returned list."""
    seen, render = [], gt.renderer.render
    gt.renderer.render = lambda frames, *a, **k: seen.extend(frames) or render(frames, *a, **k)
    return seen


def run(scene, frames, size, clip, reach) -> tuple[dict, float, int]:
    gt = SceneGT(scene, frames, (size, size))          # a fresh cache for each variant
    seen = counted(gt)
    t0 = time.perf_counter()
    if reach is None:
        out = pair_measures(clip, gt)
    else:                                              # baseline: each measure alone, offset by offset
        out = {**pair_measures(clip, gt, orb=False, reach=reach), **pair_measures(clip, gt, warp=False, reach=reach)}
    return out, time.perf_counter() - t0, len(seen)


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", default=str(ROOT / "scenes" / "liver_edge_breathing.yaml"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scene = load_scene(args.scene)
    frames = list(range(min(args.frames, scene.frames)))
    if len(frames) <= SceneGT(scene, frames[:1], (8, 8)).reach + 1:
        fail(f"--frames: {len(frames)} frames fit in the ground truth's cache; the benchmark needs a longer clip")
    src = SceneGT(scene, frames, (args.size, args.size))
    clip = torch.stack([src.sim(i) for i in range(len(frames))])
    new, t_new, n_new = run(scene, frames, args.size, clip, None)
    old, t_old, n_old = run(scene, frames, args.size, clip, 0)
    if not same(new, old):
        fail("sanity check failed: one pass and offset by offset give different figures")
    if not (t_new > 0 and n_new >= len(frames)):
        fail(f"sanity check failed: {n_new} renders for {len(frames)} frames")
    print(f"{machine()}, {args.threads} thread(s); {Path(args.scene).name}, {len(frames)} frames at {args.size}²")
    print(table(["warp error + ORB", "seconds", "renders", "renders / frame", "time vs baseline"],
                [["one pass, near offsets together", f"{t_new:.1f}", n_new, f"{n_new / len(frames):.1f}",
                  f"{t_new / t_old:.2f}x"],
                 ["baseline: each measure, offset by offset", f"{t_old:.1f}", n_old, f"{n_old / len(frames):.1f}",
                  "1.00x"]]))


if __name__ == "__main__":
    main()

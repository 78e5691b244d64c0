"""The headline result: temporal consistency and realism on held-out scenes.

Compares, on scenes no model was trained on, the per-frame baseline (same translator without
neural textures and view loss), the neural-texture model, the sim render and the surrogate
render (the floor: the target domain rendered with its ground-truth, view-consistent tissue).
Usage: python benchmarks/temporal_table.py [--model CKPT] [--baseline CKPT] [--frames 48] [--size 256]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidsim2real.domains.surrogate import SurrogateRenderer  # noqa: E402
from vidsim2real.io.video import VideoWriter  # noqa: E402
from vidsim2real.metrics.gt import SceneGT  # noqa: E402
from vidsim2real.metrics.report import compute  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.scene.random_scene import write_random_scenes  # noqa: E402
from vidsim2real.translate.inference import check_scene, load_model, make_style, translate_buffers  # noqa: E402

HELD_OUT_SEEDS = (50000, 50001)     # training uses random scenes 0..N and surrogate scenes >= 100000
REAL_SEED = 3                       # held-out surrogate set: random scenes 103000.., other patients
COLUMNS = ["per-frame baseline", "neural textures (ours)", "sim render", "surrogate (floor)"]
KEYS = [("warp_error", "↓"), ("texel_std", "↓"), ("orb_consistent_ratio", "↑"), ("orb_consistent_count", "↑"),
        ("tof", "↓"), ("swd", "↓"), ("color_hist_distance", "↓"), ("ms_ssim_lum_vs_sim", "↑")]


def held_out_real(out: Path, size: int, n_scenes: int = 8, views: int = 8) -> torch.Tensor:
    from vidsim2real.cli.main import main as cli
    from vidsim2real.metrics.report import load_real_frames
    d = out / "real"
    if not (d / "manifest.json").exists():
        cli(["surrogate", "--random-scenes", str(n_scenes), "--views", str(views), "--frames", "40",
             "--size", f"{size}x{size}", "--seed", str(REAL_SEED), "--no-scope-mask", "-o", str(d)])
    return load_real_frames(d / "frames", (size, size))


def translated(model, gt: SceneGT, style: torch.Tensor) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(gt.frames), 8):
            buf = gt.renderer.render(gt.frames[i:i + 8])
            out.append(translate_buffers(model, gt.renderer, buf, style).cpu())
    return torch.cat(out)


def surrogate(scene, gt: SceneGT, size: int) -> torch.Tensor:
    sr = SurrogateRenderer(scene, size=(size, size), patient_seed=7, video_seed=7)
    out = []
    with torch.no_grad():
        for i in range(0, len(gt.frames), 8):
            out.append(sr.render(gt.frames[i:i + 8])[0].cpu())
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "checkpoints/cpu_small.pt"))
    ap.add_argument("--baseline", default=str(ROOT / "checkpoints/baseline_cpu_small.pt"))
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "out/temporal_table"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ours, base = load_model(args.model), load_model(args.baseline)
    scenes = [ROOT / "scenes/liver_edge_breathing.yaml"]
    scenes += write_random_scenes(HELD_OUT_SEEDS[0], out / "scenes", len(HELD_OUT_SEEDS), frames=args.frames)
    real = held_out_real(out, args.size)
    per_scene = {}
    for path in scenes:
        scene = load_scene(path)
        check_scene(ours, scene)
        frames = range(0, min(args.frames, scene.frames))
        gt = SceneGT(scene, frames, (args.size, args.size))
        videos = {"per-frame baseline": translated(base, gt, make_style(base, "0", "cpu")),
                  "neural textures (ours)": translated(ours, gt, make_style(ours, "0", "cpu")),
                  "sim render": gt.sim_rgb, "surrogate (floor)": surrogate(scene, gt, args.size)}
        with VideoWriter(out / f"{scene.name}_all.mp4", scene.fps, (args.size * 4, args.size),
                         meta={"kind": "comparison", "columns": COLUMNS, "scene": str(path),
                               "frames": [frames.start, frames.stop]}) as vw:
            vw.write(torch.cat([videos[c] for c in COLUMNS], 2))
        per_scene[scene.name] = {c: compute(v, gt, real) for c, v in videos.items()}
        print(f"{scene.name}: done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    # nanmean: a short clip can have no ORB match with a valid correspondence (ratio undefined)
    mean = {c: {k: float(np.nanmean([per_scene[s][c][k] for s in per_scene])) for k, _ in KEYS} for c in COLUMNS}
    rows = [[f"`{k}` {arrow}"] + [f"{mean[c][k]:.4g}" for c in COLUMNS] for k, arrow in KEYS]
    b, o, s = mean["per-frame baseline"], mean["neural textures (ours)"], mean["sim render"]
    ratios = {"warp_error ours/baseline": o["warp_error"] / b["warp_error"],
              "texel_std ours/baseline": o["texel_std"] / b["texel_std"],
              "orb_consistent_ratio ours - baseline": o["orb_consistent_ratio"] - b["orb_consistent_ratio"],
              "swd(ours, real) / swd(sim, real)": o["swd"] / s["swd"],
              "swd(baseline, real) / swd(sim, real)": b["swd"] / s["swd"]}
    doc = {"machine": machine(), "frames": args.frames, "size": args.size, "scenes": [str(p) for p in scenes],
           "model": args.model, "baseline": args.baseline, "mean": mean, "per_scene": per_scene, "ratios": ratios,
           "seconds": time.perf_counter() - t_start}
    (out / "temporal_table.json").write_text(json.dumps(doc, indent=1))
    print(f"\n# Held-out scenes ({', '.join(per_scene)}), {args.frames} frames at {args.size}², "
          f"mean over scenes ({machine()})\n")
    print(table(["metric"] + COLUMNS, rows))
    print()
    print(table(["ratio", "value"], [[k, f"{v:.3f}"] for k, v in ratios.items()]))


if __name__ == "__main__":
    main()

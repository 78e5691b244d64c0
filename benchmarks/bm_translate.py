"""`vidsim2real translate` throughput: render + neural features + translation, frames/s.

Usage: python benchmarks/bm_translate.py [--model CKPT] [--size 256] [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from vidsim2real.cli.main import main as cli
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "checkpoints/cpu_small.pt"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = []
    for name in ("liver_overview", "instrument_pass"):
        path = ROOT / f"scenes/{name}.yaml"
        scene = load_scene(path)
        model = load_model(args.model, args.device)
        r = Renderer(scene, size=(args.size, args.size), device=args.device)
        style = make_style(model, "0", args.device)
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        with torch.no_grad():
            translate_buffers(model, r, r.render([0]), style)
            sync()
            t = time.perf_counter()                  # baseline in the same run: the sim render alone
            for f in range(0, args.frames, 4):
                r.render(list(range(f, f + 4)))
            sync()
            render_only = args.frames / (time.perf_counter() - t)
            t = time.perf_counter()
            for f in range(0, args.frames, 4):
                translate_buffers(model, r, r.render(list(range(f, f + 4))), style)
            sync()
            core = args.frames / (time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:     # the whole command, MP4 encoding included
            t = time.perf_counter()
            cli(["translate", args.model, str(path), "-o", f"{tmp}/v.mp4", "--size", f"{args.size}x{args.size}",
                 "--frames", f"0:{args.frames}", "--device", args.device])
            full = args.frames / (time.perf_counter() - t)
        rows.append([name, f"{args.size}²", f"{render_only:.1f}", f"{core:.1f}", f"{core / render_only:.2f}",
                     f"{full:.1f}"])
    print(f"\n# translate throughput, frames/s ({machine()}, {torch.get_num_threads()} threads, {args.device})\n")
    print(table(["scene", "size", "sim render", "render + translate", "ratio", "whole command (load, MP4)"], rows))


if __name__ == "__main__":
    main()

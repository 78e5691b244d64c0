"""Sim render + 16-channel neural-feature sampling: frames/s on the bundled scenes.

Compares the torch reference rasterizer with the C++ backend (and CUDA when present), one
frame per call as ``vidsim2real render`` streams. On GPU it also times texture sampling
forward+backward against plain ``grid_sample`` of a same-size texture.
Usage: python benchmarks/bm_render.py [--device cuda] [--sizes 256 512]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, timeit  # noqa: E402

from vidsim2real.render import Renderer  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.texture import TextureConfig, TextureSet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def render_fps(scene, size, backend, device, textures, frames=8) -> float:
    r = Renderer(scene, size=(size, size), device=device, backend=backend)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    step = max(1, scene.frames // frames)

    def run():
        with torch.no_grad():
            for f in range(0, step * frames, step):
                r.render([f], textures=textures)
    return frames / timeit(run, repeat=3, sync=sync)


def texture_vs_grid_sample(device) -> list:
    """Forward+backward of our triplanar sampling vs grid_sample, 16 ch, 1024² texels, 512² x 8 samples."""
    from vidsim2real.texture import NeuralTexture
    n = 8 * 512 * 512
    g = torch.Generator(device="cpu").manual_seed(0)
    pos = (torch.rand(n, 3, generator=g) * 0.1).to(device)
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1).to(device)
    tex = NeuralTexture("triplanar", 16, 512, 1, bbox=torch.tensor([[0.0] * 3, [0.1] * 3])).to(device)  # 3 x 512 x 1024
    plain = torch.zeros(1, 16, 1024, 1024, device=device, requires_grad=True)
    grid = (torch.rand(1, 8 * 512, 512, 2, generator=g) * 2 - 1).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def ours():
        tex.zero_grad(set_to_none=True)
        tex.sample(pos, nrm).sum().backward()

    def base():
        plain.grad = None
        torch.nn.functional.grid_sample(plain, grid, align_corners=False).sum().backward()
    t_ours, t_base = timeit(ours, repeat=5, sync=sync), timeit(base, repeat=5, sync=sync)
    return [["triplanar (3 planes, 16 ch, 2x512x512 each)", f"{t_ours * 1e3:.1f} ms"],
            ["grid_sample 16 ch 1024² (same texel count ~)", f"{t_base * 1e3:.1f} ms"],
            ["ratio", f"{t_ours / t_base:.2f}x"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--channels", type=int, default=16)
    args = ap.parse_args()
    device = torch.device(args.device)
    backends = ["torch", "cpu"] if device.type == "cpu" else ["torch", "cuda"]
    rows = []
    for path in sorted((ROOT / "scenes").glob("*.yaml")):
        scene = load_scene(path)
        tex = TextureSet.for_scene(scene, TextureConfig(channels=args.channels)).to(device)
        for size in args.sizes:
            fps = {b: render_fps(scene, size, b, device, tex) for b in backends}
            rows.append([scene.name, f"{scene.num_faces:,}", f"{size}²"] + [f"{fps[b]:.1f}" for b in backends]
                        + [f"{fps[backends[1]] / fps['torch']:.1f}x"])
    print(f"# Sim render + {args.channels}-channel features, frames/s, 1 frame per call ({machine()}, "
          f"{torch.get_num_threads()} threads, {device})\n")
    print(table(["scene", "faces", "size"] + [f"{b} backend" for b in backends] + ["speed-up"], rows))
    if device.type == "cuda":
        print("\n# Texture sampling forward+backward, 8 x 512² samples\n")
        print(table(["what", "time"], texture_vs_grid_sample(device)))


if __name__ == "__main__":
    main()

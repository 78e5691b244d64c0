"""Sim render + 16-channel neural-feature sampling: frames/s on the bundled scenes.

Compares the torch reference rasterizer with the C++ backend (and CUDA when present), one
frame per call as ``vidsim2real render`` streams; then times the fused texture sampling
forward+backward against its grid_sample reference and one plain ``grid_sample`` of a
same-size texture (the baseline), 1 x 256² points on the CPU, 8 x 512² on a GPU.
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


def texture_vs_grid_sample(device, channels: int = 16, size: int = 512, batch: int = 8) -> list:
    """Forward+backward of triplanar sampling (3 planes of 512 x 1024 texels, 16 ch) at
    batch x size² points: the fused kernel, its grid_sample reference, and one plain
    ``grid_sample`` of a same-size texture (1024² x 16) at the same points (the baseline)."""
    from vidsim2real.texture import NeuralTexture
    from vidsim2real.texture.fused import sample_set
    n = batch * size * size
    g = torch.Generator(device="cpu").manual_seed(0)
    pos = (torch.rand(n, 3, generator=g) * 0.1).to(device)
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1).to(device)
    obj = torch.zeros(n, dtype=torch.long, device=device)
    none = torch.zeros(n, dtype=torch.long, device=device)
    tex = NeuralTexture("triplanar", channels, 512, 1, bbox=torch.tensor([[0.0] * 3, [0.1] * 3])).to(device)
    plain = torch.zeros(1, channels, 1024, 1024, device=device, requires_grad=True)
    grid = (torch.rand(1, batch * size, size, 2, generator=g) * 2 - 1).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    backend = "cuda" if device.type == "cuda" else "cpu"

    def fused():
        tex.zero_grad(set_to_none=True)
        sample_set([tex], obj, pos, nrm, none, pos, [0, 1], backend=backend).sum().backward()

    def reference():
        tex.zero_grad(set_to_none=True)
        tex.sample(pos, nrm).sum().backward()

    def base():
        plain.grad = None
        torch.nn.functional.grid_sample(plain, grid, align_corners=False).sum().backward()
    t_f, t_r, t_b = (timeit(f, repeat=5, sync=sync) for f in (fused, reference, base))
    if not (t_f > 0 and t_b > 0):
        raise SystemExit("sanity check failed: a zero timing")
    return [[f"fused kernel ({backend})", f"{t_f * 1e3:.1f} ms", f"{t_f / t_b:.2f}x"],
            ["grid_sample reference (per plane and level)", f"{t_r * 1e3:.1f} ms", f"{t_r / t_b:.2f}x"],
            [f"baseline: one grid_sample, {channels} ch 1024²", f"{t_b * 1e3:.1f} ms", "1.00x"]]


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
    batch, size = (8, 512) if device.type == "cuda" else (1, 256)
    print(f"\n# Texture sampling forward+backward, {batch} x {size}² samples, {args.channels} ch ({device})\n")
    print(table(["what", "time", "vs baseline"], texture_vs_grid_sample(device, args.channels, size, batch)))


if __name__ == "__main__":
    main()

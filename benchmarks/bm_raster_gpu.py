"""GPU rasterizer throughput against nvdiffrast (PyPI: diffrp-nvdiffrast), same run, same card.

Liver (30.7k faces) and its 4x subdivision (123k faces), 512², batch 8 scope poses.
Also reports how many pixels see the same face in both rasterizers (a sanity check).
Usage (GPU machine): python benchmarks/bm_raster_gpu.py
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bm_raster import POSES, meshes  # noqa: E402
from common import machine, table, timeit  # noqa: E402

from vidsim2real.raster import rasterize  # noqa: E402
from vidsim2real.scene.camera import Intrinsics, look_at  # noqa: E402


def import_nvdiffrast():
    """nvdiffrast.torch, compiling itself on first use; with torch 2.11 its build folder must be
    on sys.path for the compiled module to import."""
    try:
        import nvdiffrast.torch as dr
        dr.RasterizeCudaContext()
        return dr
    except Exception as first:
        roots = [os.environ.get("TORCH_EXTENSIONS_DIR", ""), os.path.expanduser("~/.cache/torch_extensions")]
        for root in roots:
            for d in glob.glob(os.path.join(root, "**", "nvdiffrast*"), recursive=True):
                if os.path.isdir(d) and d not in sys.path:
                    sys.path.insert(0, d)
        try:
            import nvdiffrast.torch as dr
            dr.RasterizeCudaContext()
            return dr
        except Exception as second:
            print(f"nvdiffrast unavailable: {type(first).__name__}: {first}; then {type(second).__name__}: {second}")
            return None


def clip_positions(v: torch.Tensor, K: np.ndarray, poses: np.ndarray, size: int, near: float, far: float):
    """World vertices -> OpenGL clip coordinates for each pose: [B, V, 4] float32."""
    out = []
    for w2c in poses:
        P = np.zeros((4, 4))
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        P[0] = [2 * fx / size, 0, (2 * (cx + 0.5) - size) / size, 0]
        P[1] = [0, 2 * fy / size, (2 * (cy + 0.5) - size) / size, 0]
        P[2] = [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)]
        P[3] = [0, 0, 1, 0]
        M = torch.tensor(P @ w2c, dtype=torch.float32, device=v.device)
        vh = torch.cat([v.float(), torch.ones_like(v[:, :1]).float()], 1)
        out.append(vh @ M.T)
    return torch.stack(out).contiguous()


def main() -> None:
    dev = torch.device("cuda")
    dr = import_nvdiffrast()
    glctx = dr.RasterizeCudaContext() if dr else None
    size, batch = 512, 8
    intr = Intrinsics.from_fov(size, size, 70, 0.002, 1.0)
    K = intr.K()
    poses = np.stack([look_at(*POSES[i % len(POSES)]) for i in range(batch)])
    poses[:, 0, 3] += np.linspace(-0.01, 0.01, batch)           # 8 distinct views
    rows = []
    for name, (v, f) in meshes().items():
        V = torch.tensor(v, device=dev)
        F = torch.tensor(f, device=dev)
        Kt = torch.tensor(K, device=dev)
        Pt = torch.tensor(poses, device=dev)
        ours = lambda: rasterize(V, F, Kt, Pt, (size, size), intr.near, intr.far, backend="cuda")  # noqa: E731
        t_ours = timeit(ours, repeat=20, warmup=3, sync=torch.cuda.synchronize)
        row = [f"{len(f):,}", f"{batch / t_ours:,.0f}"]
        if dr:
            clip = clip_positions(V, K, poses, size, intr.near, intr.far)
            tri = F.int().contiguous()
            nv = lambda: dr.rasterize(glctx, clip, tri, resolution=[size, size])  # noqa: E731
            t_nv = timeit(nv, repeat=20, warmup=3, sync=torch.cuda.synchronize)
            rast, _ = nv()
            nv_face = rast[..., 3].long() - 1      # clip_positions flips y: rows come out top-down like ours
            same = (nv_face == ours().pix_to_face).float().mean().item()
            if same < 0.95:   # two correct rasterizers of one mesh agree on ~99 % of pixels
                raise SystemExit(f"sanity check failed: only {same:.1%} of pixels see the same face as in "
                                 "nvdiffrast (an orientation or projection mismatch, not a speed result)")
            row += [f"{batch / t_nv:,.0f}", f"{t_nv / t_ours:.2f}x", f"{same * 100:.2f} %"]
        else:
            row += ["n/a", "n/a", "n/a"]
        rows.append(row)
    print(f"# GPU rasterizer, {size}², batch {batch} ({machine()})\n")
    print(table(["faces", "ours frames/s", "nvdiffrast frames/s", "ours vs nvdiffrast", "same face id"], rows))


if __name__ == "__main__":
    main()

"""The GPU speed table of issue 13, each row against its baseline measured in the same run.

Rows (CUDA device): rasterizer vs nvdiffrast (30.7k / 123k faces, 512², batch 8; with a
face-id agreement check that fails the run below 95 %); render + 16-channel features vs the
rasterizer alone (512², batch 8); fused texture sampling vs grid_sample; the training step of
configs/train/default.yaml (256², batch 8, bf16, data included) vs an efficient ResNet-9 +
PatchGAN G-and-D step (channels_last, bf16, fused Adam); render + translate with the
full-size model (512², batch 8); kernels per training step (torch.profiler) vs the anchor
step's, with the profiler's top rows; the full-size slim checkpoint's size.
Usage: python benchmarks/gpu_bench.py [--json FILE]   (DEV=cpu SIZE=64 for a dry run here)
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEV = torch.device(os.environ.get("DEV", "cuda"))
SIZE = int(os.environ.get("SIZE", "512"))
TSIZE = int(os.environ.get("TSIZE", "256"))
REPS = int(os.environ.get("REPS", "10"))


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def bench(fn, warm: int = 3, reps: int = REPS) -> float:
    """Median seconds of fn()."""
    reps = min(reps, REPS)
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def profile(fn, steps: int = 2) -> tuple[float, float, str]:
    """Kernels and launch calls per call of fn (torch.profiler, after a warm-up), and the top
    rows by self device time (self CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity
    fn()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        sync()
    ev = prof.events()
    if DEV.type == "cuda":
        kernels = [e for e in ev if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith(("Memcpy", "Memset"))]
        launches = [e for e in ev if e.device_type == torch.autograd.DeviceType.CPU and "LaunchKernel" in e.name]
    else:                                   # the CPU proxy: aten calls
        kernels = launches = [e for e in ev if e.name.startswith("aten::")]
    key = "self_device_time_total" if DEV.type == "cuda" else "self_cpu_time_total"
    top = prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60)
    return len(kernels) / steps, len(launches) / steps, top


def rasterizer_rows() -> list:
    from bm_raster import POSES, meshes
    from bm_raster_gpu import clip_positions, import_nvdiffrast
    from vidsim2real.raster import rasterize
    from vidsim2real.scene.camera import Intrinsics, look_at
    dr = import_nvdiffrast() if DEV.type == "cuda" else None
    ctx = dr.RasterizeCudaContext() if dr else None
    intr = Intrinsics.from_fov(SIZE, SIZE, 70, 0.002, 1.0)
    poses = np.stack([look_at(*POSES[i % len(POSES)]) for i in range(8)])
    poses[:, 0, 3] += np.linspace(-0.01, 0.01, 8)
    rows = []
    for name, (v, f) in meshes().items():
        V, Fc = torch.tensor(v, device=DEV), torch.tensor(f, device=DEV)
        K, P = torch.tensor(intr.K(), device=DEV), torch.tensor(poses, device=DEV)
        ours = lambda: rasterize(V, Fc, K, P, (SIZE, SIZE), intr.near, intr.far)  # noqa: E731
        t_ours = bench(ours, reps=20)
        row = [f"rasterize {len(f):,} faces, {SIZE}², batch 8", f"{8 / t_ours:,.0f} frames/s"]
        if dr:
            clip = clip_positions(V, intr.K(), poses, SIZE, intr.near, intr.far)
            tri = Fc.int().contiguous()
            theirs = lambda: dr.rasterize(ctx, clip, tri, resolution=[SIZE, SIZE])  # noqa: E731
            t_nv = bench(theirs, reps=20)
            nv_face = theirs()[0][..., 3].long() - 1
            same = float((nv_face == ours().pix_to_face).float().mean())       # both: rows top-down
            if same < 0.95:
                raise SystemExit(f"sanity check failed: only {same:.1%} of pixels see the same face as in nvdiffrast")
            row += [f"nvdiffrast {8 / t_nv:,.0f} frames/s", f"{t_nv / t_ours:.2f}x", f"{same:.2%} same face"]
        else:
            row += ["nvdiffrast not available", "", ""]
        rows.append(row)
    return rows


def render_rows() -> list:
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.texture import TextureConfig, TextureSet
    scene = load_scene(ROOT / "scenes/liver_overview.yaml")
    r = Renderer(scene, size=(SIZE, SIZE), device=DEV)
    tex = TextureSet.for_scene(scene, TextureConfig(channels=16, resolution=256)).to(DEV)
    frames = list(range(8, 16))
    r.exposure(frames)                                     # metering is a one-off per scene
    with torch.no_grad():
        t_full = bench(lambda: r.render(frames, textures=tex))
        t_sim = bench(lambda: r.render(frames))
        t_raster = bench(lambda: r.gbuffer(frames))
    return [[f"render + 16-ch features, {SIZE}², batch 8", f"{8 / t_full:,.0f} frames/s",
             f"sim render only {8 / t_sim:,.0f}, G-buffer only {8 / t_raster:,.0f} frames/s",
             f"{t_raster / t_full:.2f}x of the G-buffer rate", ""]]


def texture_rows() -> list:
    from bm_render import texture_vs_grid_sample
    rows = texture_vs_grid_sample(DEV, 16, SIZE, 8)
    return [[f"texture sampling fwd+bwd, 8 x {SIZE}²: {r[0]}", r[1], r[2], "", ""] for r in rows]


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.b = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(True),
                               nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.b(x)


def anchor_step(batch: int, size: int, cin: int = 19):
    """The efficient baseline: one ResNet-9 generator update (LSGAN against a 70x70 PatchGAN)
    and one discriminator update, channels_last, bf16 autocast, fused Adam."""
    g = [nn.ReflectionPad2d(3), nn.Conv2d(cin, 64, 7), nn.InstanceNorm2d(64), nn.ReLU(True)]
    for m in (1, 2):
        g += [nn.Conv2d(64 * m, 128 * m, 3, 2, 1), nn.InstanceNorm2d(128 * m), nn.ReLU(True)]
    g += [_Res(256) for _ in range(9)]
    for m in (4, 2):
        g += [nn.ConvTranspose2d(64 * m, 32 * m, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(32 * m), nn.ReLU(True)]
    g += [nn.ReflectionPad2d(3), nn.Conv2d(64, 3, 7), nn.Tanh()]
    d, c = [nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2, True)], 64
    for s in (2, 2, 1):
        d += [nn.Conv2d(c, c * 2, 4, s, 1), nn.InstanceNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
        c *= 2
    d += [nn.Conv2d(c, 1, 4, 1, 1)]
    fmt = torch.channels_last if DEV.type == "cuda" else torch.contiguous_format
    G, D = nn.Sequential(*g).to(DEV, memory_format=fmt), nn.Sequential(*d).to(DEV, memory_format=fmt)
    og = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=True)
    od = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=True)
    xa = torch.randn(batch, cin, size, size, device=DEV).contiguous(memory_format=fmt)
    xr = torch.randn(batch, 3, size, size, device=DEV).contiguous(memory_format=fmt)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if DEV.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        for p in D.parameters():
            p.requires_grad_(False)
        with amp:
            fake = G(xa)
            lg = ((D(fake) - 1) ** 2).mean()
        og.zero_grad(set_to_none=True)
        lg.backward()
        og.step()
        for p in D.parameters():
            p.requires_grad_(True)
        with amp:
            ld = (D(fake.detach()) ** 2).mean() + ((D(xr) - 1) ** 2).mean()
        od.zero_grad(set_to_none=True)
        ld.backward()
        od.step()
    return step


def training_rows(tmp: Path) -> tuple[list, dict]:
    from vidsim2real.domains.real import DEFAULT_REAL
    from vidsim2real.train.checkpoint import trainer_payload
    from vidsim2real.train.config import resolve
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, build_trainer
    torch.backends.cudnn.benchmark = True
    cfg = resolve(ROOT / "configs/train/default.yaml", [
        f"run_dir={tmp}", f"device={DEV.type}", "batch=8", f"size=[{TSIZE},{TSIZE}]", "data.render_size=[]",
        f"data.real.paths=[{DEFAULT_REAL}]", "data.real.surrogate_scenes=0", "data.random_scenes.count=0",
        "loss.view_warmup=0", f"data.scenes=[{ROOT / 'scenes/liver_overview.yaml'},{ROOT / 'scenes/instrument_pass.yaml'}]"])
    bank, real, sampler = build(cfg, Dist(), DEV, tmp, progress=False)
    trainer, metas = build_trainer(cfg, bank, DEV)
    batches = [sampler.batch(8, real) for _ in range(3)]
    t_data = bench(lambda: sampler.batch(8, real), warm=1, reps=5)
    it = iter(range(10 ** 6))
    t_step = bench(lambda: trainer.training_step(batches[next(it) % 3]), warm=3, reps=10)
    t_anchor = bench(anchor_step(8, TSIZE), warm=3, reps=10)
    k_ours, l_ours, top = profile(lambda: trainer.training_step(batches[next(it) % 3]))
    k_anchor, l_anchor, _ = profile(anchor_step(8, TSIZE))
    buf = io.BytesIO()
    torch.save(trainer_payload(trainer, cfg, metas, None, slim=True), buf)
    n_net = sum(p.numel() for p in trainer.net.parameters())
    n_tex = sum(p.numel() for t in trainer.textures.values() for p in t.parameters())
    rows = [[f"training step ({cfg.model.type}, {TSIZE}², batch 8, bf16, data included)",
             f"{(t_data + t_step) * 1e3:.0f} ms (data {t_data * 1e3:.0f} ms)",
             f"efficient ResNet-9 + PatchGAN G-and-D step {t_anchor * 1e3:.1f} ms",
             f"{(t_data + t_step) / t_anchor:.2f}x", f"{n_net / 1e6:.1f} M weights, {n_tex / 1e6:.1f} M texels"],
            ["kernels per training step (profiler, data excluded)", f"{k_ours:,.0f} ({l_ours:,.0f} launch calls)",
             f"anchor step {k_anchor:,.0f} ({l_anchor:,.0f} launch calls)", f"{k_ours / max(k_anchor, 1):.2f}x",
             "CPU: aten calls"],
            ["full-size slim checkpoint", f"{len(buf.getvalue()) / 1e6:.0f} MB", "", "", ""]]
    return rows, {"trainer": trainer, "cfg": cfg, "metas": metas, "profile": top}


def translate_rows(state: dict, tmp: Path) -> list:
    from vidsim2real.io.checkpoint import save_checkpoint
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.train.checkpoint import trainer_payload
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    path = tmp / "model.pt"
    save_checkpoint(path, trainer_payload(state["trainer"], state["cfg"], state["metas"], None, slim=True))
    model = load_model(path, DEV)
    scene = load_scene(ROOT / "scenes/liver_overview.yaml")
    r = Renderer(scene, size=(SIZE, SIZE), device=DEV)
    style = make_style(model, "0", DEV)
    frames = list(range(8, 16))
    r.exposure(frames)
    t = bench(lambda: translate_buffers(model, r, r.render(frames), style), warm=2, reps=5)
    return [[f"render + translate, full-size model, {SIZE}², batch 8", f"{8 / t:,.0f} frames/s", "", "", ""]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    head = ["work", "ours", "baseline (same run)", "ratio", "note"]
    with tempfile.TemporaryDirectory() as tmp:
        for fn in (rasterizer_rows, render_rows, texture_rows):
            new = fn()
            rows += new
            print(table(head, new), "\n", flush=True)
        new, state = training_rows(Path(tmp))
        rows += new
        print(table(head, new), "\n", flush=True)
        rows += translate_rows(state, Path(tmp))
    print(f"\n# GPU speed ({machine()}, {DEV})\n")
    print(table(head, rows))
    print("\n# training step: top rows of the profiler\n")
    print(state["profile"])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows,
                                               "training_step_profile": state["profile"]}, indent=1))


if __name__ == "__main__":
    main()

"""Training-step cost: ms per iteration (data + generator/texture update + discriminator update).

Configurations: the shipped CPU model (configs/train/cpu_small.yaml) and the full-size
default (configs/train/default.yaml, dim 64) at 128² and 256²; on GPU also an efficient
ResNet-9 G + 70x70 PatchGAN D step (256², batch 8, bf16, channels_last, fused Adam) measured
in the same run as the baseline.
Usage: python benchmarks/bm_train_step.py [--device cuda] [--batch N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fake_real(folder: Path, n: int = 8) -> Path:
    import cv2
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), (rng.random((300, 300, 3)) * 255).astype(np.uint8))
    return folder


def measure(config: Path, size: int, batch: int, device: str, real: Path, steps: int, extra=()) -> tuple[float, float]:
    from vidsim2real.train.config import resolve
    from vidsim2real.train.distributed import Dist
    from vidsim2real.train.loop import build, build_trainer
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve(config, [f"run_dir={tmp}", f"size=[{size},{size}]", f"batch={batch}", f"device={device}",
                               f"data.real.paths=[{real}]", "data.real.surrogate_scenes=0", "data.random_scenes.count=0",
                               f"data.scenes=[{ROOT / 'scenes/liver_overview.yaml'}]", "loss.view_warmup=0", *extra])
        dev = torch.device(device)
        bank, frames, sampler = build(cfg, Dist(), dev, Path(tmp))
        trainer = build_trainer(cfg, bank, dev)[0]
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        data_t, step_t = [], []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            b = sampler.batch(batch, frames, paired=trainer.net.paired)
            sync()
            t1 = time.perf_counter()
            trainer.training_step(b)
            sync()
            t2 = time.perf_counter()
            if i >= 2:
                data_t.append(t1 - t0)
                step_t.append(t2 - t1)
        return float(np.median(data_t)) * 1e3, float(np.median(step_t)) * 1e3


def anchor_ms(size: int, batch: int, device: str) -> float:
    """The efficient baseline step (benchmarks/gpu_bench.py: ResNet-9 + PatchGAN G-and-D,
    channels_last, bf16, fused Adam), ms, measured in this run."""
    import gpu_bench
    gpu_bench.DEV = torch.device(device)
    return gpu_bench.bench(gpu_bench.anchor_step(batch, size), warm=2, reps=10) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    batch = args.batch or (8 if args.device == "cuda" else 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        real = fake_real(Path(tmp))
        for name in ("cpu_small", "default"):
            for size in (128, 256):
                d, s = measure(ROOT / f"configs/train/{name}.yaml", size, batch, args.device, real, args.steps)
                rows.append([name, f"{size}²", batch, f"{d:.0f}", f"{s:.0f}", f"{d + s:.0f}"])
        if args.device == "cuda":
            c = anchor_ms(256, 8, args.device)
            rows.append(["baseline: efficient ResNet-9 + PatchGAN G-and-D step (bf16, channels_last)", "256²", 8,
                         "0", f"{c:.1f}", f"{c:.1f}"])
    print(f"# Training step, ms per iteration ({machine()}, {torch.get_num_threads()} threads, {args.device})\n")
    print(table(["config", "size", "batch", "data ms", "G+D step ms", "total ms"], rows))


if __name__ == "__main__":
    main()

"""Frames the shipped checkpoints translate to, recorded when they were shipped
(tests/data/shipped_frames.npz), so a change that alters what users get fails a test.

    python tests/recorded.py      # re-record: only when a new checkpoint is shipped

3 frames of two bundled scenes at 64², style seed 3, C++ rasterizer, default (auto) exposure, uint8.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("cpu_small", "baseline_cpu_small", "cyclegan_cpu_small")
SCENE_NAMES = ("liver_edge_breathing", "instrument_pass")
FRAMES = [0, 17, 40]
RECORD = REPO / "tests/data/shipped_frames.npz"


def translate_recorded(ckpt: str) -> dict[str, np.ndarray]:
    """{f"{ckpt}__{scene}": uint8 [3, 64, 64, 3]} for the shipped checkpoint ``ckpt``."""
    from vidsim2real.render import Renderer
    from vidsim2real.scene import load_scene
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    model = load_model(REPO / "checkpoints" / f"{ckpt}.pt")
    out = {}
    for name in SCENE_NAMES:
        r = Renderer(load_scene(REPO / "scenes" / f"{name}.yaml"), size=(64, 64), backend="cpu")
        with torch.no_grad():
            img = translate_buffers(model, r, r.render(FRAMES), make_style(model, "3", "cpu"))
        out[f"{ckpt}__{name}"] = (img.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    arrays = {k: v for c in SHIPPED for k, v in translate_recorded(c).items()}
    np.savez_compressed(RECORD, **arrays)
    print(f"wrote {RECORD} ({', '.join(arrays)})", file=sys.stderr)

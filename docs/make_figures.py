"""Figures for the README, made from real runs: python docs/make_figures.py [--only contact]

contact_sheet.png: sim render (top) vs surrogate real domain (bottom) from the same views of
every bundled scene and two random scenes.
translations.png: per view (rows), sim render | per-frame baseline | neural textures (ours) |
surrogate, with the shipped checkpoints (style seed 0).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidsim2real.domains.surrogate import SurrogateRenderer  # noqa: E402
from vidsim2real.io.gbuffer import write_png  # noqa: E402
from vidsim2real.io.video import to_uint8  # noqa: E402
from vidsim2real.scene import load_scene  # noqa: E402
from vidsim2real.scene.random_scene import write_random_scenes  # noqa: E402


def label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2
    out = img.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(out: Path, size: int = 224) -> None:
    views = [(ROOT / "scenes/liver_overview.yaml", 20), (ROOT / "scenes/liver_overview.yaml", 130),
             (ROOT / "scenes/liver_edge_breathing.yaml", 120), (ROOT / "scenes/instrument_pass.yaml", 70)]
    tmp = ROOT / "out" / "figure_scenes"
    views += [(p, 30) for p in write_random_scenes(100500, tmp, 2, frames=40)]
    top, bottom = [], []
    for k, (path, frame) in enumerate(views):
        scene = load_scene(path)
        sr = SurrogateRenderer(scene, size=(size, size), patient_seed=k, video_seed=100 + k, scope_mask=True)
        with torch.no_grad():
            img, buf = sr.render([frame])
            sim = sr.renderer.shade(buf)
        top.append(label(to_uint8(sim)[0], f"sim: {scene.name} #{frame}"))
        bottom.append(label(to_uint8(img)[0], "surrogate"))
    sheet = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    write_png(out, sheet)
    print(f"wrote {out}")


def translation_sheet(out: Path, model: Path, baseline: Path, size: int = 256) -> None:
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    models = [(n, load_model(p)) for n, p in (("per-frame baseline", baseline), ("neural textures (ours)", model))
              if p.exists()]
    views = [(ROOT / "scenes/liver_overview.yaml", 130), (ROOT / "scenes/instrument_pass.yaml", 70),
             (ROOT / "scenes/liver_edge_breathing.yaml", 120)]       # liver_edge_breathing: held out
    rows = []
    for k, (path, frame) in enumerate(views):
        scene = load_scene(path)
        sr = SurrogateRenderer(scene, size=(size, size), patient_seed=k, video_seed=100 + k)
        with torch.no_grad():
            img, buf = sr.render([frame])
            buf.sim_rgb = sr.renderer.shade(buf)
            row = [label(to_uint8(buf.sim_rgb)[0], f"sim: {scene.name} #{frame}")]
            for name, m in models:
                row.append(label(to_uint8(translate_buffers(m, sr.renderer, buf, make_style(m, "0", "cpu")))[0], name))
        row.append(label(to_uint8(img)[0], "surrogate"))
        rows.append(np.concatenate(row, 1))
    write_png(out, np.concatenate(rows, 0))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    ap.add_argument("--model", default=str(ROOT / "checkpoints/cpu_small.pt"))
    ap.add_argument("--baseline", default=str(ROOT / "checkpoints/baseline_cpu_small.pt"))
    args = ap.parse_args()
    if args.only in (None, "contact"):
        contact_sheet(ROOT / "docs" / "contact_sheet.png")
    if args.only in (None, "translations"):
        translation_sheet(ROOT / "docs" / "translations.png", Path(args.model), Path(args.baseline))


if __name__ == "__main__":
    main()

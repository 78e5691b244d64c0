"""Figures for the README, made from real runs: python docs/make_figures.py [--only contact]

contact_sheet.png: sim render (top) vs surrogate real domain (bottom) from the same views of
every bundled scene and two random scenes.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    if args.only in (None, "contact"):
        contact_sheet(ROOT / "docs" / "contact_sheet.png")


if __name__ == "__main__":
    main()

"""Figures for the README, made from real runs: python docs/make_figures.py [--only NAME]

contact_sheet.png: sim render (top) vs surrogate real domain (bottom) from the same views of
every bundled scene and two random scenes.
overview.png (the README's picture): per view, sim render | the shipped checkpoint | real domain.
translations.png: per view (rows), sim render | each model (--model NAME=CKPT, repeatable;
default: the shipped checkpoints) | surrogate, style seed 0.
strip.png (README): two held-out scenes, liver_edge_breathing (the wall, the liver) and random
scene 50000 (the stomach, the pancreas), each at three frames 20 apart: sim render, the shipped
checkpoint, the real domain (one surrogate patient), so detail can be followed as the camera moves.
clips.png: one view of two held-out scenes as four clips: the real domain of four patients (top)
and each model (--model NAME=CKPT, repeatable; default: the shipped checkpoint) at style seeds
0-3, so the colour cast and black level a clip takes (model.camera_cast, model.camera_black)
can be set beside how the real patients differ.
dcgan_samples.png: samples of the DCGAN baseline (noise -> frame) above real-domain frames and
the shipped translations of the same views.
closeups.png (only with --only closeups; --out to write elsewhere): held-out random scene 50000 (the stomach and the pancreas
close to the scope) at frames 6, 26 and 46 (rows): sim render | each model (--model NAME=CKPT,
repeatable; default: the shipped checkpoint) | the real domain (one surrogate patient).
exposure.png: liver_edge_breathing as the scope approaches the liver, at fixed exposure 1 (the
sim render before exposure control, top) and with the default auto exposure (bottom).
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


def exposure_sheet(out: Path, size: int = 192) -> None:
    from vidsim2real.render import Renderer
    from vidsim2real.scene.scene import Exposure
    scene = load_scene(ROOT / "scenes/liver_edge_breathing.yaml")
    frames = [0, 50, 100, 149]
    rows = []
    for name, exp in (("fixed", Exposure(mode="fixed", value=1.0)), ("auto", None)):
        r = Renderer(scene, size=(size, size), exposure=exp)
        e = r.exposure(frames).tolist()
        with torch.no_grad():
            imgs = to_uint8(r.render(frames).sim_rgb)
        rows.append(np.concatenate([label(im, f"{name}: #{f}, x{v:.2f}") for im, f, v in zip(imgs, frames, e)], 1))
    write_png(out, np.concatenate(rows, 0))
    print(f"wrote {out}")


def translation_sheet(out: Path, models: list[tuple[str, Path]], size: int = 256, real_name: str = "surrogate") -> None:
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    models = [(n, load_model(p)) for n, p in models if Path(p).exists()]
    views = [(ROOT / "scenes/liver_overview.yaml", 130), (ROOT / "scenes/instrument_pass.yaml", 70),
             (ROOT / "scenes/liver_edge_breathing.yaml", 120)]       # liver_edge_breathing: held out
    rows = []
    for k, (path, frame) in enumerate(views):
        scene = load_scene(path)
        sr = SurrogateRenderer(scene, size=(size, size), patient_seed=k, video_seed=100 + k)
        with torch.no_grad():
            img, _ = sr.render([frame])
            buf = sr.renderer.render([frame])
            row = [label(to_uint8(buf.sim_rgb)[0], f"sim: {scene.name} #{frame}")]
            for name, m in models:
                row.append(label(to_uint8(translate_buffers(m, sr.renderer, buf, make_style(m, "0", "cpu")))[0], name))
        row.append(label(to_uint8(img)[0], real_name))
        rows.append(np.concatenate(row, 1))
    write_png(out, np.concatenate(rows, 0))
    print(f"wrote {out}")


def closeup_sheet(out: Path, models: list[tuple[str, Path]], frames=(6, 26, 46), size: int = 256) -> None:
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    models = [(n, load_model(p)) for n, p in models]
    held = write_random_scenes(50000, ROOT / "out" / "figure_scenes", 1, frames=48)[0]   # the held-out table's
    scene = load_scene(held)
    sr = SurrogateRenderer(scene, size=(size, size), patient_seed=2, video_seed=102)
    rows = []
    with torch.no_grad():
        for f in frames:
            img, _ = sr.render([f])
            buf = sr.renderer.render([f])
            row = [label(to_uint8(buf.sim_rgb)[0], f"sim #{f}")]
            row += [label(to_uint8(translate_buffers(m, sr.renderer, buf, make_style(m, "0", "cpu")))[0], n)
                    for n, m in models]
            rows.append(np.concatenate(row + [label(to_uint8(img)[0], "real domain")], 1))
    write_png(out, np.concatenate(rows, 0))
    print(f"wrote {out}")


def strip(out: Path, ckpt: Path, size: int = 256) -> None:
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    m = load_model(ckpt)
    style = make_style(m, "0", "cpu")
    held = write_random_scenes(50000, ROOT / "out" / "figure_scenes", 1, frames=48)[0]   # the held-out table's
    blocks = []
    with torch.no_grad():
        for path, frames in ((ROOT / "scenes/liver_edge_breathing.yaml", (60, 80, 100)), (held, (0, 20, 40))):
            scene = load_scene(path)
            sr = SurrogateRenderer(scene, size=(size, size), patient_seed=2, video_seed=102)
            cols = []
            for f in frames:
                img, _ = sr.render([f])
                buf = sr.renderer.render([f])
                ours = translate_buffers(m, sr.renderer, buf, style)
                cols.append(np.concatenate([label(to_uint8(buf.sim_rgb)[0], f"sim #{f}"),
                                            label(to_uint8(ours)[0], f"ours #{f}"),
                                            label(to_uint8(img)[0], f"real domain #{f}")], 0))
            blocks.append(np.concatenate(cols, 1))
    write_png(out, np.concatenate(blocks, 0))
    print(f"wrote {out}")


def clips_sheet(out: Path, models: list, size: int = 160, patients=(11, 12, 13, 14)) -> None:
    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    loaded = [(name, load_model(ckpt)) for name, ckpt in models]
    rows = []
    with torch.no_grad():
        for path, f in ((ROOT / "scenes/liver_edge_breathing.yaml", 80), (ROOT / "scenes/liver_overview.yaml", 130)):
            scene = load_scene(path)
            real = []
            for k, p in enumerate(patients):     # the held-out table's reference patients
                sr = SurrogateRenderer(scene, size=(size, size), patient_seed=p, video_seed=p)
                real.append(label(to_uint8(sr.render([f])[0])[0], f"real, patient {k}"))
            rows.append(np.concatenate(real, 1))
            buf = sr.renderer.render([f])
            for name, m in loaded:
                rows.append(np.concatenate([label(to_uint8(translate_buffers(m, sr.renderer, buf, make_style(m, str(s), "cpu"),
                                                                             noise_seed=s))[0], f"{name}, seed {s}")
                                            for s in range(len(patients))], 1))
    write_png(out, np.concatenate(rows, 0))
    print(f"wrote {out}")


def dcgan_sheet(out: Path, ckpt: Path, shipped: Path, n: int = 6, size: int = 160) -> None:
    import torch.nn.functional as F

    from vidsim2real.translate.inference import load_model, make_style, translate_buffers
    gan, ours = load_model(ckpt), load_model(shipped)
    with torch.no_grad():
        z = torch.randn(n, gan.net.style_dim, generator=torch.Generator().manual_seed(0))
        samples = F.interpolate(gan.net.gen(z), size=(size, size), mode="bilinear", align_corners=False)
        top = [label(to_uint8(s.permute(1, 2, 0)[None] * 0.5 + 0.5)[0], "DCGAN sample") for s in samples]
        mid, bottom = [], []
        views = [(ROOT / "scenes/liver_edge_breathing.yaml", f) for f in (20, 120)] + \
            [(ROOT / "scenes/liver_overview.yaml", f) for f in (40, 130)] + \
            [(ROOT / "scenes/instrument_pass.yaml", f) for f in (30, 70)]
        for k, (path, f) in enumerate(views[:n]):
            scene = load_scene(path)
            sr = SurrogateRenderer(scene, size=(size, size), patient_seed=k, video_seed=100 + k)
            img, _ = sr.render([f])
            buf = sr.renderer.render([f])
            mid.append(label(to_uint8(translate_buffers(ours, sr.renderer, buf, make_style(ours, "0", "cpu")))[0],
                             "ours (from sim)"))
            bottom.append(label(to_uint8(img)[0], "real domain"))
    write_png(out, np.concatenate([np.concatenate(r, 1) for r in (top, mid, bottom)], 0))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None, choices=["contact", "overview", "translations", "exposure", "strip",
                                                     "clips", "dcgan", "closeups"])
    ap.add_argument("--model", action="append", default=None, metavar="NAME=CKPT")
    ap.add_argument("--out", default=None, help="with --only translations or closeups: write the sheet here instead")
    args = ap.parse_args()
    if args.out and args.only not in ("translations", "closeups"):
        ap.error("--out needs --only translations or --only closeups")
    missing = [p for _, p in (m.split("=", 1) for m in args.model or []) if not Path(p).exists()]
    if missing:
        ap.error(f"no such checkpoint: {missing[0]}")
    models = [m.split("=", 1) for m in args.model] if args.model else [
        ("per-frame baseline", ROOT / "checkpoints/baseline_cpu_small.pt"),
        ("CycleGAN", ROOT / "checkpoints/cyclegan_cpu_small.pt"),
        ("neural textures (ours)", ROOT / "checkpoints/cpu_small.pt")]
    if args.only in (None, "contact"):
        contact_sheet(ROOT / "docs" / "contact_sheet.png")
    if args.only in (None, "overview"):
        translation_sheet(ROOT / "docs" / "overview.png", [("translated (shipped)", ROOT / "checkpoints/cpu_small.pt")],
                          size=192, real_name="real domain (surrogate)")
    if args.only in (None, "translations"):
        translation_sheet(Path(args.out) if args.out else ROOT / "docs" / "translations.png", models)
    if args.only in (None, "exposure"):
        exposure_sheet(ROOT / "docs" / "exposure.png")
    if args.only in (None, "strip"):
        strip(ROOT / "docs" / "strip.png", ROOT / "checkpoints/cpu_small.pt")
    if args.only in (None, "clips"):
        clips_sheet(ROOT / "docs" / "clips.png", models if args.model else [("shipped", ROOT / "checkpoints/cpu_small.pt")])
    if args.only == "closeups":          # a comparison sheet, made when asked (docs/relief.png)
        closeup_sheet(Path(args.out) if args.out else ROOT / "docs" / "closeups.png",
                      models if args.model else [("shipped", ROOT / "checkpoints/cpu_small.pt")])
    if args.only in (None, "dcgan"):
        dcgan_sheet(ROOT / "docs" / "dcgan_samples.png", ROOT / "checkpoints/dcgan_cpu_small.pt",
                    ROOT / "checkpoints/cpu_small.pt")


if __name__ == "__main__":
    main()

"""Everything `vidsim2real metrics` computes for one video, plus plots and the HTML report."""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io.atomic import atomic_write_text
from ..io.video import read_frames, read_sidecar, video_info
from .gt import SceneGT
from .realism import color_hist_distance, ms_ssim_lum, swd
from .temporal import orb_consistency, texel_std, tof, warp_error

KEYS = ["warp_error", "texel_std", "orb_consistent_ratio", "orb_consistent_count", "tof", "swd",
        "color_hist_distance", "ms_ssim_lum_vs_sim"]
LOWER_IS_BETTER = {"warp_error": True, "texel_std": True, "orb_consistent_ratio": False,
                   "orb_consistent_count": False, "tof": True, "swd": True, "color_hist_distance": True,
                   "ms_ssim_lum_vs_sim": False}


def load_video_frames(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Frames [T, H, W, 3] float in [0, 1] of a video written by this tool (the translated half of
    a side-by-side video) and its sidecar metadata."""
    path = Path(path)
    meta = read_sidecar(path) or {}
    frames = np.stack(list(read_frames(path))) if video_info(path)[0] else None
    if frames is None or len(frames) == 0:
        raise UserError("video has no frames", file=path)
    if meta.get("side_by_side"):
        frames = frames[:, :, frames.shape[2] // 2:]
    return torch.from_numpy(frames).float() / 255.0, meta


def compute(frames: torch.Tensor, gt: SceneGT, real: torch.Tensor | None = None) -> dict:
    """All metrics of one video aligned with ``gt`` (see README, "Metrics")."""
    out: dict = {}
    out.update(warp_error(frames, gt))
    out["texel_std"] = texel_std(frames, gt)
    out.update(orb_consistency(frames, gt))
    out["tof"] = tof(frames, gt.sim_rgb, [gt.mask(t) for t in range(len(gt))])
    out["ms_ssim_lum_vs_sim"] = ms_ssim_lum(frames, gt.sim_rgb)
    if real is not None:
        out.update(swd(frames, real))
        out["color_hist_distance"] = color_hist_distance(frames, real)
    return out


def load_real_frames(path: str | Path, size: tuple[int, int], limit: int = 200, seed: int = 0) -> torch.Tensor:
    """Up to ``limit`` real frames (images and/or videos under ``path``) resized to ``size``."""
    import cv2

    from ..domains.real import RealFrames
    ds = RealFrames([path], size=size, resize=min(size), flip=False, seed=seed)
    idx = np.random.default_rng(seed).permutation(len(ds))[:limit]
    out = []
    for i in idx:
        img = ds.frame(int(i))
        if img is None:
            continue
        out.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    if not out:
        raise UserError("no readable real frames", file=path, field="real")
    return torch.from_numpy(np.stack(out)).float() / 255.0


def plots(results: dict, out_dir: Path) -> list[str]:
    """PNG plots of the per-offset metrics of every video; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for key, label in (("warp_error_by_offset", "warping error (lower is better)"),
                       ("orb_consistent_ratio_by_offset", "ORB consistent match ratio (higher is better)")):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for name, r in results.items():
            d = r.get(key, {})
            if d:
                ks = sorted(d, key=int)
                ax.plot([int(k) for k in ks], [d[k] for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("frame offset k")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = f"{key}.png"
        fig.savefig(out_dir / fname)
        plt.close(fig)
        names.append(fname)
    return names


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and np.isfinite(v) else "–"


def html_report(results: dict, videos: dict, plot_files: list[str], meta: dict) -> str:
    """One self-contained (offline) HTML page: videos side by side, the metrics table, plots."""
    rows = []
    for key in KEYS:
        cells = "".join(f"<td>{_fmt(r.get(key))}</td>" for r in results.values())
        arrow = "↓" if LOWER_IS_BETTER[key] else "↑"
        rows.append(f"<tr><th>{key} {arrow}</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in results)
    vids = "".join(f'<figure><video src="{html.escape(v)}" controls loop muted autoplay width="320"></video>'
                   f"<figcaption>{html.escape(n)}</figcaption></figure>" for n, v in videos.items())
    imgs = "".join(f'<img src="{html.escape(p)}" width="480">' for p in plot_files)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>vidsim2real metrics</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{display:inline-block;margin:4px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>vidsim2real metrics</h1><p>scene: {html.escape(str(meta.get('scene')))}, frames {meta.get('frames')},
size {meta.get('size')}</p><div>{vids}</div>
<table><tr><th></th>{head}</tr>{''.join(rows)}</table><div>{imgs}</div>
<p>Definitions: see the README section "Metrics".</p></body></html>"""


def write_report(out_dir: Path, results: dict, video_paths: dict, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "videos").mkdir(exist_ok=True)
    rel = {}
    for name, p in video_paths.items():
        dst = out_dir / "videos" / f"{name}{Path(p).suffix}"
        if Path(p).resolve() != dst.resolve():
            shutil.copyfile(p, dst)
        rel[name] = f"videos/{dst.name}"
    files = plots(results, out_dir)
    first = next(iter(results))
    doc = {**{k: results[first].get(k) for k in results[first]}, "video": str(video_paths[first]),
           "references": {n: r for n, r in results.items() if n != first}, "meta": meta}
    atomic_write_text(out_dir / "metrics.json", json.dumps(doc, indent=2, default=float))
    atomic_write_text(out_dir / "index.html", html_report(results, rel, files, meta))

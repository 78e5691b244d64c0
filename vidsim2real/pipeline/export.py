"""Labelled data-set export: translated frames with exact labels from the simulator.

Layout of DIR (t = the scene's frame index):
  meta.json                 scene, frames, size, checkpoint, style, tool version, depth scale
  classes.json              {class id: class name}, 0 = background
  cameras.json              per frame: K, world_to_camera (OpenCV axes, metres), width, height
  transforms.json           NeRF convention (camera-to-world, OpenGL axes), file_path -> rgb/
  rgb/{t:06d}.png           translated frame (8-bit sRGB)
  sim/{t:06d}.png           the simulated render it came from
  labels/{t:06d}.png        class id per pixel (uint8)
  depth/{t:06d}.png         camera-space depth z in millimetres (uint16, 0 = background / beyond 65.5 m)
  normals/{t:06d}.png       camera-space unit normal, OpenCV axes, (n + 1) / 2 * 65535 (uint16 RGB)
  flow/{t:06d}.npy          float32 [H, W, 3]: forward flow t -> t+1 in pixels (dx, dy) and validity
                            (1 visible in both, 0 occluded / leaving the image / background);
                            not written for the last frame of the range
Frames already complete on disk are skipped, so an interrupted export resumes.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..io.gbuffer import write_png
from ..io.video import to_uint8
from ..raster import correspondences
from ..scene.camera import nerf_from_w2c
from ..translate.inference import translate_buffers

SUBDIRS = ("rgb", "sim", "labels", "depth", "normals", "flow")
TABLES = ("meta.json", "classes.json", "cameras.json", "transforms.json", "job.json")
DEPTH_SCALE_M = 0.001     # metres per depth unit (millimetres)


def prepare(out: Path, job: dict, frames: list, force: bool = False) -> dict:
    """Claim ``out`` for the export ``job`` (scene, frames, size, checkpoint, style: what must
    match for a resume). An interrupted export of the same job resumes (with the style seed it
    drew); a finished one, another job's folder or a non-empty folder that is no export is
    refused unless ``force``, which clears the export's own files first. Returns the job to
    run (its "seed" is the one recorded when resuming a random style)."""
    import shutil
    out = Path(out)
    stamp = out / "job.json"
    old = None
    if stamp.exists():
        try:
            old = json.loads(stamp.read_text())
        except (OSError, ValueError):
            old = None
    same = old is not None and {k: v for k, v in old.items() if k != "seed"} == \
        {k: v for k, v in job.items() if k != "seed"} and (job["style"] == "random" or old.get("seed") == job["seed"])
    finished = same and (out / "meta.json").exists() and all(
        p.exists() for t in frames for p in frame_files(out, t, t == frames[-1]))
    occupied = out.exists() and any(out.iterdir()) and not same
    if (finished or occupied) and not force:
        why = "already exported" if finished else ("holds another export" if old is not None else "is not empty")
        raise UserError(f"{why}; pass --force to replace it", file=out, field="output")
    if force and (finished or occupied):
        for d in SUBDIRS:
            shutil.rmtree(out / d, ignore_errors=True)
        for t in TABLES:
            (out / t).unlink(missing_ok=True)
        same = False
    if same:
        job = {**job, "seed": old.get("seed")}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(job, indent=1))
    return job


def frame_files(root: Path, t: int, last: bool) -> list[Path]:
    files = [root / d / f"{t:06d}.png" for d in SUBDIRS if d != "flow"]
    if not last:
        files.append(root / "flow" / f"{t:06d}.npy")
    return files


def camera_normals(normals_world: torch.Tensor, w2c: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """[H, W, 3] world normals -> camera axes encoded as uint16 (n + 1) / 2 * 65535 (0 on background)."""
    n = torch.einsum("ij,hwj->hwi", w2c[:3, :3].float(), normals_world.float())
    enc = ((n.clamp(-1, 1) + 1) * 0.5 * 65535 + 0.5).to(torch.int64).clamp(0, 65535)
    enc = torch.where(mask[..., None], enc, torch.zeros_like(enc))
    return enc.cpu().numpy().astype(np.uint16)


def depth_mm(depth: torch.Tensor) -> np.ndarray:
    d = torch.round(depth / DEPTH_SCALE_M).clamp(0, 65535)
    return d.cpu().numpy().astype(np.uint16)


def write_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def export(model, renderer, frames: range, out: Path, style: torch.Tensor, meta: dict, batch: int = 4,
           progress: bool = True) -> int:
    """Write the data set; returns the number of frames written (skipping complete ones).
    ``meta``: what meta.json records (scene, frames, size, checkpoint, style, seed, ...);
    its "seed" also seeds the sensor noise of models with a camera model."""
    from tqdm import tqdm
    out = Path(out)
    for d in SUBDIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    scene = renderer.scene
    frames = list(frames)
    todo = [t for t in frames if not all(p.exists() for p in frame_files(out, t, t == frames[-1]))]
    written = 0
    for i in tqdm(range(0, len(todo), batch), desc=f"export {scene.name}", unit="batch", disable=not progress):
        chunk = todo[i:i + batch]
        with torch.no_grad():
            buf = renderer.render(chunk)
            rgb = translate_buffers(model, renderer, buf, style, noise_seed=meta.get("seed") or 0)
            for j, t in enumerate(chunk):
                write_png(out / "rgb" / f"{t:06d}.png", to_uint8(rgb[j]))
                write_png(out / "sim" / f"{t:06d}.png", to_uint8(buf.sim_rgb[j]))
                write_png(out / "labels" / f"{t:06d}.png", buf.labels[j].cpu().numpy().astype(np.uint8))
                write_png(out / "depth" / f"{t:06d}.png", depth_mm(buf.depth[j]))
                write_png(out / "normals" / f"{t:06d}.png",
                          camera_normals(buf.normals[j], buf.fragments.w2c[j], buf.mask[j]))
                if t != frames[-1]:
                    nxt = renderer.gbuffer([t + 1])
                    c = correspondences(buf.fragments[j], nxt.fragments, renderer.geometry(t + 1)[0], renderer.faces)
                    flow = torch.cat([c.flow[0], c.valid[0, ..., None].float()], -1).cpu().numpy().astype(np.float32)
                    write_npy(out / "flow" / f"{t:06d}.npy", flow)
                written += 1
    write_tables(out, renderer, frames, meta)
    return written


def write_tables(out: Path, renderer, frames: list, meta: dict) -> None:
    scene = renderer.scene
    intr = renderer.intrinsics
    K = intr.K()
    w2c = scene.world_to_camera(frames)
    atomic_write_text(out / "classes.json", json.dumps({str(k): v for k, v in sorted(scene.class_names().items())},
                                                       indent=1))
    cams = {f"{t:06d}": {"K": K.tolist(), "world_to_camera": m.tolist(), "width": intr.width, "height": intr.height}
            for t, m in zip(frames, w2c)}
    atomic_write_text(out / "cameras.json", json.dumps({"units": "m", "axes": "OpenCV", "frames": cams}, indent=1))
    nerf = {"camera_angle_x": float(2 * np.arctan(intr.width / (2 * intr.fx))), "fl_x": intr.fx, "fl_y": intr.fy,
            # NeRF tools put pixel centres at +0.5: shift the principal point accordingly
            "cx": intr.cx + 0.5, "cy": intr.cy + 0.5, "w": intr.width, "h": intr.height,
            "frames": [{"file_path": f"rgb/{t:06d}.png", "transform_matrix": nerf_from_w2c(m).tolist()}
                       for t, m in zip(frames, w2c)]}
    atomic_write_text(out / "transforms.json", json.dumps(nerf, indent=1))
    atomic_write_text(out / "meta.json", json.dumps({**meta, "depth_scale_m": DEPTH_SCALE_M,
                                                     "layout": "see vidsim2real/pipeline/export.py and README"}, indent=1))

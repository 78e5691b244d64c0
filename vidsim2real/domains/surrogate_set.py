"""Writing a surrogate "real" data set: PNG frames (and optionally MP4 clips) with a manifest.

The one place that writes surrogate sets: the ``surrogate`` command and training (which
renders one into its run folder when configured to) both call ``write_surrogate_set``.
Resumable: frames and clips already listed in the manifest are skipped.

Layout of DIR:
  manifest.json            {"frames": [{file, scene, frame, patient_seed, video_seed}], "clips": [...]}
  frames/<scene>_<t>.png   8-bit sRGB frame t of the scene (or, with ``as_video``, one H.264 clip
                           frames/<scene>.mp4 of the scene's views, entries with its "index")
  labels/<name>.png        class id per pixel (uint8) of each frame: <scene>_<t> for PNG frames,
                           <scene>_<index:04d> for frames of clips (what metrics' per-class
                           realism reads)
  clips/<scene>.mp4        whole trajectory (with ``clips``), sidecar OUT.mp4.json
  scenes/random_*.yaml     the random scenes generated for the set
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io.atomic import atomic_write_text
from ..io.gbuffer import write_png
from ..io.video import VideoWriter, check_even, to_uint8
from ..scene import check_camera_path, load_scene
from ..scene.random_scene import write_random_scenes
from .surrogate import SurrogateRenderer


def first_scene_seed(seed: int) -> int:
    """Random-scene seeds of a surrogate set: 100000 + 1000 * seed onwards (disjoint from the
    training scenes, which use seeds below 100000)."""
    return 100000 + 1000 * int(seed)


def write_surrogate_set(out: str | Path, scenes=(), *, seed: int = 0, views: int = 8, random_scenes: int = 0,
                        scene_seed: int | None = None, frames: int = 60, clips: bool = False,
                        size: tuple[int, int] = (256, 256), scope_mask: bool = True, device="cpu",
                        progress: bool = True, as_video: bool = False, check: bool = True) -> dict:
    """Render ``views`` random frames of each scene (files ``scenes`` plus ``random_scenes``
    generated ones with ``frames`` frames each) as the surrogate domain into ``out``; each
    scene is its own patient and video (seeds derived from ``seed``). Returns the manifest."""
    from tqdm import tqdm
    if views < 0:
        raise UserError("must be >= 0", field="views")
    if random_scenes < 0:
        raise UserError("must be >= 0", field="random_scenes")
    if not scenes and random_scenes == 0:
        raise UserError("give scene files and/or a number of random scenes (> 0)", field="random_scenes")
    if clips or as_video:
        check_even(*size)
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    scene_paths = [Path(s) for s in scenes]
    if random_scenes:
        first = scene_seed if scene_seed is not None else first_scene_seed(seed)
        for s in tqdm(range(first, first + random_scenes), desc="random scenes", unit="scene", disable=not progress):
            existing = out / "scenes" / f"random_{s:05d}.yaml"
            scene_paths += [existing] if existing.exists() else write_random_scenes(s, out / "scenes", 1,
                                                                                    frames=frames)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"frames": [], "clips": []}
    done = {e["file"] for e in manifest["frames"]} | {e["file"] for e in manifest["clips"]}
    loaded = []
    for p in scene_paths:
        scene = load_scene(p)
        if check:                      # (generated scenes were checked when they were drawn)
            check_camera_path(scene)
        loaded.append(scene)
    save = lambda: atomic_write_text(manifest_path, json.dumps(manifest, indent=1))  # noqa: E731
    for k, scene in enumerate(tqdm(loaded, desc="surrogate", unit="scene", disable=not progress)):
        patient, video = seed * 1000 + k, seed * 1000 + k + 500
        sr = SurrogateRenderer(scene, size=size, device=device, patient_seed=patient, video_seed=video,
                               scope_mask=scope_mask)
        rng = np.random.default_rng([seed, k])
        picks = sorted(rng.choice(scene.frames, size=min(views, scene.frames), replace=False).tolist())
        if as_video:
            rel = f"frames/{scene.name}.mp4"
            if rel not in done and picks:
                with torch.no_grad(), VideoWriter(out / rel, scene.fps, size, sidecar=False) as vw:
                    for k, f in enumerate(picks):
                        img, buf = sr.render([f])
                        vw.write(img)
                        write_png(out / "labels" / f"{scene.name}_{k:04d}.png", buf.labels[0].cpu().numpy().astype(np.uint8))
                manifest["frames"] += [{"file": rel, "index": k, "scene": str(scene.path), "frame": f,
                                        "patient_seed": patient, "video_seed": video} for k, f in enumerate(picks)]
                save()
            picks = []
        for f in picks:
            rel = f"frames/{scene.name}_{f:06d}.png"
            if rel in done:
                continue
            with torch.no_grad():
                img, buf = sr.render([f])
            write_png(out / rel, to_uint8(img)[0])
            write_png(out / "labels" / f"{scene.name}_{f:06d}.png", buf.labels[0].cpu().numpy().astype(np.uint8))
            manifest["frames"].append({"file": rel, "scene": str(scene.path), "frame": f, "patient_seed": patient,
                                       "video_seed": video})
            save()
        rel = f"clips/{scene.name}.mp4"
        if clips and rel not in done:
            meta = {"kind": "surrogate", "scene": str(Path(scene.path).resolve()), "frames": [0, scene.frames],
                    "checkpoint": None, "style": {"patient_seed": patient, "video_seed": video}, "seed": seed}
            with torch.no_grad(), VideoWriter(out / rel, scene.fps, size, meta=meta) as vw:
                for f0 in range(0, scene.frames, 4):
                    img, _ = sr.render(list(range(f0, min(f0 + 4, scene.frames))))
                    vw.write(img)
            manifest["clips"].append({"file": rel, "scene": str(scene.path), "frames": scene.frames,
                                      "patient_seed": patient, "video_seed": video})
            save()
    save()
    return manifest

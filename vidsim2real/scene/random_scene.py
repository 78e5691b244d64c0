"""Random laparoscope scenes: camera paths inside the abdominal cavity aimed at organs.

A base scene supplies the anatomy (meshes, classes, colours), camera and lighting; each seed
draws a new camera path, new breathing and (optionally) an instrument path. Every frame of
the path is checked: the camera is outside every organ, under the abdominal wall, at least
``clearance`` from any surface, and looks at an organ. Same seed, same file, byte for byte.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError
from ..io.atomic import atomic_write_text
from ..strict_yaml import load_yaml
from .camera import look_at_rotation
from .loader import load_scene
from .scene import Scene
from .trajectory import PoseTrack

WALL_CLASS = "abdominal_wall"
INSTRUMENT_CLASS = "instrument"


def default_base_scene() -> Path:
    """scenes/liver_overview.yaml next to the package (a source checkout)."""
    return Path(__file__).resolve().parents[2] / "scenes" / "liver_overview.yaml"


def default_instrument_meshes() -> list[Path]:
    root = Path(__file__).resolve().parents[2] / "scenes" / "meshes" / "instruments"
    return [root / "instrument_shaft.stl", root / "maryland_jaw_left.stl", root / "maryland_jaw_right.stl"]


@dataclass
class _Anatomy:
    scene: Scene
    organs: list            # trimesh meshes of organs in world (frame 0), metres
    organ_names: list
    wall: object | None     # trimesh mesh of the wall, or None
    all_meshes: list


def _anatomy(base: Scene) -> _Anatomy:
    import trimesh
    organs, names, wall, all_meshes = [], [], None, []
    for o in base.objects:
        v = o.vertices(0, 0.0)
        m = trimesh.Trimesh(v, o.mesh.faces, process=False)
        if o.class_name == INSTRUMENT_CLASS:
            continue
        all_meshes.append(m)
        if o.class_name == WALL_CLASS:
            wall = m
        else:
            organs.append(m)
            names.append(o.name)
    if not organs:
        raise UserError("needs at least one organ object (class other than abdominal_wall/instrument)",
                        file=base.path, field="objects")
    return _Anatomy(base, organs, names, wall, all_meshes)


def _sample_surface(rng: np.random.Generator, mesh, up: np.ndarray, n: int = 1):
    """Area-weighted surface points whose normal faces ``up`` (what the cavity can see)."""
    w = mesh.area_faces * np.clip(mesh.face_normals @ up, 0.0, None) ** 2
    if w.sum() <= 0:
        w = mesh.area_faces.copy()
    f = rng.choice(len(w), size=n, p=w / w.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    tri = mesh.triangles[f]
    return (tri * bary[:, :, None]).sum(1), mesh.face_normals[f]


class _Checker:
    """Vectorised 'is this camera position in the cavity with clearance' test."""

    def __init__(self, anat: _Anatomy, clearance: float, max_deform: float):
        self.anat = anat
        self.clearance = clearance + max_deform

    def ok(self, points: np.ndarray) -> np.ndarray:
        import trimesh.proximity
        points = np.atleast_2d(points)
        good = np.ones(len(points), bool)
        for m in self.anat.all_meshes:
            good &= ~m.contains(points)
            if not good.any():
                return good
            _, d, _ = trimesh.proximity.closest_point(m, points)
            good &= d >= self.clearance
        if self.anat.wall is not None:  # under the wall: a ray towards the wall must hit it
            up = np.tile(self._up, (len(points), 1))
            hit = self.anat.wall.ray.intersects_any(points, up)
            good &= hit
        return good

    _up = np.array([0.0, 0.0, 1.0])


def _fmt(v) -> list:
    return [round(float(x) * 1000.0, 2) for x in v]  # metres -> mm, 0.01 mm resolution


def random_scene(seed: int, base_path: str | Path | None = None, *, frames: int = 100, fps: float = 25.0,
                 instrument_probability: float = 0.5, clearance: float = 0.008, out_dir: str | Path = ".",
                 name: str | None = None, max_attempts: int = 400) -> dict:
    """Draw a random scene (a scene-file dict, units mm, mesh paths relative to ``out_dir``).

    The anatomy ``up`` direction is world +z (anterior, towards the abdominal wall) and the
    cranial direction +y, as in the OpenHELP meshes.
    """
    rng = np.random.default_rng(int(seed))
    base_path = Path(base_path) if base_path is not None else default_base_scene()
    if not base_path.exists():
        raise UserError("base scene not found (pass --base SCENE.yaml)", file=base_path)
    base = load_scene(base_path)
    anat = _anatomy(base)
    amplitude = float(rng.uniform(0.002, 0.007))
    checker = _Checker(anat, clearance, amplitude)
    path = _camera_path(rng, anat, checker, frames, fps, max_attempts)
    if path is None:
        raise UserError(f"no valid camera path found in {max_attempts} attempts (seed {seed}); "
                        "is the base scene's cavity large enough?", file=base_path)
    key_times, positions, targets, ups, track = path
    out_dir = Path(out_dir)
    doc = _base_doc(base_path, base, out_dir, name or f"random_{seed:05d}")
    doc["lighting"] = _scene_lighting(base, positions, targets)
    doc["trajectory"] = {"fps": fps, "frames": frames, "keyframes": [
        {"time": round(float(t), 4), "position": _fmt(p), "look_at": _fmt(tg),
         "up": [round(float(x), 5) for x in u]} for t, p, tg, u in zip(key_times, positions, targets, ups)]}
    _add_breathing(rng, doc, base, amplitude)
    if rng.random() < instrument_probability:
        doc["objects"].extend(_instrument(rng, anat, track, frames, fps, out_dir, checker))
    return doc


def _camera_path(rng, anat: _Anatomy, checker: _Checker, frames: int, fps: float, max_attempts: int):
    """Keyframes (times, positions, look-at targets, ups) and their PoseTrack of a camera path
    that starts 4-10 cm above a visible organ point, stays in the cavity with clearance and sees
    an organ; None when no attempt succeeds."""
    up, cranial = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    duration = (frames - 1) / fps
    n_keys = int(rng.integers(2, 5))
    key_times = np.linspace(0.0, duration, n_keys) if frames > 1 else np.zeros(1)
    for _attempt in range(max_attempts):
        organ = int(rng.integers(len(anat.organs)))
        target0, normal0 = _sample_surface(rng, anat.organs[organ], up)
        target0, normal0 = target0[0], normal0[0]
        # approach from above the surface, biased caudally (where ports sit)
        direction = normal0 + 0.8 * up - rng.uniform(0.2, 1.0) * cranial + 0.3 * rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        cam0 = target0 + rng.uniform(0.04, 0.10) * direction
        if not checker.ok(cam0)[0]:
            continue
        positions, targets = [cam0], [target0]
        for _k in range(1, len(key_times)):
            step = rng.normal(size=3)
            step *= rng.uniform(0.005, 0.025) / np.linalg.norm(step)
            positions.append(positions[-1] + step)
            tgt_shift = rng.normal(size=3)
            targets.append(targets[-1] + tgt_shift * rng.uniform(0.0, 0.03) / np.linalg.norm(tgt_shift))
        positions, targets = np.array(positions), np.array(targets)
        ups = _rolled_ups(rng.normal(scale=0.25), positions, targets, up, cranial)
        if ups is None:
            continue
        track = PoseTrack.from_rotations(key_times, positions,
                                         np.stack([look_at_rotation(p, t, u) for p, t, u in zip(positions, targets, ups)]))
        cams, _ = track.evaluate(np.arange(frames) / fps)
        if checker.ok(cams).all() and _sees_organ(anat, track, frames, fps):
            return key_times, positions, targets, ups, track
    return None


def _rolled_ups(roll: float, positions, targets, up, cranial) -> list | None:
    """Camera up vectors: cranial (tilted towards the wall), orthogonal to the view, rolled by
    ``roll`` radians; None for a degenerate view."""
    ups = []
    try:
        for p, t in zip(positions, targets):
            fwd = (t - p) / np.linalg.norm(t - p)
            u = cranial + 0.3 * up
            u = u - np.dot(u, fwd) * fwd
            u /= np.linalg.norm(u)
            ups.append(np.cos(roll) * u + np.sin(roll) * np.cross(fwd, u))
            look_at_rotation(p, t, ups[-1])
    except ValueError:
        return None
    return ups


def _scene_lighting(base: Scene, positions, targets) -> dict:
    """The base lighting with the scope light scaled so the organ in view is lit as at 10 cm
    (constant per scene; the shading's auto exposure does the per-frame adjustment)."""
    lt = base.lighting
    a, b, c = lt.falloff
    dist = float(np.mean(np.linalg.norm(positions - targets, axis=1)))
    gain = (a * dist ** 2 + b * dist + c) / (a * 0.01 + b * 0.1 + c)
    return {"intensity": round(lt.intensity * gain, 4), "falloff": [a, b, c], "ambient": lt.ambient,
            "specular": lt.specular, "shininess": lt.shininess}


def _add_breathing(rng, doc: dict, base: Scene, amplitude: float) -> None:
    """Random breathing (period, phase, direction, falloff radius) on every organ of ``doc``."""
    up, cranial = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    period = float(rng.uniform(3.0, 5.0))
    phase = float(rng.uniform(0.0, period))
    bdir = -cranial + rng.uniform(0.2, 0.8) * up + 0.15 * rng.normal(size=3)
    bdir /= np.linalg.norm(bdir)
    for od, o in zip(doc["objects"], base.objects):
        if o.class_name not in (WALL_CLASS, INSTRUMENT_CLASS):
            # strongest at the organ's anterior top (under the diaphragm), fading with distance
            v = o.vertices(0, 0.0)
            top = np.array([*(v[:, :2].min(0) + v[:, :2].max(0)) / 2, v[:, 2].max()])
            od["deformation"] = {"type": "breathing", "amplitude": round(amplitude * 1000, 3),
                                 "period": round(period, 3), "phase": round(phase, 3),
                                 "direction": [round(float(x), 5) for x in bdir],
                                 "falloff": {"center": _fmt(top), "radius": round(float(rng.uniform(80, 160)), 1)}}


def _sees_organ(anat: _Anatomy, track: PoseTrack, frames: int, fps: float) -> bool:
    """The central ray of every 10th frame hits an organ within the far plane."""
    sel = np.arange(0, frames, 10)
    pos, R = track.evaluate(sel / fps)
    dirs = R[:, :, 2]
    hits = np.zeros(len(sel), bool)
    for m in anat.organs:
        hits |= m.ray.intersects_any(pos, dirs)
    return bool(hits.all())


def _base_doc(base_path: Path, base: Scene, out_dir: Path, name: str) -> dict:
    raw = load_yaml(base_path)
    doc = {"name": name, "anatomy": base.anatomy, "units": "mm", "camera": raw["camera"]}
    scale = {"m": 1000.0, "cm": 10.0, "mm": 1.0}[raw["units"]]
    doc["camera"] = {k: (v * scale if k in ("near", "far") else v) for k, v in raw["camera"].items()}
    if "lighting" in raw:
        doc["lighting"] = raw["lighting"]
    objs = []
    for ro, o in zip(raw["objects"], base.objects):
        if o.class_name == INSTRUMENT_CLASS or o.track is not None:
            continue  # instruments get their own random path below
        d = {"name": o.name, "mesh": os.path.relpath(Path(o.mesh.source).resolve(), out_dir.resolve()),
             "mesh_units": o.mesh.file_units, "class_id": o.class_id, "class_name": o.class_name, "color": [float(c) for c in o.color]}
        if "transform" in ro:
            T = np.asarray(ro["transform"], float)
            T[:3, 3] *= scale
            d["transform"] = T.tolist()
        objs.append(d)
    doc["objects"] = objs
    return doc


def _instrument(rng, anat: _Anatomy, track: PoseTrack, frames: int, fps: float, out_dir: Path,
                checker: _Checker) -> list:
    """A grasper whose tip sweeps through the camera's view from a trocar in the wall."""
    import trimesh.proximity
    times = np.linspace(0.0, (frames - 1) / fps, 3)
    pos, R = track.evaluate(times)
    for _ in range(50):
        side = rng.choice([-1.0, 1.0])
        tips = []
        for p, Rc in zip(pos, R):
            # a point in the view cone, 3-7 cm ahead, sweeping sideways
            ahead = rng.uniform(0.03, 0.07)
            lateral = side * rng.uniform(-0.02, 0.03)
            vertical = rng.uniform(-0.015, 0.015)
            tips.append(p + Rc @ np.array([lateral, vertical, ahead]))
        tips = np.array(tips)
        trocar = pos[0] + np.array([side * 0.08, -0.03, 0.04])
        if anat.wall is not None:
            trocar = trimesh.proximity.closest_point(anat.wall, trocar[None])[0][0]
        d = tips - trocar
        if np.any(np.linalg.norm(d, axis=1) < 0.03):
            continue
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        # the jaws (2.5 cm ahead of the tip) and the tip must be clear of organs
        probe = np.concatenate([tips, tips + 0.026 * d])
        if not checker.ok(probe).all():
            continue
        keys = [{"time": round(float(t), 4), "position": _fmt(tp), "look_at": _fmt(tp + 0.05 * dd), "up": [0, 0, 1]}
                for t, tp, dd in zip(times, tips, d)]
        meshes = default_instrument_meshes()
        names = ["grasper_shaft", "grasper_jaw_left", "grasper_jaw_right"]
        colors = [[0.15, 0.15, 0.16], [0.75, 0.76, 0.78], [0.75, 0.76, 0.78]]
        class_id = max(o.class_id for o in anat.scene.objects if o.class_name != INSTRUMENT_CLASS) + 1
        for o in anat.scene.objects:
            if o.class_name == INSTRUMENT_CLASS:
                class_id = o.class_id
        return [{"name": n, "mesh": os.path.relpath(m.resolve(), out_dir.resolve()), "class_id": class_id,
                 "class_name": INSTRUMENT_CLASS, "color": c, "trajectory": {"keyframes": keys}}
                for n, m, c in zip(names, meshes, colors)]
    return []


def write_random_scenes(seed: int, out_dir: str | Path, count: int = 1, **kwargs) -> list[Path]:
    """Write ``count`` scenes (seeds seed .. seed+count-1) to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(seed, seed + count):
        doc = random_scene(s, out_dir=out_dir, **kwargs)
        path = out_dir / f"{doc['name']}.yaml"
        text = f"# generated by: vidsim2real scene random --seed {s}\n" + yaml.safe_dump(doc, sort_keys=False,
                                                                                         default_flow_style=None)
        atomic_write_text(path, text)
        paths.append(path)
    return paths


__all__ = ["random_scene", "write_random_scenes", "default_base_scene"]

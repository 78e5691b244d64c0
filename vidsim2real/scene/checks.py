"""Geometric checks of a scene's camera path: inside-organ test and camera-to-surface distance.

Ray casting and closest-point queries run on each object's rest mesh once (trimesh, Embree
when present). A deformation moves a surface by at most a known bound per frame, so the rest
answer is exact wherever the camera is farther than that bound from the rest surface; only
the few frames closer than that are re-checked against the deformed mesh of that frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError, warn
from .camera import invert_rigid
from .deformation import Breathing, VertexArrays
from .scene import Scene, SceneObject


@dataclass
class PathReport:
    """Result of ``check_camera_path``: closest approach of the camera to any surface."""

    min_distance: float
    min_frame: int
    min_object: str


def _local_points(obj: SceneObject, scene: Scene, points: np.ndarray) -> np.ndarray:
    """Camera centres in the object's local frame at each frame. points: [T, 3] -> [T, 3]."""
    if obj.track is None:
        inv = invert_rigid(obj.transform)
        return points @ inv[:3, :3].T + inv[:3, 3]
    out = np.empty_like(points)
    for f, p in enumerate(points):
        inv = invert_rigid(obj.placement(scene.time(f)))
        out[f] = inv[:3, :3] @ p + inv[:3, 3]
    return out


def _deformation_bound(obj: SceneObject, frames: int) -> np.ndarray:
    """Upper bound [T] (metres) of how far any vertex moves from its rest placement per frame."""
    d = obj.deformation
    if isinstance(d, Breathing):
        return np.full(frames, d.amplitude)
    if isinstance(d, VertexArrays):
        return np.linalg.norm(d.vertices[:frames] - obj.mesh.vertices[None], axis=2).max(axis=1)
    return np.zeros(frames)


def _trimesh(vertices: np.ndarray, faces: np.ndarray):
    import trimesh
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def _frame_mesh_local(obj: SceneObject, scene: Scene, frame: int):
    """The deformed mesh of ``frame`` expressed in the object's local frame."""
    world = obj.vertices(frame, scene.time(frame))
    inv = invert_rigid(obj.placement(scene.time(frame)))
    return _trimesh(world @ inv[:3, :3].T + inv[:3, 3], obj.mesh.faces)


def check_camera_path(scene: Scene, *, raise_inside: bool = True) -> PathReport:
    """Refuse camera paths that enter an object; report the closest approach.

    Raises UserError(file, "trajectory", ...) naming the object and the first frame at which
    the camera centre lies inside a closed object mesh.
    """
    import trimesh.proximity

    cams = scene.camera_positions()
    T = len(cams)
    best = PathReport(np.inf, 0, "")
    for oi, obj in enumerate(scene.objects):
        local = _local_points(obj, scene, cams)
        rest = _trimesh(obj.mesh.vertices, obj.mesh.faces)
        bound = _deformation_bound(obj, T)
        _, dist, _ = trimesh.proximity.closest_point(rest, local)
        closed = rest.is_watertight
        if not closed:
            warn(f"{scene.path}: objects[{oi}].mesh: '{obj.name}' is not closed; inside-camera check skipped")
        inside = rest.contains(local) if closed else np.zeros(T, bool)
        unsure = np.nonzero(dist <= bound + 1e-9)[0]
        for f in unsure:  # the surface may have crossed the camera: answer exactly for this frame
            m = _frame_mesh_local(obj, scene, int(f))
            _, d_f, _ = trimesh.proximity.closest_point(m, local[f:f + 1])
            dist[f] = d_f[0]
            if closed:
                inside[f] = bool(m.contains(local[f:f + 1])[0])
        if raise_inside and inside.any():
            f = int(np.argmax(inside))
            n = int(inside.sum())
            raise UserError(f"camera is inside objects[{oi}] '{obj.name}' at frame {f}"
                            f"{f' (and {n - 1} more frames)' if n > 1 else ''}", file=scene.path, field="trajectory")
        # Closest approach, conservatively lowered by the deformation bound off the exact frames.
        approx = dist - np.where(np.isin(np.arange(T), unsure), 0.0, bound)
        f = int(np.argmin(approx))
        if approx[f] < best.min_distance:
            best = PathReport(float(max(approx[f], 0.0)), f, obj.name)
    return best


def summary(scene: Scene, report: PathReport | None) -> str:
    """Multi-line human summary printed by ``vidsim2real scene check``."""
    intr = scene.intrinsics
    lines = [f"{scene.path}: OK",
             f"  name {scene.name} (anatomy {scene.anatomy}), units {scene.units}",
             f"  objects {len(scene.objects)}, faces {scene.num_faces:,}"]
    for i, o in enumerate(scene.objects):
        motion = o.deformation.describe() + (", own trajectory" if o.track is not None else "")
        lines.append(f"    [{i}] {o.name:<16} class {o.class_id:>3} {o.class_name:<16} "
                     f"{len(o.mesh.faces):>7,} faces  {motion}")
    lo, hi = scene.bounds()
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    lines.append(f"  bounds {fmt(lo)} .. {fmt(hi)} m")
    lines.append(f"  camera {intr.width}x{intr.height}, fov {intr.fov_x_deg:.1f} deg, "
                 f"near {intr.near:.4f} m, far {intr.far:.3f} m")
    lines.append(f"  frames {scene.frames} at {scene.fps:g} fps ({scene.frames / scene.fps:.2f} s), "
                 f"camera path {scene.path_length():.4f} m")
    if report is not None:
        lines.append(f"  min camera-to-surface distance {report.min_distance:.4f} m "
                     f"(frame {report.min_frame}, {report.min_object})")
    return "\n".join(lines)

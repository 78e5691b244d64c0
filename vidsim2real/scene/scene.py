"""The Scene: objects (meshes in metres), camera intrinsics, camera path, deformation.

Face ids everywhere in the library index ``Scene.faces``: the objects' faces concatenated
in object order (the order of ``objects`` in the scene file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .camera import Intrinsics, camera_center, pose_from_rotation
from .deformation import Deformation
from .mesh import MeshData
from .trajectory import PoseTrack

UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}


@dataclass
class Lighting:
    """Scope-light parameters (see shading.py). Distances in metres."""

    intensity: float = 1.0
    falloff: tuple[float, float, float] = (50.0, 0.0, 0.02)   # 1 / (a d^2 + b d + c)
    ambient: float = 0.04
    specular: float = 0.25
    shininess: float = 40.0


@dataclass
class Exposure:
    """Scope exposure: linear radiance is multiplied by it before tone mapping (shading.py).

    mode "auto" (default), like a laparoscope's auto exposure: each frame is metered (the
    centre-weighted mean linear luminance of its sim render at exposure 1) and the exposure
    that brings it to ``target`` is followed with a causal exponential filter of time constant
    ``smoothing`` seconds (in log exposure, so it adapts like a camera and cannot flicker),
    clamped to [``min``, ``max``]. mode "fixed": ``value`` for every frame (1 = no exposure
    control, the renderer's behaviour before auto exposure existed). mode "protect" (a model's,
    ``model.exposure``; not in scene files): exposure 1 except where the frame's highlight
    quantile (``shading.meter``) is above ``value``, which it is lowered to (never below
    ``min``), with the same filter: what a scope's auto exposure does as the tissue comes close.
    """

    mode: str = "auto"
    value: float = 1.0
    target: float = 0.18
    smoothing: float = 0.4
    min: float = 0.05
    max: float = 8.0


@dataclass
class SceneObject:
    """One mesh in the scene. ``transform`` and ``track`` are object-to-world (metres)."""

    name: str
    mesh: MeshData
    class_id: int
    class_name: str
    color: np.ndarray
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    deformation: Deformation = field(default_factory=Deformation)
    track: PoseTrack | None = None

    def placement(self, time: float) -> np.ndarray:
        """Object-to-world 4x4 at ``time`` seconds: the track's pose (if any) after ``transform``."""
        if self.track is None:
            return self.transform
        pos, R = self.track.evaluate([time])
        pose = np.eye(4)
        pose[:3, :3] = R[0]
        pose[:3, 3] = pos[0]
        return pose @ self.transform

    def vertices(self, frame: int, time: float) -> np.ndarray:
        """World-space vertices [V, 3] (metres) at ``frame``."""
        return self.deformation.apply(self.mesh.vertices, self.placement(time), frame, time)

    @property
    def is_static(self) -> bool:
        return self.track is None and self.deformation.kind == "none"


@dataclass
class Scene:
    """A loaded, validated scene. All lengths in metres, cameras in OpenCV convention."""

    path: Path
    name: str
    anatomy: str
    units: str
    intrinsics: Intrinsics
    fps: float
    frames: int
    objects: list[SceneObject]
    camera_poses: np.ndarray            # [frames, 4, 4] world-to-camera
    lighting: Lighting = field(default_factory=Lighting)
    camera_track: PoseTrack | None = None
    exposure: Exposure = field(default_factory=Exposure)

    def __post_init__(self) -> None:
        counts = [len(o.mesh.faces) for o in self.objects]
        vcounts = [len(o.mesh.vertices) for o in self.objects]
        self.face_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.vertex_offsets = np.concatenate([[0], np.cumsum(vcounts)]).astype(np.int64)
        self.faces = np.concatenate([o.mesh.faces + off for o, off in zip(self.objects, self.vertex_offsets)])
        self.face_object = np.repeat(np.arange(len(self.objects)), counts).astype(np.int64)
        self.vertex_object = np.repeat(np.arange(len(self.objects)), vcounts).astype(np.int64)
        self.rest_vertices = np.concatenate([o.mesh.vertices for o in self.objects])
        self.object_class = np.array([o.class_id for o in self.objects], dtype=np.int64)

    # -- time --------------------------------------------------------------------------------
    def time(self, frame: int) -> float:
        return frame / self.fps

    def check_frame(self, frame: int) -> int:
        if not 0 <= frame < self.frames:
            raise IndexError(f"frame {frame} outside 0..{self.frames - 1}")
        return int(frame)

    # -- geometry ----------------------------------------------------------------------------
    def vertices(self, frame: int) -> np.ndarray:
        """All objects' world-space vertices at ``frame``, concatenated in object order. [V, 3]."""
        frame = self.check_frame(frame)
        t = self.time(frame)
        return np.concatenate([o.vertices(frame, t) for o in self.objects])

    @property
    def num_faces(self) -> int:
        return int(self.face_offsets[-1])

    @property
    def is_static(self) -> bool:
        return all(o.is_static for o in self.objects)

    def class_names(self) -> dict[int, str]:
        """class id -> class name (0 = background)."""
        names = {0: "background"}
        for o in self.objects:
            names[o.class_id] = o.class_name
        return names

    def bounds(self) -> np.ndarray:
        """[2, 3] world bounds of the rest-placed scene (frame 0)."""
        v = self.vertices(0)
        return np.stack([v.min(0), v.max(0)])

    # -- cameras -----------------------------------------------------------------------------
    def world_to_camera(self, frames=None) -> np.ndarray:
        """[N, 4, 4] float64 world-to-camera poses of ``frames`` (default: all)."""
        if frames is None:
            return self.camera_poses.copy()
        return self.camera_poses[np.asarray(frames, dtype=np.int64)]

    def camera_positions(self) -> np.ndarray:
        """[frames, 3] camera centres (metres)."""
        return camera_center(self.camera_poses)

    def path_length(self) -> float:
        c = self.camera_positions()
        return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum()) if len(c) > 1 else 0.0

    def camera(self, width: int | None = None, height: int | None = None) -> Intrinsics:
        """Intrinsics at the scene's resolution or rescaled to ``width`` x ``height``."""
        if width is None:
            return self.intrinsics
        return self.intrinsics.resized(width, height)


def camera_poses_from_track(track: PoseTrack, times: np.ndarray) -> np.ndarray:
    pos, R = track.evaluate(times)
    return np.stack([pose_from_rotation(r, p) for r, p in zip(R, pos)])

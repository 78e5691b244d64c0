"""Scene files (YAML) -> Scene, with one-line errors naming file and field.

The format is documented in docs/scene-format.md; this module is its executable definition.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..strict_yaml import Fields, check_array, load_yaml
from .camera import Intrinsics, is_rotation, look_at_rotation, w2c_from_nerf, camera_center
from .deformation import Breathing, Deformation, VertexArrays
from .mesh import load_mesh
from .scene import UNITS, Exposure, Lighting, Scene, SceneObject, camera_poses_from_track
from .trajectory import PoseTrack

TOP_KEYS = ["name", "anatomy", "units", "camera", "lighting", "trajectory", "objects"]
CAMERA_KEYS = ["width", "height", "fov", "fx", "fy", "cx", "cy", "near", "far", "exposure"]
EXPOSURE_KEYS = ["mode", "value", "target", "smoothing", "min", "max"]
LIGHT_KEYS = ["intensity", "falloff", "ambient", "specular", "shininess"]
TRAJ_KEYS = ["fps", "frames", "keyframes", "transforms"]
KEY_KEYS = ["time", "position", "look_at", "up", "pose"]
OBJ_KEYS = ["name", "mesh", "mesh_units", "class_id", "class_name", "color", "transform", "deformation", "trajectory"]
DEFORM_TYPES = ["none", "breathing", "vertices"]
DEFAULT_UP = [0.0, 0.0, 1.0]


def _rigid(value: np.ndarray, fields: Fields, key: str, scale: float) -> np.ndarray:
    """Check a 4x4 rigid transform and convert its translation to metres."""
    if not np.allclose(value[3], [0, 0, 0, 1], atol=1e-6):
        raise fields.error(key, "last row must be [0, 0, 0, 1]")
    if not is_rotation(value[:3, :3], tol=1e-3):
        raise fields.error(key, "upper-left 3x3 must be a rotation (orthonormal, det +1)")
    out = value.copy()
    out[:3, :3] = _orthonormalize(value[:3, :3])
    out[:3, 3] *= scale
    return out


def _orthonormalize(R: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def _keyframes(traj: Fields, scale: float, *, camera: bool) -> PoseTrack:
    """Keyframes -> PoseTrack with local-to-world rotations (camera-to-world for cameras).

    A keyframe gives either ``pose`` (camera: world-to-camera; object: object-to-world) or
    ``position`` + ``look_at`` (+ ``up``): the local +z axis points at ``look_at`` and ``up``
    appears as -y, the OpenCV camera convention, for cameras and objects alike.
    """
    keys = traj.mapping_list("keyframes", min_len=1)
    times, positions, rotations = [], [], []
    for i, kf in enumerate(keys):
        kf.check_keys(KEY_KEYS)
        t = kf.number("time", min=0.0)
        if times and t <= times[-1]:
            raise kf.error("time", f"keyframe times must increase, got {t} after {times[-1]}")
        if kf.has("pose"):
            for other in ("position", "look_at", "up"):
                if kf.has(other):
                    raise kf.error(other, "give either pose or position/look_at/up, not both")
            pose = _rigid(kf.matrix("pose", (4, 4)), kf, "pose", scale)
            if camera:  # world-to-camera -> camera-to-world rotation and centre
                R = pose[:3, :3].T
                pos = camera_center(pose)
            else:
                R, pos = pose[:3, :3], pose[:3, 3]
        else:
            pos = kf.vector("position", 3) * scale
            target = kf.vector("look_at", 3) * scale
            up = kf.vector("up", 3, default=np.array(DEFAULT_UP), nonzero=True)
            if np.linalg.norm(target - pos) < 1e-9:
                raise kf.error("look_at", "equals position (the view direction is undefined)")
            try:
                R = look_at_rotation(pos, target, up)
            except ValueError:
                raise kf.error("up", "is parallel to the viewing direction") from None
        times.append(t)
        positions.append(pos)
        rotations.append(R)
    return PoseTrack.from_rotations(np.array(times), np.array(positions), np.array(rotations))


def _nerf_poses(path: Path, traj: Fields, scale: float) -> np.ndarray:
    try:
        data = json.loads(path.read_text())
        frames = data["frames"]
        mats = np.array([f["transform_matrix"] for f in frames], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise traj.error("transforms", f"cannot read NeRF transforms {path.name}: {type(exc).__name__} {exc}") from None
    if mats.ndim != 3 or mats.shape[1:] != (4, 4) or len(mats) == 0:
        raise traj.error("transforms", f"{path.name}: frames[*].transform_matrix must be 4x4 matrices")
    if not np.all(np.isfinite(mats)):
        raise traj.error("transforms", f"{path.name}: transform matrices contain NaN/inf")
    for i, m in enumerate(mats):
        if not is_rotation(m[:3, :3], tol=1e-3):
            raise traj.error("transforms", f"{path.name}: frames[{i}].transform_matrix is not rigid")
    mats = mats.copy()
    mats[:, :3, 3] *= scale
    return np.stack([w2c_from_nerf(m) for m in mats])


def _camera(cam: Fields, scale: float) -> Intrinsics:
    cam.check_keys(CAMERA_KEYS)
    width = cam.number("width", integer=True, min=2, max=16384)
    height = cam.number("height", integer=True, min=2, max=16384)
    near = cam.number("near", min=0.0, min_exclusive=True)
    far = cam.number("far", min=0.0, min_exclusive=True)
    if near >= far:
        raise cam.error("near", f"near ({near}) must be smaller than far ({far})")
    explicit = [k for k in ("fx", "fy", "cx", "cy") if cam.has(k)]
    if cam.has("fov"):
        if explicit:
            raise cam.error(explicit[0], "give either fov or fx, fy, cx, cy, not both")
        fov = cam.number("fov", min=0.0, max=180.0, min_exclusive=True, max_exclusive=True)
        return Intrinsics.from_fov(width, height, fov, near * scale, far * scale)
    if len(explicit) < 4:
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in explicit]
        raise cam.error(missing[0] if explicit else "fov", "missing: give fov, or all of fx, fy, cx, cy")
    fx = cam.number("fx", min=0.0, min_exclusive=True)
    fy = cam.number("fy", min=0.0, min_exclusive=True)
    cx = cam.number("cx")
    cy = cam.number("cy")
    return Intrinsics(width, height, fx, fy, cx, cy, near * scale, far * scale)


def _exposure(cam: Fields) -> Exposure:
    """camera.exposure: 'auto' (default), a number (fixed exposure) or a mapping."""
    d = Exposure()
    if not cam.has("exposure"):
        return d
    raw = cam.raw("exposure")
    if isinstance(raw, str):
        if raw != "auto":
            raise cam.error("exposure", f"expected 'auto', a number or a mapping, got '{raw}'")
        return d
    if not isinstance(raw, dict):
        return Exposure(mode="fixed", value=cam.number("exposure", min=0.0, min_exclusive=True))
    f = cam.mapping("exposure")
    f.check_keys(EXPOSURE_KEYS)
    mode = f.string("mode", "fixed" if f.has("value") else "auto", choices=["auto", "fixed"])
    e = Exposure(mode=mode, value=f.number("value", d.value, min=0.0, min_exclusive=True),
                 target=f.number("target", d.target, min=0.0, max=1.0, min_exclusive=True),
                 smoothing=f.number("smoothing", d.smoothing, min=0.0),
                 min=f.number("min", d.min, min=0.0, min_exclusive=True),
                 max=f.number("max", d.max, min=0.0, min_exclusive=True))
    if e.min > e.max:
        raise f.error("min", f"min ({e.min}) must not exceed max ({e.max})")
    return e


def _lighting(f: Fields | None) -> Lighting:
    if f is None:
        return Lighting()
    f.check_keys(LIGHT_KEYS)
    d = Lighting()
    falloff = f.vector("falloff", 3, default=np.array(d.falloff))
    if np.any(falloff < 0) or not np.any(falloff > 0):
        raise f.error("falloff", "a, b, c must be >= 0 and not all zero")
    return Lighting(
        intensity=f.number("intensity", d.intensity, min=0.0),
        falloff=tuple(float(x) for x in falloff),
        ambient=f.number("ambient", d.ambient, min=0.0),
        specular=f.number("specular", d.specular, min=0.0),
        shininess=f.number("shininess", d.shininess, min=1.0),
    )


def _deformation(obj: Fields, scale: float, n_vertices: int, frames: int, base: Path) -> Deformation:
    if not obj.has("deformation"):
        return Deformation()
    d = obj.raw("deformation")
    if isinstance(d, str):  # "deformation: none" shorthand
        if d != "none":
            raise obj.error("deformation", f"expected a mapping or 'none', got '{d}'")
        return Deformation()
    df = obj.mapping("deformation")
    kind = df.string("type", choices=DEFORM_TYPES)
    if kind == "none":
        df.check_keys(["type"])
        return Deformation()
    if kind == "breathing":
        df.check_keys(["type", "amplitude", "period", "direction", "falloff", "phase"])
        direction = df.vector("direction", 3, default=np.array([0.0, 0.0, 1.0]), nonzero=True)
        center = radius = None
        if df.has("falloff"):
            fo = df.mapping("falloff")
            fo.check_keys(["center", "radius"])
            center = fo.vector("center", 3) * scale
            radius = fo.number("radius", min=0.0, min_exclusive=True) * scale
        return Breathing(
            amplitude=df.number("amplitude", min=0.0) * scale,
            period=df.number("period", min=0.0, min_exclusive=True),
            direction=direction / np.linalg.norm(direction),
            center=center, radius=radius,
            phase=df.number("phase", 0.0),
        )
    df.check_keys(["type", "file"])
    path = df.path_value("file", base)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "vertices" not in z:
                raise df.error("file", f"{path.name} has no 'vertices' array (found: {', '.join(z.files) or 'none'})")
            arr = np.asarray(z["vertices"], dtype=np.float64)
    except UserError:
        raise
    except Exception as exc:
        raise df.error("file", f"cannot read {path.name}: {type(exc).__name__}: {exc}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise df.error("file", f"{path.name}: 'vertices' must have shape [frames, vertices, 3], got {list(arr.shape)}")
    if arr.shape[1] != n_vertices:
        raise df.error("file", f"{path.name}: has {arr.shape[1]} vertices per frame, the mesh has {n_vertices}")
    if arr.shape[0] < frames:
        raise df.error("file", f"{path.name}: has {arr.shape[0]} frames, the trajectory needs {frames}")
    if not np.all(np.isfinite(arr)):
        raise df.error("file", f"{path.name}: 'vertices' contains NaN/inf")
    return VertexArrays(vertices=arr * scale, source=str(path))


def load_scene(path: str | Path) -> Scene:
    """Load and validate a scene file. Raises UserError (file, field, message) on bad input.

    Geometry checks that need ray casting (camera inside an organ) live in
    ``scene.checks.check_camera_path`` so that loading stays fast.
    """
    path = Path(path)
    data = load_yaml(path)
    top = Fields(data, path)
    top.check_keys(TOP_KEYS)
    base = path.parent
    units = top.string("units", choices=list(UNITS))
    scale = UNITS[units]
    name = top.string("name", path.stem)
    anatomy = top.string("anatomy", name)
    intr = _camera(top.mapping("camera"), scale)
    exposure = _exposure(top.mapping("camera"))
    lighting = _lighting(top.mapping("lighting", None))

    traj = top.mapping("trajectory")
    traj.check_keys(TRAJ_KEYS)
    fps = traj.number("fps", min=0.0, min_exclusive=True)
    track = None
    if traj.has("transforms"):
        if traj.has("keyframes"):
            raise traj.error("keyframes", "give either keyframes or transforms, not both")
        poses = _nerf_poses(traj.path_value("transforms", base), traj, scale)
        frames = traj.number("frames", len(poses), integer=True, min=1)
        if frames > len(poses):
            raise traj.error("frames", f"{frames} frames asked, the transforms file has {len(poses)}")
        poses = poses[:frames]
    else:
        frames = traj.number("frames", integer=True, min=1)
        track = _keyframes(traj, scale, camera=True)
        poses = camera_poses_from_track(track, np.arange(frames) / fps)

    objects = []
    seen_names: dict[str, int] = {}
    class_of_id: dict[int, str] = {}
    for i, obj in enumerate(top.mapping_list("objects", min_len=1)):
        obj.check_keys(OBJ_KEYS)
        oname = obj.string("name")
        if oname in seen_names:
            raise obj.error("name", f"'{oname}' is already the name of objects[{seen_names[oname]}]")
        seen_names[oname] = i
        mesh_units = obj.string("mesh_units", units, choices=list(UNITS))
        mesh = load_mesh(obj.path_value("mesh", base, must_exist=False), scale=UNITS[mesh_units],
                         file=str(path), field=obj.field("mesh"))
        mesh.file_units = mesh_units
        class_id = obj.number("class_id", integer=True, min=1, max=255)
        class_name = obj.string("class_name", oname)
        if class_id in class_of_id and class_of_id[class_id] != class_name:
            raise obj.error("class_name", f"class_id {class_id} is already named '{class_of_id[class_id]}'")
        class_of_id[class_id] = class_name
        color = obj.vector("color", 3, default=np.array([0.7, 0.5, 0.45]))
        if np.any(color < 0) or np.any(color > 1):
            raise obj.error("color", "components must lie in [0, 1]")
        transform = np.eye(4)
        if obj.has("transform"):
            transform = _rigid(obj.matrix("transform", (4, 4)), obj, "transform", scale)
        otrack = None
        if obj.has("trajectory"):
            of = obj.mapping("trajectory")
            of.check_keys(["keyframes"])
            otrack = _keyframes(of, scale, camera=False)
        deformation = _deformation(obj, scale, len(mesh.vertices), frames, base)
        objects.append(SceneObject(oname, mesh, class_id, class_name, color, transform, deformation, otrack))

    return Scene(path=path, name=name, anatomy=anatomy, units=units, intrinsics=intr, fps=float(fps),
                 frames=int(frames), objects=objects, camera_poses=poses, lighting=lighting, camera_track=track,
                 exposure=exposure)


def dump_scene(scene: Scene) -> dict:
    """A scene file (as a dict, units m, absolute mesh paths) that loads back to ``scene``."""
    intr = scene.intrinsics
    out: dict = {
        "name": scene.name, "anatomy": scene.anatomy, "units": "m",
        "camera": {"width": intr.width, "height": intr.height, "fx": intr.fx, "fy": intr.fy,
                   "cx": intr.cx, "cy": intr.cy, "near": intr.near, "far": intr.far,
                   "exposure": dict(vars(scene.exposure))},
        "lighting": {"intensity": scene.lighting.intensity, "falloff": list(scene.lighting.falloff),
                     "ambient": scene.lighting.ambient, "specular": scene.lighting.specular,
                     "shininess": scene.lighting.shininess},
    }
    if scene.camera_track is not None:
        keys = _track_keys(scene.camera_track, camera=True)
    else:  # explicit per-frame poses become one keyframe per frame
        keys = [{"time": f / scene.fps, "pose": _tolist(p)} for f, p in enumerate(scene.camera_poses)]
    out["trajectory"] = {"fps": scene.fps, "frames": scene.frames, "keyframes": keys}
    objs = []
    for o in scene.objects:
        d = {"name": o.name, "mesh": str(Path(o.mesh.source).resolve()), "mesh_units": o.mesh.file_units,
             "class_id": o.class_id,
             "class_name": o.class_name, "color": [float(c) for c in o.color]}
        if not np.allclose(o.transform, np.eye(4)):
            d["transform"] = _tolist(o.transform)
        if isinstance(o.deformation, Breathing):
            b = o.deformation
            bd = {"type": "breathing", "amplitude": b.amplitude, "period": b.period,
                  "direction": [float(x) for x in b.direction], "phase": b.phase}
            if b.center is not None:
                bd["falloff"] = {"center": [float(x) for x in b.center], "radius": b.radius}
            d["deformation"] = bd
        elif isinstance(o.deformation, VertexArrays):
            raise UserError("scenes with vertex-array deformation cannot be re-exported (units of the .npz)",
                            file=scene.path, field=f"objects[{o.name}].deformation")
        if o.track is not None:
            d["trajectory"] = {"keyframes": _track_keys(o.track, camera=False)}
        objs.append(d)
    out["objects"] = objs
    return _plain(out)


def _plain(x):
    """numpy scalars/arrays -> plain Python (safe_dump writes only plain types)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def _tolist(m: np.ndarray) -> list:
    return [[float(x) for x in row] for row in m]


def _track_keys(track: PoseTrack, camera: bool) -> list:
    from .camera import matrix_from_quat, pose_from_rotation
    keys = []
    for t, p, q in zip(track.times, track.positions, track.quats):
        R = matrix_from_quat(q)
        if camera:
            pose = pose_from_rotation(R, p)
        else:
            pose = np.eye(4)
            pose[:3, :3], pose[:3, 3] = R, p
        keys.append({"time": float(t), "pose": _tolist(pose)})
    return keys


__all__ = ["load_scene", "dump_scene", "check_array"]

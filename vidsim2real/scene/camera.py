"""Camera maths, in one place.

Conventions (see README "Conventions"):

* OpenCV pinhole camera: x right, y down, z forward; intrinsics ``K`` (3x3).
* Poses are world-to-camera 4x4 matrices ``w2c``: ``x_cam = R @ x_world + t``.
* Pixel centres sit at integer coordinates (OpenCV): pixel (i, j) covers u in
  [i - 0.5, i + 0.5]; an image of width W spans u in [-0.5, W - 0.5].
* Quaternions are (w, x, y, z), unit length, w >= 0 where a choice exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels (metres for near/far)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    near: float
    far: float

    @staticmethod
    def from_fov(width: int, height: int, fov_deg: float, near: float, far: float) -> "Intrinsics":
        """Horizontal field of view ``fov_deg`` (degrees), square pixels, centred principal point."""
        fx = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
        return Intrinsics(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0, near, far)

    def K(self) -> np.ndarray:
        """3x3 float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def resized(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (the image plane is rescaled, not cropped)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy,
                          (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, self.near, self.far)

    @property
    def fov_x_deg(self) -> float:
        return float(np.degrees(2.0 * np.arctan(self.width / (2.0 * self.fx))))


def normalize(v: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def look_at_rotation(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation (3x3, columns = camera x, y, z in world) of a camera at
    ``position`` looking at ``target`` with world ``up`` appearing upwards (-y in the image).

    Raises ValueError when the target equals the position or ``up`` is parallel to the view.
    """
    forward = np.asarray(target, float) - np.asarray(position, float)
    if np.linalg.norm(forward) < 1e-12:
        raise ValueError("look_at equals position")
    z = forward / np.linalg.norm(forward)
    up = np.asarray(up, float)
    down = -(up - np.dot(up, z) * z)
    if np.linalg.norm(down) < 1e-9 * max(1.0, np.linalg.norm(up)):
        raise ValueError("up is parallel to the viewing direction")
    y = down / np.linalg.norm(down)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def pose_from_rotation(c2w_rot: np.ndarray, position: np.ndarray) -> np.ndarray:
    """World-to-camera 4x4 from a camera-to-world rotation and the camera centre."""
    w2c = np.eye(4)
    w2c[:3, :3] = c2w_rot.T
    w2c[:3, 3] = -c2w_rot.T @ np.asarray(position, float)
    return w2c


def look_at(position, target, up) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV axes) of a camera at ``position`` looking at ``target``."""
    return pose_from_rotation(look_at_rotation(position, target, up), position)


def camera_center(w2c: np.ndarray) -> np.ndarray:
    """Camera centres in world coordinates. w2c: [..., 4, 4] -> [..., 3]."""
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3]
    return -np.einsum("...ji,...j->...i", R, t)


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms [..., 4, 4] (rotation + translation)."""
    out = np.zeros_like(T)
    R = T[..., :3, :3]
    out[..., :3, :3] = np.swapaxes(R, -1, -2)
    out[..., :3, 3] = -np.einsum("...ji,...j->...i", R, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def is_rotation(R: np.ndarray, tol: float = 1e-4) -> bool:
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol)


# --- quaternions (w, x, y, z) ------------------------------------------------------------

def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation (Shepperd's method)."""
    R = np.asarray(R, float)
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = np.array([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = np.array([(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s])
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = np.array([(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s])
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = np.array([(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s])
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """3x3 rotation(s) of quaternion(s) [..., 4] (w, x, y, z); normalises first."""
    q = normalize(np.asarray(q, float))
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def slerp(q0: np.ndarray, q1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the short arc. q0, q1: [4]; s: [N] -> [N, 4]."""
    q0 = normalize(np.asarray(q0, float))
    q1 = normalize(np.asarray(q1, float))
    s = np.asarray(s, float)[:, None]
    dot = float(np.dot(q0, q1))
    if dot < 0:  # short arc: q and -q are the same rotation
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: lerp is exact to float precision and avoids 0/0
        out = q0 + s * (q1 - q0)
    else:
        theta = np.arccos(np.clip(dot, -1.0, 1.0))
        out = (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)
    return normalize(out)


# --- other pose conventions --------------------------------------------------------------

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def w2c_from_nerf(c2w_gl: np.ndarray) -> np.ndarray:
    """NeRF transforms.json ``transform_matrix`` (camera-to-world, OpenGL axes) -> w2c (OpenCV)."""
    return invert_rigid(np.asarray(c2w_gl, float) @ _GL_TO_CV)


def nerf_from_w2c(w2c: np.ndarray) -> np.ndarray:
    """w2c (OpenCV) -> NeRF camera-to-world matrix (OpenGL axes)."""
    return invert_rigid(np.asarray(w2c, float)) @ _GL_TO_CV

"""Keyframed rigid motion: a C1 position curve and quaternion slerp between keys.

Positions use cubic Hermite segments with Catmull-Rom tangents for non-uniform key times
(the curve passes through every key exactly and its velocity is continuous); orientations
use slerp on the short arc between consecutive keys. Before the first key and after the
last key the pose is held.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import matrix_from_quat, quat_from_matrix, slerp


@dataclass
class PoseTrack:
    """Rigid poses at key times.

    times: [K] strictly increasing seconds; positions: [K, 3] metres; quats: [K, 4] (w, x, y, z)
    of a local-to-world rotation (camera-to-world for cameras, object-to-world for objects).
    """

    times: np.ndarray
    positions: np.ndarray
    quats: np.ndarray

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, float)
        self.positions = np.asarray(self.positions, float)
        q = np.asarray(self.quats, float).copy()
        for k in range(1, len(q)):  # keep neighbours on one hemisphere (same rotation, shorter arc)
            if np.dot(q[k - 1], q[k]) < 0:
                q[k] = -q[k]
        self.quats = q

    @staticmethod
    def from_rotations(times, positions, rotations) -> "PoseTrack":
        """rotations: [K, 3, 3] local-to-world."""
        return PoseTrack(times, positions, np.stack([quat_from_matrix(R) for R in rotations]))

    def tangents(self) -> np.ndarray:
        """Catmull-Rom velocities at the keys, [K, 3] (metres / second)."""
        t, p = self.times, self.positions
        K = len(t)
        m = np.zeros_like(p)
        if K < 2:
            return m
        m[0] = (p[1] - p[0]) / (t[1] - t[0])
        m[-1] = (p[-1] - p[-2]) / (t[-1] - t[-2])
        if K > 2:
            m[1:-1] = (p[2:] - p[:-2]) / (t[2:] - t[:-2])[:, None]
        return m

    def evaluate(self, query_times) -> tuple[np.ndarray, np.ndarray]:
        """Positions [N, 3] and rotations [N, 3, 3] at ``query_times`` [N] seconds."""
        tq = np.atleast_1d(np.asarray(query_times, float))
        t, p, q = self.times, self.positions, self.quats
        if len(t) == 1:
            return np.repeat(p[:1], len(tq), 0), np.repeat(matrix_from_quat(q[:1]), len(tq), 0)
        tq_c = np.clip(tq, t[0], t[-1])
        seg = np.clip(np.searchsorted(t, tq_c, side="right") - 1, 0, len(t) - 2)
        h = t[seg + 1] - t[seg]
        s = (tq_c - t[seg]) / h
        m = self.tangents()
        s2, s3 = s * s, s * s * s
        h00 = 2 * s3 - 3 * s2 + 1
        h10 = s3 - 2 * s2 + s
        h01 = -2 * s3 + 3 * s2
        h11 = s3 - s2
        pos = (h00[:, None] * p[seg] + (h10 * h)[:, None] * m[seg]
               + h01[:, None] * p[seg + 1] + (h11 * h)[:, None] * m[seg + 1])
        quats = np.empty((len(tq), 4))
        for k in np.unique(seg):
            idx = np.nonzero(seg == k)[0]
            quats[idx] = slerp(q[k], q[k + 1], s[idx])
        return pos, matrix_from_quat(quats)

    def evaluate_quats(self, query_times) -> np.ndarray:
        """Unit quaternions [N, 4] at ``query_times`` (for tests and exports)."""
        _, R = self.evaluate(query_times)
        return np.stack([quat_from_matrix(r) for r in R])

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0])

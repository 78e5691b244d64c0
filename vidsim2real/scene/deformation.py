"""Per-object tissue deformation: none, breathing, or per-frame vertex arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _place(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


@dataclass
class Deformation:
    """No deformation: the object moves rigidly with its placement."""

    kind = "none"

    def apply(self, rest: np.ndarray, placement: np.ndarray, frame: int, time: float) -> np.ndarray:
        """World-space vertices [V, 3] at ``frame`` (``time`` seconds).

        rest: [V, 3] object-local rest-pose vertices (metres); placement: 4x4 object-to-world.
        """
        return _place(placement, rest)

    def describe(self) -> str:
        return "none"


@dataclass
class Breathing(Deformation):
    """Smooth periodic displacement ``x + A * s(t) * w(x) * d`` (all lengths in metres).

    s(t) = (1 - cos(2 pi (t + phase) / period)) / 2 rises from 0 (exhaled) to 1 (inhaled);
    w(x) = exp(-|x - c|^2 / (2 r^2)) when a falloff centre c and radius r are given, else 1
    (a rigid shift). Evaluated at the rest-pose world position, so it is reproducible per frame.
    """

    amplitude: float = 0.004
    period: float = 4.0
    direction: np.ndarray = None  # unit vector, world
    center: np.ndarray | None = None
    radius: float | None = None
    phase: float = 0.0
    kind = "breathing"

    def signal(self, time: float) -> float:
        return 0.5 * (1.0 - np.cos(2.0 * np.pi * (time + self.phase) / self.period))

    def weights(self, points: np.ndarray) -> np.ndarray:
        if self.center is None or self.radius is None:
            return np.ones(len(points))
        d2 = np.sum((points - self.center) ** 2, axis=1)
        return np.exp(-d2 / (2.0 * self.radius ** 2))

    def apply(self, rest, placement, frame, time):
        world = _place(placement, rest)
        shift = self.amplitude * self.signal(time) * self.weights(world)
        return world + shift[:, None] * self.direction[None, :]

    def describe(self) -> str:
        return f"breathing {self.amplitude * 1000:.1f} mm / {self.period:g} s"


@dataclass
class VertexArrays(Deformation):
    """Per-frame object-local vertex positions from a .npz file (``vertices``: [T, V, 3])."""

    vertices: np.ndarray = None  # [T, V, 3] metres, object-local
    source: str = ""
    kind = "vertices"

    def apply(self, rest, placement, frame, time):
        return _place(placement, self.vertices[frame])

    def describe(self) -> str:
        return f"vertex arrays ({len(self.vertices)} frames)"

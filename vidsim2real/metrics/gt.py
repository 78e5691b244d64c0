"""Ground truth from the rasterizer for a rendered/translated video of a scene: per-frame
fragments, exact flow between any two frames, and surface-point ids."""
from __future__ import annotations

import torch

from ..raster import Correspondence, Fragments, correspondences
from ..render import Renderer
from ..scene.scene import Scene


class SceneGT:
    """Fragments of frames ``frames`` of ``scene`` at ``size`` (W, H), rendered once and kept
    (pix_to_face int32, bary, zbuf; about 1.3 MB per 256² frame)."""

    def __init__(self, scene: Scene, frames, size, device="cpu", backend: str = "auto", batch: int = 8):
        self.scene = scene
        self.frames = list(frames)
        self.renderer = Renderer(scene, size=size, device=device, backend=backend)
        self.frags: list[Fragments] = []
        self.sim: list[torch.Tensor] = []
        with torch.no_grad():
            for i in range(0, len(self.frames), batch):
                buf = self.renderer.render(self.frames[i:i + batch])
                for j in range(len(buf.frames)):
                    self.frags.append(buf.fragments[j])
                self.sim.append(buf.sim_rgb.cpu())
        self.sim_rgb = torch.cat(self.sim)          # [T, H, W, 3] in [0, 1]
        self._verts: dict[int, torch.Tensor] = {}
        self._corr: dict[tuple[int, int], Correspondence] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def verts(self, i: int) -> torch.Tensor:
        if i not in self._verts:
            if len(self._verts) > 64:
                self._verts.clear()
            self._verts[i] = self.renderer.geometry(self.frames[i])[0]
        return self._verts[i]

    def corr(self, i: int, j: int) -> Correspondence:
        """Where frame i's visible pixels are in frame j (exact, occlusion-aware). [1, H, W, ...]

        Cached (several metrics visit the same pairs); about 0.6 MB per pair at 256².
        """
        key = (i, j)
        if key not in self._corr:
            if len(self._corr) >= self.max_cached_pairs:
                self._corr.clear()
            c = correspondences(self.frags[i], self.frags[j], self.verts(j), self.renderer.faces)
            self._corr[key] = type(c)(c.uv, c.valid, torch.empty(0))   # depth is not needed here
        return self._corr[key]

    max_cached_pairs = 512

    def mask(self, i: int) -> torch.Tensor:
        return self.frags[i].mask[0]

    def face_ids(self, i: int) -> torch.Tensor:
        return self.frags[i].pix_to_face[0]

    def bary(self, i: int) -> torch.Tensor:
        return self.frags[i].bary[0]


def offsets_for(T: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, 100, 200, ... up to T - 1 (and T - 1 itself)."""
    out, base = [], 1
    while True:
        for m in (1, 2, 5):
            k = m * base
            if k > T - 1:
                if T - 1 >= 1 and (not out or out[-1] != T - 1):
                    out.append(T - 1)
                return out
            out.append(k)
        base *= 10

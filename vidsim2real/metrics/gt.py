"""Ground truth from the rasterizer for a rendered/translated video of a scene: per-frame
fragments, sim render, exact flow between any two frames, and surface-point ids.

Everything is rendered on demand and kept in bounded caches, so memory does not grow with the
length of the clip (a 1,000-frame clip at 512² would otherwise hold ~6 GB of G-buffers).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from ..raster import Correspondence, Fragments, correspondences
from ..render import Renderer
from ..scene.scene import Scene


class _LRU(OrderedDict):
    """A dict that forgets its least recently used entries beyond ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class SceneGT:
    """Ground truth of frames ``frames`` (scene frame indices; position i in the video is
    scene frame frames[i]) of ``scene`` at ``size`` (W, H). Frames are rendered in batches of
    ``batch`` when first asked for and at most ``cache`` of them are kept (about 1.5 MB each at
    256²), so sequential passes cost one render per frame and memory stays flat."""

    max_cached_pairs = 64

    def __init__(self, scene: Scene, frames, size, device="cpu", backend: str = "auto", batch: int = 8,
                 cache: int = 64):
        self.scene = scene
        self.frames = list(frames)
        self.renderer = Renderer(scene, size=size, device=device, backend=backend)
        self.batch = batch
        self._frames = _LRU(max(cache, batch))       # i -> (Fragments [1], sim [H, W, 3] cpu)
        self._verts = _LRU(max(cache, 2))
        self._corr = _LRU(self.max_cached_pairs)

    def __len__(self) -> int:
        return len(self.frames)

    def _frame(self, i: int):
        if i not in self._frames:     # the batch from i on (a sequential pass renders once per batch)
            self.ensure(range(i, min(i + self.batch, len(self.frames))))
        return self._frames.get_or(i, lambda: None)

    def ensure(self, indices) -> None:
        """Render the frames of ``indices`` (video frame indices) not cached yet, ``batch`` at a
        time: a caller that will visit spaced frames (every fourth, say) asks for them first
        instead of rendering a whole batch around each. At most the cache's size of them stay."""
        todo = []
        for i in dict.fromkeys(int(i) for i in indices):
            if i in self._frames:
                self._frames.move_to_end(i)     # kept ahead of the ones about to be rendered
            else:
                todo.append(i)
        for a in range(0, len(todo), self.batch):
            idx = todo[a:a + self.batch]
            with torch.no_grad():
                buf = self.renderer.render([self.frames[j] for j in idx])
            for k, j in enumerate(idx):
                self._frames.get_or(j, lambda k=k: (buf.fragments[k], buf.sim_rgb[k].cpu()))

    def fragments(self, i: int) -> Fragments:
        """Fragments [1, H, W] of video frame i."""
        return self._frame(i)[0]

    def sim(self, i: int) -> torch.Tensor:
        """The sim render [H, W, 3] in [0, 1] of video frame i."""
        return self._frame(i)[1]

    @property
    def reach(self) -> int:
        """The longest offset k for which visiting (t, t + k) for every t in ascending order
        renders each frame once: the cache then holds frames t .. t + k plus one batch."""
        return self._frames.limit - self.batch

    def verts(self, i: int) -> torch.Tensor:
        return self._verts.get_or(i, lambda: self.renderer.geometry(self.frames[i])[0])

    def corr(self, i: int, j: int) -> Correspondence:
        """Where frame i's visible pixels are in frame j (exact, occlusion-aware). [1, H, W, ...]"""
        def make():
            c = correspondences(self.fragments(i), self.fragments(j), self.verts(j), self.renderer.faces)
            return type(c)(c.uv, c.valid, torch.empty(0))    # depth is not needed here
        return self._corr.get_or((i, j), make)

    def mask(self, i: int) -> torch.Tensor:
        return self.fragments(i).mask[0]

    def face_ids(self, i: int) -> torch.Tensor:
        return self.fragments(i).pix_to_face[0]

    def bary(self, i: int) -> torch.Tensor:
        return self.fragments(i).bary[0]

    def labels(self, i: int) -> torch.Tensor:
        """Class ids [H, W] of frame i (0 = background)."""
        r = self.renderer
        face = self.face_ids(i)
        return torch.where(face >= 0, r.object_class[r.face_object[face.clamp(min=0)]], torch.zeros_like(face)).cpu()

    @property
    def sim_rgb(self) -> "SimFrames":
        """The sim render as a frame sequence (``len``, ``[t]`` -> [H, W, 3])."""
        return SimFrames(self)


class SimFrames:
    """The sim render of a SceneGT, indexable like a [T, H, W, 3] tensor frame by frame."""

    def __init__(self, gt: SceneGT):
        self.gt = gt

    def __len__(self) -> int:
        return len(self.gt)

    def __getitem__(self, i):
        if isinstance(i, slice):
            i = list(range(*i.indices(len(self.gt))))
        if isinstance(i, (list, tuple)):
            if len(i) <= self.gt._frames.limit:
                self.gt.ensure(i)
            return torch.stack([self.gt.sim(j) for j in i])
        return self.gt.sim(int(i))

    def all(self) -> torch.Tensor:
        """Every frame [T, H, W, 3] (short clips only)."""
        return self[:]


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

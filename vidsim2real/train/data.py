"""Training data: pairs of views of simulated scenes (with exact correspondences) and real frames.

Every random choice goes through generators whose state is saved in checkpoints, so a
resumed run draws exactly the batches an uninterrupted run would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..domains.surrogate import SurrogateRenderer
from ..domains.surrogate_set import write_surrogate_set
from ..errors import UserError
from ..layout import nhwc_to_nchw, to_signed
from ..raster import Fragments, correspondences
from ..render import FrameBuffers, Renderer
from ..scene import check_camera_path, load_scene
from ..scene.random_scene import write_random_scenes
from ..scene.scene import Scene


@dataclass
class Batch:
    """One training batch (NCHW, images in [-1, 1]).

    sim1, sim2: sim renders of two views of the same scene per item [B, 3, H, W];
    buf1, buf2: their G-buffers (per item, batch 1 each) for neural-feature sampling;
    scenes: the scene of each item; uv12 [B, H, W, 2] / valid12 [B, H, W]: where view 1's
    pixels are in view 2 and whether they are visible there; mask1 [B, 1, H, W] foreground;
    real [B, 3, H, W]: real-domain frames; paired [B, 3, H, W] or None: the surrogate render of
    view 1 (pix2pix's paired target).
    """

    sim1: torch.Tensor
    sim2: torch.Tensor
    buf1: list
    buf2: list
    scenes: list
    uv12: torch.Tensor
    valid12: torch.Tensor
    mask1: torch.Tensor
    real: torch.Tensor
    paired: torch.Tensor | None = None


class SceneBank:
    """The training scenes with a renderer each (at the render size, on the device)."""

    def __init__(self, paths: list, size, device, backend: str = "auto", check: bool = True):
        self.scenes: list[Scene] = []
        for p in paths:
            s = load_scene(p)
            if check:
                check_camera_path(s)
            self.scenes.append(s)
        if not self.scenes:
            raise UserError("no training scenes", field="data.scenes")
        self.renderers = [Renderer(s, size=tuple(size), device=device, backend=backend) for s in self.scenes]
        self.surrogates: dict[int, object] = {}

    def anatomies(self) -> dict[str, list[Scene]]:
        """anatomy -> its scenes (the union of their objects defines the texture set)."""
        out: dict[str, list[Scene]] = {}
        for s in self.scenes:
            out.setdefault(s.anatomy, []).append(s)
        return out


class ViewPairSampler:
    """Draws (scene, frame a, frame b) with 1 <= |a - b| <= max_offset from the trajectories."""

    def __init__(self, bank: SceneBank, max_offset: int, seed: int, crop: tuple[int, int] | None = None):
        self.bank = bank
        self.max_offset = max_offset
        self.rng = np.random.default_rng([seed, 11])
        r = bank.renderers[0]
        self.crop = tuple(crop) if crop else (r.width, r.height)   # (W, H) taken from each render

    def draw(self) -> tuple[int, int, int]:
        k = int(self.rng.integers(len(self.bank.scenes)))
        n = self.bank.scenes[k].frames
        a = int(self.rng.integers(n))
        if n == 1:
            return k, a, a
        off = int(self.rng.integers(1, min(self.max_offset, n - 1) + 1)) * (1 if self.rng.random() < 0.5 else -1)
        b = a + off
        if not 0 <= b < n:
            b = a - off
        return k, a, int(np.clip(b, 0, n - 1))

    def batch(self, size: int, real, paired: bool = False) -> Batch:
        sims1, sims2, b1s, b2s, scenes, uvs, valids, masks, pairs = [], [], [], [], [], [], [], [], []
        cw, ch = self.crop
        for _ in range(size):
            k, a, b = self.draw()
            r = self.bank.renderers[k]
            # the same crop window in both views (they are at most max_offset frames apart)
            x0 = int(self.rng.integers(0, r.width - cw + 1))
            y0 = int(self.rng.integers(0, r.height - ch + 1))
            with torch.no_grad():
                buf1, buf2 = r.render([a]), r.render([b])
                corr = correspondences(buf1.fragments, buf2.fragments, r.geometry(b)[0], r.faces)
                if paired:
                    pairs.append(_crop_nhwc(self._surrogate(k).render([a])[0], x0, y0, cw, ch))
                if (cw, ch) != (r.width, r.height):
                    buf1, buf2 = crop_buffers(buf1, x0, y0, cw, ch), crop_buffers(buf2, x0, y0, cw, ch)
                    uv = corr.uv[:, y0:y0 + ch, x0:x0 + cw] - torch.tensor([x0, y0], dtype=corr.uv.dtype,
                                                                           device=corr.uv.device)
                    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] < cw - 0.5) & (uv[..., 1] >= -0.5) & \
                        (uv[..., 1] < ch - 0.5)
                    corr = type(corr)(uv, corr.valid[:, y0:y0 + ch, x0:x0 + cw] & inside,
                                      corr.depth[:, y0:y0 + ch, x0:x0 + cw])
            sims1.append(buf1.sim_rgb)
            sims2.append(buf2.sim_rgb)
            b1s.append(buf1)
            b2s.append(buf2)
            scenes.append(self.bank.scenes[k])
            uvs.append(corr.uv)
            valids.append(corr.valid)
            masks.append(buf1.mask)
        real_batch = real.sample(size).to(self.bank.renderers[0].device)
        return Batch(
            sim1=to_signed(nhwc_to_nchw(torch.cat(sims1))), sim2=to_signed(nhwc_to_nchw(torch.cat(sims2))),
            buf1=b1s, buf2=b2s, scenes=scenes, uv12=torch.cat(uvs), valid12=torch.cat(valids),
            mask1=torch.cat(masks)[:, None].float(), real=to_signed(real_batch),
            paired=to_signed(nhwc_to_nchw(torch.cat(pairs))) if paired else None)

    def _surrogate(self, k: int):
        if k not in self.bank.surrogates:
            r = self.bank.renderers[k]
            self.bank.surrogates[k] = SurrogateRenderer(self.bank.scenes[k], size=(r.width, r.height),
                                                        device=r.device, patient_seed=k, video_seed=k)
        return self.bank.surrogates[k]

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _crop_nhwc(x: torch.Tensor, x0: int, y0: int, w: int, h: int) -> torch.Tensor:
    return x[:, y0:y0 + h, x0:x0 + w]


def crop_buffers(buf: FrameBuffers, x0: int, y0: int, w: int, h: int) -> FrameBuffers:
    """The window [y0:y0+h, x0:x0+w] of every per-pixel buffer (fragments included)."""
    f = buf.fragments
    c = lambda t: _crop_nhwc(t, x0, y0, w, h)  # noqa: E731
    K = f.K.clone()
    K[:, 0, 2] -= x0
    K[:, 1, 2] -= y0
    frags = Fragments(c(f.pix_to_face), c(f.bary), c(f.zbuf), K, f.w2c, f.near, f.far)
    return FrameBuffers(buf.frames, frags, c(buf.mask), c(buf.labels), c(buf.object_ids), c(buf.depth),
                        c(buf.positions), c(buf.normals), c(buf.rest_positions), c(buf.rest_normals), buf.cam_pos,
                        None if buf.sim_rgb is None else c(buf.sim_rgb),
                        None if buf.features is None else c(buf.features))


def prepare_scenes(cfg, run_dir: Path) -> list[str]:
    """Scene files of the run: the config's plus random scenes generated (once) into run_dir."""
    paths = list(cfg.data.scenes)
    rs = cfg.data.random_scenes
    if rs.count:
        out = run_dir / "scenes"
        for s in range(rs.seed, rs.seed + rs.count):
            p = out / f"random_{s:05d}.yaml"
            if not p.exists():
                write_random_scenes(s, out, 1, frames=rs.frames, instrument_probability=rs.instrument_probability)
            paths.append(str(p))
    return paths


def prepare_real(cfg, run_dir: Path, device, progress: bool = True) -> list[str]:
    """Real-frame sources: the config's paths plus a surrogate set rendered (once) into run_dir."""
    paths = list(cfg.data.real.paths)
    rd = cfg.data.real
    if rd.surrogate_scenes:
        out = run_dir / "real_surrogate"
        if not (out / "manifest.json").exists() or len(list((out / "frames").glob("*.png"))) < \
                rd.surrogate_scenes * rd.surrogate_views:
            W, H = cfg.data.render_size or cfg.size
            write_surrogate_set(out, seed=rd.surrogate_seed, views=rd.surrogate_views,
                                random_scenes=rd.surrogate_scenes, frames=max(rd.surrogate_views, 30), size=(W, H),
                                scope_mask=rd.surrogate_scope_mask, device=device, progress=progress)
        paths.append(str(out / "frames"))
    for p in paths:
        if not Path(p).exists():
            raise UserError("not found", file=p, field="data.real.paths")
    return paths

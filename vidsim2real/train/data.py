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
from ..layout import nhwc_to_nchw, to_network, to_signed
from ..raster import Fragments, correspondences
from ..render import FrameBuffers, Renderer, render_views, share_tables
from ..scene import check_camera_path, load_scene
from ..scene.random_scene import write_random_scenes
from ..scene.scene import Scene


@dataclass
class ViewGroup:
    """Views of a batch rendered in one call (scenes of one geometry and anatomy): their item
    indices in the batch, their G-buffers [b, H, W, ...] (``light`` and ``sim_rgb`` filled)
    and the scene of each."""

    items: list
    buf: FrameBuffers
    scenes: list

    @property
    def scene(self) -> Scene:
        """A scene of the group (all share objects, meshes and anatomy: one texture set)."""
        return self.scenes[0]


@dataclass
class Batch:
    """One training batch (NCHW, images in [-1, 1]).

    sim1, sim2: sim renders of two views of the same scene per item [B, 3, H, W];
    views1, views2: their G-buffers, grouped by geometry (``ViewGroup``), for neural-feature
    sampling and textured shading; light1, light2 [B, 2, H, W]: the scope light of each view
    (render.FrameBuffers.light, NCHW); scenes: the scene of each item; uv12 [B, H, W, 2] /
    valid12 [B, H, W]: where view 1's pixels are in view 2 and whether they are visible there;
    mask1 [B, 1, H, W] foreground; labels1 [B, H, W] class ids of view 1; real [B, 3, H, W]:
    real-domain frames; paired [B, 3, H, W] or None: the surrogate render of view 1
    (pix2pix's paired target); real_labels [B, H, W] or None: the real frames' class maps (-1
    where a frame has none); detail_real [R, 3, H, W] / detail_labels [R, H, W] or None: more
    real crops with their class maps for the detail loss (the first B are ``real``).
    """

    sim1: torch.Tensor
    sim2: torch.Tensor
    views1: list
    views2: list
    scenes: list
    uv12: torch.Tensor
    valid12: torch.Tensor
    mask1: torch.Tensor
    real: torch.Tensor
    light1: torch.Tensor | None = None
    light2: torch.Tensor | None = None
    labels1: torch.Tensor | None = None
    paired: torch.Tensor | None = None
    real_labels: torch.Tensor | None = None
    detail_real: torch.Tensor | None = None
    detail_labels: torch.Tensor | None = None


def gather_items(groups: list, key: str, size: int) -> torch.Tensor:
    """The per-pixel buffer ``key`` of every group, back in batch order: [B, H, W, ...]."""
    parts = [(g.items, getattr(g.buf, key)) for g in groups]
    first = parts[0][1]
    out = first.new_empty((size, *first.shape[1:]))
    for items, t in parts:
        out[torch.as_tensor(items, device=out.device)] = t
    return out


class SceneBank:
    """The training scenes with a renderer each (at the render size, on the device)."""

    def __init__(self, paths: list, size, device, backend: str = "auto", check: bool = True, exposure=None):
        self.scenes: list[Scene] = []
        for p in paths:
            s = load_scene(p)
            if check:
                check_camera_path(s)
            self.scenes.append(s)
        if not self.scenes:
            raise UserError("no training scenes", field="data.scenes")
        # ``exposure`` (scene.Exposure or None: each scene's own): what the model is trained at
        self.renderers = [Renderer(s, size=tuple(size), device=device, backend=backend, exposure=exposure)
                          for s in self.scenes]
        share_tables(self.renderers)          # scenes of one geometry render in one rasterizer call
        self.surrogates: dict[int, object] = {}

    def set_gloss(self, table) -> None:
        """Render every scene's specular term with the per-class strength and shininess
        ``table`` [C, 2] (and diffuse exponent: [C, 3]; ``shading.class_gloss``; None: the
        scenes' own) from now on."""
        for r in self.renderers:
            r.gloss = table

    def set_exposure(self, exposure) -> None:
        """Render every scene at ``exposure`` (scene.Exposure; None: each scene's own) from now on."""
        for r in self.renderers:
            r.exposure_spec = exposure if exposure is not None else r.scene.exposure
            r._table._exposure = None       # the shared tables' cached curves are recomputed

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

    def batch(self, size: int, real, paired: bool = False, real_crops: int = 0) -> Batch:
        """``size`` view pairs (crops of ``crop`` size, the same window in both views) rendered
        with one rasterizer call per scene geometry, their exact correspondences, and
        ``size`` real frames; with ``real_crops`` > 0, ``size * real_crops`` labelled real
        crops (``Batch.detail_real``; the first ``size`` are ``Batch.real``)."""
        cw, ch = self.crop
        renderers, f1, f2, windows, ks = [], [], [], [], []
        for _ in range(size):
            k, a, b = self.draw()
            r = self.bank.renderers[k]
            # the same crop window in both views (they are at most max_offset frames apart)
            x0 = int(self.rng.integers(0, r.width - cw + 1))
            y0 = int(self.rng.integers(0, r.height - ch + 1))
            renderers.append(r)
            f1.append(a)
            f2.append(b)
            windows.append((x0, y0))
            ks.append(k)
        with torch.no_grad():
            groups = render_views(renderers + renderers, f1 + f2, windows + windows, (cw, ch))
            views1, views2, uvs, valids = [], [], [], []
            for idx, buf in groups:
                n1 = [i for i in idx if i < size]
                sel1 = [j for j, i in enumerate(idx) if i < size]
                sel2 = [next(j for j, i2 in enumerate(idx) if i2 == i + size) for i in n1]
                b1, b2 = select_buffers(buf, sel1), select_buffers(buf, sel2)
                scenes = [self.bank.scenes[ks[i]] for i in n1]
                views1.append(ViewGroup(n1, b1, scenes))
                views2.append(ViewGroup(n1, b2, scenes))
                r0 = renderers[n1[0]]
                s2 = torch.as_tensor([renderers[i].table_index for i in n1], dtype=torch.long, device=r0.device)
                t2 = torch.as_tensor([f2[i] for i in n1], dtype=torch.long, device=r0.device)
                verts2 = r0.table.vertices(s2, t2, [(renderers[i].table_index, f2[i]) for i in n1])
                corr = correspondences(b1.fragments, b2.fragments, verts2, r0.faces)
                uvs.append((n1, corr.uv))
                valids.append((n1, corr.valid))
            pairs = []
            if paired:
                for i in range(size):
                    x0, y0 = windows[i]
                    full = self._surrogate(ks[i]).render([f1[i]])[0]
                    pairs.append(full[:, y0:y0 + ch, x0:x0 + cw])
        order = lambda parts: torch.cat([t for _, t in parts])[_inverse([i for ii, _ in parts for i in ii])]  # noqa: E731
        device = self.bank.renderers[0].device
        detail = detail_labels = None
        if real_crops:
            frames, labels = real.sample_labelled(size * max(1, real_crops))
            detail, detail_labels = to_signed(frames.to(device)), labels.to(device)
            real_frames = detail[:size]
        else:
            real_frames = to_signed(real.sample(size).to(device))
        return Batch(
            sim1=to_network(gather_items(views1, "sim_rgb", size)), sim2=to_network(gather_items(views2, "sim_rgb", size)),
            views1=views1, views2=views2, scenes=[self.bank.scenes[k] for k in ks],
            uv12=order(uvs), valid12=order(valids), mask1=gather_items(views1, "mask", size)[:, None].float(),
            real=real_frames,
            light1=nhwc_to_nchw(gather_items(views1, "light", size)),
            light2=nhwc_to_nchw(gather_items(views2, "light", size)),
            labels1=gather_items(views1, "labels", size),
            paired=to_network(torch.cat(pairs)) if paired else None,
            real_labels=None if detail_labels is None else detail_labels[:size],
            detail_real=detail, detail_labels=detail_labels)

    def real_batch(self, size: int, real) -> Batch:
        """``size`` real frames and no rendered views (models that never see the sim render)."""
        frames = to_signed(real.sample(size).to(self.bank.renderers[0].device))
        return Batch(sim1=None, sim2=None, views1=[], views2=[], scenes=[], uv12=None, valid12=None, mask1=None,
                     real=frames)

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


def _inverse(order: list[int]) -> torch.Tensor:
    """Indices that put rows listed in ``order`` (item ids) back into item order."""
    inv = torch.empty(len(order), dtype=torch.long)
    inv[torch.as_tensor(order)] = torch.arange(len(order))
    return inv


def select_buffers(buf: FrameBuffers, index: list[int]) -> FrameBuffers:
    """The frames ``index`` of every buffer (fragments, light and sim render included)."""
    idx = torch.as_tensor(index, device=buf.mask.device)
    f = buf.fragments
    frags = Fragments(f.pix_to_face[idx], f.bary[idx], f.zbuf[idx], f.K[idx], f.w2c[idx], f.near, f.far)
    pick = lambda t: None if t is None else t[idx]  # noqa: E731
    return FrameBuffers([buf.frames[i] for i in index], frags, pick(buf.mask), pick(buf.labels),
                        pick(buf.object_ids), pick(buf.depth), pick(buf.positions), pick(buf.normals),
                        pick(buf.rest_positions), pick(buf.rest_normals), pick(buf.cam_pos), pick(buf.sim_rgb),
                        pick(buf.features), pick(buf.light))


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

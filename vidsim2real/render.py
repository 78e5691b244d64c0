"""Scene + frame range -> batched frame buffers (G-buffer, sim render, neural features).

This module only composes: scene (geometry per frame) -> raster (fragments) -> shading and
texture sampling. Images are NHWC, values in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .raster import Fragments, interpolate, rasterize
from .scene.camera import camera_center
from .scene.scene import Scene
from .shading import (class_gloss, exposure_curve, light_params, linear_to_srgb, lit, meter, scope_light_buffer,
                      srgb_to_linear)

METER_SIZE = 64     # longer side of the low-resolution renders that auto exposure meters
METER_STRIDE = 4    # auto exposure meters every 4th frame (log-interpolated between; the
                    # smoothing time constant spans ~10 frames, so nothing is lost)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. verts: [V, 3] or [B, V, 3]; faces: [F, 3] -> verts' shape."""
    v0, v1, v2 = verts[..., faces[:, 0], :], verts[..., faces[:, 1], :], verts[..., faces[:, 2], :]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    n = torch.zeros_like(verts)
    for i in range(3):
        n.index_add_(-2, faces[:, i], fn)
    return torch.nn.functional.normalize(n, dim=-1)


@dataclass
class FrameBuffers:
    """Everything rendered for B frames (NHWC; background: 0, or -1 for ids).

    frames: scene frame indices [B]; fragments: raster output (face ids, barycentrics, depth);
    mask [B, H, W] bool; labels [B, H, W] int64 class ids; object_ids [B, H, W] int64 (-1 bg);
    depth [B, H, W] metres; positions / normals [B, H, W, 3] world (normals face the camera);
    rest_positions / rest_normals [B, H, W, 3] object-local rest pose (what textures are
    attached to); cam_pos [B, 3]; light [B, H, W, 2] the scope light at each pixel, exposure
    included: (diffuse + ambient factor, specular radiance), so that any linear albedo a
    renders as ``a * light[..., :1] + light[..., 1:]``; sim_rgb [B, H, W, 3] sRGB in [0, 1]
    (None when not shaded); features [B, H, W, C] neural texture samples (None without textures).
    """

    frames: list
    fragments: Fragments
    mask: torch.Tensor
    labels: torch.Tensor
    object_ids: torch.Tensor
    depth: torch.Tensor
    positions: torch.Tensor
    normals: torch.Tensor
    rest_positions: torch.Tensor
    rest_normals: torch.Tensor
    cam_pos: torch.Tensor
    sim_rgb: torch.Tensor | None = None
    features: torch.Tensor | None = None
    light: torch.Tensor | None = None

    @property
    def face_ids(self) -> torch.Tensor:
        return self.fragments.pix_to_face

    @property
    def edges(self) -> torch.Tensor:
        """[B, H, W] bool: the pixels on a geometric edge (``edge_mask``), where a camera
        integrates over two surfaces and a rasterizer samples only one."""
        return edge_mask(self.object_ids, self.depth)


def edge_mask(object_ids: torch.Tensor, depth: torch.Tensor, jump: float = 0.1) -> torch.Tensor:
    """Pixels next to a geometric edge: object ids [B, H, W] (-1 background) and depth [B, H, W]
    -> [B, H, W] bool, true where the 3 x 3 neighbourhood holds another object (or the
    background), or depths of one object more than ``jump`` apart relative to the nearer
    (a fold occluding itself). Both sides of an edge are marked; the frame border is not an
    edge (a crop's neighbours outside it are its own)."""
    import torch.nn.functional as F
    pad = lambda t: F.pad(t[:, None], (1, 1, 1, 1), mode="replicate")  # noqa: E731
    ids = pad(object_ids.float())
    edge = F.max_pool2d(ids, 3, 1) != -F.max_pool2d(-ids, 3, 1)
    fg = object_ids >= 0
    d = depth.float()
    far = F.max_pool2d(pad(torch.where(fg, d, torch.zeros_like(d))), 3, 1)
    near = -F.max_pool2d(-pad(torch.where(fg, d, torch.full_like(d, float("inf")))), 3, 1)
    return (edge | (fg[:, None] & (far > near * (1.0 + jump))))[:, 0]


class GeometryTable:
    """Per-frame geometry, cameras, light and exposure of one or more scenes that share a
    ``Renderer.geometry_key`` (the same meshes in the same order), as tables on the device, so
    that any batch of (scene, frame) items is assembled with a handful of ops and no host sync.

    Per scene s and frame t: world vertices = base[s] + sum_g sig[s, t, g] * offset[s, g] (static
    objects and breathing ones: breathing is rest + s(t) * offset, one group g per breathing
    period and phase), then rigidly tracked objects placed by their per-frame transforms; other
    deformations (tracked and breathing, vertex arrays) are evaluated per item. Cameras
    w2c[s, t], camera centres, light parameters, albedos and (filled on first use) the exposure.
    """

    def __init__(self, renderers: list):
        r0 = renderers[0]
        dev = r0.device
        self.renderers = renderers
        self.device = dev
        T = max(r.scene.frames for r in renderers)
        self.frames = [r.scene.frames for r in renderers]
        objs0 = r0.scene.objects
        off = r0.scene.vertex_offsets
        V = int(off[-1])
        groups: list[tuple[float, float]] = []
        for r in renderers:
            for o in r.scene.objects:
                if o.deformation.kind == "breathing" and o.track is None:
                    key = (float(o.deformation.period), float(o.deformation.phase))
                    if key not in groups:
                        groups.append(key)
        G = max(len(groups), 1)
        base = np.zeros((len(renderers), V, 3))
        offset = np.zeros((len(renderers), G, V, 3))
        sig = np.zeros((len(renderers), T, G))
        self.tracked, self.fallback = [], []
        tracked_idx = [i for i in range(len(objs0)) if any(r.scene.objects[i].track is not None
                                                            and r.scene.objects[i].deformation.kind == "none"
                                                            for r in renderers)]
        fallback_idx = [i for i in range(len(objs0)) if i not in tracked_idx and any(
            r.scene.objects[i].deformation.kind == "vertices" or (r.scene.objects[i].track is not None
                                                                 and r.scene.objects[i].deformation.kind != "none")
            for r in renderers)]
        placements = {i: np.tile(np.eye(4), (len(renderers), T, 1, 1)) for i in tracked_idx}
        for k, r in enumerate(renderers):
            sc = r.scene
            times = np.arange(sc.frames) / sc.fps
            for i, o in enumerate(sc.objects):
                a, b = off[i], off[i + 1]
                if i in tracked_idx:
                    placements[i][k, :sc.frames] = np.stack([o.placement(t) for t in times])
                elif i in fallback_idx:
                    continue
                elif o.deformation.kind == "breathing":
                    d = o.deformation
                    g = groups.index((float(d.period), float(d.phase)))
                    base[k, a:b] = d.apply(o.mesh.vertices, o.placement(0.0), 0, -d.phase)           # s = 0
                    offset[k, g, a:b] = o.vertices(0, d.period / 2 - d.phase) - base[k, a:b]           # s = 1
                    sig[k, :sc.frames, g] = [d.signal(t) for t in times]
                else:
                    base[k, a:b] = o.vertices(0, 0.0)
        f64 = dict(dtype=torch.float64, device=dev)
        self.base, self.offset, self.sig = (torch.as_tensor(x, **f64) for x in (base, offset, sig))
        self.tracked = [(int(off[i]), int(off[i + 1]), torch.as_tensor(objs0[i].mesh.vertices, **f64),
                         torch.as_tensor(placements[i], **f64)) for i in tracked_idx]
        self.fallback = [(i, int(off[i]), int(off[i + 1])) for i in fallback_idx]
        w2c = np.tile(np.eye(4), (len(renderers), T, 1, 1))
        for k, r in enumerate(renderers):
            w2c[k, :r.scene.frames] = r.scene.world_to_camera()
        self.w2c = torch.as_tensor(w2c, **f64)
        self.cam = torch.as_tensor(camera_center(w2c.reshape(-1, 4, 4)).reshape(len(renderers), T, 3),
                                   dtype=torch.float32, device=dev)
        self.K = torch.stack([torch.as_tensor(r.intrinsics.K(), **f64) for r in renderers])
        self.light = torch.cat([r.lighting for r in renderers])                            # [S, 7]
        self.albedo = torch.stack([r.albedo for r in renderers])                          # [S, O, 3]
        self._exposure: torch.Tensor | None = None

    def exposure(self) -> torch.Tensor:
        """[S, T] exposure of every frame of every scene (fixed, or each renderer's auto curve)."""
        if self._exposure is None:
            e = torch.ones(len(self.renderers), self.w2c.shape[1])
            for k, r in enumerate(self.renderers):
                e[k, :r.scene.frames] = r.exposure(range(r.scene.frames))
            self._exposure = e.to(self.device)
        return self._exposure

    def vertices(self, s: torch.Tensor, f: torch.Tensor, frames: list[tuple[int, int]]) -> torch.Tensor:
        """World vertices [B, V, 3] float64 of items (scene s[i], frame f[i]); ``frames``: the same
        items as Python ints (for objects evaluated per item)."""
        v = self.base[s] + (self.sig[s, f][:, :, None, None] * self.offset[s]).sum(1)
        for a, b, rest, place in self.tracked:
            P = place[s, f]
            v[:, a:b] = rest @ P[:, :3, :3].transpose(1, 2) + P[:, None, :3, 3]
        for i, a, b in self.fallback:
            v[:, a:b] = torch.as_tensor(np.stack([self.renderers[k].scene.objects[i].vertices(
                t, self.renderers[k].scene.time(t)) for k, t in frames]), dtype=v.dtype, device=v.device)
        return v


class Renderer:
    """Renders a scene's frames at a given size on a device.

    Geometry, cameras and light come from a GeometryTable (per-frame tables on the device), so
    a batch of frames is assembled with a handful of ops; normals are recomputed per frame.
    ``exposure`` overrides the scene's exposure (e.g. ``Exposure("fixed", 1.0)``).
    """

    def __init__(self, scene: Scene, size: tuple[int, int] | None = None, device: str | torch.device = "cpu",
                 backend: str = "auto", cull_backfaces: bool = False, exposure=None):
        self.scene = scene
        self.exposure_spec = exposure if exposure is not None else scene.exposure
        self._metered: dict[int, list[float]] = {}
        self.device = torch.device(device)
        self.backend = backend
        self.cull_backfaces = cull_backfaces
        W, H = size if size is not None else (scene.intrinsics.width, scene.intrinsics.height)
        self.width, self.height = int(W), int(H)
        self.intrinsics = scene.camera(self.width, self.height)
        dev = self.device
        self.faces = torch.as_tensor(scene.faces, device=dev)
        self.face_object = torch.as_tensor(scene.face_object, device=dev)
        self.object_class = torch.as_tensor(scene.object_class, device=dev)
        self.rest_vertices = torch.as_tensor(scene.rest_vertices, dtype=torch.float32, device=dev)
        self.rest_normals = torch.cat([
            vertex_normals(torch.as_tensor(o.mesh.vertices, dtype=torch.float64), torch.as_tensor(o.mesh.faces))
            for o in scene.objects]).to(device=dev, dtype=torch.float32)
        self.rest_attrs = torch.cat([self.rest_vertices, self.rest_normals], -1)      # [V, 6]
        self.albedo = srgb_to_linear(torch.as_tensor(np.stack([o.color for o in scene.objects]),
                                                     dtype=torch.float32, device=dev))
        self.lighting = light_params([scene.lighting], dev)                          # [1, 7]
        self.gloss: torch.Tensor | None = None        # [C, 2 or 3] per-class (k_s, s[, diffuse m]), else the scene's
        self._table: GeometryTable | None = None      # built on first use (or shared by a SceneBank)
        self.table_index = 0

    @property
    def geometry_key(self) -> tuple:
        """Renderers with equal keys draw the same faces with the same ids, labels and rest
        pose (the same meshes in the same order at the same size, one anatomy, so one texture
        set): their frames can share one rasterizer call (``render_views``)."""
        return (self.scene.anatomy, tuple((o.name, o.mesh.digest, o.class_id) for o in self.scene.objects),
                self.width, self.height, str(self.device), self.backend, self.cull_backfaces)

    # -- geometry ----------------------------------------------------------------------------
    @property
    def table(self) -> GeometryTable:
        """This scene's geometry table (shared with other scenes of its geometry in a SceneBank)."""
        if self._table is None:
            self._table, self.table_index = GeometryTable([self]), 0
        return self._table

    def geometry(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World vertices [V, 3] float64 and unit normals [V, 3] float32 at ``frame``."""
        v, n = self.geometry_batch([frame])
        return v[0], n[0]

    def geometry_batch(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """World vertices [B, V, 3] float64 and unit normals [B, V, 3] float32 at ``frames``."""
        frames = [self.scene.check_frame(int(f)) for f in frames]
        s = torch.full((len(frames),), self.table_index, dtype=torch.long, device=self.device)
        f = torch.as_tensor(frames, dtype=torch.long, device=self.device)
        v = self.table.vertices(s, f, [(self.table_index, t) for t in frames])
        return v, vertex_normals(v, self.faces).float()

    def cameras(self, frames, windows=None) -> tuple[torch.Tensor, torch.Tensor]:
        """K [B, 3, 3] and w2c [B, 4, 4] (float64) for ``frames`` at the render size; with
        ``windows`` [(x0, y0), ...] the intrinsics of those crops (principal point shifted)."""
        t = self.table
        s = torch.full((len(frames),), self.table_index, dtype=torch.long, device=self.device)
        return _cameras(t, s, torch.as_tensor([int(f) for f in frames], dtype=torch.long, device=self.device),
                        windows)

    # -- rendering ---------------------------------------------------------------------------
    def gbuffer(self, frames) -> FrameBuffers:
        """Rasterize ``frames`` (list of scene frame indices) and interpolate the G-buffer."""
        frames = [self.scene.check_frame(int(f)) for f in frames]
        s = torch.full((len(frames),), self.table_index, dtype=torch.long, device=self.device)
        return _gbuffer(self, s, torch.as_tensor(frames, dtype=torch.long, device=self.device),
                        [(self.table_index, f) for f in frames])

    def light(self, buf: FrameBuffers, exposure=None, gloss: torch.Tensor | None = None) -> torch.Tensor:
        """The scope light [B, H, W, 2] of ``buf`` with this scene's lighting and exposure
        (``exposure``: that ``Exposure`` instead), its specular term with the per-class
        strength and shininess of ``gloss`` [C, 2] ([C, 3]: and a diffuse exponent;
        ``shading.class_gloss``; None: this renderer's ``gloss``, where set, else the scene's)."""
        e = self.exposure(buf.frames, exposure)
        params = self.lighting.expand(len(buf.frames), -1)
        gloss = self.gloss if gloss is None else gloss
        return scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params,
                                  e.to(device=buf.positions.device),
                                  None if gloss is None else class_gloss(buf.labels, params, gloss))

    def shade_linear(self, buf: FrameBuffers) -> torch.Tensor:
        """Linear radiance of the sim render at exposure 1: [B, H, W, 3]."""
        albedo = self.albedo[buf.object_ids.clamp(min=0)]
        light = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos,
                                   self.lighting.expand(len(buf.frames), -1), None)
        return lit(albedo, light)

    def shade(self, buf: FrameBuffers) -> torch.Tensor:
        """The simulated render of ``buf``: [B, H, W, 3] sRGB in [0, 1] (exposure applied);
        also fills ``buf.light``."""
        buf.light = self.light(buf)
        return linear_to_srgb(lit(self.albedo[buf.object_ids.clamp(min=0)], buf.light))

    def exposure(self, frames, spec=None) -> torch.Tensor:
        """Exposure [B] (float32) of scene frames ``frames`` under ``spec`` (an ``Exposure``;
        None: this renderer's): fixed, or the auto-exposure (or protect) curve.

        The curve is causal and metered at low resolution at fixed frames (every
        METER_STRIDE-th), so a frame's exposure depends neither on the frames rendered with it
        nor on the output size: rendering frames 10:20 alone gives the same pixels as
        rendering the whole trajectory."""
        spec = self.exposure_spec if spec is None else spec
        frames = [self.scene.check_frame(int(f)) for f in frames]
        if spec.mode == "fixed" or not frames:
            return torch.full((len(frames),), float(spec.value))
        curve = exposure_curve(self.metered(max(frames)), spec, self.scene.fps)
        return torch.as_tensor(curve[frames], dtype=torch.float32)

    def metered(self, last: int) -> np.ndarray:
        """Auto-exposure metering [last + 1, 2] (``shading.meter``) of scene frames 0..last at
        exposure 1: measured at every METER_STRIDE-th frame (and the final frame),
        log-interpolated in between."""
        T = self.scene.frames
        points = list(range(0, T, METER_STRIDE))
        if points[-1] != T - 1:
            points.append(T - 1)
        k = next(i for i, p in enumerate(points) if p >= last)
        # the whole trajectory at once on first use: later batches of a video need no metering
        todo = [p for p in points if p not in self._metered]
        if todo:
            s = METER_SIZE / max(self.width, self.height)
            small = Renderer(self.scene, size=(max(8, round(self.width * s)), max(8, round(self.height * s))),
                             device=self.device, backend=self.backend, cull_backfaces=self.cull_backfaces)
            with torch.no_grad():
                for i in range(0, len(todo), 16):
                    buf = small.gbuffer(todo[i:i + 16])
                    for p, m in zip(todo[i:i + 16], meter(small.shade_linear(buf), buf.mask).cpu().tolist()):
                        self._metered[p] = m
        xp = np.array(points[:k + 1], dtype=np.float64)
        fp = np.log(np.maximum(np.array([self._metered[p] for p in points[:k + 1]]), 1e-8))
        t = np.arange(last + 1)
        return np.exp(np.stack([np.interp(t, xp, fp[:, j]) for j in range(fp.shape[1])], -1))

    def at_exposure(self, buf: FrameBuffers, exposure) -> tuple[torch.Tensor, torch.Tensor]:
        """(sim render [B, H, W, 3], light [B, H, W, 2]) of frames this renderer drew (``buf``,
        light filled) as if rendered at ``exposure`` (an ``Exposure``, e.g. ``Exposure("fixed", v)``;
        None: as drawn). The light is linear in the exposure, so this is exact and costs no second
        rasterization."""
        if exposure is None or exposure == self.exposure_spec:
            return buf.sim_rgb, buf.light
        now = self.exposure(buf.frames).to(buf.light)
        light = buf.light * (self.exposure(buf.frames, exposure).to(buf.light) / now)[:, None, None, None]
        return self.under(buf, light), light

    def under(self, buf: FrameBuffers, light: torch.Tensor) -> torch.Tensor:
        """The sim render [B, H, W, 3] sRGB of ``buf``'s objects under ``light`` [B, H, W, 2]."""
        return linear_to_srgb(lit(self.albedo[buf.object_ids.clamp(min=0)].to(light), light))

    def render(self, frames, textures=None) -> FrameBuffers:
        """G-buffer + sim render (+ neural features when ``textures`` is given) of ``frames``."""
        buf = self.gbuffer(frames)
        buf.sim_rgb = self.shade(buf)
        if textures is not None:
            buf.features = textures.sample(buf, self.scene, backend=self.backend)
        return buf


def _cameras(table: GeometryTable, s: torch.Tensor, f: torch.Tensor, windows=None):
    K = table.K[s]
    if windows is not None:       # crops: the principal point moves by the window's corner
        shift = torch.zeros_like(K)
        shift[:, :2, 2] = torch.as_tensor(windows, dtype=K.dtype, device=K.device)
        K = K - shift
    return K, table.w2c[s, f]


def _gbuffer(r0: Renderer, s: torch.Tensor, f: torch.Tensor, items: list, windows=None, crop=None) -> FrameBuffers:
    """One rasterizer call and one interpolation for items (scene s[i], frame f[i]) of
    ``r0``'s geometry table (``items``: the same as Python ints). With ``windows`` [(x0, y0)]
    and ``crop`` (w, h), item i is the crop at (x0, y0) of its full view (the same pixels,
    rendered alone)."""
    table = r0.table
    W, H = crop if crop is not None else (r0.width, r0.height)
    verts = table.vertices(s, f, items)
    normals = vertex_normals(verts, r0.faces).float()
    K, w2c = _cameras(table, s, f, windows)
    frags = rasterize(verts, r0.faces, K, w2c, (H, W), r0.intrinsics.near, r0.intrinsics.far,
                      cull_backfaces=r0.cull_backfaces, backend=r0.backend, validate=False)
    mask = frags.mask
    face = frags.pix_to_face.clamp(min=0)
    obj = torch.where(mask, r0.face_object[face], torch.full_like(face, -1))
    labels = torch.where(mask, r0.object_class[obj.clamp(min=0)], torch.zeros_like(face))
    B = len(items)
    attrs = torch.cat([verts.float(), normals, r0.rest_attrs.expand(B, -1, -1)], -1)     # [B, V, 12]
    a = interpolate(attrs, frags, r0.faces)
    positions, nrm = a[..., 0:3], torch.nn.functional.normalize(a[..., 3:6], dim=-1)
    rest_pos, rest_nrm = a[..., 6:9], torch.nn.functional.normalize(a[..., 9:12], dim=-1)
    cam_pos = table.cam[s, f]
    # normals facing the camera (two-sided surfaces): what shading and exports want
    view = cam_pos[:, None, None, :] - positions
    nrm = torch.where(((nrm * view).sum(-1, keepdim=True) < 0), -nrm, nrm)
    return FrameBuffers([t for _, t in items], frags, mask, labels, obj, frags.zbuf, positions, nrm, rest_pos,
                        rest_nrm, cam_pos)


def render_views(renderers: list[Renderer], frames: list[int], windows=None,
                 crop=None) -> list[tuple[list[int], FrameBuffers]]:
    """Render item i = frame ``frames[i]`` of ``renderers[i]`` (G-buffer, light, sim render),
    with one rasterizer call per geometry table (all views of a training batch drawn from
    scenes of one anatomy share one: see ``share_tables``). ``windows`` [(x0, y0)] and
    ``crop`` (w, h): render only those crops of the views. Returns [(item indices, buffers)]."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(renderers):
        groups.setdefault(id(r.table), []).append(i)
    out = []
    for idx in groups.values():
        r0 = renderers[idx[0]]
        items = [(renderers[i].table_index, renderers[i].scene.check_frame(int(frames[i]))) for i in idx]
        s = torch.as_tensor([k for k, _ in items], dtype=torch.long, device=r0.device)
        f = torch.as_tensor([t for _, t in items], dtype=torch.long, device=r0.device)
        buf = _gbuffer(r0, s, f, items, None if windows is None else [windows[i] for i in idx], crop)
        table = r0.table
        gloss = r0.gloss
        buf.light = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, table.light[s],
                                       table.exposure()[s, f],
                                       None if gloss is None else class_gloss(buf.labels, table.light[s], gloss))
        obj = buf.object_ids.clamp(min=0)
        alb = torch.gather(table.albedo[s], 1, obj.reshape(len(idx), -1, 1).expand(-1, -1, 3)).view(*obj.shape, 3)
        buf.sim_rgb = linear_to_srgb(lit(alb, buf.light))
        out.append((idx, buf))
    return out


def share_tables(renderers: list[Renderer]) -> None:
    """Give renderers with one ``geometry_key`` one GeometryTable (a SceneBank does this), so
    their frames can be rendered together."""
    groups: dict[tuple, list[Renderer]] = {}
    for r in renderers:
        groups.setdefault(r.geometry_key, []).append(r)
    for rs in groups.values():
        table = GeometryTable(rs)
        for k, r in enumerate(rs):
            r._table, r.table_index = table, k

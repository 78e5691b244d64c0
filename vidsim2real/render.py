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
from .shading import (exposure_curve, light_params, linear_to_srgb, lit, meter, scope_light_buffer,
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


class Renderer:
    """Renders a scene's frames at a given size on a device.

    Geometry is computed for all frames of a call at once: static objects once (cached),
    rigidly moving ones by transforming the rest pose, breathing ones as rest + s(t) * offset,
    vertex-array ones from their arrays; normals of deforming objects per frame.
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
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._breathing: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._obj_faces = [torch.as_tensor(o.mesh.faces, device=dev) for o in scene.objects]

    @property
    def geometry_key(self) -> tuple:
        """Renderers with equal keys draw the same faces with the same ids, labels and rest
        pose (the same meshes in the same order at the same size, one anatomy, so one texture
        set): their frames can share one rasterizer call (``render_views``)."""
        return (self.scene.anatomy, tuple((o.name, o.mesh.digest, o.class_id) for o in self.scene.objects),
                self.width, self.height, str(self.device), self.backend, self.cull_backfaces)

    # -- geometry ----------------------------------------------------------------------------
    def geometry(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World vertices [V, 3] float64 and unit normals [V, 3] float32 at ``frame``."""
        v, n = self.geometry_batch([frame])
        return v[0], n[0]

    def geometry_batch(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """World vertices [B, V, 3] float64 and unit normals [B, V, 3] float32 at ``frames``."""
        scene, dev = self.scene, self.device
        frames = [scene.check_frame(int(f)) for f in frames]
        B = len(frames)
        times = [scene.time(f) for f in frames]
        verts, normals = [], []
        off = scene.vertex_offsets
        for i, o in enumerate(scene.objects):
            rest_n = self.rest_normals[off[i]:off[i + 1]]
            if o.is_static:
                if i not in self._static:
                    T = torch.as_tensor(o.placement(0.0), dtype=torch.float64, device=dev)
                    rest = torch.as_tensor(o.mesh.vertices, dtype=torch.float64, device=dev)
                    self._static[i] = (rest @ T[:3, :3].T + T[:3, 3], rest_n @ T[:3, :3].T.float())
                v, n = self._static[i]
                v, n = v.expand(B, -1, -1), n.expand(B, -1, -1)
            elif o.deformation.kind == "none":  # rigid: rotate the rest normals
                T = torch.as_tensor(np.stack([o.placement(t) for t in times]), dtype=torch.float64, device=dev)
                rest = torch.as_tensor(o.mesh.vertices, dtype=torch.float64, device=dev)
                v = rest @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
                n = rest_n @ T[:, :3, :3].transpose(1, 2).float()
            elif o.deformation.kind == "breathing" and o.track is None:
                # x(t) = base + s(t) * offset (the falloff weights use the rest-pose world position)
                if i not in self._breathing:
                    base = o.deformation.apply(o.mesh.vertices, o.placement(0.0), 0, -o.deformation.phase)
                    full = o.vertices(0, o.deformation.period / 2 - o.deformation.phase)     # s = 1
                    self._breathing[i] = (torch.as_tensor(base, dtype=torch.float64, device=dev),
                                          torch.as_tensor(full - base, dtype=torch.float64, device=dev))
                base, offset = self._breathing[i]
                sig = torch.as_tensor([o.deformation.signal(t) for t in times], dtype=torch.float64, device=dev)
                v = base + sig[:, None, None] * offset
                n = vertex_normals(v, self._obj_faces[i]).float()
            else:
                v = torch.as_tensor(np.stack([o.vertices(f, t) for f, t in zip(frames, times)]), dtype=torch.float64,
                                    device=dev)
                n = vertex_normals(v, self._obj_faces[i]).float()
            verts.append(v)
            normals.append(n)
        return torch.cat(verts, 1), torch.cat(normals, 1)

    def cameras(self, frames, windows=None) -> tuple[torch.Tensor, torch.Tensor]:
        """K [B, 3, 3] and w2c [B, 4, 4] (float64) for ``frames`` at the render size; with
        ``windows`` [(x0, y0), ...] the intrinsics of those crops (principal point shifted)."""
        K = torch.as_tensor(self.intrinsics.K(), dtype=torch.float64, device=self.device).expand(len(frames), 3, 3)
        w2c = torch.as_tensor(self.scene.world_to_camera(frames), dtype=torch.float64, device=self.device)
        if windows is not None:
            shift = torch.zeros(len(frames), 3, 3, dtype=torch.float64, device=self.device)
            shift[:, :2, 2] = torch.as_tensor(windows, dtype=torch.float64, device=self.device)
            K = K - shift
        return K, w2c

    # -- rendering ---------------------------------------------------------------------------
    def gbuffer(self, frames) -> FrameBuffers:
        """Rasterize ``frames`` (list of scene frame indices) and interpolate the G-buffer."""
        return _gbuffer([self] * len(frames), [int(f) for f in frames])

    def light(self, buf: FrameBuffers) -> torch.Tensor:
        """The scope light [B, H, W, 2] of ``buf`` with this scene's lighting and exposure."""
        e = self.exposure(buf.frames).to(device=buf.positions.device)
        return scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos,
                                  self.lighting.expand(len(buf.frames), -1), e)

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

    def exposure(self, frames) -> torch.Tensor:
        """Exposure [B] (float32) of scene frames ``frames``: fixed, or the auto-exposure curve.

        The curve is causal and metered at low resolution at fixed frames (every
        METER_STRIDE-th), so a frame's exposure depends neither on the frames rendered with it
        nor on the output size: rendering frames 10:20 alone gives the same pixels as
        rendering the whole trajectory."""
        spec = self.exposure_spec
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
        todo = [p for p in points[:k + 1] if p not in self._metered]
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

    def render(self, frames, textures=None) -> FrameBuffers:
        """G-buffer + sim render (+ neural features when ``textures`` is given) of ``frames``."""
        buf = self.gbuffer(frames)
        buf.sim_rgb = self.shade(buf)
        if textures is not None:
            buf.features = textures.sample(buf, self.scene, backend=self.backend)
        return buf


def _gbuffer(renderers: list[Renderer], frames: list[int], windows=None, crop=None) -> FrameBuffers:
    """One rasterizer call for frames of renderers with one ``geometry_key`` (item i: frame
    ``frames[i]`` of ``renderers[i]``), one interpolation of all vertex attributes. With
    ``windows`` [(x0, y0)] and ``crop`` (w, h), item i is the crop at (x0, y0) of its full view
    (the same pixels, rendered alone)."""
    r0 = renderers[0]
    W, H = crop if crop is not None else (r0.width, r0.height)
    geo = {}
    for r, f in zip(renderers, frames):           # geometry per renderer, all its frames at once
        geo.setdefault(id(r), (r, []))[1].append(f)
    parts = {k: r.geometry_batch(fs) for k, (r, fs) in geo.items()}
    cursor = {k: 0 for k in geo}
    verts, normals, K, w2c, cam = [], [], [], [], []
    for r, f in zip(renderers, frames):
        k = id(r)
        v, n = parts[k]
        verts.append(v[cursor[k]])
        normals.append(n[cursor[k]])
        cursor[k] += 1
    Ks, w2cs = zip(*(r.cameras([f], None if windows is None else [windows[i]])
                     for i, (r, f) in enumerate(zip(renderers, frames))))
    verts, normals, K, w2c = torch.stack(verts), torch.stack(normals), torch.cat(Ks), torch.cat(w2cs)
    frags = rasterize(verts, r0.faces, K, w2c, (H, W), r0.intrinsics.near, r0.intrinsics.far,
                      cull_backfaces=r0.cull_backfaces, backend=r0.backend)
    mask = frags.mask
    face = frags.pix_to_face.clamp(min=0)
    obj = torch.where(mask, r0.face_object[face], torch.full_like(face, -1))
    labels = torch.where(mask, r0.object_class[obj.clamp(min=0)], torch.zeros_like(face))
    B = len(frames)
    attrs = torch.cat([verts.float(), normals, r0.rest_attrs.expand(B, -1, -1)], -1)     # [B, V, 12]
    a = interpolate(attrs, frags, r0.faces)
    positions, nrm = a[..., 0:3], torch.nn.functional.normalize(a[..., 3:6], dim=-1)
    rest_pos, rest_nrm = a[..., 6:9], torch.nn.functional.normalize(a[..., 9:12], dim=-1)
    cam_pos = torch.as_tensor(camera_center(w2c.cpu().numpy()), dtype=torch.float32, device=r0.device)
    # normals facing the camera (two-sided surfaces): what shading and exports want
    view = cam_pos[:, None, None, :] - positions
    nrm = torch.where(((nrm * view).sum(-1, keepdim=True) < 0), -nrm, nrm)
    return FrameBuffers(list(frames), frags, mask, labels, obj, frags.zbuf, positions, nrm, rest_pos, rest_nrm,
                        cam_pos)


def render_views(renderers: list[Renderer], frames: list[int], windows=None,
                 crop=None) -> list[tuple[list[int], FrameBuffers]]:
    """Render item i = frame ``frames[i]`` of ``renderers[i]`` (G-buffer, light, sim render),
    with one rasterizer call per group of renderers sharing a ``geometry_key`` (all views of
    a training batch drawn from scenes of one anatomy). ``windows`` [(x0, y0)] and ``crop``
    (w, h): render only those crops of the views. Returns [(item indices, buffers)]."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(renderers):
        groups.setdefault(r.geometry_key, []).append(i)
    out = []
    for idx in groups.values():
        rs, fs = [renderers[i] for i in idx], [frames[i] for i in idx]
        buf = _gbuffer(rs, fs, None if windows is None else [windows[i] for i in idx], crop)
        params = torch.cat([r.lighting for r in rs])
        e = torch.cat([r.exposure([f]) for r, f in zip(rs, fs)]).to(rs[0].device)
        buf.light = scope_light_buffer(buf.positions, buf.normals, buf.mask, buf.cam_pos, params, e)
        albedo = torch.stack([r.albedo for r in rs])                            # [B, O, 3]
        obj = buf.object_ids.clamp(min=0)
        alb = torch.gather(albedo, 1, obj.reshape(len(rs), -1, 1).expand(-1, -1, 3)).view(*obj.shape, 3)
        buf.sim_rgb = linear_to_srgb(lit(alb, buf.light))
        out.append((idx, buf))
    return out

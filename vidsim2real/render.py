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
from .shading import exposure_curve, linear_to_srgb, meter, shade, srgb_to_linear

METER_SIZE = 64     # longer side of the low-resolution renders that auto exposure meters
METER_STRIDE = 4    # auto exposure meters every 4th frame (log-interpolated between; the
                    # smoothing time constant spans ~10 frames, so nothing is lost)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. verts: [V, 3]; faces: [F, 3] -> [V, 3]."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    n = torch.zeros_like(verts)
    for i in range(3):
        n.index_add_(0, faces[:, i], fn)
    return torch.nn.functional.normalize(n, dim=-1)


@dataclass
class FrameBuffers:
    """Everything rendered for B frames (NHWC; background: 0, or -1 for ids).

    frames: scene frame indices [B]; fragments: raster output (face ids, barycentrics, depth);
    mask [B, H, W] bool; labels [B, H, W] int64 class ids; object_ids [B, H, W] int64 (-1 bg);
    depth [B, H, W] metres; positions / normals [B, H, W, 3] world (normals face the camera);
    rest_positions / rest_normals [B, H, W, 3] object-local rest pose (what textures are
    attached to); sim_rgb [B, H, W, 3] sRGB in [0, 1] (None when not shaded); features
    [B, H, W, C] neural texture samples (None without textures).
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

    @property
    def face_ids(self) -> torch.Tensor:
        return self.fragments.pix_to_face


class Renderer:
    """Renders a scene's frames at a given size on a device.

    Geometry is cached per object: static objects once, rigidly moving ones by transforming
    the rest pose, deforming ones recomputed (with normals) per frame.
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
        self.vertex_object = torch.as_tensor(scene.vertex_object, device=dev)
        self.rest_vertices = torch.as_tensor(scene.rest_vertices, dtype=torch.float32, device=dev)
        self.rest_normals = torch.cat([
            vertex_normals(torch.as_tensor(o.mesh.vertices, dtype=torch.float64), torch.as_tensor(o.mesh.faces))
            for o in scene.objects]).to(device=dev, dtype=torch.float32)
        self.albedo = srgb_to_linear(torch.as_tensor(np.stack([o.color for o in scene.objects]),
                                                     dtype=torch.float32, device=dev))
        self._static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._obj_faces = [torch.as_tensor(o.mesh.faces, device=dev) for o in scene.objects]

    # -- geometry ----------------------------------------------------------------------------
    def geometry(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World vertices [V, 3] float64 and unit normals [V, 3] float32 at ``frame``."""
        scene = self.scene
        frame = scene.check_frame(frame)
        t = scene.time(frame)
        verts, normals = [], []
        off = scene.vertex_offsets
        for i, o in enumerate(scene.objects):
            if o.is_static and i in self._static:
                v, n = self._static[i]
            elif o.deformation.kind == "none":  # rigid: rotate the rest normals
                T = torch.as_tensor(o.placement(t), dtype=torch.float64, device=self.device)
                rest = torch.as_tensor(o.mesh.vertices, dtype=torch.float64, device=self.device)
                v = rest @ T[:3, :3].T + T[:3, 3]
                n = self.rest_normals[off[i]:off[i + 1]] @ T[:3, :3].T.float()
            else:
                v = torch.as_tensor(o.vertices(frame, t), dtype=torch.float64, device=self.device)
                n = vertex_normals(v, self._obj_faces[i]).float()
            if o.is_static:
                self._static[i] = (v, n)
            verts.append(v)
            normals.append(n)
        return torch.cat(verts), torch.cat(normals)

    def cameras(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """K [B, 3, 3] and w2c [B, 4, 4] (float64) for ``frames`` at the render size."""
        K = torch.as_tensor(self.intrinsics.K(), dtype=torch.float64, device=self.device)
        w2c = torch.as_tensor(self.scene.world_to_camera(frames), dtype=torch.float64, device=self.device)
        return K.expand(len(frames), 3, 3), w2c

    # -- rendering ---------------------------------------------------------------------------
    def gbuffer(self, frames) -> FrameBuffers:
        """Rasterize ``frames`` (list of scene frame indices) and interpolate the G-buffer."""
        frames = [int(f) for f in frames]
        geo = [self.geometry(f) for f in frames]
        verts = torch.stack([g[0] for g in geo])
        normals = torch.stack([g[1] for g in geo])
        K, w2c = self.cameras(frames)
        frags = rasterize(verts, self.faces, K, w2c, (self.height, self.width), self.intrinsics.near,
                          self.intrinsics.far, cull_backfaces=self.cull_backfaces, backend=self.backend)
        mask = frags.mask
        face = frags.pix_to_face.clamp(min=0)
        obj = torch.where(mask, self.face_object[face], torch.full_like(face, -1))
        labels = torch.where(mask, self.object_class[obj.clamp(min=0)], torch.zeros_like(face))
        positions = interpolate(verts.float(), frags, self.faces)
        nrm = torch.nn.functional.normalize(interpolate(normals, frags, self.faces), dim=-1)
        rest_pos = interpolate(self.rest_vertices, frags, self.faces)
        rest_nrm = torch.nn.functional.normalize(interpolate(self.rest_normals, frags, self.faces), dim=-1)
        cam_pos = torch.as_tensor(camera_center(self.scene.world_to_camera(frames)), dtype=torch.float32,
                                  device=self.device)
        # normals facing the camera (two-sided surfaces): what shading and exports want
        view = cam_pos[:, None, None, :] - positions
        nrm = torch.where(((nrm * view).sum(-1, keepdim=True) < 0), -nrm, nrm)
        return FrameBuffers(frames, frags, mask, labels, obj, frags.zbuf, positions, nrm, rest_pos, rest_nrm, cam_pos)

    def shade_linear(self, buf: FrameBuffers) -> torch.Tensor:
        """Linear radiance of the sim render at exposure 1: [B, H, W, 3]."""
        albedo = self.albedo[buf.object_ids.clamp(min=0)]
        return shade(albedo, buf.positions, buf.normals, buf.mask, buf.cam_pos, self.scene.lighting)

    def shade(self, buf: FrameBuffers) -> torch.Tensor:
        """The simulated render of ``buf``: [B, H, W, 3] sRGB in [0, 1] (exposure applied)."""
        e = self.exposure(buf.frames).to(device=buf.positions.device)
        return linear_to_srgb(self.shade_linear(buf) * e[:, None, None, None])

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
            buf.features = textures.sample(buf, self.scene)
        return buf

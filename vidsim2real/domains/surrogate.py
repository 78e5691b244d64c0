"""A procedural surrogate for real laparoscopic video, view-consistent by construction.

Tissue appearance is a solid (3D) procedural texture evaluated at *rest-pose* surface points
(object-local metres), so every view and every breathing phase sees the same albedo at the
same point of tissue. On top come what makes endoscopic video look like video: bump-mapped
wet specular highlights from the scope light, strong distance falloff, vignetting, an optional
circular scope mask, mild optical blur, sensor noise (fresh per frame, as in a real sensor),
per-video colour grading and per-"patient" tissue colour variation, all seeded.

Tissue models are chosen by class name (see ``TISSUES``): liver, fat/omentum, abdominal wall
/ peritoneum, stomach / duodenum / bowel, pancreas, spleen, instrument; anything else gets a
mottled version of its base colour.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..layout import nchw_to_nhwc, nhwc_to_nchw
from ..render import FrameBuffers, Renderer
from ..scene.scene import Scene
from ..shading import linear_to_srgb, srgb_to_linear
from .noise import cell_random, fbm, perlin, ridged, worley

# class-name keywords -> tissue model
TISSUES = {
    "liver": ("liver",),
    "fat": ("fat", "omentum", "mesentery"),
    "wall": ("wall", "peritoneum", "diaphragm"),
    "bowel": ("stomach", "duodenum", "intestine", "bowel", "colon", "gallbladder"),
    "pancreas": ("pancreas",),
    "spleen": ("spleen",),
    "instrument": ("instrument", "tool", "grasper", "trocar"),
}


def tissue_of(class_name: str) -> str:
    name = class_name.lower()
    for tissue, keys in TISSUES.items():
        if any(k in name for k in keys):
            return tissue
    return "generic"


def _srgb(c) -> torch.Tensor:
    return srgb_to_linear(torch.as_tensor(c, dtype=torch.float32))


@dataclass
class PatientStyle:
    """Per-patient variation (seeded): tissue tint gains, pattern seed, vessel density."""

    seed: int
    tint: dict = field(default_factory=dict)      # tissue -> [3] multiplicative gains
    vessel_density: float = 1.0
    fat_amount: float = 0.3

    @staticmethod
    def sample(seed: int) -> "PatientStyle":
        rng = np.random.default_rng([seed, 1])
        tint = {t: (1.0 + rng.normal(0, 0.07, 3)).clip(0.8, 1.2).tolist() for t in list(TISSUES) + ["generic"]}
        return PatientStyle(seed, tint, float(rng.uniform(0.7, 1.3)), float(rng.uniform(0.15, 0.5)))


@dataclass
class VideoStyle:
    """Per-video camera and grading (seeded): white balance, exposure, gamma, contrast,
    saturation, vignetting, blur, sensor noise, scope mask radius."""

    seed: int
    white_balance: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    exposure: float = 1.0
    gamma: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    vignette: float = 0.35
    blur_sigma: float = 0.7
    noise_sigma: float = 0.012
    mask_radius: float = 0.62      # fraction of the image diagonal / 2... of min(W, H) (see apply)

    @staticmethod
    def sample(seed: int) -> "VideoStyle":
        rng = np.random.default_rng([seed, 2])
        return VideoStyle(seed, [float(rng.uniform(0.92, 1.1)), 1.0, float(rng.uniform(0.85, 1.05))],
                          float(rng.uniform(0.85, 1.2)), float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.95, 1.15)),
                          float(rng.uniform(0.9, 1.25)), float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 0.9)),
                          float(rng.uniform(0.006, 0.02)), float(rng.uniform(0.55, 0.7)))


@dataclass
class Material:
    """Per-pixel material of a set of surface points (linear albedo, bump height, specular)."""

    albedo: torch.Tensor       # [N, 3] linear RGB
    height: torch.Tensor       # [N] metres-ish scale factor for bump mapping (unitless)
    ks: torch.Tensor           # [N] glossy specular strength
    shininess: float
    wet: torch.Tensor          # [N] strength of sharp wet glints


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t[..., None]


class SurrogateAppearance:
    """Solid textures per tissue. ``material(p, tissue, base_color)`` with p [N, 3] rest-pose metres."""

    def __init__(self, patient: PatientStyle):
        self.patient = patient
        self.seed = int(patient.seed) * 7919
        self.models = {t: getattr(self, f"_{t}") for t in [*TISSUES, "generic"]}   # one model per tissue

    def vessels(self, p: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
        """Branching vessel mask in [0, 1]: a warped ridge network, big trunks plus fine capillaries."""
        warp = torch.stack([fbm(p / (scale * 2.0), seed + i * 13, 2) for i in range(3)], -1) * scale * 0.8
        q = p + warp
        big = ridged(q / (scale * 1.6), seed, octaves=2, sharpness=22.0)
        small = ridged(q / (scale * 0.55), seed + 5, octaves=2, sharpness=40.0)
        patchy = (fbm(p / (scale * 3.0), seed + 9, 2) * 2.0 + 0.2).clamp(0.0, 1.0)   # capillaries in patches
        d = self.patient.vessel_density
        return (big * 0.9 + small * 0.6 * d * patchy).clamp(0.0, 1.0)

    def height(self, p: torch.Tensor, tissue: str, base_color) -> torch.Tensor:
        """Only the bump height field [N] (cheaper than the full material)."""
        return self.material(p, tissue, base_color, height_only=True)

    def material(self, p: torch.Tensor, tissue: str, base_color, height_only: bool = False):
        """Material at rest-pose points p [N, 3] (metres) of a tissue (a key of TISSUES, or
        "generic"); the bump height [N] alone when ``height_only``."""
        tint = torch.tensor(self.patient.tint.get(tissue, [1, 1, 1]), device=p.device)
        return self.models[tissue](p, tint, self.seed, torch.ones(len(p), device=p.device), base_color, height_only)

    # -- one model per tissue: (p, tint, seed, ones, base colour, height_only) -> Material | height
    def _liver(self, p, tint, s, one, base_color, height_only):
        n, dev = len(p), p.device
        mott = fbm(p / 0.025, s + 1, 4)
        fine = fbm(p / 0.004, s + 2, 2)
        if height_only:
            return 0.3 * mott + 0.15 * fine
        base = _srgb([0.42, 0.12, 0.09]).to(dev)
        dark = _srgb([0.26, 0.06, 0.06]).to(dev)
        alb = _mix(base.expand(n, 3), dark.expand(n, 3), (0.5 + 0.9 * mott).clamp(0, 1))
        alb = alb * (1.0 + 0.12 * fine)[:, None]
        v = self.vessels(p, 0.02, s + 3) * 0.25
        alb = _mix(alb, _srgb([0.30, 0.04, 0.05]).to(dev).expand(n, 3), v)
        return Material(alb * tint, 0.3 * mott + 0.15 * fine, 0.55 * one, 70.0,
                        (0.6 + 0.4 * fbm(p / 0.01, s + 4, 2)).clamp(0, 1))

    def _fat(self, p, tint, s, one, base_color, height_only):
        m = self._fat_material(p, tint, s)
        return m.height if height_only else m

    def _wall(self, p, tint, s, one, base_color, height_only):
        n, dev = len(p), p.device
        blot = fbm(p / 0.03, s + 11, 3)
        v = self.vessels(p, 0.014, s + 13) * (0.55 + 0.6 * fbm(p / 0.05, s + 14, 2)).clamp(0, 1)
        if height_only:
            return 0.2 * blot + 0.4 * v
        base = _srgb([0.88, 0.55, 0.52]).to(dev).expand(n, 3)
        alb = base * (1.0 + 0.12 * blot)[:, None]
        fatmask = ((fbm(p / 0.04, s + 12, 3) + 0.45 - self.patient.fat_amount) * -4.0).sigmoid()
        fat = self._fat_material(p, tint, s + 50).albedo
        alb = _mix(alb, fat, fatmask * 0.7)
        alb = _mix(alb, _srgb([0.55, 0.05, 0.06]).to(dev).expand(n, 3), v * 0.9)
        return Material(alb * tint, 0.2 * blot + 0.4 * v, 0.35 * one, 40.0, 0.5 * one)

    def _bowel(self, p, tint, s, one, base_color, height_only):
        n, dev = len(p), p.device
        warp = fbm(p / 0.03, s + 21, 3)[:, None] * 0.01
        q = p + warp
        folds = torch.sin(2 * torch.pi * (q[:, 0] * 0.6 + q[:, 1] * 0.3 + q[:, 2] * 0.74) / 0.008)
        folds = folds * (0.6 + 0.4 * fbm(p / 0.02, s + 22, 2))
        if height_only:
            return 0.8 * folds
        base = _srgb([0.88, 0.52, 0.42]).to(dev).expand(n, 3)
        groove = _srgb([0.62, 0.26, 0.22]).to(dev).expand(n, 3)
        alb = _mix(base, groove, (-folds * 0.5 + 0.3).clamp(0, 1))
        v = self.vessels(p, 0.015, s + 23)
        alb = _mix(alb, _srgb([0.60, 0.10, 0.10]).to(dev).expand(n, 3), v * 0.7)
        return Material(alb * tint, 0.8 * folds, 0.45 * one, 50.0, 0.7 * one)

    def _pancreas(self, p, tint, s, one, base_color, height_only):
        n, dev = len(p), p.device
        f1, f2, cid = worley(p / 0.0035, s + 31)
        if height_only:
            return 0.5 * (1 - f1)
        lob = cell_random(cid, s + 32)
        base = _srgb([0.90, 0.70, 0.46]).to(dev)
        alb = base * (0.82 + 0.25 * lob)[:, None]
        septa = (1.0 - ((f2 - f1) / 0.12).clamp(0, 1)) ** 2
        alb = _mix(alb, _srgb([0.70, 0.38, 0.30]).to(dev).expand(n, 3), septa * 0.6)
        return Material(alb * tint, 0.5 * (1 - f1), 0.3 * one, 30.0, 0.4 * one)

    def _spleen(self, p, tint, s, one, base_color, height_only):
        mott = fbm(p / 0.012, s + 41, 4)
        if height_only:
            return 0.2 * mott
        alb = _srgb([0.36, 0.09, 0.15]).to(p.device) * (1.0 + 0.22 * mott)[:, None]
        return Material(alb * tint, 0.2 * mott, 0.6 * one, 80.0, 0.6 * one)

    def _instrument(self, p, tint, s, one, base_color, height_only):
        n, dev = len(p), p.device
        lum = float(np.dot(base_color, [0.3, 0.59, 0.11]))
        streak = perlin(p * torch.tensor([40.0, 40.0, 2000.0], device=dev), s + 51)
        if height_only:
            return 0.0 * one if lum < 0.3 else 0.05 * streak
        if lum < 0.3:   # dark shaft
            alb = _srgb([0.035, 0.035, 0.04]).to(dev).expand(n, 3) * (1 + 0.2 * streak)[:, None]
            return Material(alb.clone(), 0.0 * one, 0.9 * one, 90.0, 0.2 * one)
        alb = _srgb([0.55, 0.56, 0.58]).to(dev).expand(n, 3) * (1 + 0.15 * streak)[:, None]
        return Material(alb.clone(), 0.05 * streak, 1.4 * one, 45.0, 0.3 * one)

    def _generic(self, p, tint, s, one, base_color, height_only):
        mott = fbm(p / 0.02, s + 61, 3)
        if height_only:
            return 0.2 * mott
        alb = _srgb(base_color).to(p.device).expand(len(p), 3) * (1.0 + 0.2 * mott)[:, None]
        return Material(alb * tint, 0.2 * mott, 0.4 * one, 40.0, 0.5 * one)

    def _fat_material(self, p: torch.Tensor, tint: torch.Tensor, s: int) -> Material:
        n, dev = len(p), p.device
        f1, f2, cid = worley(p / 0.005, s + 71)
        lob = cell_random(cid, s + 72)
        yellow = _srgb([0.96, 0.80, 0.36]).to(dev)
        alb = yellow * (0.85 + 0.2 * lob)[:, None]
        border = (1.0 - ((f2 - f1) / 0.15).clamp(0, 1)) ** 3
        alb = _mix(alb, _srgb([0.80, 0.45, 0.25]).to(dev).expand(n, 3), border * 0.5)
        v = ridged((p + 0.002 * torch.stack([fbm(p / 0.01, s + 73 + i, 2) for i in range(3)], -1)) / 0.006,
                   s + 74, octaves=2, sharpness=30.0)
        alb = _mix(alb, _srgb([0.70, 0.06, 0.06]).to(dev).expand(n, 3), v * 0.8 * self.patient.vessel_density)
        one = torch.ones(n, device=dev)
        return Material(alb * tint, 0.6 * (1 - f1) - 0.3 * border, 0.5 * one, 60.0, 0.8 * one)


class SurrogateRenderer:
    """Renders the surrogate "real" domain for a scene: G-buffer from ``Renderer``, then tissue
    materials at rest-pose points, scope lighting and camera effects.

    patient_seed fixes tissue colours and patterns (one "patient"); video_seed fixes grading,
    vignetting, blur and the sensor-noise stream of one video.
    """

    def __init__(self, scene: Scene, size=None, device="cpu", backend: str = "auto", patient_seed: int = 0,
                 video_seed: int = 0, scope_mask: bool = False, bump: float = 1.0):
        self.scene = scene
        self.renderer = Renderer(scene, size=size, device=device, backend=backend)
        self.device = self.renderer.device
        self.patient = PatientStyle.sample(patient_seed)
        self.video = VideoStyle.sample(video_seed)
        self.appearance = SurrogateAppearance(self.patient)
        self.scope_mask = scope_mask
        self.bump = bump
        self.tissues = [tissue_of(o.class_name) for o in scene.objects]

    # -- materials ---------------------------------------------------------------------------
    def materials(self, buf: FrameBuffers):
        """Per-pixel albedo [B, H, W, 3] (linear), bump-perturbed world normals, ks, wet, shininess."""
        B, H, W = buf.object_ids.shape
        n_pix = B * H * W
        dev = buf.positions.device
        obj = buf.object_ids.reshape(-1)
        rest = buf.rest_positions.reshape(-1, 3)
        rest_n = buf.rest_normals.reshape(-1, 3)
        normals = buf.normals.reshape(-1, 3).clone()
        albedo = torch.zeros(n_pix, 3, device=dev)
        ks = torch.zeros(n_pix, device=dev)
        wet = torch.zeros(n_pix, device=dev)
        shin = torch.full((n_pix,), 40.0, device=dev)
        frame_of = torch.arange(B, device=dev).repeat_interleave(H * W)
        for i, o in enumerate(self.scene.objects):
            idx = torch.nonzero(obj == i).squeeze(1)
            if len(idx) == 0:
                continue
            p = rest[idx]
            m = self.appearance.material(p, self.tissues[i], o.color)
            albedo[idx], ks[idx], wet[idx] = m.albedo.clamp(0, 1), m.ks, m.wet
            shin[idx] = m.shininess
            if self.bump > 0:
                normals[idx] = self._bump(normals[idx], rest_n[idx], p, i, frame_of[idx], buf, m.height)
        return albedo.view(B, H, W, 3), normals.view(B, H, W, 3), ks.view(B, H, W), wet.view(B, H, W), \
            shin.view(B, H, W)

    def _bump(self, n_world, n_rest, p, obj_index, frames, buf, h0):
        """Perturb world normals by the rest-space gradient of the tissue height field."""
        eps = 4e-4
        o = self.scene.objects[obj_index]
        grads = []
        for a in range(3):
            dp = torch.zeros_like(p)
            dp[:, a] = eps
            grads.append((self.appearance.height(p + dp, self.tissues[obj_index], o.color) - h0) / eps)
        g = torch.stack(grads, -1) * 0.0015 * self.bump          # height units -> metres of relief
        g = g - (g * n_rest).sum(-1, keepdim=True) * n_rest          # tangential part
        # rest -> world: the object's placement rotation at each pixel's frame
        R = torch.stack([torch.as_tensor(o.placement(self.scene.time(f))[:3, :3], dtype=torch.float32)
                         for f in buf.frames]).to(p.device)
        gw = torch.einsum("nij,nj->ni", R[frames], g)
        n2 = torch.nn.functional.normalize(n_world - gw, dim=-1)
        # keep facing the camera
        return torch.where((n2 * n_world).sum(-1, keepdim=True) > 0, n2, n_world)

    # -- image formation ---------------------------------------------------------------------
    def render(self, frames) -> tuple[torch.Tensor, FrameBuffers]:
        """Surrogate frames [B, H, W, 3] sRGB in [0, 1] and their G-buffer."""
        buf = self.renderer.gbuffer(frames)
        albedo, normals, ks, wet, shin = self.materials(buf)
        light = self.scene.lighting
        to_light = buf.cam_pos[:, None, None, :] - buf.positions
        d = to_light.norm(dim=-1).clamp(min=1e-6)
        l = to_light / d[..., None]
        ndl = (normals * l).sum(-1).clamp(min=0.0)
        a, b, c = light.falloff
        falloff = light.intensity / (a * d * d + b * d + c)
        spec = ks * ndl ** shin + 2.5 * wet * ndl ** 700.0
        rgb = falloff[..., None] * (albedo * ndl[..., None] + spec[..., None]) + light.ambient * albedo
        rgb = torch.where(buf.mask[..., None], rgb, torch.full_like(rgb, 0.004))
        return self.camera_effects(rgb, buf.frames), buf

    def camera_effects(self, rgb: torch.Tensor, frames) -> torch.Tensor:
        """Exposure, soft highlight roll-off, vignetting, scope mask, blur, grading, sensor noise."""
        import kornia
        v = self.video
        B, H, W, _ = rgb.shape
        dev = rgb.device
        x = rgb * v.exposure * torch.tensor(v.white_balance, device=dev)
        x = 1.0 - torch.exp(-1.3 * x)                                # soft shoulder, highlights saturate
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, H, device=dev), torch.linspace(-1, 1, W, device=dev),
                                indexing="ij")
        r2 = (xs * W / max(W, H)) ** 2 + (ys * H / max(W, H)) ** 2
        x = x * (1.0 - v.vignette * r2.clamp(max=1.5))[None, ..., None].clamp(min=0.0)
        if self.scope_mask:
            r = torch.sqrt(r2)
            edge = ((v.mask_radius * 1.6 - r) / 0.03).clamp(0, 1)
            x = x * edge[None, ..., None]
        img = nhwc_to_nchw(x)
        img = kornia.filters.gaussian_blur2d(img, (5, 5), (v.blur_sigma, v.blur_sigma))
        srgb = linear_to_srgb(img)
        mean = srgb.mean(1, keepdim=True)
        srgb = (mean + (srgb - mean) * v.saturation).clamp(0, 1)
        srgb = ((srgb - 0.5) * v.contrast + 0.5).clamp(0, 1) ** v.gamma
        noise = torch.stack([torch.randn(3, H, W, generator=torch.Generator().manual_seed(
            int(v.seed) * 1_000_003 + int(f))) for f in frames]).to(dev)
        srgb = srgb + noise * (v.noise_sigma * (0.4 + 0.6 * srgb.clamp(0, 1).sqrt()))
        return nchw_to_nhwc(srgb.clamp(0, 1))

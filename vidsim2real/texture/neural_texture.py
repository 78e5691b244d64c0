"""Neural textures: learnable C-channel feature maps attached to an object's rest-pose surface.

Two layouts:

* ``triplanar`` (default, needs no UVs, as in Rivoir et al. 2021): six axis-aligned planes
  around the object's rest-pose bounding box (+x, -x, +y, -y, +z, -z). A surface point with
  rest-pose normal n samples, for each axis a, the plane on the side n_a points to, with weight
  |n_a|^k / sum_b |n_b|^k. Where a sign flips the weight is 0, so switching planes leaves no
  seam. The + and - planes of an axis are packed side by side in one [C, R, 2R] image.
* ``uv``: one [C, R, R] image sampled at per-face-corner UVs (the mesh's or xatlas').

Both are multi-resolution: a Laplacian pyramid of L levels (resolution R, R/2, ...) whose
bilinear samples are summed (Thies et al., Deferred Neural Rendering). Sampling goes through
``grid_sample``: differentiable, and only the texels a sample touches receive gradient.
Because samples are taken at rest-pose positions (interpolated through the fragments), a
deforming organ keeps its texture.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("triplanar", "uv")
INITS = ("zeros", "noise", "color")


class NeuralTexture(nn.Module):
    """One object's texture.

    Args:
        kind: "triplanar" | "uv".
        channels: C feature channels (16 by default; 3 for an RGB texture).
        resolution: R, texels per side of the finest level (per plane half for triplanar).
        levels: L pyramid levels.
        bbox: [2, 3] rest-pose bounding box (triplanar only), metres.
        corner_uv: [F, 3, 2] per-face-corner UVs in [0, 1] (uv only).
        init: "zeros" | "noise" (N(0, 0.1^2 / L) per level) | "color".
        color: [3] values in [-1, 1] for init "color" (first three channels; rest zero).
        albedo: [3] values in [-1, 1]: the first three channels are an RGB albedo texture that
            starts as this flat colour (coarsest level; the finer levels of those channels
            start at zero), whatever ``init`` does to the other channels.
        sharpness: k in the triplanar weights |n_a|^k.
    """

    def __init__(self, kind: str = "triplanar", channels: int = 16, resolution: int = 128, levels: int = 4,
                 bbox: torch.Tensor | None = None, corner_uv: torch.Tensor | None = None, init: str = "noise",
                 color=None, sharpness: float = 4.0, generator: torch.Generator | None = None, albedo=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if levels < 1 or resolution < 2 ** (levels - 1) * 2:
            raise ValueError(f"resolution {resolution} too small for {levels} levels")
        self.kind, self.channels, self.resolution, self.num_levels = kind, channels, resolution, levels
        self.sharpness = float(sharpness)
        if kind == "triplanar":
            if bbox is None:
                raise ValueError("triplanar textures need the rest-pose bbox")
            bbox = torch.as_tensor(bbox, dtype=torch.float32)
            pad = (bbox[1] - bbox[0]).clamp(min=1e-6) * 0.01     # samples never touch the border texel
            self.register_buffer("lo", bbox[0] - pad)
            self.register_buffer("hi", bbox[1] + pad)
        else:
            if corner_uv is None:
                raise ValueError("uv textures need per-face-corner UVs")
            self.register_buffer("corner_uv", torch.as_tensor(corner_uv, dtype=torch.float32))
        planes, width = (3, 2) if kind == "triplanar" else (1, 1)
        self.levels = nn.ParameterList()
        for lvl in range(levels):
            r = resolution // 2 ** lvl
            t = torch.zeros(planes, channels, r, width * r)
            if init == "noise":
                t.normal_(0.0, 0.1 / math.sqrt(levels), generator=generator)
            self.levels.append(nn.Parameter(t))
        if albedo is not None:
            if channels < 3:
                raise ValueError("an albedo texture needs at least 3 channels")
            a = torch.as_tensor(albedo, dtype=torch.float32).reshape(3)
            with torch.no_grad():
                for lvl in self.levels:
                    lvl[:, :3] = 0.0
                self.levels[-1][:, :3] = a[None, :, None, None]
        if init == "color":
            if color is None:
                raise ValueError("init 'color' needs a colour")
            c = torch.as_tensor(color, dtype=torch.float32).reshape(-1)[:channels]
            with torch.no_grad():  # a constant lives in the coarsest level
                self.levels[-1][:, : len(c)] = c[None, :, None, None]

    # -- coordinates ---------------------------------------------------------------------------
    def triplanar_coords(self, pos: torch.Tensor, normal: torch.Tensor):
        """Per axis a: (s, t) in [0, 1] on the plane spanned by the other two axes and the half
        (0: +a side, 1: -a side) -> [3, N, 3]; blend weights [N, 3]. pos, normal: [N, 3]."""
        u = ((pos - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        w = normal.abs() ** self.sharpness
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
        neg = (normal < 0).to(pos.dtype)
        coords = [torch.stack([u[:, i], u[:, j], neg[:, a]], -1)
                  for a, (i, j) in enumerate(((1, 2), (0, 2), (0, 1)))]
        return torch.stack(coords), w

    @staticmethod
    def _grid(s: torch.Tensor, t: torch.Tensor, half: torch.Tensor | None, r: int) -> torch.Tensor:
        """grid_sample coordinates (align_corners=False) of texel-centre positions: s, t in [0, 1]
        map to texel centres 0 .. r-1 of an r x r image, or of the given half of an r x 2r image,
        so bilinear filtering never reads the other half."""
        px = s * (r - 1) + (0.0 if half is None else half * r)
        py = t * (r - 1)
        width = r if half is None else 2 * r
        return torch.stack([(2 * px + 1) / width - 1, (2 * py + 1) / r - 1], -1)

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, pos: torch.Tensor | None = None, normal: torch.Tensor | None = None,
               faces: torch.Tensor | None = None, bary: torch.Tensor | None = None) -> torch.Tensor:
        """Features at surface points -> [N, C].

        triplanar: pos, normal [N, 3] rest-pose position and normal (object-local, metres).
        uv: faces [N] object-local face ids and bary [N, 3] barycentrics.
        """
        dtype = self.levels[0].dtype
        if self.kind == "triplanar":
            c, w = self.triplanar_coords(pos.to(self.lo.dtype), normal.to(self.lo.dtype))
            out = 0.0
            for tex in self.levels:
                g = self._grid(c[..., 0], c[..., 1], c[..., 2], tex.shape[2])[:, None]   # [3, 1, N, 2]
                out = out + F.grid_sample(tex, g.to(dtype), mode="bilinear", padding_mode="border",
                                          align_corners=False)[:, :, 0]                   # [3, C, N]
            return torch.einsum("acn,na->nc", out, w.to(out.dtype))
        uv = (self.corner_uv[faces] * bary[..., None].to(self.corner_uv.dtype)).sum(1).clamp(0.0, 1.0)
        out = 0.0
        for tex in self.levels:
            g = self._grid(uv[:, 0], uv[:, 1], None, tex.shape[2])[None, None]           # [1, 1, N, 2]
            out = out + F.grid_sample(tex, g.to(dtype), mode="bilinear", padding_mode="border",
                                      align_corners=False)[0, :, 0]
        return out.t()

    # -- loading another resolution ---------------------------------------------------------------
    def _resampled(self, level: torch.Tensor, r: int) -> torch.Tensor:
        """A pyramid level [P, C, r0, w0] resampled to resolution ``r`` (texel centres at the
        same surface points: ``align_corners`` per plane half, as ``_grid`` samples)."""
        halves = level.chunk(2, dim=3) if self.kind == "triplanar" else (level,)
        return torch.cat([F.interpolate(h.float(), size=(r, r), mode="bilinear", align_corners=True)
                          for h in halves], 3)

    @torch.no_grad()
    def load_levels(self, levels: list) -> str:
        """Take the texels of another pyramid of this object (same kind and channels; e.g. a
        coarser checkpoint's when a run refines its textures): levels of equal shape are copied
        and this texture's extra finer levels start at zero, which leaves the sampled function
        unchanged; otherwise the other pyramid's sum is resampled into this one's level nearest
        its finest resolution. Returns "exact" or "resampled"."""
        own = [p.shape for p in self.levels]
        shapes = [tuple(t.shape) for t in levels]
        if all(s in [tuple(o) for o in own] for s in shapes):
            for p in self.levels:
                match = [t for t in levels if tuple(t.shape) == tuple(p.shape)]
                p.copy_(match[0].to(p.dtype) if match else torch.zeros_like(p))
            return "exact"
        r0 = levels[0].shape[2]
        target = min(range(len(own)), key=lambda i: (abs(own[i][2] - r0), i))
        dense = sum(self._resampled(t, own[target][2]) for t in levels)
        for i, p in enumerate(self.levels):
            p.copy_(dense.to(p.dtype) if i == target else torch.zeros_like(p))
        return "resampled"

    def extra_repr(self) -> str:
        return f"{self.kind}, C={self.channels}, R={self.resolution}, L={self.num_levels}"

    # -- prefiltered levels ------------------------------------------------------------------------
    def texel_size(self) -> float:
        """Surface length of one finest texel (metres; triplanar: the median bbox extent over
        the resolution; uv: 0, an atlas has no known scale)."""
        if self.kind != "triplanar":
            return 0.0
        return float((self.hi - self.lo).median()) / self.resolution

    def mip(self, k: int) -> "MipLevel":
        """The finest level box-filtered k times by 2 (each triplanar half on its own, so no
        texel mixes two planes), as a one-level texture ``fused.sample_set`` can sample;
        differentiable w.r.t. the texels. Without gradients the filtered levels are kept until
        the texels change (inference filters them once, not per frame)."""
        t = self.levels[0]
        keep = not (torch.is_grad_enabled() and t.requires_grad)
        key = (t._version, t.data_ptr(), str(t.device), t.dtype)
        cache = self.__dict__.setdefault("_mips", {})
        if keep and cache.get("key") != key:
            cache.clear()
            cache["key"] = key
        chain = [t]
        for i in range(1, k + 1):
            if keep and i in cache:
                chain.append(cache[i])
                continue
            halves = chain[-1].chunk(2, dim=3) if self.kind == "triplanar" else (chain[-1],)
            r = max(1, halves[0].shape[2] // 2)
            chain.append(torch.cat([F.interpolate(h, size=(r, r), mode="area") for h in halves], 3))
            if keep:
                cache[i] = chain[-1].detach()
        return MipLevel(self, chain[k])


class MipLevel:
    """One prefiltered level of a NeuralTexture ([P, C, r, w] texels), sampled like a one-level
    texture with the same coordinates (it shares the parent's layout buffers)."""

    sample = NeuralTexture.sample
    triplanar_coords = NeuralTexture.triplanar_coords
    _grid = staticmethod(NeuralTexture._grid)

    def __init__(self, parent: NeuralTexture, texels: torch.Tensor):
        self.kind, self.channels, self.sharpness = parent.kind, parent.channels, parent.sharpness
        self.levels = [texels.contiguous()]
        for name in ("lo", "hi", "corner_uv"):
            if hasattr(parent, name):
                setattr(self, name, getattr(parent, name))

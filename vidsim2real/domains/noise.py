"""Solid (3D) procedural noise in torch: vectorised, GPU-capable, seeded.

* ``perlin(p)``: gradient noise in about [-1, 1] with a quintic fade (Perlin 2002);
* ``fbm(p)``: fractal sum of octaves;
* ``worley(p)``: distances to the nearest and second-nearest jittered feature point
  (cellular noise, Worley 1996), one point per unit cell;
* ``ridged(p)``: 1 - |fbm| sharpened: thin branching ridges (vessel-like networks).

All take points ``p`` [N, 3] (any units; scale them first) and an integer ``seed``; the same
point and seed always give the same value, which is what makes the surrogate view-consistent.
"""
from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _hash(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int) -> torch.Tensor:
    """32-bit integer hash of lattice coordinates (int64 tensors) -> int64 in [0, 2^32)."""
    h = (ix * 0x8DA6B343 + iy * 0xD8163841 + iz * 0xCB1AB31F + seed * 0x165667B1) & _MASK
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK
    h = ((h ^ (h >> 12)) * 0x297A2D39) & _MASK
    return h ^ (h >> 15)


def _unit(h: torch.Tensor, dtype) -> torch.Tensor:
    return (h & 0xFFFFFF).to(dtype) / float(0x1000000)


def _gradients(h: torch.Tensor, dtype) -> torch.Tensor:
    """Pseudo-random unit gradient per lattice point (uniform on the sphere)."""
    z = _unit(h, dtype) * 2.0 - 1.0
    phi = _unit(_hash(h, h >> 7, h >> 3, 7), dtype) * (2.0 * torch.pi)
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def perlin(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gradient noise at points p [N, 3] -> [N], roughly in [-1, 1], zero at lattice points."""
    dtype = p.dtype if p.is_floating_point() else torch.float32
    p = p.to(dtype)
    i0 = torch.floor(p)
    f = p - i0
    i0 = i0.to(torch.int64)
    fade = f * f * f * (f * (f * 6.0 - 15.0) + 10.0)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = _hash(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz, seed)
                g = _gradients(h, dtype)
                d = f - torch.tensor([dx, dy, dz], dtype=dtype, device=p.device)
                w = ((fade[:, 0] if dx else 1 - fade[:, 0]) * (fade[:, 1] if dy else 1 - fade[:, 1])
                     * (fade[:, 2] if dz else 1 - fade[:, 2]))
                out = out + w * (g * d).sum(-1)
    return out * 1.6   # normalise the typical range to about [-1, 1]


def fbm(p: torch.Tensor, seed: int = 0, octaves: int = 4, lacunarity: float = 2.0, gain: float = 0.5) -> torch.Tensor:
    """Fractal Brownian motion: sum of ``octaves`` Perlin octaves -> [N], about [-1, 1]."""
    out, amp, norm, q = 0.0, 1.0, 0.0, p
    for o in range(octaves):
        out = out + amp * perlin(q, seed + 101 * o)
        norm += amp
        amp *= gain
        q = q * lacunarity + 17.17                 # shift so octaves do not share lattice zeros
    return out / norm


def ridged(p: torch.Tensor, seed: int = 0, octaves: int = 3, sharpness: float = 8.0) -> torch.Tensor:
    """Ridge network in [0, 1]: 1 on thin ridges (zero crossings of the noise), ~0 between."""
    n = fbm(p, seed, octaves)
    return (1.0 - n.abs()).clamp(0.0, 1.0) ** sharpness


def worley(p: torch.Tensor, seed: int = 0, jitter: float = 0.9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cellular noise: (F1, F2, cell id) at points p [N, 3]; F in cell units, id int64 [N]."""
    dtype = p.dtype if p.is_floating_point() else torch.float32
    p = p.to(dtype)
    i0 = torch.floor(p).to(torch.int64)
    f1 = torch.full(p.shape[:1], 1e9, dtype=dtype, device=p.device)
    f2 = f1.clone()
    cid = torch.zeros(p.shape[:1], dtype=torch.int64, device=p.device)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                cx, cy, cz = i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz
                h = _hash(cx, cy, cz, seed)
                off = torch.stack([_unit(h, dtype), _unit(_hash(h, cy, cz, 1), dtype),
                                   _unit(_hash(h, cx, cz, 2), dtype)], -1)
                feat = torch.stack([cx, cy, cz], -1).to(dtype) + 0.5 + jitter * (off - 0.5)
                d = (feat - p).norm(dim=-1)
                closer = d < f1
                f2 = torch.where(closer, f1, torch.minimum(f2, d))
                cid = torch.where(closer, h, cid)
                f1 = torch.where(closer, d, f1)
    return f1, f2, cid


def cell_random(cid: torch.Tensor, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A uniform [0, 1) value per cell id (e.g. per fat lobule)."""
    return _unit(_hash(cid, cid >> 5, cid >> 11, seed), dtype)

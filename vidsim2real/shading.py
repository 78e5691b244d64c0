"""Simulated appearance: a point light at the scope tip, Lambert + Blinn-Phong, distance falloff.

All maths in linear RGB; ``linear_to_srgb`` at the very end. Images are NHWC in [0, 1].
"""
from __future__ import annotations

import torch

from .scene.scene import Lighting


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding; any shape, values in [0, 1]."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding; clamps to [0, 1] first."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=1e-12) ** (1.0 / 2.4) - 0.055)


def scope_light(positions: torch.Tensor, normals: torch.Tensor, cam_pos: torch.Tensor, lighting: Lighting):
    """Per-pixel light geometry for a light at the camera centre.

    positions, normals: [B, H, W, 3] world (normals need not face the camera: surfaces are
    lit two-sided, as the inside of the abdominal wall must be); cam_pos: [B, 3].
    Returns (n_dot_l [B, H, W], falloff [B, H, W], n [B, H, W, 3] flipped towards the camera,
    l [B, H, W, 3] unit vector to the light, d [B, H, W] distance in metres).
    """
    to_light = cam_pos[:, None, None, :] - positions
    d = to_light.norm(dim=-1).clamp(min=1e-6)
    l = to_light / d[..., None]
    n = torch.nn.functional.normalize(normals, dim=-1)
    ndl = (n * l).sum(-1)
    n = torch.where(ndl[..., None] < 0, -n, n)
    ndl = ndl.abs()
    a, b, c = lighting.falloff
    falloff = lighting.intensity / (a * d * d + b * d + c)
    return ndl, falloff, n, l, d


def shade(albedo_linear: torch.Tensor, positions: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor,
          cam_pos: torch.Tensor, lighting: Lighting, *, specular: float | None = None,
          shininess: float | None = None) -> torch.Tensor:
    """Sim render in linear RGB. albedo_linear: [B, H, W, 3]; positions/normals: [B, H, W, 3]
    world; mask: [B, H, W] bool; cam_pos: [B, 3]. Returns [B, H, W, 3] linear radiance (0 on
    background), before tone mapping.

    L = falloff(d) * (albedo * (n.l) + k_s * (n.h)^s) + ambient * albedo, with h = l because
    the light sits at the eye.
    """
    ndl, falloff, n, l, _ = scope_light(positions, normals, cam_pos, lighting)
    ks = lighting.specular if specular is None else specular
    shin = lighting.shininess if shininess is None else shininess
    diffuse = albedo_linear * ndl[..., None]
    spec = ks * ndl.clamp(min=0) ** shin
    rgb = falloff[..., None] * (diffuse + spec[..., None]) + lighting.ambient * albedo_linear
    return torch.where(mask[..., None], rgb, torch.zeros_like(rgb))

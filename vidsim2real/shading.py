"""Simulated appearance: a point light at the scope tip, Lambert + Blinn-Phong, distance falloff,
and the scope's exposure control (metering + temporal smoothing).

All maths in linear RGB; exposure, then ``linear_to_srgb`` at the very end. Images are NHWC in
[0, 1].
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .scene.scene import Exposure, Lighting

LUMA = (0.2126, 0.7152, 0.0722)     # Rec. 709 luminance weights of linear RGB


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding; any shape, values in [0, 1]."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding; clamps to [0, 1] first."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=1e-12) ** (1.0 / 2.4) - 0.055)


def light_params(lightings: list[Lighting], device=None) -> torch.Tensor:
    """Scope-light parameters of B frames as a tensor [B, 7]: intensity, falloff a, b, c,
    ambient, specular, shininess (frames of different scenes can be shaded in one call)."""
    return torch.tensor([[lt.intensity, *lt.falloff, lt.ambient, lt.specular, lt.shininess] for lt in lightings],
                        dtype=torch.float32, device=device)


def scope_light_buffer(positions: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor, cam_pos: torch.Tensor,
                       params: torch.Tensor, exposure: torch.Tensor | None = None,
                       gloss: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The light of a point light at the camera centre, per pixel: [B, H, W, 2] =
    (falloff(d) * (n.l) + ambient, falloff(d) * k_s * (n.h)^s) times the exposure, 0 on
    background. A linear albedo a then renders as ``lit(a, light)``: the diffuse term scales
    with the albedo, the specular one does not (h = l: the light sits at the eye).

    positions, normals [B, H, W, 3] world (surfaces are lit two-sided, as the inside of the
    abdominal wall must be); mask [B, H, W] bool; cam_pos [B, 3]; params [B, 7]
    (``light_params``); exposure [B] or None (1); gloss: per-pixel (k_s, s) [B, H, W] each
    instead of the params' (``class_gloss``), or None; a third such tensor m makes the diffuse
    term falloff(d) * (n.l)^m (m = 1: Lambert; m > 1 darkens the surface towards grazing
    angles, as rough or fuzzy tissue does, like Minnaert's law with the light at the eye)."""
    p = params.to(positions.dtype)[:, None, None, :]
    to_light = cam_pos[:, None, None, :] - positions
    d = to_light.norm(dim=-1).clamp(min=1e-6)
    n = torch.nn.functional.normalize(normals, dim=-1)
    ndl = ((n * to_light).sum(-1) / d).abs()
    falloff = p[..., 0] / ((p[..., 1] * d + p[..., 2]) * d + p[..., 3])
    ks, shininess = (p[..., 5], p[..., 6]) if gloss is None else gloss[:2]
    diffuse = falloff * (ndl if gloss is None or len(gloss) < 3 else ndl ** gloss[2]) + p[..., 4]
    spec = falloff * ks * ndl ** shininess
    light = torch.stack([diffuse, spec], -1)
    if exposure is not None:
        light = light * exposure.to(light)[:, None, None, None]
    return torch.where(mask[..., None], light, torch.zeros_like(light))


def class_gloss(labels: torch.Tensor, params: torch.Tensor, table: torch.Tensor) -> tuple:
    """Per-pixel specular strength and shininess: labels [B, H, W] class ids, params [B, 7]
    (``light_params``: the scene's), table [C, 2] (k_s, s) per class id, k_s < 0 for a class
    that keeps the scene's -> (k_s [B, H, W], s [B, H, W]). A table [C, 3] also gives each
    class its diffuse exponent m (``scope_light_buffer``; m <= 0: 1, Lambert's) -> (k_s, s, m)."""
    c = labels.clamp(0, len(table) - 1)
    row = table.to(params)[c]                                            # [B, H, W, 2 or 3]
    outside = (labels >= len(table)) | (labels <= 0)
    own = (row[..., 0] < 0) | outside
    scene = params[:, None, None, 5:7].expand(*labels.shape, 2)
    spec = torch.where(own[..., None], scene, row[..., :2])
    if table.shape[1] < 3:
        return spec[..., 0], spec[..., 1]
    m = torch.where((row[..., 2] <= 0) | outside, torch.ones_like(row[..., 2]), row[..., 2])
    return spec[..., 0], spec[..., 1], m


def lit(albedo_linear: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Linear radiance [..., 3] of a linear albedo [..., 3] under ``light`` [..., 2]."""
    return albedo_linear * light[..., :1] + light[..., 1:]


def shade(albedo_linear: torch.Tensor, positions: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor,
          cam_pos: torch.Tensor, lighting: Lighting) -> torch.Tensor:
    """Sim render in linear RGB at exposure 1. albedo_linear: [B, H, W, 3]; positions/normals:
    [B, H, W, 3] world; mask: [B, H, W] bool; cam_pos: [B, 3]. Returns [B, H, W, 3] linear
    radiance (0 on background), before exposure and tone mapping:

    L = falloff(d) * (albedo * (n.l) + k_s * (n.h)^s) + ambient * albedo, with h = l because
    the light sits at the eye, falloff(d) = intensity / (a d^2 + b d + c).
    """
    params = light_params([lighting] * positions.shape[0], positions.device)
    return lit(albedo_linear, scope_light_buffer(positions, normals, mask, cam_pos, params))


HIGHLIGHT_QUANTILE = 0.95   # auto exposure keeps this quantile of the frame's brightest channel ...
HIGHLIGHT_LEVEL = 0.8       # ... at or below this linear level (specular highlights may clip, tissue not)


def meter(linear_rgb: torch.Tensor, mask: torch.Tensor, sigma: float = 0.35) -> torch.Tensor:
    """What the auto exposure measures, per frame: the centre-weighted mean linear luminance
    (Gaussian weights of ``sigma`` x the image diagonal around the centre, where the surgeon
    looks; background counts as black) and the HIGHLIGHT_QUANTILE of the brightest channel
    over the pixels that see a surface (red tissue clips its red channel long before its
    luminance is high). linear_rgb [B, H, W, 3], mask [B, H, W] bool -> [B, 2] (mean, highlight)."""
    B, H, W, _ = linear_rgb.shape
    lum = (linear_rgb * torch.tensor(LUMA, device=linear_rgb.device, dtype=linear_rgb.dtype)).sum(-1)
    ys = (torch.arange(H, device=lum.device, dtype=lum.dtype) + 0.5) / H - 0.5
    xs = (torch.arange(W, device=lum.device, dtype=lum.dtype) + 0.5) / W - 0.5
    r2 = (ys[:, None] * H) ** 2 + (xs[None, :] * W) ** 2
    w = torch.exp(-0.5 * r2 / (sigma * math.hypot(H, W)) ** 2)
    mean = (lum * w).sum((1, 2)) / w.sum()
    peak = linear_rgb.max(-1).values.float()
    high = torch.stack([torch.quantile(p[m], HIGHLIGHT_QUANTILE) if m.any() else p.new_zeros(())
                        for p, m in zip(peak, mask)]).to(mean.dtype)
    return torch.stack([mean, high], -1)


def exposure_curve(metered: np.ndarray, exposure: Exposure, fps: float) -> np.ndarray:
    """Per-frame exposure [T] of a trajectory from its metering [T, 2] (``meter`` at exposure 1):
    the exposure that brings the mean to ``exposure.target`` without pushing the highlight
    quantile above HIGHLIGHT_LEVEL, clamped to [min, max], followed by a causal exponential
    filter in log exposure with time constant ``exposure.smoothing`` seconds (the first frame
    starts adapted). Fixed mode: ``exposure.value`` everywhere. Protect mode: 1, lowered where
    the highlight quantile is above ``exposure.value`` to bring it there (not below ``min``),
    filtered the same way."""
    metered = np.asarray(metered, dtype=np.float64).reshape(len(metered), 2)
    if exposure.mode == "fixed":
        return np.full(len(metered), float(exposure.value))
    high = np.maximum(metered[:, 1], 1e-8)
    if exposure.mode == "protect":
        wanted = np.log(np.clip(exposure.value / high, min(exposure.min, 1.0), 1.0))
    else:
        want = np.minimum(exposure.target / np.maximum(metered[:, 0], 1e-8), HIGHLIGHT_LEVEL / high)
        wanted = np.log(np.clip(want, exposure.min, exposure.max))
    alpha = 1.0 if exposure.smoothing <= 0 else 1.0 - math.exp(-1.0 / (fps * exposure.smoothing))
    out = np.empty_like(wanted)
    cur = wanted[0] if len(wanted) else 0.0
    for t, w in enumerate(wanted):
        cur = cur + alpha * (w - cur)
        out[t] = cur
    return np.exp(out)

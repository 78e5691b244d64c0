"""Losses. Images NCHW; network outputs in [-1, 1] unless stated.

Defaults (``LossWeights``) follow the reference configuration of Rivoir et al. 2021: GAN 1,
image reconstruction 10, content reconstruction 1, style reconstruction 1, cycle 10,
MS-SSIM on channel-mean brightness sim->real 5 and real->sim 3, view consistency 20 after a
warm-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..layout import to_unit
from ..raster import warp


@dataclass
class LossWeights:
    gan: float = 1.0
    recon_x: float = 10.0
    recon_c: float = 1.0
    recon_s: float = 1.0
    cycle: float = 10.0
    msssim_s2r: float = 5.0
    msssim_r2s: float = 3.0
    view: float = 20.0
    view_warmup: int = 1000      # steps before the view-consistency loss switches on
    identity: float = 0.5        # CycleGAN identity (x lambda cycle)
    l1: float = 100.0            # pix2pix

    def to_dict(self) -> dict:
        return asdict(self)


def lsgan_d(d_real: list[torch.Tensor], d_fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator LSGAN loss summed over scales: E[(D(real) - 1)^2] + E[D(fake)^2]."""
    return sum(((r - 1) ** 2).mean() + (f ** 2).mean() for r, f in zip(d_real, d_fake))


def lsgan_g(d_fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator LSGAN loss summed over scales: E[(D(G(x)) - 1)^2]."""
    return sum(((f - 1) ** 2).mean() for f in d_fake)


MSSSIM_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
_KERNELS: dict = {}


def _gauss_1d(sigmas, device, dtype) -> torch.Tensor:
    """One normalised 1-D Gaussian per sigma, all 2 * int(2 * max) + 1 taps: [S, taps]."""
    key = (tuple(sigmas), str(device), dtype)
    if key not in _KERNELS:
        half = int(2 * sigmas[-1])
        x = torch.arange(-half, half + 1, dtype=torch.float64)
        g = torch.stack([torch.exp(-x ** 2 / (2 * s ** 2)) for s in sigmas])
        _KERNELS[key] = (g / g.sum(1, keepdim=True)).to(device=device, dtype=dtype)
    return _KERNELS[key]


def ms_ssim(x: torch.Tensor, y: torch.Tensor, sigmas=MSSSIM_SIGMAS, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM of single-channel images x, y [B, 1, H, W] with one Gaussian per scale, all at
    full resolution (Zhao et al. 2017; kornia.losses.MS_SSIMLoss's definition: luminance at the
    coarsest scale times contrast-structure at every scale, zero padding), evaluated at every
    pixel and averaged -> [B]. Separable filters: about 16x fewer operations than 2-D ones."""
    S = len(sigmas)
    half = int(2 * sigmas[-1])
    g = _gauss_1d(sigmas, x.device, torch.float32)
    x, y = x.float(), y.float()
    q = torch.cat([x, y, x * x, y * y, x * y], 1).repeat_interleave(S, 1)        # [B, 5S, H, W]
    wh = g.repeat(5, 1)[:, None, None, :]                                         # [5S, 1, 1, taps]
    f = F.conv2d(F.conv2d(q, wh, padding=(0, half), groups=5 * S), wh.transpose(2, 3), padding=(half, 0),
                 groups=5 * S)
    mux, muy, xx, yy, xy = f.unflatten(1, (5, S)).unbind(1)                       # each [B, S, H, W]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    lum = (2 * mux[:, -1] * muy[:, -1] + c1) / (mux[:, -1] ** 2 + muy[:, -1] ** 2 + c1)
    cs = (2 * (xy - mux * muy) + c2) / ((xx - mux ** 2) + (yy - muy ** 2) + c2)
    return (lum * cs.prod(1)).flatten(1).mean(1)


def msssim_loss_brightness(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM between the channel-mean brightness of a and b (``ms_ssim``; Gaussian scales
    at full resolution, so small crops work). a, b: [B, 3, H, W] in [-1, 1] -> scalar."""
    la = to_unit(a).mean(1, keepdim=True).clamp(0, 1)
    lb = to_unit(b).mean(1, keepdim=True).clamp(0, 1)
    return 1.0 - ms_ssim(la, lb).mean()


def angular_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel angle between RGB vectors, normalised: 2 * acos(cos_sim) / pi. a, b: [B, 3, H, W]
    with non-negative colours -> [B, H, W] in [0, 1]."""
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 2.0 * torch.acos(cos.clamp(-1 + 1e-4, 1 - 1e-4)) / torch.pi


def view_consistency(t1: torch.Tensor, t2: torch.Tensor, uv12: torch.Tensor, valid12: torch.Tensor) -> torch.Tensor:
    """Angular RGB distance between view 1's translation and view 2's translation warped into
    view 1 with exact correspondences, over pixels visible in both (occlusion-masked); the
    warped target is detached. t1, t2: [B, 3, H, W] in [-1, 1]; uv12 [B, H, W, 2] pixel
    positions in view 2 of view 1's pixels; valid12 [B, H, W] bool."""
    target = to_unit(warp(t2, uv12)).detach()
    dist = angular_distance(to_unit(t1), target)
    m = valid12.to(dist.dtype)
    return (dist * m).sum() / m.sum().clamp(min=1.0)

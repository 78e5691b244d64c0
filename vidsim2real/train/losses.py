"""Losses. Images NCHW; network outputs in [-1, 1] unless stated.

Defaults (``LossWeights``) follow the reference configuration of Rivoir et al. 2021: GAN 1,
image reconstruction 10, content reconstruction 1, style reconstruction 1, cycle 10,
MS-SSIM on channel-mean brightness sim->real 5 and real->sim 3, view consistency 20 after a
warm-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

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


_MSSSIM = {}


def msssim_loss_brightness(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM between the channel-mean brightness of a and b (kornia; Gaussian scales at
    full resolution, so small crops work). a, b: [B, 3, H, W] in [-1, 1]."""
    import kornia
    key = a.device
    if key not in _MSSSIM:
        _MSSSIM[key] = kornia.losses.MS_SSIMLoss(alpha=1.0, compensation=1.0, data_range=1.0).to(a.device)
    la = to_unit(a).mean(1, keepdim=True).clamp(0, 1).float()
    lb = to_unit(b).mean(1, keepdim=True).clamp(0, 1).float()
    return _MSSSIM[key](la, lb)


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

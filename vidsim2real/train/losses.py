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
    detail: float = 0.0          # oneway: class-by-class sliced Wasserstein on high-passed L*a*b*
                                 # patches (``detail_swd``); needs no labels, uses them when given
    detail_crops: int = 4        # real crops per item the detail loss compares with

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


# -- surface detail ------------------------------------------------------------------------------

def lab_pyramid(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Laplacian pyramid of CIE L*a*b* / 100 (differentiable; kornia's conversion): x [B, 3, H, W]
    in [-1, 1] -> ``levels`` high-pass bands [B, 3, H/2^k, W/2^k] (tissue detail: vessels,
    grain, folds, with the smooth shading removed) and the low-pass residual (colour) last."""
    import kornia
    lab = kornia.color.rgb_to_lab(to_unit(x).clamp(0.0, 1.0)) / 100.0
    out, g = [], lab
    for _ in range(levels):
        down = F.avg_pool2d(kornia.filters.gaussian_blur2d(g, (5, 5), (1.0, 1.0), border_type="reflect"), 2)
        out.append(g - F.interpolate(down, size=g.shape[-2:], mode="bilinear", align_corners=False))
        g = down
    return out + [g]


def _class_patches(band: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every size x size patch of ``band`` [B, C, h, w] whose pixels all carry one class label
    (labels [B, h, w], -1 unknown and 0 background never count) -> (patches [N, C*size^2],
    their class [N])."""
    B, C, h, w = band.shape
    p = F.unfold(band, size, padding=size // 2).transpose(1, 2).reshape(-1, C * size * size)
    lab = labels.float()[:, None]
    lo = -F.max_pool2d(-lab, size, 1, size // 2)            # one class over the whole window
    hi = F.max_pool2d(lab, size, 1, size // 2)
    cls = labels.reshape(-1)
    keep = ((lo == hi)[:, 0].reshape(-1)) & (cls > 0)
    return p[keep], cls[keep]


def sliced_wasserstein_1d(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein-2 distance^2 between point sets a [N, D] and b [M, D] along unit
    ``directions`` [D, K], relative to b's spread: mean squared gap between a's sorted
    projections and b's quantiles at the same ranks (b resampled to N ranks, so the sets may
    differ in size), divided by the mean variance of b's projections. Scale-free, so fine
    bands of small amplitude weigh as much as colour (1: as far apart as b's own spread)."""
    pa = (a @ directions).sort(0).values
    pb = (b @ directions).sort(0).values
    idx = torch.linspace(0, pb.shape[0] - 1, pa.shape[0], device=pb.device).round().long()
    return ((pa - pb[idx]) ** 2).mean() / (pb.var(0).mean() + 1e-8)


def detail_swd(fake: torch.Tensor, fake_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor | None,
               levels: int = 3, patch: int = 5, directions: int = 32, max_patches: int = 2048,
               min_patches: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """Class-by-class sliced Wasserstein loss on multi-scale patches of high-passed L*a*b*
    (after Heitz et al., CVPR 2021, with pyramid bands instead of VGG features): for every class
    seen in both the translations and the real frames, the distribution of its patch x patch
    patches in each band of ``lab_pyramid``, and of its pixel colours in the low-pass residual,
    are pulled toward the real frames' (new random directions every call). Without real labels
    (``real_labels`` None, or -1 everywhere) every foreground pixel is one class.

    fake [B, 3, H, W], real [R, 3, H, W] in [-1, 1]; fake_labels [B, H, W], real_labels
    [R, H, W] class ids (0 background, -1 unknown) -> scalar (0 when no class has at least
    ``min_patches`` patches on both sides)."""
    if real_labels is None or bool((real_labels < 0).all()):
        fake_labels = (fake_labels > 0).long()
        real_labels = torch.ones(real.shape[0], *real.shape[-2:], dtype=torch.long, device=real.device)
    fb, rb = lab_pyramid(fake, levels), lab_pyramid(real.detach(), levels)
    terms = []
    for k, (f, r) in enumerate(zip(fb, rb)):
        size = 1 if k == levels else patch                 # the residual: per-pixel colour
        fl = fake_labels[:, ::2 ** k, ::2 ** k][:, :f.shape[-2], :f.shape[-1]]
        rl = real_labels[:, ::2 ** k, ::2 ** k][:, :r.shape[-2], :r.shape[-1]]
        pf, cf = _class_patches(f, fl, size)
        pr, cr = _class_patches(r, rl, size)
        D = pf.shape[1]
        dirs = torch.randn(D, directions, generator=generator).to(pf)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        for c in sorted(set(cf.unique().tolist()) & set(cr.unique().tolist())):
            a, b = pf[cf == c], pr[cr == c]
            if min(len(a), len(b)) < min_patches:
                continue
            if len(a) > max_patches:       # a fixed stride keeps the draw deterministic and cheap
                a = a[torch.linspace(0, len(a) - 1, max_patches, device=a.device).long()]
            if len(b) > max_patches:
                b = b[torch.linspace(0, len(b) - 1, max_patches, device=b.device).long()]
            terms.append(sliced_wasserstein_1d(a, b, dirs))
    if not terms:
        return fake.sum() * 0.0
    return torch.stack(terms).mean()

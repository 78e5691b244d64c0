"""Realism metrics: sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al.
2018), colour-histogram distance, and structure kept from the sim render (MS-SSIM on
brightness). Frames are float [N, H, W, 3] in [0, 1] (torch)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import nhwc_to_nchw, to_signed
from ..train.losses import msssim_loss_brightness


def _gauss_kernel(device) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k = torch.outer(k, k)
    return (k / k.sum())[None, None].repeat(3, 1, 1, 1)


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """[N, 3, H, W] -> band-pass levels (finest first) and the coarsest low-pass at >= min_size."""
    k = _gauss_kernel(x.device)
    levels = []
    cur = x
    while min(cur.shape[-2:]) // 2 >= min_size:
        blur = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode="reflect"), k, groups=3)
        down = blur[..., ::2, ::2]
        up = F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(cur - up)
        cur = down
    levels.append(cur)
    return levels


def _patches(level: torch.Tensor, per_image: int, gen: torch.Generator, size: int = 7) -> torch.Tensor:
    N, C, H, W = level.shape
    ys = torch.randint(0, H - size + 1, (N, per_image), generator=gen)
    xs = torch.randint(0, W - size + 1, (N, per_image), generator=gen)
    out = []
    for n in range(N):
        for y, x in zip(ys[n].tolist(), xs[n].tolist()):
            out.append(level[n, :, y:y + size, x:x + size].reshape(-1))
    return torch.stack(out)


def _channel_stats(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = p.view(p.shape[0], 3, -1)
    return q.mean(dim=(0, 2), keepdim=True), q.std(dim=(0, 2), keepdim=True).clamp(min=1e-8)


def _normalise(p: torch.Tensor, stats) -> torch.Tensor:
    """Zero mean, unit std per colour channel with the given (reference) statistics."""
    mean, std = stats
    return ((p.view(p.shape[0], 3, -1) - mean) / std).view(p.shape[0], -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_dirs: int = 512, repeats: int = 4,
                       gen: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections
    (equal-size sets: the larger one is truncated)."""
    gen = gen or torch.Generator().manual_seed(0)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    vals = []
    for _ in range(repeats):
        d = torch.randn(a.shape[1], n_dirs, generator=gen)
        d = d / d.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ d, dim=0)
        pb, _ = torch.sort(b @ d, dim=0)
        vals.append(float((pa - pb).abs().mean()))
    return float(np.mean(vals))


def swd(frames: torch.Tensor, real: torch.Tensor, patches_per_image: int = 128, seed: int = 0) -> dict:
    """SWD (x 1e3) between the videos' and the real frames' Laplacian pyramid 7x7 patches, per
    level and averaged (Karras et al. 2018). Both sets are resized to the smaller one's size
    and contribute the same number of patches; each set's patch positions come from its own
    generator with the same seed, so SWD(x, x) = 0 exactly.

    Unlike Karras et al., who normalise each set's patches by that set's own per-channel mean
    and std (which hides a global colour shift), both sets are normalised with the *real*
    set's statistics, so a colour cast counts as a difference."""
    x = nhwc_to_nchw(frames.float())
    y = nhwc_to_nchw(real.float())
    H = min(x.shape[2], y.shape[2])
    W = min(x.shape[3], y.shape[3])
    x = F.interpolate(x, size=(H, W), mode="area") if x.shape[2:] != (H, W) else x
    y = F.interpolate(y, size=(H, W), mode="area") if y.shape[2:] != (H, W) else y
    total = patches_per_image * min(len(x), len(y))           # patches per set and level
    per_x, per_y = -(-total // len(x)), -(-total // len(y))
    gx, gy = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    gd = torch.Generator().manual_seed(seed + 1)
    per_level = []
    for lx, ly in zip(laplacian_pyramid(x), laplacian_pyramid(y)):
        pa, pb = _patches(lx, per_x, gx), _patches(ly, per_y, gy)
        stats = _channel_stats(pb)
        pa, pb = _normalise(pa, stats), _normalise(pb, stats)
        pa = pa[torch.randperm(len(pa), generator=gx)][:total]
        pb = pb[torch.randperm(len(pb), generator=gy)][:total]
        per_level.append(sliced_wasserstein(pa, pb, gen=gd) * 1e3)
    return {"swd": float(np.mean(per_level)), "swd_by_level": per_level}


def color_hist_distance(frames: torch.Tensor, real: torch.Tensor, bins: int = 16) -> float:
    """Hellinger distance (0 = identical, 1 = disjoint) between the 3-D RGB histograms
    (``bins`` per channel) of all pixels of both sets."""
    def hist(x):
        q = (x.clamp(0, 1 - 1e-6) * bins).long().reshape(-1, 3)
        idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
        h = torch.bincount(idx, minlength=bins ** 3).double()
        return h / h.sum()
    p, q = hist(frames), hist(real)
    return float(torch.sqrt((1 - torch.sqrt(p * q).sum()).clamp(min=0)))


def ms_ssim_lum(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean MS-SSIM between the channel-mean brightness of frames and reference [T, H, W, 3]."""
    vals = []
    for i in range(0, len(frames), 8):
        a = to_signed(nhwc_to_nchw(frames[i:i + 8]))
        b = to_signed(nhwc_to_nchw(reference[i:i + 8]))
        vals.append((1 - float(msssim_loss_brightness(a, b))) * len(a))
    return float(np.sum(vals) / len(frames))

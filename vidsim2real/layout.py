"""Image layout, value-range and pixel-coordinate conversions, in one place.

Rasterizer side and files: NHWC, values in [0, 1]. Networks: NCHW, values in [-1, 1].
Pixel coordinates: pixel centres at integers, (x, y) = (column, row).
"""
from __future__ import annotations

import torch


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] -> [B, C, H, W] (contiguous)."""
    return x.permute(0, 3, 1, 2).contiguous()


def nchw_to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W, C] (contiguous)."""
    return x.permute(0, 2, 3, 1).contiguous()


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (network inputs)."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (network outputs)."""
    return (x + 1.0) * 0.5


def to_network(images_nhwc: torch.Tensor) -> torch.Tensor:
    """NHWC [0, 1] -> NCHW [-1, 1]."""
    return to_signed(nhwc_to_nchw(images_nhwc))


def from_network(images_nchw: torch.Tensor) -> torch.Tensor:
    """NCHW [-1, 1] -> NHWC [0, 1], clamped."""
    return nchw_to_nhwc(to_unit(images_nchw.float()).clamp(0, 1))


def uint8_to_network(image_hwc) -> torch.Tensor:
    """One uint8 image [H, W, 3] (numpy or tensor) -> [1, 3, H, W] float in [-1, 1]."""
    x = torch.as_tensor(image_hwc)
    return to_network(x[None].float() / 255.0)


def pixel_to_grid(uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel coordinates [..., 2] (centres at integers) -> grid_sample coordinates
    (align_corners=True) of a width x height image."""
    gx = uv[..., 0] * (2.0 / max(width - 1, 1)) - 1.0
    gy = uv[..., 1] * (2.0 / max(height - 1, 1)) - 1.0
    return torch.stack([gx, gy], -1)

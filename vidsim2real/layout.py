"""Image layout and value-range conversions, in one place.

Rasterizer side and files: NHWC, values in [0, 1]. Networks: NCHW, values in [-1, 1].
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

"""Cell borders evaluated on the surface (``texture.detail_cells``).

A tissue made of small lobules (the pancreas' polygon network) shows thin darker borders
between cells a fraction of a millimetre apart: finer than a detail layer's texels can hold, so
drawn from texels they come out as wide soft lobules two to three times the real size. Here the
pattern is a function of the rest-pose surface point instead — the section of a jittered 3D
Voronoi partition (Worley 1996) through the surface — evaluated per pixel at any resolution:
each border is a line of fixed width on the surface, widened and faded to the pixel's footprint
so that it averages out, rather than aliasing, when the tissue is seen from afar. Rest-pose
positions make the cells move with the surface (view-consistent by construction).
"""
from __future__ import annotations

import zlib

import torch

WIDTH = 0.06          # border half-width (std of its Gaussian profile) as a fraction of the cell size
# the widths a fit may give (texture.detail_cells_width): thin walls; rims of bulging lobules
BORDER_WIDTHS = {"thin": WIDTH, "wide": 0.2}
_MASK = 0xFFFFFFFF
_OFFSETS = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])


def _hash(cells: torch.Tensor, seed: torch.Tensor, salt: int) -> torch.Tensor:
    """A 32-bit integer hash of integer cell coordinates [N, K, 3] (int64) and a seed [N, 1]
    per point -> uniform floats in [0, 1) [N, K]. Integer arithmetic only (masked to 32 bits
    after each product), so every device and backend draws the same cells."""
    h = (seed + salt * 0x9E3779B1) & _MASK
    for axis, prime in enumerate((0x8DA6B343, 0xD8163841, 0xCB1AB31F)):
        h = (h ^ ((cells[..., axis] * prime) & _MASK)) & _MASK
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK
        h = ((h ^ (h >> 12)) * 0x297A2D39) & _MASK
    h = h ^ (h >> 15)
    return h.to(torch.float32) * (1.0 / 2.0 ** 32)


def border_distance(pos: torch.Tensor, size: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Distance from each point to the nearest wall of its cell, in cell units. pos [N, 3]
    (metres, rest pose), size [N] cell size (metres, > 0), seed [N] int64 (which partition) ->
    [N] float32. The partition: one feature point jittered uniformly in every unit cube of
    pos / size; a point's cell is its nearest feature point's, and the distance to a wall is the
    least distance to the bisecting planes with the other feature points of the 27 cubes around."""
    return nearest_wall(pos, size, seed)[0]


def nearest_wall(pos: torch.Tensor, size: torch.Tensor, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``border_distance`` [N] and the nearest wall's unit normal [N, 3], pointing into the
    point's cell (the direction in which the distance grows: its gradient)."""
    p = pos.float() / size.float()[:, None]
    base = torch.floor(p).to(torch.int64)
    # neighbouring pixels share their cubes: hash each (cube, seed) once, found by a packed key
    # (16 bits per axis: +-32k cells, 3 m of surface at 0.1 mm cells; 15 bits of seed index)
    seeds, which = torch.unique(seed.to(torch.int64), return_inverse=True)
    b = (base + 2 ** 15).clamp(0, 2 ** 16 - 1)
    packed = (which << 48) | (b[:, 0] << 32) | (b[:, 1] << 16) | b[:, 2]
    key, inv = torch.unique(packed, return_inverse=True)
    cube = torch.stack([(key >> 32) & 0xFFFF, (key >> 16) & 0xFFFF, key & 0xFFFF], 1) - 2 ** 15
    offsets = _OFFSETS.to(pos.device)
    cells = cube[:, None, :] + offsets[None]                                     # [U, 27, 3]
    s = seeds[key >> 48][:, None]
    jitter = torch.stack([_hash(cells, s, k) for k in range(3)], -1)            # [U, 27, 3]
    feat = offsets.float()[None] + jitter[inv]             # relative to the point's cube: float32 keeps precision
    p = p - base.float()
    d2 = ((feat - p[:, None]) ** 2).sum(-1)                                   # [N, 27]
    near = d2.argmin(1)
    c1 = feat[torch.arange(len(p), device=p.device), near]                      # [N, 3]
    gap = c1[:, None] - feat                                                    # [N, 27, 3]
    length = gap.norm(dim=-1)
    # signed distance of p past the bisector of c1 and each other point, towards c1
    mid = 0.5 * (c1[:, None] + feat)
    dist = ((p[:, None] - mid) * gap).sum(-1) / length.clamp(min=1e-12)
    dist = torch.where(length > 1e-9, dist, torch.full_like(dist, float("inf")))
    d, wall = dist.min(1)
    normal = gap[torch.arange(len(p), device=p.device), wall] / length.gather(1, wall[:, None]).clamp(min=1e-12)
    return d.clamp(min=0.0), normal


_TABLE: tuple[torch.Tensor, torch.Tensor] | None = None


def _line_means() -> tuple[torch.Tensor, torch.Tensor]:
    """(log widths [64], the mean over a surface of a border line of that std in cell units
    [64]): from the wall distances of 16384 points on planes through the partition at random
    orientations (a property of the partition, the same for every surface; computed once)."""
    global _TABLE
    if _TABLE is None:
        gen = torch.Generator().manual_seed(0)
        n = 16384
        a, b = torch.linalg.qr(torch.randn(n // 256, 3, 3, generator=gen))[0][:, :, :2].unbind(-1)
        uv = torch.rand(n // 256, 256, 2, generator=gen) * 20.0
        pos = (a[:, None] * uv[..., :1] + b[:, None] * uv[..., 1:]).reshape(-1, 3) + 100.0
        d = border_distance(pos, torch.ones(n), torch.zeros(n, dtype=torch.int64))
        logw = torch.linspace(-6.0, 2.0, 64)
        _TABLE = logw, torch.exp(-0.5 * (d[None] / logw.exp()[:, None]) ** 2).mean(1)
    return _TABLE


def _line_mean(wide: torch.Tensor) -> torch.Tensor:
    """The surface mean of a border line of std ``wide`` [N] (cell units), from the table."""
    logw, means = (t.to(wide.device) for t in _line_means())
    x = ((wide.clamp(min=1e-6).log() - logw[0]) / (logw[1] - logw[0])).clamp(0, len(logw) - 1.001)
    i = x.floor().long()
    f = x - i
    return means[i] * (1 - f) + means[i + 1] * f


def cell_pattern(pos: torch.Tensor, footprint: torch.Tensor, size: torch.Tensor, seed: torch.Tensor,
                 width: torch.Tensor | float = WIDTH) -> torch.Tensor:
    """How much of each pixel is cell border, about the pattern's mean, prefiltered to its
    footprint: pos [N, 3] rest-pose points (metres), footprint [N] metres of surface per pixel
    (``pixel_footprint``; 0: unfiltered), size [N] cell size (metres), seed [N] -> [N]: zero mean
    over a surface, up to about 0.65 in a wall's middle, about -0.35 far from walls (thin borders).
    A border is a Gaussian line of std ``width`` x size across the wall (scalar or [N]; a wide
    one, ~0.2, darkens each cell's rim and leaves its middle bright, like a bulging lobule); seen through a pixel it widens to
    sqrt(w^2 + (footprint / 2)^2) and fades by w / that width, so the mean stays 0 while the
    lines stop resolving: cells seen from afar average out instead of aliasing. Zero mean keeps
    a class's colour where the borders darken it (the layer's own exp averages 1 likewise)."""
    d = border_distance(pos, size, seed)                                     # cell units
    wide = torch.sqrt(width ** 2 + (0.5 * footprint.float() / size.float()) ** 2)
    return (width / wide) * (torch.exp(-0.5 * (d / wide) ** 2) - _line_mean(wide))


def object_seed(name: str) -> int:
    """The partition an object's cells come from: the same name gives the same cells in every
    scene, run and process (not Python's salted ``hash``)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


DOME = 0.4            # a lobule's dome rises from its wall over this many cell units, then is flat


def cell_slope(pos: torch.Tensor, footprint: torch.Tensor, size: torch.Tensor, seed: torch.Tensor,
               height: torch.Tensor | float) -> torch.Tensor:
    """The slope of bulging lobules (``texture.detail_bumps``): each cell of the partition
    (``cell_pattern``'s) a dome of ``height`` x size (scalar or [N]) over its walls, h(d) = 1 -
    (1 - d / DOME)^2 for the wall distance d < DOME (cell units), flat beyond. pos [N, 3]
    rest-pose points (metres), footprint [N] metres per pixel, size [N] metres, seed [N] ->
    [N, 3]: the height's rest-pose gradient (metres per metre), which tilts the shading normal.
    Its curvature is what gives every lobule its own highlight and shaded rim under the scope's
    light. Like the borders it fades by w / sqrt(w^2 + (footprint / 2)^2) (w = DOME / 2) once a
    pixel covers a dome, so domes seen from afar average out instead of aliasing."""
    d, normal = nearest_wall(pos, size, seed)
    rise = (2.0 / DOME) * (1.0 - d / DOME).clamp(min=0.0)              # dh/dd, cell units
    w = 0.5 * DOME
    fade = w / torch.sqrt(w ** 2 + (0.5 * footprint.float() / size.float()) ** 2)
    return (height * rise * fade)[:, None] * normal

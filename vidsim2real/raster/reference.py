"""Pure-torch reference rasterizer: documents the semantics; also the fallback backend.

Semantics (shared bit for bit by the C++ and CUDA kernels, see vidsim2real/ext/csrc/raster_common.h):

* ``q_i = P x_i`` with ``P = K [R|t]`` (3x4) maps a world vertex to homogeneous pixel
  coordinates; ``q_i[2]`` is its camera-space depth z.
* The rows ``r_i`` of the adjugate of ``Q = [q0 q1 q2]`` (``r0 = q1 x q2`` and cyclic) give edge
  functions ``E_i(u, v) = r_i . (u, v, 1)``. With ``det = q0 . r0`` and the rows multiplied by
  ``sign(det)``, pixel (u, v) (pixel centres at integers) is covered iff all ``E_i >= 0`` and
  ``sum(E) > 0``; its perspective-correct barycentrics are ``E_i / sum(E)`` and its depth is
  ``z = |det| / sum(E)``. A fragment exists iff additionally ``near <= z <= far``: this clips
  triangles at the near plane exactly (no dropped or wrapped triangles behind the camera).
* ``det < 0`` means the face normal ``(v1 - v0) x (v2 - v0)`` points towards the camera (front
  face); ``cull_backfaces`` drops faces with ``det > 0``; ``det == 0`` (edge-on) draws nothing.
* Per pixel the fragment with the smallest key ``(float32(z) bits << 32) | face`` wins: the
  nearest surface, and on equal float32 depth the lower face id.

All arithmetic is float64 in the order written here; the kernels use the same order.
"""
from __future__ import annotations

import torch

_EMPTY = torch.iinfo(torch.int64).max
_MAX_PAIRS = 1 << 22  # pixel-face candidate pairs processed at once (bounds memory)


def project_h(P: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """Homogeneous pixel coordinates. P: [B, 3, 4] float64; verts: [B, V, 3] float64 -> [B, V, 3]."""
    x, y, z = verts[..., 0], verts[..., 1], verts[..., 2]
    rows = []
    for r in range(3):
        p = P[:, r, :, None]  # [B, 4, 1] broadcasts over V
        rows.append(((p[:, 0] * x + p[:, 1] * y) + p[:, 2] * z) + p[:, 3])
    return torch.stack(rows, -1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                        a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                        a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)


def face_setup(q0: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor):
    """Edge-function rows and determinant. q*: [..., 3] -> rows [..., 3, 3] (sign-normalised), det [...]."""
    r0, r1, r2 = _cross(q1, q2), _cross(q2, q0), _cross(q0, q1)
    det = (q0[..., 0] * r0[..., 0] + q0[..., 1] * r0[..., 1]) + q0[..., 2] * r0[..., 2]
    rows = torch.stack([r0, r1, r2], -2)
    rows = torch.where((det < 0)[..., None, None], -rows, rows)
    return rows, det


def edge_values(rows: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """E_i at pixels. rows: [N, 3, 3]; x, y: [N] float64 -> [N, 3]."""
    return (rows[..., 0] * x[:, None] + rows[..., 1] * y[:, None]) + rows[..., 2]


def _bboxes(q: torch.Tensor, width: int, height: int, znear: float, zfar: float):
    """Pixel bounding boxes of the part of each face in front of the near plane.

    q: [N, 3 (vertex), 3] -> x0, x1, y0, y1 (int64, inclusive) and ok [N] (bool).
    """
    inf = torch.tensor(float("inf"), dtype=q.dtype, device=q.device)
    umin = torch.full(q.shape[:1], float("inf"), dtype=q.dtype, device=q.device)
    umax, vmin, vmax = -umin.clone(), umin.clone(), -umin.clone()
    n_front = torch.zeros(q.shape[:1], dtype=torch.int64, device=q.device)
    n_far = torch.zeros_like(n_front)
    for i in range(3):
        a, b = q[:, i], q[:, (i + 1) % 3]
        a_in, b_in = a[:, 2] >= znear, b[:, 2] >= znear
        n_front += a_in
        n_far += a[:, 2] > zfar
        cands = [(a_in, a[:, 0] / a[:, 2], a[:, 1] / a[:, 2])]
        t = (znear - a[:, 2]) / (b[:, 2] - a[:, 2])
        cands.append((a_in != b_in, (a[:, 0] + t * (b[:, 0] - a[:, 0])) / znear,
                      (a[:, 1] + t * (b[:, 1] - a[:, 1])) / znear))
        for m, u, v in cands:
            umin = torch.minimum(umin, torch.where(m, u, inf))
            umax = torch.maximum(umax, torch.where(m, u, -inf))
            vmin = torch.minimum(vmin, torch.where(m, v, inf))
            vmax = torch.maximum(vmax, torch.where(m, v, -inf))
    ok = (n_front > 0) & (n_far < 3)
    eps = 1e-7 * (1.0 + (umax - umin) + (vmax - vmin))
    fx0, fx1 = torch.ceil(umin - eps), torch.floor(umax + eps)
    fy0, fy1 = torch.ceil(vmin - eps), torch.floor(vmax + eps)
    ok &= (fx0 <= width - 1) & (fx1 >= 0) & (fy0 <= height - 1) & (fy1 >= 0)
    clamp = lambda t, hi: torch.nan_to_num(t, nan=0.0).clamp(0, hi).to(torch.int64)  # noqa: E731
    return clamp(fx0, width - 1), clamp(fx1, width - 1), clamp(fy0, height - 1), clamp(fy1, height - 1), ok


def _depth_and_inside(e: torch.Tensor, absdet: torch.Tensor, znear: float, zfar: float):
    s = (e[:, 0] + e[:, 1]) + e[:, 2]
    z = absdet / s
    inside = (e >= 0).all(1) & (s > 0) & (z >= znear) & (z <= zfar)
    return inside, z, s


def rasterize_torch(P: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    znear: float, zfar: float, cull_backfaces: bool):
    """Reference rasterizer. P: [B, 3, 4] f64; verts: [B, V, 3] f64; faces: [F, 3] int64.

    Returns pix_to_face [B, H, W] int64 (-1 background), bary [B, H, W, 3] float32,
    zbuf [B, H, W] float32 (0 background).
    """
    B, F = verts.shape[0], faces.shape[0]
    dev = verts.device
    q = project_h(P, verts)                                   # [B, V, 3]
    qf = q[:, faces]                                          # [B, F, 3, 3]
    rows, det = face_setup(qf[:, :, 0], qf[:, :, 1], qf[:, :, 2])
    keep = (det > 0) | (det < 0)  # also drops NaN
    if cull_backfaces:
        keep &= det < 0
    x0, x1, y0, y1, ok = _bboxes(qf.reshape(-1, 3, 3), width, height, znear, zfar)
    keep = keep.reshape(-1) & ok
    idx = torch.nonzero(keep).squeeze(1)                      # flat (b * F + f)
    x0, x1, y0, y1 = x0[idx], x1[idx], y0[idx], y1[idx]
    w = x1 - x0 + 1
    area = w * (y1 - y0 + 1)
    rows = rows.reshape(-1, 3, 3)[idx]
    absdet = det.reshape(-1)[idx].abs()
    keys = torch.full((B * height * width,), _EMPTY, dtype=torch.int64, device=dev)

    # Enumerate (face, pixel-in-bbox) pairs in chunks of at most _MAX_PAIRS.
    starts = torch.cumsum(area, 0) - area
    face_lo = 0
    while face_lo < len(idx):
        # how many faces fit in this chunk (at least one)
        limit = int(starts[face_lo]) + _MAX_PAIRS
        face_hi = max(face_lo + 1, int(torch.searchsorted(starts, limit, right=False)))
        face_hi = min(face_hi, len(idx))
        sel = slice(face_lo, face_hi)
        n = area[sel]
        owner = torch.repeat_interleave(torch.arange(face_lo, face_hi, device=dev), n)
        k = torch.arange(int(n.sum()), device=dev) - (starts[owner] - starts[face_lo])
        px = x0[owner] + k % w[owner]
        py = y0[owner] + torch.div(k, w[owner], rounding_mode="floor")
        e = edge_values(rows[owner], px.double(), py.double())
        inside, z, _ = _depth_and_inside(e, absdet[owner], znear, zfar)
        owner, px, py, z = owner[inside], px[inside], py[inside], z[inside]
        flat = idx[owner]
        b = torch.div(flat, F, rounding_mode="floor")
        face = flat - b * F
        zbits = z.float().view(torch.int32).to(torch.int64)   # z > 0: bit order = value order
        key = (zbits << 32) | face
        keys.scatter_reduce_(0, (b * height + py) * width + px, key, reduce="amin")
        face_lo = face_hi

    pix_to_face = torch.full((B * height * width,), -1, dtype=torch.int64, device=dev)
    bary = torch.zeros(B * height * width, 3, dtype=torch.float32, device=dev)
    zbuf = torch.zeros(B * height * width, dtype=torch.float32, device=dev)
    hit = torch.nonzero(keys != _EMPTY).squeeze(1)
    if len(hit):
        face = keys[hit] & 0xFFFFFFFF
        b = torch.div(hit, height * width, rounding_mode="floor")
        rem = hit - b * height * width
        py = torch.div(rem, width, rounding_mode="floor")
        px = rem - py * width
        flat = b * F + face
        pos = torch.searchsorted(idx, flat)                   # idx is sorted: locate the setup
        e = edge_values(rows[pos], px.double(), py.double())
        _, z, s = _depth_and_inside(e, absdet[pos], znear, zfar)
        pix_to_face[hit] = face
        bary[hit] = (e / s[:, None]).float()
        zbuf[hit] = z.float()
    return (pix_to_face.view(B, height, width), bary.view(B, height, width, 3), zbuf.view(B, height, width))


"""Rasterizer: G-buffers and exact surface correspondences.

One op, three implementations (torch reference, C++ CPU, CUDA) that agree bit for bit; see
``reference.py`` for the exact semantics. Public functions:

* ``rasterize(verts, faces, K, w2c, image_size, near, far)`` -> ``Fragments``
* ``barycentrics(fragments, verts, faces)``: the same barycentrics, differentiable w.r.t. verts
* ``interpolate(attr, fragments, faces, verts=None)``: per-vertex attributes at every pixel
* ``correspondences(frags_a, frags_b, verts_b, faces)``: ground-truth flow between any two frames
* ``warp(image, uv)``: sample an image at the positions a correspondence gives
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import torch.nn.functional as F

from ..layout import pixel_to_grid
from ..ext import BACKENDS, load_extension, resolve_backend
from .reference import rasterize_torch

__all__ = ["Fragments", "Correspondence", "rasterize", "barycentrics", "interpolate",
           "interpolate_face_corners", "correspondences", "warp", "BACKENDS"]


@dataclass(frozen=True)
class Fragments:
    """Rasterizer output for B frames of H x W pixels (NHWC).

    ``pix_to_face[b, y, x] = f >= 0`` means the nearest surface seen through pixel (x, y) of
    frame b (pixel centre at (x, y), OpenCV convention) is face ``f`` of the ``faces`` passed
    to ``rasterize`` (the scene's faces in object order); ``-1`` is background.
    ``bary[b, y, x, i]`` is the perspective-correct barycentric weight of vertex ``faces[f, i]``
    (the three sum to 1); ``zbuf[b, y, x]`` is the camera-space depth z of that surface point
    in metres (0 for background). ``K`` [B, 3, 3] and ``w2c`` [B, 4, 4] (float64) are the
    cameras used, kept so that correspondences and re-derived barycentrics need no extra args.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    K: torch.Tensor
    w2c: torch.Tensor
    near: float
    far: float

    @property
    def mask(self) -> torch.Tensor:
        """[B, H, W] bool: pixels that see a surface."""
        return self.pix_to_face >= 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pix_to_face.shape)

    def __getitem__(self, index) -> "Fragments":
        """Select frames (int, slice or index tensor), keeping the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Fragments(self.pix_to_face[index], self.bary[index], self.zbuf[index], self.K[index],
                         self.w2c[index], self.near, self.far)


def _batch(t: torch.Tensor, dims: int, B: int, name: str) -> torch.Tensor:
    if t.dim() == dims - 1:
        t = t.unsqueeze(0)
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims - 1} or {dims} dimensions, got shape {tuple(t.shape)}")
    if t.shape[0] == 1 and B > 1:
        t = t.expand(B, *t.shape[1:])
    if t.shape[0] != B:
        raise ValueError(f"{name} has batch {t.shape[0]}, expected {B}")
    return t


def rasterize(verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor,
              image_size: tuple[int, int], near: float, far: float, *, cull_backfaces: bool = False,
              backend: str = "auto", validate: bool = True) -> Fragments:
    """Rasterize triangles into B frames.

    Args:
        verts: [B, V, 3] or [V, 3] world-space vertex positions (metres; per frame, so deforming
            meshes work). Any float dtype; computed in float64.
        faces: [F, 3] int vertex indices.
        K: [B, 3, 3] or [3, 3] intrinsics; w2c: [B, 4, 4] or [4, 4] world-to-camera (OpenCV axes).
        image_size: (H, W). near, far: clip depths in metres (0 < near < far).
        cull_backfaces: drop faces whose normal points away from the camera.
        backend: "auto" | "torch" | "cpu" | "cuda" (see ``vidsim2real.ext.resolve_backend``).
        validate: check face indices and vertex finiteness (each check syncs a GPU with the
            host; the renderer, whose meshes were checked when the scene loaded, skips them).
    Returns:
        Fragments (pix_to_face int64, bary float32, zbuf float32, all [B, H, W(, 3)]).
    """
    H, W = int(image_size[0]), int(image_size[1])
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if not (0 < near < far):
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    B = max(verts.shape[0] if verts.dim() == 3 else 1, K.shape[0] if K.dim() == 3 else 1,
            w2c.shape[0] if w2c.dim() == 3 else 1)
    verts = _batch(verts, 3, B, "verts")
    K = _batch(K, 3, B, "K").to(device=verts.device, dtype=torch.float64)
    w2c = _batch(w2c, 3, B, "w2c").to(device=verts.device, dtype=torch.float64)
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    faces = faces.to(device=verts.device, dtype=torch.int64).contiguous()
    if validate and faces.numel() and (faces.min() < 0 or faces.max() >= verts.shape[1]):
        raise ValueError("faces index vertices out of range")
    v64 = verts.detach().to(torch.float64).contiguous()
    if validate and not torch.isfinite(v64).all():
        raise ValueError("verts contain NaN or inf")
    P = torch.matmul(K, w2c[:, :3, :]).contiguous()          # [B, 3, 4]
    which = resolve_backend(backend, verts.device)
    if which == "torch":
        out = rasterize_torch(P, v64, faces, H, W, float(near), float(far), cull_backfaces)
    else:
        out = load_extension(cuda=which == "cuda").rasterize(P, v64, faces, H, W, float(near), float(far),
                                                              bool(cull_backfaces))
    return Fragments(out[0], out[1], out[2], K, w2c, float(near), float(far))


def _visible(fragments: Fragments):
    """Flat indices of visible pixels and their frame index, face id and (x, y)."""
    B, H, W = fragments.shape
    p2f = fragments.pix_to_face.reshape(-1)
    idx = torch.nonzero(p2f >= 0).squeeze(1)
    b = torch.div(idx, H * W, rounding_mode="floor")
    rem = idx - b * H * W
    y = torch.div(rem, W, rounding_mode="floor")
    x = rem - y * W
    return idx, b, p2f[idx], x, y


def barycentrics(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics recomputed with differentiable torch ops.

    Equal to ``fragments.bary`` (up to float rounding) but carries gradients to ``verts``
    (positions inside each covering triangle; the coverage itself is not differentiable).
    verts: [B, V, 3] or [V, 3]; faces: [F, 3] -> [B, H, W, 3] (zeros on background).
    """
    B, H, W = fragments.shape
    idx, b, f, x, y = _visible(fragments)
    dtype = verts.dtype if verts.is_floating_point() else torch.float32
    v = _batch(verts, 3, B, "verts")
    fv = v[b[:, None], faces.to(v.device)[f]]                          # [N, 3, 3]
    P = torch.matmul(fragments.K, fragments.w2c[:, :3, :]).to(dtype)[b]  # [N, 3, 4]
    q = torch.einsum("nij,nkj->nki", P[:, :, :3], fv) + P[:, None, :, 3]   # [N, 3, 3]
    rows = torch.stack([torch.linalg.cross(q[:, 1], q[:, 2]), torch.linalg.cross(q[:, 2], q[:, 0]),
                        torch.linalg.cross(q[:, 0], q[:, 1])], 1)
    pix = torch.stack([x.to(dtype), y.to(dtype), torch.ones_like(x, dtype=dtype)], -1)
    e = torch.einsum("nij,nj->ni", rows, pix)
    bary = e / e.sum(-1, keepdim=True)
    out = torch.zeros(B * H * W, 3, dtype=dtype, device=v.device)
    out = out.index_put((idx,), bary)
    return out.view(B, H, W, 3)


def interpolate(attr: torch.Tensor, fragments: Fragments, faces: torch.Tensor,
                verts: torch.Tensor | None = None) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel.

    attr: [V, C] (shared by all frames) or [B, V, C]; faces: [F, 3]. With ``verts`` ([B, V, 3]
    or [V, 3]) the barycentrics are recomputed differentiably so gradients also reach vertex
    positions; without, ``fragments.bary`` is used and gradients reach ``attr`` only.
    Returns [B, H, W, C]; background pixels are 0.
    """
    B, H, W = fragments.shape
    if verts is None:
        return _interpolate_dense(attr, fragments, faces)
    idx, b, f, _, _ = _visible(fragments)
    bary = barycentrics(fragments, verts, faces).reshape(-1, 3)[idx]
    fi = faces.to(attr.device)[f]                                       # [N, 3]
    if attr.dim() == 2:
        corner = attr[fi]                                               # [N, 3, C]
    elif attr.dim() == 3:
        corner = _batch(attr, 3, B, "attr")[b[:, None], fi]
    else:
        raise ValueError(f"attr must be [V, C] or [B, V, C], got {tuple(attr.shape)}")
    vals = (corner * bary.to(attr.dtype)[..., None]).sum(1)
    out = torch.zeros(B * H * W, attr.shape[-1], dtype=attr.dtype, device=attr.device)
    out = out.index_put((idx,), vals)
    return out.view(B, H, W, -1)


def _interpolate_dense(attr: torch.Tensor, fragments: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """``interpolate`` without selecting the visible pixels first: every pixel gathers its
    face's corners (background: face 0 with barycentrics 0), so there is no host sync and a
    batch costs a handful of ops."""
    B, H, W = fragments.shape
    if attr.dim() not in (2, 3):
        raise ValueError(f"attr must be [V, C] or [B, V, C], got {tuple(attr.shape)}")
    fi = faces.to(attr.device)[fragments.pix_to_face.clamp(min=0).reshape(B, -1)]     # [B, HW, 3]
    if attr.dim() == 2:
        corner = attr[fi]                                                            # [B, HW, 3, C]
    else:
        a = _batch(attr, 3, B, "attr")
        corner = torch.gather(a, 1, fi.reshape(B, -1, 1).expand(-1, -1, a.shape[-1])).view(B, -1, 3, a.shape[-1])
    bary = fragments.bary.reshape(B, -1, 3, 1).to(attr.dtype)                        # 0 on background
    return (corner * bary).sum(2).view(B, H, W, -1)


def interpolate_face_corners(corner_attr: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-face-corner attributes (e.g. UVs with seams). corner_attr: [F, 3, C] -> [B, H, W, C]."""
    B, H, W = fragments.shape
    idx, _, f, _, _ = _visible(fragments)
    bary = fragments.bary.reshape(-1, 3)[idx].to(corner_attr.dtype)
    vals = (corner_attr[f] * bary[..., None]).sum(1)
    out = torch.zeros(B * H * W, corner_attr.shape[-1], dtype=corner_attr.dtype, device=corner_attr.device)
    return out.index_put((idx,), vals).view(B, H, W, -1)


@dataclass(frozen=True)
class Correspondence:
    """Where each pixel of frame a is seen in frame b.

    uv: [B, H, W, 2] float32 sub-pixel position (x, y) in frame b (pixel centres at integers);
    valid: [B, H, W] bool, the surface point is visible in a, inside frame b, in front of b's
    near plane and not occluded in b; depth: [B, H, W] float32 its depth in camera b.
    """

    uv: torch.Tensor
    valid: torch.Tensor
    depth: torch.Tensor

    @property
    def flow(self) -> torch.Tensor:
        """Optical flow a -> b, [B, H, W, 2] pixels (0 where invalid)."""
        B, H, W, _ = self.uv.shape
        ys, xs = torch.meshgrid(torch.arange(H, device=self.uv.device), torch.arange(W, device=self.uv.device),
                                indexing="ij")
        grid = torch.stack([xs, ys], -1).to(self.uv.dtype)
        return torch.where(self.valid[..., None], self.uv - grid, torch.zeros_like(self.uv))


def correspondences(frags_a: Fragments, frags_b: Fragments, verts_b: torch.Tensor, faces: torch.Tensor, *,
                    depth_tol_abs: float = 5e-4, depth_tol_rel: float = 0.01) -> Correspondence:
    """Ground-truth correspondences a -> b through the same surface point.

    The surface point of pixel (x, y) in frame a is its face f and barycentrics; in frame b it
    sits at ``sum_i bary_i * verts_b[faces[f, i]]`` (exact under deformation), projected with
    b's camera. It counts as visible in b when b's pixel nearest to it shows the same face or
    a depth within ``depth_tol_abs + depth_tol_rel * z`` metres.

    frags_a, frags_b: Fragments with equal B (frame pairs a[i] -> b[i]) and the same image size
    and faces; verts_b: [B, V, 3] or [V, 3] world vertices of the frames of b.
    """
    B, H, W = frags_a.shape
    if frags_b.shape != frags_a.shape:
        raise ValueError(f"fragment shapes differ: {frags_a.shape} vs {frags_b.shape}")
    dev = frags_a.pix_to_face.device
    # every pixel at once (background: face 0, masked at the end): no host sync, few ops
    p2f = frags_a.pix_to_face.reshape(B, -1)
    seen_a = p2f >= 0
    f = p2f.clamp(min=0)
    vb = _batch(verts_b, 3, B, "verts_b").to(device=dev, dtype=torch.float64)
    fi = faces.to(dev)[f].reshape(B, -1)                                                  # [B, HW * 3]
    corner = torch.gather(vb, 1, fi[..., None].expand(-1, -1, 3)).view(B, -1, 3, 3)       # [B, HW, 3, 3]
    bary = frags_a.bary.reshape(B, -1, 3).double()
    X = (corner * bary[..., None]).sum(2)                                                 # [B, HW, 3] world
    Xc = torch.einsum("bij,bnj->bni", frags_b.w2c[:, :3, :3], X) + frags_b.w2c[:, None, :3, 3]
    z = Xc[..., 2]
    zsafe = torch.where(z > 0, z, torch.ones_like(z))
    K = frags_b.K
    u = (K[:, None, 0, 0] * Xc[..., 0] + K[:, None, 0, 1] * Xc[..., 1]) / zsafe + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * Xc[..., 1] / zsafe + K[:, None, 1, 2]
    ok = seen_a & (z >= frags_b.near) & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
    xi = torch.round(u).clamp(0, W - 1).long()
    yi = torch.round(v).clamp(0, H - 1).long()
    pb = yi * W + xi
    face_b = torch.gather(frags_b.pix_to_face.reshape(B, -1), 1, pb)
    zb = torch.gather(frags_b.zbuf.reshape(B, -1), 1, pb).double()
    seen = (face_b == p2f) | ((face_b >= 0) & ((zb - z).abs() <= depth_tol_abs + depth_tol_rel * z))
    valid = ok & seen
    uv = torch.where(seen_a[..., None], torch.stack([u, v], -1), torch.zeros_like(X[..., :2])).float()
    depth = torch.where(seen_a, z, torch.zeros_like(z)).float()
    return Correspondence(uv.view(B, H, W, 2), valid.view(B, H, W), depth.view(B, H, W))



def warp(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` [B, C, H, W] at pixel positions ``uv`` [B, H', W', 2] (bilinear, border
    padding): with ``uv`` from ``correspondences(a, b)`` this brings frame b's image into frame a.
    Returns [B, C, H', W']."""
    H, W = image.shape[-2:]
    grid = pixel_to_grid(uv, W, H).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)

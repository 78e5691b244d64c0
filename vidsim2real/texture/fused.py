"""Fused neural-texture sampling: every object of a texture set sampled at every pixel of a
batch in one kernel launch per object and direction, pyramid levels and planes included.

Three implementations with one semantics (the rasterizer's pattern):

* the torch reference: ``NeuralTexture.sample`` (grid_sample per level and plane), applied per
  object by ``sample_set_reference``: readable, and what the kernels are tested against;
* a C++ CPU kernel and a CUDA kernel (``vidsim2real/ext/csrc/texture_*.cpp|cu``): per point,
  the planes and their weights are found once, all levels read bilinearly and summed; the
  backward scatters into the texels (channel-parallel on the CPU, atomics on the GPU).

Gradients flow to the texels only: positions, normals and UVs are constants of the G-buffer.
The kernels skip planes whose triplanar weight is exactly zero (they contribute nothing).
"""
from __future__ import annotations

import torch

from ..ext import load_extension, resolve_backend

TRIPLANAR, UV = 0, 1


def object_inputs(tex, pos, nrm, faces, bary, face_offset: int, face_count: int):
    """The kernel inputs (mode, a, b, lo, hi) of one object's texture for all N points.

    pos, nrm [N, 3] rest-pose position and normal; faces [N] scene face ids and bary [N, 3]
    (UV textures); points of other objects get clamped dummies (the kernel skips them)."""
    dtype = tex.levels[0].dtype
    if tex.kind == "triplanar":
        return TRIPLANAR, pos.to(dtype).contiguous(), nrm.to(dtype).contiguous(), tex.lo.to(dtype), tex.hi.to(dtype)
    local = (faces - face_offset).clamp(0, max(face_count - 1, 0))
    uv = (tex.corner_uv[local] * bary[..., None].to(tex.corner_uv.dtype)).sum(1)
    a = uv.to(dtype).contiguous()
    return UV, a, nrm.to(dtype).contiguous(), tex.corner_uv.new_zeros(3, dtype=dtype), \
        tex.corner_uv.new_ones(3, dtype=dtype)


class _FusedSample(torch.autograd.Function):
    """out [N, C] = sum over objects o of (points with obj_ids == o) sampled from o's levels."""

    @staticmethod
    def forward(ctx, ext, specs, obj_ids, channels, *levels):
        out = torch.zeros(obj_ids.shape[0], channels, dtype=levels[0].dtype, device=obj_ids.device)
        i = 0
        for o, (n_levels, (mode, a, b, lo, hi), sharpness) in enumerate(specs):
            if n_levels:
                ext.texture_forward(list(levels[i:i + n_levels]), obj_ids, o, a, b, lo, hi, sharpness, mode, out)
            i += n_levels
        ctx.ext, ctx.specs = ext, specs
        ctx.save_for_backward(obj_ids, *levels)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        obj_ids, *levels = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grads, i = [], 0
        for o, (n_levels, (mode, a, b, lo, hi), sharpness) in enumerate(ctx.specs):
            if n_levels:
                grads += ctx.ext.texture_backward(levels[i:i + n_levels], obj_ids, o, a, b, lo, hi, sharpness, mode,
                                                  grad_out)
            i += n_levels
        return (None, None, None, None, *grads)


def sample_set(textures: list, obj_ids: torch.Tensor, pos: torch.Tensor, nrm: torch.Tensor, faces: torch.Tensor,
               bary: torch.Tensor, face_offsets, present=None, backend: str = "auto") -> torch.Tensor:
    """Features [N, C] of N surface points from a list of per-object NeuralTextures.

    obj_ids [N] int64 (index into ``textures``, -1 = background, zeros there); pos, nrm [N, 3]
    rest-pose points and normals; faces [N] scene face ids, bary [N, 3] (for UV textures);
    face_offsets [O + 1] first scene face of each object. ``present``: objects known to be in
    the batch (others are skipped and get no gradient, like the reference); None samples all
    (no host sync: what the GPU path wants). backend: "auto" | "torch" | "cpu" | "cuda".
    """
    which = resolve_backend(backend, obj_ids.device)
    if which == "torch":
        return sample_set_reference(textures, obj_ids, pos, nrm, faces, bary, face_offsets)
    ext = load_extension(cuda=which == "cuda")
    specs, levels = [], []
    for o, tex in enumerate(textures):
        if present is not None and o not in present:
            specs.append((0, (TRIPLANAR, None, None, None, None), 0.0))
            continue
        inputs = object_inputs(tex, pos, nrm, faces, bary, int(face_offsets[o]),
                               int(face_offsets[o + 1] - face_offsets[o]))
        specs.append((len(tex.levels), inputs, float(tex.sharpness)))
        levels += list(tex.levels)
    if not levels:
        return torch.zeros(obj_ids.shape[0], textures[0].channels, dtype=textures[0].levels[0].dtype,
                           device=obj_ids.device)
    return _FusedSample.apply(ext, specs, obj_ids.contiguous(), textures[0].channels, *levels)


def sample_set_reference(textures: list, obj_ids, pos, nrm, faces, bary, face_offsets) -> torch.Tensor:
    """The torch reference of ``sample_set``: each object's points selected and sampled with
    ``NeuralTexture.sample`` (grid_sample)."""
    ref = textures[0].levels[0]
    out = torch.zeros(obj_ids.shape[0], textures[0].channels, dtype=ref.dtype, device=ref.device)
    for o, tex in enumerate(textures):
        idx = torch.nonzero(obj_ids == o).squeeze(1)
        if len(idx) == 0:
            continue
        if tex.kind == "triplanar":
            vals = tex.sample(pos[idx], nrm[idx])
        else:
            vals = tex.sample(faces=faces[idx] - int(face_offsets[o]), bary=bary[idx])
        out = out.index_put((idx,), vals.to(out.dtype))
    return out

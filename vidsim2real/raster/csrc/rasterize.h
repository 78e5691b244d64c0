// Declarations shared by the torch bindings (bind.cpp) and the kernels.
#pragma once
#include <torch/extension.h>
#include <tuple>

// Inputs (checked in bind.cpp): P [B, 3, 4] float64 (K [R|t]), verts [B, V, 3] float64 world,
// faces [F, 3] int64. Outputs: pix_to_face [B, H, W] int64 (-1 background), bary [B, H, W, 3]
// float32, zbuf [B, H, W] float32 (0 background).
std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_cpu(
    const at::Tensor& P, const at::Tensor& verts, const at::Tensor& faces, int64_t height,
    int64_t width, double znear, double zfar, bool cull_backfaces);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_cuda(
    const at::Tensor& P, const at::Tensor& verts, const at::Tensor& faces, int64_t height,
    int64_t width, double znear, double zfar, bool cull_backfaces);
#endif

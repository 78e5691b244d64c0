// Declarations shared by the torch bindings (bind.cpp) and the kernels.
#pragma once
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)
#include <tuple>

// Background-filled outputs: pix_to_face -1, bary 0, zbuf 0.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_fragments(const at::TensorOptions& opts, int64_t B,
                                                                      int64_t H, int64_t W) {
  return {at::full({B, H, W}, -1, opts.dtype(at::kLong)), at::zeros({B, H, W, 3}, opts.dtype(at::kFloat)),
          at::zeros({B, H, W}, opts.dtype(at::kFloat))};
}

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

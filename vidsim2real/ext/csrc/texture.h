// Declarations of the fused neural-texture sampling kernels (bind.cpp checks and dispatches).
#pragma once
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)

#include <vector>

// levels: per pyramid level [P, C, r_l, halves * r_l] (P = 3 triplanar / 1 uv); obj_ids [N] int64;
// rows with obj_ids == obj are written into out [N, C] (others untouched). mode 0 triplanar:
// a = positions [N, 3], b = normals [N, 3], lo/hi [3]; mode 1 uv: a = uv [N, 2].
void texture_forward_cpu(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, int64_t obj,
                         const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi,
                         double sharpness, int64_t mode, at::Tensor& out);
// Gradients w.r.t. every level (zeros where no point of obj reads) of sum(grad_out * out).
std::vector<at::Tensor> texture_backward_cpu(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids,
                                             int64_t obj, const at::Tensor& a, const at::Tensor& b,
                                             const at::Tensor& lo, const at::Tensor& hi, double sharpness,
                                             int64_t mode, const at::Tensor& grad_out);
#ifdef WITH_CUDA
void texture_forward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, int64_t obj,
                          const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi,
                          double sharpness, int64_t mode, at::Tensor& out);
std::vector<at::Tensor> texture_backward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids,
                                              int64_t obj, const at::Tensor& a, const at::Tensor& b,
                                              const at::Tensor& lo, const at::Tensor& hi, double sharpness,
                                              int64_t mode, const at::Tensor& grad_out);
#endif

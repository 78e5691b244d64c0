// Python bindings: argument checks up front, then dispatch on the tensors' device.
#include <torch/extension.h>

#include "rasterize.h"
#include "texture.h"

namespace {
void check_inputs(const at::Tensor& P, const at::Tensor& verts, const at::Tensor& faces) {
  TORCH_CHECK(P.dim() == 3 && P.size(1) == 3 && P.size(2) == 4, "P must be [B, 3, 4]");
  TORCH_CHECK(verts.dim() == 3 && verts.size(2) == 3, "verts must be [B, V, 3]");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "faces must be [F, 3]");
  TORCH_CHECK(P.size(0) == verts.size(0), "P and verts must have the same batch size");
  TORCH_CHECK(P.scalar_type() == at::kDouble && verts.scalar_type() == at::kDouble, "P and verts must be float64");
  TORCH_CHECK(faces.scalar_type() == at::kLong, "faces must be int64");
  TORCH_CHECK(faces.size(0) < (int64_t(1) << 32), "at most 2^32 - 1 faces");
  TORCH_CHECK(P.device() == verts.device() && verts.device() == faces.device(), "inputs on different devices");
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize(
    const at::Tensor& P, const at::Tensor& verts, const at::Tensor& faces, int64_t height,
    int64_t width, double znear, double zfar, bool cull_backfaces) {
  check_inputs(P, verts, faces);
  if (verts.is_cuda()) {
#ifdef WITH_CUDA
    return rasterize_cuda(P, verts, faces, height, width, znear, zfar, cull_backfaces);
#else
    TORCH_CHECK(false, "vidsim2real raster extension was built without CUDA");
#endif
  }
  return rasterize_cpu(P, verts, faces, height, width, znear, zfar, cull_backfaces);
}

namespace {
void check_texture(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, const at::Tensor& a,
                   const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi, int64_t mode,
                   const at::Tensor& rows) {
  TORCH_CHECK(mode == 0 || mode == 1, "mode must be 0 (triplanar) or 1 (uv)");
  TORCH_CHECK(!levels.empty() && levels.size() <= 8, "1 to 8 pyramid levels");
  const int64_t P = mode == 0 ? 3 : 1, C = rows.size(1), N = a.size(0);
  for (const auto& t : levels) {
    TORCH_CHECK(t.dim() == 4 && t.size(0) == P && t.size(1) == C, "each level must be [P, C, r, width]");
    TORCH_CHECK(t.size(3) == (mode == 0 ? 2 : 1) * t.size(2), "level width must be 2r (triplanar) or r (uv)");
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == rows.scalar_type(), "levels: contiguous, one dtype");
    TORCH_CHECK(t.device() == a.device(), "levels on another device");
  }
  TORCH_CHECK(a.dim() == 2 && a.size(1) == (mode == 0 ? 3 : 2) && a.is_contiguous(), "a must be [N, 3] or [N, 2]");
  TORCH_CHECK(b.dim() == 2 && b.size(0) == N && b.size(1) == 3 && b.is_contiguous(), "b must be [N, 3]");
  TORCH_CHECK(a.scalar_type() == rows.scalar_type() && b.scalar_type() == rows.scalar_type(), "a, b: levels' dtype");
  TORCH_CHECK(obj_ids.dim() == 1 && obj_ids.size(0) == N && obj_ids.scalar_type() == at::kLong &&
                  obj_ids.is_contiguous(), "obj_ids must be [N] int64");
  TORCH_CHECK(lo.numel() == 3 && hi.numel() == 3 && lo.scalar_type() == rows.scalar_type() &&
                  hi.scalar_type() == rows.scalar_type(), "lo, hi must be [3] in the levels' dtype");
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) == N && rows.is_contiguous(), "out / grad_out must be [N, C]");
  TORCH_CHECK(obj_ids.device() == a.device() && b.device() == a.device() && lo.device() == a.device() &&
                  rows.device() == a.device(), "inputs on different devices");
}
}  // namespace

void texture_forward(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, int64_t obj,
                     const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi,
                     double sharpness, int64_t mode, at::Tensor out) {
  check_texture(levels, obj_ids, a, b, lo, hi, mode, out);
  if (a.is_cuda()) {
#ifdef WITH_CUDA
    return texture_forward_cuda(levels, obj_ids, obj, a, b, lo, hi, sharpness, mode, out);
#else
    TORCH_CHECK(false, "vidsim2real extension was built without CUDA");
#endif
  }
  texture_forward_cpu(levels, obj_ids, obj, a, b, lo, hi, sharpness, mode, out);
}

std::vector<at::Tensor> texture_backward(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids,
                                         int64_t obj, const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo,
                                         const at::Tensor& hi, double sharpness, int64_t mode,
                                         const at::Tensor& grad_out) {
  check_texture(levels, obj_ids, a, b, lo, hi, mode, grad_out);
  if (a.is_cuda()) {
#ifdef WITH_CUDA
    return texture_backward_cuda(levels, obj_ids, obj, a, b, lo, hi, sharpness, mode, grad_out);
#else
    TORCH_CHECK(false, "vidsim2real extension was built without CUDA");
#endif
  }
  return texture_backward_cpu(levels, obj_ids, obj, a, b, lo, hi, sharpness, mode, grad_out);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize", &rasterize, "rasterize triangles (see vidsim2real/raster/reference.py)");
  m.def("texture_forward", &texture_forward,
        "fused neural-texture sampling of one object's points into out (see vidsim2real/texture/fused.py)");
  m.def("texture_backward", &texture_backward, "gradients of texture_forward w.r.t. every pyramid level");
}

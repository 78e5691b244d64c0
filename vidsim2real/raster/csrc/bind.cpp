// Python bindings: argument checks up front, then dispatch on the tensors' device.
#include <torch/extension.h>

#include "rasterize.h"

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rasterize", &rasterize, "rasterize triangles (see vidsim2real/raster/reference.py)");
}

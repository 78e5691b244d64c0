// C++ CPU kernels of the fused neural-texture sampling (see texture_common.h for the maths).
// Forward: parallel over points (each writes its own output row). Backward: parallel over
// channel blocks, so every thread scatters into its own channel slices and needs no atomics.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)

#include <vector>

#include "texture.h"
#include "texture_common.h"

namespace {

struct LevelInfo {
  int64_t r, width, chan_stride, plane_stride;
};

std::vector<LevelInfo> level_info(const std::vector<at::Tensor>& levels) {
  std::vector<LevelInfo> info;
  for (const auto& t : levels)
    info.push_back({t.size(2), t.size(3), t.size(2) * t.size(3), t.size(1) * t.size(2) * t.size(3)});
  return info;
}

template <typename T>
void forward_impl(const std::vector<at::Tensor>& levels, const int64_t* obj_ids, int64_t obj, const T* a,
                  const T* b, int64_t da, const T* lo, const T* hi, T k, int mode, int64_t N, int64_t C, T* out) {
  const auto info = level_info(levels);
  std::vector<const T*> ptr;
  for (const auto& t : levels) ptr.push_back(t.data_ptr<T>());
  const int64_t L = (int64_t)levels.size();
  at::parallel_for(0, N, 1024, [&](int64_t n0, int64_t n1) {
    vs2r::PlaneTap<T> taps[3];
    int64_t idx[4];
    T wt[4];
    for (int64_t n = n0; n < n1; ++n) {
      if (obj_ids[n] != obj) continue;
      const int nt = vs2r::plane_taps<T>(mode, a + n * da, b + n * 3, lo, hi, k, taps);
      T* o = out + n * C;
      for (int64_t c = 0; c < C; ++c) o[c] = T(0);
      for (int p = 0; p < nt; ++p) {
        for (int64_t l = 0; l < L; ++l) {
          const LevelInfo& li = info[l];
          vs2r::bilinear<T>(taps[p], li.r, li.width, idx, wt);
          const T* img = ptr[l] + taps[p].plane * li.plane_stride;
          for (int64_t c = 0; c < C; ++c) {
            const T* ch = img + c * li.chan_stride;
            o[c] += ((wt[0] * ch[idx[0]] + wt[1] * ch[idx[1]]) + wt[2] * ch[idx[2]]) + wt[3] * ch[idx[3]];
          }
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const std::vector<at::Tensor>& levels, std::vector<at::Tensor>& grads, const int64_t* obj_ids,
                   int64_t obj, const T* a, const T* b, int64_t da, const T* lo, const T* hi, T k, int mode,
                   int64_t N, int64_t C, const T* g) {
  const auto info = level_info(levels);
  std::vector<T*> gp;
  for (auto& t : grads) gp.push_back(t.data_ptr<T>());
  const int64_t L = (int64_t)levels.size();
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    vs2r::PlaneTap<T> taps[3];
    int64_t idx[4];
    T wt[4];
    for (int64_t n = 0; n < N; ++n) {
      if (obj_ids[n] != obj) continue;
      const int nt = vs2r::plane_taps<T>(mode, a + n * da, b + n * 3, lo, hi, k, taps);
      const T* gn = g + n * C;
      for (int p = 0; p < nt; ++p) {
        for (int64_t l = 0; l < L; ++l) {
          const LevelInfo& li = info[l];
          vs2r::bilinear<T>(taps[p], li.r, li.width, idx, wt);
          T* img = gp[l] + taps[p].plane * li.plane_stride;
          for (int64_t c = c0; c < c1; ++c) {
            T* ch = img + c * li.chan_stride;
            const T gc = gn[c];
            ch[idx[0]] += wt[0] * gc;
            ch[idx[1]] += wt[1] * gc;
            ch[idx[2]] += wt[2] * gc;
            ch[idx[3]] += wt[3] * gc;
          }
        }
      }
    }
  });
}

}  // namespace

void texture_forward_cpu(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, int64_t obj,
                         const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi,
                         double sharpness, int64_t mode, at::Tensor& out) {
  const int64_t N = a.size(0), C = out.size(1);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "texture_forward_cpu", [&] {
    forward_impl<scalar_t>(levels, obj_ids.data_ptr<int64_t>(), obj, a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                           a.size(1), lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(), (scalar_t)sharpness,
                           (int)mode, N, C, out.data_ptr<scalar_t>());
  });
}

std::vector<at::Tensor> texture_backward_cpu(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids,
                                             int64_t obj, const at::Tensor& a, const at::Tensor& b,
                                             const at::Tensor& lo, const at::Tensor& hi, double sharpness,
                                             int64_t mode, const at::Tensor& grad_out) {
  std::vector<at::Tensor> grads;
  for (const auto& t : levels) grads.push_back(at::zeros_like(t));
  const int64_t N = a.size(0), C = grad_out.size(1);
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "texture_backward_cpu", [&] {
    backward_impl<scalar_t>(levels, grads, obj_ids.data_ptr<int64_t>(), obj, a.data_ptr<scalar_t>(),
                            b.data_ptr<scalar_t>(), a.size(1), lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(),
                            (scalar_t)sharpness, (int)mode, N, C, grad_out.data_ptr<scalar_t>());
  });
  return grads;
}

// CUDA kernels of the fused neural-texture sampling (see texture_common.h for the maths).
// One thread per point: it finds its planes once and reads (forward) or scatters with
// atomicAdd (backward) all pyramid levels and channels, so a whole object is one launch each
// way. Points of other objects return at once, so no host-side selection (and no sync) is needed.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)

#include <vector>

#include "texture.h"
#include "texture_common.h"

namespace {

template <typename T>
struct Levels {
  T* ptr[vs2r::kMaxLevels];
  int64_t r[vs2r::kMaxLevels], width[vs2r::kMaxLevels], chan_stride[vs2r::kMaxLevels],
      plane_stride[vs2r::kMaxLevels];
  int n;
};

template <typename T>
Levels<T> pack(const std::vector<at::Tensor>& levels) {
  Levels<T> L{};
  L.n = (int)levels.size();
  for (int l = 0; l < L.n; ++l) {
    const at::Tensor& t = levels[l];
    L.ptr[l] = t.data_ptr<T>();
    L.r[l] = t.size(2);
    L.width[l] = t.size(3);
    L.chan_stride[l] = t.size(2) * t.size(3);
    L.plane_stride[l] = t.size(1) * t.size(2) * t.size(3);
  }
  return L;
}

template <typename T>
__global__ void forward_kernel(Levels<T> L, const int64_t* __restrict__ obj_ids, int64_t obj,
                               const T* __restrict__ a, const T* __restrict__ b, int64_t da,
                               const T* __restrict__ lo, const T* __restrict__ hi, T k, int mode, int64_t N,
                               int64_t C, T* __restrict__ out) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N || obj_ids[n] != obj) return;
  vs2r::PlaneTap<T> taps[3];
  int64_t idx[4];
  T wt[4];
  const int nt = vs2r::plane_taps<T>(mode, a + n * da, b + n * 3, lo, hi, k, taps);
  T* o = out + n * C;
  for (int64_t c = 0; c < C; ++c) o[c] = T(0);
  for (int p = 0; p < nt; ++p) {
    for (int l = 0; l < L.n; ++l) {
      vs2r::bilinear<T>(taps[p], L.r[l], L.width[l], idx, wt);
      const T* img = L.ptr[l] + taps[p].plane * L.plane_stride[l];
      for (int64_t c = 0; c < C; ++c) {
        const T* ch = img + c * L.chan_stride[l];
        o[c] += ((wt[0] * ch[idx[0]] + wt[1] * ch[idx[1]]) + wt[2] * ch[idx[2]]) + wt[3] * ch[idx[3]];
      }
    }
  }
}

template <typename T>
__global__ void backward_kernel(Levels<T> G, const int64_t* __restrict__ obj_ids, int64_t obj,
                                const T* __restrict__ a, const T* __restrict__ b, int64_t da,
                                const T* __restrict__ lo, const T* __restrict__ hi, T k, int mode, int64_t N,
                                int64_t C, const T* __restrict__ g) {
  const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N || obj_ids[n] != obj) return;
  vs2r::PlaneTap<T> taps[3];
  int64_t idx[4];
  T wt[4];
  const int nt = vs2r::plane_taps<T>(mode, a + n * da, b + n * 3, lo, hi, k, taps);
  const T* gn = g + n * C;
  for (int p = 0; p < nt; ++p) {
    for (int l = 0; l < G.n; ++l) {
      vs2r::bilinear<T>(taps[p], G.r[l], G.width[l], idx, wt);
      T* img = G.ptr[l] + taps[p].plane * G.plane_stride[l];
      for (int64_t c = 0; c < C; ++c) {
        T* ch = img + c * G.chan_stride[l];
        const T gc = gn[c];
        if (gc == T(0)) continue;
        atomicAdd(ch + idx[0], wt[0] * gc);
        atomicAdd(ch + idx[1], wt[1] * gc);
        atomicAdd(ch + idx[2], wt[2] * gc);
        atomicAdd(ch + idx[3], wt[3] * gc);
      }
    }
  }
}

inline unsigned int blocks_for(int64_t n, int threads) { return (unsigned int)((n + threads - 1) / threads); }

}  // namespace

void texture_forward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids, int64_t obj,
                          const at::Tensor& a, const at::Tensor& b, const at::Tensor& lo, const at::Tensor& hi,
                          double sharpness, int64_t mode, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t N = a.size(0), C = out.size(1);
  if (N == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "texture_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(N, 256), 256, 0, stream>>>(
        pack<scalar_t>(levels), obj_ids.data_ptr<int64_t>(), obj, a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
        a.size(1), lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(), (scalar_t)sharpness, (int)mode, N, C,
        out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::vector<at::Tensor> texture_backward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& obj_ids,
                                              int64_t obj, const at::Tensor& a, const at::Tensor& b,
                                              const at::Tensor& lo, const at::Tensor& hi, double sharpness,
                                              int64_t mode, const at::Tensor& grad_out) {
  const c10::cuda::CUDAGuard guard(a.device());
  std::vector<at::Tensor> grads;
  for (const auto& t : levels) grads.push_back(at::zeros_like(t));
  const int64_t N = a.size(0), C = grad_out.size(1);
  if (N == 0) return grads;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "texture_backward_cuda", [&] {
    backward_kernel<scalar_t><<<blocks_for(N, 256), 256, 0, stream>>>(
        pack<scalar_t>(grads), obj_ids.data_ptr<int64_t>(), obj, a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
        a.size(1), lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(), (scalar_t)sharpness, (int)mode, N, C,
        grad_out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grads;
}

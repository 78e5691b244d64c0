// Neural-texture sampling shared by the CPU and CUDA kernels: where a surface point reads its
// texels. The semantics are those of vidsim2real/texture/neural_texture.py (NeuralTexture.sample,
// the torch reference the kernels are tested against):
//
// * triplanar: u = clamp((pos - lo) / (hi - lo), 0, 1); for axis a with the other two axes
//   (i, j) = ((1,2), (0,2), (0,1))[a] the point reads plane a at (s, t) = (u_i, u_j), in the
//   half h = (n_a < 0) of the plane's [C, r, 2r] image, with weight w_a = |n_a|^k / sum |n_b|^k.
// * uv: one [C, r, r] image at (s, t) = uv, weight 1.
// * every pyramid level l (resolution r_l) is sampled bilinearly at texel position
//   x = s (r_l - 1) + h r_l, y = t (r_l - 1) (texel centres at integers, grid_sample with
//   align_corners=False and border padding) and the levels are summed.
#pragma once

#include <stdint.h>

#include <cmath>

#if defined(__CUDACC__)
#define VT_HD __host__ __device__ __forceinline__
#else
#define VT_HD inline
#endif

namespace vs2r {

constexpr int kMaxLevels = 8;

template <typename T>
VT_HD T clamp01(T v) { return v < T(0) ? T(0) : (v > T(1) ? T(1) : v); }

// One plane a point reads: plane index, normalised position (s, t), half, weight.
template <typename T>
struct PlaneTap {
  int plane;
  T s, t;
  int half;
  T w;
};

// The planes point n reads; returns how many (0..3). mode 0: triplanar (a = pos, b = normal,
// lo/hi bbox); mode 1: uv (a = uv).
template <typename T>
VT_HD int plane_taps(int mode, const T* a, const T* b, const T* lo, const T* hi, T sharpness,
                     PlaneTap<T>* taps) {
  if (mode == 1) {
    taps[0] = {0, clamp01(a[0]), clamp01(a[1]), 0, T(1)};
    return 1;
  }
  T u[3], w[3], sum = T(0);
  for (int i = 0; i < 3; ++i) {
    u[i] = clamp01((a[i] - lo[i]) / (hi[i] - lo[i]));
    w[i] = (T)pow(b[i] < T(0) ? -b[i] : b[i], sharpness);
    sum += w[i];
  }
  sum = sum > T(1e-12) ? sum : T(1e-12);
  const int ii[3] = {1, 0, 0}, jj[3] = {2, 2, 1};
  int n = 0;
  for (int p = 0; p < 3; ++p) {
    const T wp = w[p] / sum;
    if (wp == T(0)) continue;  // contributes exactly nothing (value and gradient)
    taps[n++] = {p, u[ii[p]], u[jj[p]], b[p] < T(0) ? 1 : 0, wp};
  }
  return n;
}

// Bilinear footprint of a tap on a level of resolution r (image width = halves * r): four
// texel offsets (within one channel image) and their weights (already times the tap weight).
template <typename T>
VT_HD void bilinear(const PlaneTap<T>& tap, int64_t r, int64_t width, int64_t* idx, T* wt) {
  const T x = tap.s * T(r - 1) + T(tap.half * r);
  const T y = tap.t * T(r - 1);
  const T fx = (T)floor(x), fy = (T)floor(y);
  const int64_t x0 = (int64_t)fx, y0 = (int64_t)fy;
  const int64_t x1 = x0 + 1 < width ? x0 + 1 : width - 1, y1 = y0 + 1 < r ? y0 + 1 : r - 1;
  const T ax = x - fx, ay = y - fy;
  idx[0] = y0 * width + x0;
  idx[1] = y0 * width + x1;
  idx[2] = y1 * width + x0;
  idx[3] = y1 * width + x1;
  wt[0] = (T(1) - ax) * (T(1) - ay) * tap.w;
  wt[1] = ax * (T(1) - ay) * tap.w;
  wt[2] = (T(1) - ax) * ay * tap.w;
  wt[3] = ax * ay * tap.w;
}

}  // namespace vs2r

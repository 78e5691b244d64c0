// CUDA rasterizer. Small triangles: one thread per triangle over its bounding box with a
// 64-bit atomicMin of (float32 depth bits << 32 | face id). Large triangles: binned into
// 16x16 pixel tiles and drawn by one block per tile, one thread per pixel, triangle setups
// staged through shared memory. A resolve pass decodes the winning face per pixel and
// recomputes its barycentrics and depth. Built with -fmad=false: the float64 maths must match
// the CPU kernel and the torch reference bit for bit (see raster_common.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)

#include "rasterize.h"
#include "raster_common.h"

using vs2r::FaceSetup;

namespace {

constexpr int kTile = 16;
constexpr int kSmallArea = 256;  // bbox pixels up to which one thread draws the whole triangle
constexpr int kStage = 128;      // setups staged per shared-memory round in the tile kernel
constexpr unsigned long long kEmpty = 0xffffffffffffffffull;

__device__ __forceinline__ int64_t bbox_area(const FaceSetup& s) {
  return (s.x1 < s.x0 || s.y1 < s.y0) ? 0 : (int64_t)(s.x1 - s.x0 + 1) * (s.y1 - s.y0 + 1);
}

__global__ void setup_kernel(const double* __restrict__ P, const double* __restrict__ verts,
                             const int64_t* __restrict__ faces, int64_t B, int64_t V, int64_t F,
                             int W, int H, double znear, double zfar, bool cull,
                             FaceSetup* __restrict__ setup, int* __restrict__ tile_count,
                             int tiles_x, int tiles_y) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * F) return;
  const int64_t b = i / F, f = i % F;
  const double* vb = verts + b * V * 3;
  FaceSetup s;
  vs2r::setup_face(P + b * 12, vb + faces[f * 3] * 3, vb + faces[f * 3 + 1] * 3,
                   vb + faces[f * 3 + 2] * 3, W, H, znear, zfar, cull, &s);
  setup[i] = s;
  if (bbox_area(s) > kSmallArea) {
    int* counts = tile_count + b * tiles_x * tiles_y;
    for (int ty = s.y0 / kTile; ty <= s.y1 / kTile; ++ty)
      for (int tx = s.x0 / kTile; tx <= s.x1 / kTile; ++tx) atomicAdd(&counts[ty * tiles_x + tx], 1);
  }
}

__global__ void small_kernel(const FaceSetup* __restrict__ setup, int64_t B, int64_t F, int W,
                             int H, double znear, double zfar, unsigned long long* __restrict__ keys) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * F) return;
  const FaceSetup s = setup[i];
  const int64_t area = bbox_area(s);
  if (area == 0 || area > kSmallArea) return;
  const int64_t b = i / F, f = i % F;
  unsigned long long* kb = keys + b * (int64_t)H * W;
  for (int y = s.y0; y <= s.y1; ++y) {
    for (int x = s.x0; x <= s.x1; ++x) {
      double e[3], z;
      if (!vs2r::eval_pixel(s, (double)x, (double)y, znear, zfar, e, &z)) continue;
      const unsigned long long key = vs2r::make_key(z, f);
      unsigned long long* dst = kb + (int64_t)y * W + x;
      if (key < *dst) atomicMin(dst, key);
    }
  }
}

__global__ void fill_kernel(const FaceSetup* __restrict__ setup, int64_t B, int64_t F,
                            const int64_t* __restrict__ tile_offset, int* __restrict__ tile_cursor,
                            int tiles_x, int tiles_y, int32_t* __restrict__ tile_faces) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * F) return;
  const FaceSetup s = setup[i];
  if (bbox_area(s) <= kSmallArea) return;
  const int64_t b = i / F;
  for (int ty = s.y0 / kTile; ty <= s.y1 / kTile; ++ty) {
    for (int tx = s.x0 / kTile; tx <= s.x1 / kTile; ++tx) {
      const int64_t t = b * tiles_x * tiles_y + ty * tiles_x + tx;
      const int slot = atomicAdd(&tile_cursor[t], 1);
      tile_faces[tile_offset[t] + slot] = (int32_t)(i % F);
    }
  }
}

__global__ void tile_kernel(const FaceSetup* __restrict__ setup, int64_t F, int W, int H,
                            double znear, double zfar, const int64_t* __restrict__ tile_offset,
                            const int* __restrict__ tile_count, const int32_t* __restrict__ tile_faces,
                            int tiles_x, int tiles_y, unsigned long long* __restrict__ keys) {
  __shared__ FaceSetup staged[kStage];
  __shared__ int32_t staged_id[kStage];
  const int64_t t = blockIdx.x;  // b * tiles + tile
  const int64_t b = t / (tiles_x * tiles_y);
  const int tile = (int)(t % (tiles_x * tiles_y));
  const int x = (tile % tiles_x) * kTile + threadIdx.x % kTile;
  const int y = (tile / tiles_x) * kTile + threadIdx.x / kTile;
  const int n = tile_count[t];
  const int64_t off = tile_offset[t];
  unsigned long long best = kEmpty;
  for (int base = 0; base < n; base += kStage) {
    const int m = min(kStage, n - base);
    __syncthreads();
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
      const int32_t f = tile_faces[off + base + j];
      staged_id[j] = f;
      staged[j] = setup[b * F + f];
    }
    __syncthreads();
    if (x < W && y < H) {
      for (int j = 0; j < m; ++j) {
        const FaceSetup& s = staged[j];
        if (x < s.x0 || x > s.x1 || y < s.y0 || y > s.y1) continue;
        double e[3], z;
        if (!vs2r::eval_pixel(s, (double)x, (double)y, znear, zfar, e, &z)) continue;
        const unsigned long long key = vs2r::make_key(z, staged_id[j]);
        best = key < best ? key : best;
      }
    }
  }
  if (x < W && y < H && best != kEmpty) atomicMin(keys + (b * (int64_t)H + y) * W + x, best);
}

__global__ void resolve_kernel(const FaceSetup* __restrict__ setup, const unsigned long long* __restrict__ keys,
                               int64_t B, int64_t F, int W, int H, double znear, double zfar,
                               int64_t* __restrict__ out_face, float* __restrict__ out_bary,
                               float* __restrict__ out_z) {
  const int64_t pix = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= B * (int64_t)H * W) return;
  const unsigned long long key = keys[pix];
  if (key == kEmpty) return;
  const int64_t b = pix / ((int64_t)H * W);
  const int64_t rem = pix % ((int64_t)H * W);
  const int y = (int)(rem / W), x = (int)(rem % W);
  const int64_t f = (int64_t)(key & 0xffffffffull);
  double e[3], z = 0.0;
  vs2r::eval_pixel(setup[b * F + f], (double)x, (double)y, znear, zfar, e, &z);
  const double sum = (e[0] + e[1]) + e[2];
  out_face[pix] = f;
  out_bary[pix * 3 + 0] = (float)(e[0] / sum);
  out_bary[pix * 3 + 1] = (float)(e[1] / sum);
  out_bary[pix * 3 + 2] = (float)(e[2] / sum);
  out_z[pix] = (float)z;
}

inline unsigned int blocks_for(int64_t n, int threads) { return (unsigned int)((n + threads - 1) / threads); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_cuda(
    const at::Tensor& P_, const at::Tensor& verts_, const at::Tensor& faces_, int64_t H,
    int64_t W, double znear, double zfar, bool cull) {
  const c10::cuda::CUDAGuard guard(verts_.device());
  const at::Tensor P = P_.contiguous();
  const at::Tensor verts = verts_.contiguous();
  const at::Tensor faces = faces_.contiguous();
  const int64_t B = verts.size(0), V = verts.size(1), F = faces.size(0);
  auto opts = verts.options();
  auto [pix_to_face, bary, zbuf] = empty_fragments(opts, B, H, W);
  if (F == 0 || B == 0) return {pix_to_face, bary, zbuf};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int tiles_x = (int)((W + kTile - 1) / kTile), tiles_y = (int)((H + kTile - 1) / kTile);
  const int64_t n_tiles = B * tiles_x * tiles_y;
  at::Tensor setup = at::empty({B * F * (int64_t)sizeof(FaceSetup)}, opts.dtype(at::kByte));
  at::Tensor tile_count = at::zeros({n_tiles}, opts.dtype(at::kInt));
  at::Tensor keys = at::full({B, H, W}, -1, opts.dtype(at::kLong));  // all bits set = empty
  FaceSetup* sp = reinterpret_cast<FaceSetup*>(setup.data_ptr<uint8_t>());
  auto* kp = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());

  const int threads = 256;
  setup_kernel<<<blocks_for(B * F, threads), threads, 0, stream>>>(
      P.data_ptr<double>(), verts.data_ptr<double>(), faces.data_ptr<int64_t>(), B, V, F, (int)W,
      (int)H, znear, zfar, cull, sp, tile_count.data_ptr<int>(), tiles_x, tiles_y);
  small_kernel<<<blocks_for(B * F, threads), threads, 0, stream>>>(sp, B, F, (int)W, (int)H, znear, zfar, kp);

  at::Tensor tile_offset = at::cumsum(tile_count, 0, at::kLong) - tile_count.to(at::kLong);
  const int64_t total = n_tiles > 0 ? (tile_offset[n_tiles - 1].item<int64_t>() +
                                       (int64_t)tile_count[n_tiles - 1].item<int>()) : 0;
  if (total > 0) {
    at::Tensor tile_cursor = at::zeros({n_tiles}, opts.dtype(at::kInt));
    at::Tensor tile_faces = at::empty({total}, opts.dtype(at::kInt));
    fill_kernel<<<blocks_for(B * F, threads), threads, 0, stream>>>(
        sp, B, F, tile_offset.data_ptr<int64_t>(), tile_cursor.data_ptr<int>(), tiles_x, tiles_y,
        tile_faces.data_ptr<int32_t>());
    tile_kernel<<<(unsigned int)n_tiles, kTile * kTile, 0, stream>>>(
        sp, F, (int)W, (int)H, znear, zfar, tile_offset.data_ptr<int64_t>(), tile_count.data_ptr<int>(),
        tile_faces.data_ptr<int32_t>(), tiles_x, tiles_y, kp);
  }
  resolve_kernel<<<blocks_for(B * H * W, threads), threads, 0, stream>>>(
      sp, kp, B, F, (int)W, (int)H, znear, zfar, pix_to_face.data_ptr<int64_t>(),
      bary.data_ptr<float>(), zbuf.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {pix_to_face, bary, zbuf};
}

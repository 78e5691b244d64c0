// C++ CPU rasterizer: parallel triangle setup, row-band binning, parallel bands.
// Each band of rows belongs to one task, so no atomics are needed; faces are visited in
// increasing id order and the (depth, face id) key makes the result order-independent anyway.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>  // not torch/extension.h: a third of the compile time (only bind.cpp needs pybind)

#include <cstring>
#include <limits>
#include <vector>

#include "rasterize.h"
#include "raster_common.h"

using vs2r::FaceSetup;

namespace {
constexpr int kBandRows = 8;
constexpr uint64_t kEmpty = std::numeric_limits<uint64_t>::max();
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_cpu(
    const at::Tensor& P_, const at::Tensor& verts_, const at::Tensor& faces_, int64_t H,
    int64_t W, double znear, double zfar, bool cull) {
  const at::Tensor P = P_.contiguous();
  const at::Tensor verts = verts_.contiguous();
  const at::Tensor faces = faces_.contiguous();
  const int64_t B = verts.size(0), V = verts.size(1), F = faces.size(0);
  auto opts = verts.options();
  auto [pix_to_face, bary, zbuf] = empty_fragments(opts, B, H, W);
  if (F == 0 || B == 0) return {pix_to_face, bary, zbuf};

  const double* Pp = P.data_ptr<double>();
  const double* vp = verts.data_ptr<double>();
  const int64_t* fp = faces.data_ptr<int64_t>();
  int64_t* out_face = pix_to_face.data_ptr<int64_t>();
  float* out_bary = bary.data_ptr<float>();
  float* out_z = zbuf.data_ptr<float>();

  std::vector<FaceSetup> setup((size_t)(B * F));
  std::vector<uint8_t> valid((size_t)(B * F));
  at::parallel_for(0, B * F, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / F, f = i % F;
      const double* vb = vp + b * V * 3;
      valid[i] = vs2r::setup_face(Pp + b * 12, vb + fp[f * 3] * 3, vb + fp[f * 3 + 1] * 3,
                                  vb + fp[f * 3 + 2] * 3, (int)W, (int)H, znear, zfar, cull,
                                  &setup[i]);
    }
  });

  const int64_t n_bands = (H + kBandRows - 1) / kBandRows;
  // Bin faces (in increasing id order) into row bands, per frame.
  std::vector<std::vector<int64_t>> band_start((size_t)B), band_faces((size_t)B);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      std::vector<int64_t> count(n_bands + 1, 0);
      const FaceSetup* s = setup.data() + b * F;
      const uint8_t* ok = valid.data() + b * F;
      for (int64_t f = 0; f < F; ++f)
        if (ok[f])
          for (int64_t k = s[f].y0 / kBandRows; k <= s[f].y1 / kBandRows; ++k) count[k + 1]++;
      for (int64_t k = 0; k < n_bands; ++k) count[k + 1] += count[k];
      std::vector<int64_t> cursor(count.begin(), count.end() - 1);
      band_faces[b].resize(count[n_bands]);
      for (int64_t f = 0; f < F; ++f)
        if (ok[f])
          for (int64_t k = s[f].y0 / kBandRows; k <= s[f].y1 / kBandRows; ++k)
            band_faces[b][cursor[k]++] = f;
      band_start[b] = std::move(count);
    }
  });

  at::parallel_for(0, B * n_bands, 1, [&](int64_t t0, int64_t t1) {
    std::vector<uint64_t> keys((size_t)(kBandRows * W));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / n_bands, band = t % n_bands;
      const int64_t ry0 = band * kBandRows;
      const int64_t ry1 = std::min<int64_t>(H - 1, ry0 + kBandRows - 1);
      std::fill(keys.begin(), keys.end(), kEmpty);
      const FaceSetup* s = setup.data() + b * F;
      const std::vector<int64_t>& list = band_faces[b];
      for (int64_t j = band_start[b][band]; j < band_start[b][band + 1]; ++j) {
        const int64_t f = list[j];
        const FaceSetup& fs = s[f];
        const int64_t ya = std::max<int64_t>(fs.y0, ry0), yb = std::min<int64_t>(fs.y1, ry1);
        for (int64_t y = ya; y <= yb; ++y) {
          int32_t xa, xb;
          if (!vs2r::row_span(fs, (double)y, &xa, &xb)) continue;
          uint64_t* row = keys.data() + (y - ry0) * W;
          for (int32_t x = xa; x <= xb; ++x) {
            double e[3], z;
            if (!vs2r::eval_pixel(fs, (double)x, (double)y, znear, zfar, e, &z)) continue;
            const uint64_t key = vs2r::make_key(z, f);
            if (key < row[x]) row[x] = key;
          }
        }
      }
      // Resolve: decode the winner and recompute its barycentrics and depth.
      for (int64_t y = ry0; y <= ry1; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const uint64_t key = keys[(y - ry0) * W + x];
          if (key == kEmpty) continue;
          const int64_t f = (int64_t)(key & 0xffffffffull);
          double e[3], z = 0.0;
          vs2r::eval_pixel(s[f], (double)x, (double)y, znear, zfar, e, &z);
          const double sum = (e[0] + e[1]) + e[2];
          const int64_t pix = (b * H + y) * W + x;
          out_face[pix] = f;
          out_bary[pix * 3 + 0] = (float)(e[0] / sum);
          out_bary[pix * 3 + 1] = (float)(e[1] / sum);
          out_bary[pix * 3 + 2] = (float)(e[2] / sum);
          out_z[pix] = (float)z;
        }
      }
    }
  });
  return {pix_to_face, bary, zbuf};
}

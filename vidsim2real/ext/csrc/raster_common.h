// Shared triangle setup and per-pixel evaluation for the CPU and CUDA rasterizers.
//
// The maths (documented in vidsim2real/raster/reference.py, which computes the very same
// expressions in the very same order with torch ops) is homogeneous 2D rasterization
// (Olano & Greer 1997): with q_i = P x_i (P = K [R|t], 3x4) the rows r_i of adj([q0 q1 q2])
// give edge functions E_i(u, v) = r_i . (u, v, 1) that are linear in the pixel position,
// positive inside the triangle for points in front of the camera, and directly yield
// perspective-correct barycentrics b_i = E_i / sum(E) and depth z = |det| / sum(E).
// Triangles crossing the near plane need no special case: pixels whose surface point lies
// before the near plane fail the depth test, which is exactly clipping.
//
// Everything is float64 and compiled without FMA contraction (-ffp-contract=off,
// nvcc -fmad=false) so that all three implementations agree bit for bit.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define VS_HD __host__ __device__ __forceinline__
#else
#define VS_HD inline
#endif

namespace vs2r {

struct FaceSetup {
  double r[3][3];   // edge-function rows, sign-normalised so that inside => all E_i >= 0
  double absdet;    // |det([q0 q1 q2])|
  int32_t x0, x1, y0, y1;  // inclusive pixel bounding box; x0 > x1 when the face is skipped
};

VS_HD void project_h(const double* P, const double* v, double* q) {
  q[0] = ((P[0] * v[0] + P[1] * v[1]) + P[2] * v[2]) + P[3];
  q[1] = ((P[4] * v[0] + P[5] * v[1]) + P[6] * v[2]) + P[7];
  q[2] = ((P[8] * v[0] + P[9] * v[1]) + P[10] * v[2]) + P[11];
}

VS_HD void cross3(const double* a, const double* b, double* out) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

VS_HD double vs_floor(double x) {
#if defined(__CUDA_ARCH__)
  return floor(x);
#else
  return __builtin_floor(x);
#endif
}

VS_HD double vs_ceil(double x) {
#if defined(__CUDA_ARCH__)
  return ceil(x);
#else
  return __builtin_ceil(x);
#endif
}

// Clamp a double to [lo, hi] and convert; NaN maps to lo.
VS_HD int32_t clamp_int(double x, int32_t lo, int32_t hi) {
  if (!(x > lo)) return lo;
  if (x > hi) return hi;
  return (int32_t)x;
}

// Triangle setup. P: 3x4 row-major projection; v0..v2: world positions; returns false when
// the face cannot produce fragments (degenerate, culled, entirely before near or beyond far,
// or outside the image).
VS_HD bool setup_face(const double* P, const double* v0, const double* v1, const double* v2,
                      int width, int height, double znear, double zfar, bool cull_backfaces,
                      FaceSetup* s) {
  s->x0 = 1; s->x1 = 0; s->y0 = 1; s->y1 = 0;
  double q[3][3];
  project_h(P, v0, q[0]);
  project_h(P, v1, q[1]);
  project_h(P, v2, q[2]);
  cross3(q[1], q[2], s->r[0]);
  cross3(q[2], q[0], s->r[1]);
  cross3(q[0], q[1], s->r[2]);
  const double det = (q[0][0] * s->r[0][0] + q[0][1] * s->r[0][1]) + q[0][2] * s->r[0][2];
  // det < 0: the face's normal (right-hand rule) points towards the camera (front face).
  if (!(det > 0.0 || det < 0.0)) return false;  // edge-on, degenerate or NaN
  if (cull_backfaces && det > 0.0) return false;
  if (det < 0.0) {  // sign-normalise: E_i = sign(det) * (r_i . p)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) s->r[i][j] = -s->r[i][j];
  }
  s->absdet = det > 0.0 ? det : -det;

  // Bounding box of the part in front of the near plane (Sutherland-Hodgman against z = near,
  // at most 4 vertices). q's third component is camera-space depth.
  double umin = 1e300, umax = -1e300, vmin = 1e300, vmax = -1e300;
  int n_front = 0, n_far = 0;
  for (int i = 0; i < 3; ++i) {
    const double* a = q[i];
    const double* b = q[(i + 1) % 3];
    const bool a_in = a[2] >= znear;
    const bool b_in = b[2] >= znear;
    n_front += a_in;
    n_far += a[2] > zfar;
    if (a_in) {
      const double u = a[0] / a[2], v = a[1] / a[2];
      umin = u < umin ? u : umin; umax = u > umax ? u : umax;
      vmin = v < vmin ? v : vmin; vmax = v > vmax ? v : vmax;
    }
    if (a_in != b_in) {
      const double t = (znear - a[2]) / (b[2] - a[2]);
      const double u = (a[0] + t * (b[0] - a[0])) / znear;
      const double v = (a[1] + t * (b[1] - a[1])) / znear;
      umin = u < umin ? u : umin; umax = u > umax ? u : umax;
      vmin = v < vmin ? v : vmin; vmax = v > vmax ? v : vmax;
    }
  }
  if (n_front == 0 || n_far == 3) return false;
  // Pixel centres sit at integers; widen by a hair so rounding never drops a boundary pixel
  // (the exact per-pixel test decides coverage).
  const double eps = 1e-7 * (1.0 + (umax - umin) + (vmax - vmin));
  const double fx0 = vs_ceil(umin - eps), fx1 = vs_floor(umax + eps);
  const double fy0 = vs_ceil(vmin - eps), fy1 = vs_floor(vmax + eps);
  if (!(fx0 <= width - 1) || !(fx1 >= 0) || !(fy0 <= height - 1) || !(fy1 >= 0)) return false;
  s->x0 = clamp_int(fx0, 0, width - 1);
  s->x1 = clamp_int(fx1, 0, width - 1);
  s->y0 = clamp_int(fy0, 0, height - 1);
  s->y1 = clamp_int(fy1, 0, height - 1);
  return s->x0 <= s->x1 && s->y0 <= s->y1;
}

// Coverage test at pixel (x, y). On success writes depth z (metres) and returns true.
VS_HD bool eval_pixel(const FaceSetup& s, double x, double y, double znear, double zfar,
                      double* e, double* z) {
  e[0] = (s.r[0][0] * x + s.r[0][1] * y) + s.r[0][2];
  e[1] = (s.r[1][0] * x + s.r[1][1] * y) + s.r[1][2];
  e[2] = (s.r[2][0] * x + s.r[2][1] * y) + s.r[2][2];
  if (e[0] < 0.0 || e[1] < 0.0 || e[2] < 0.0) return false;
  const double sum = (e[0] + e[1]) + e[2];
  if (!(sum > 0.0)) return false;
  const double depth = s.absdet / sum;
  if (!(depth >= znear) || !(depth <= zfar)) return false;
  *z = depth;
  return true;
}

// Conservative span [xa, xb] of row y inside the bbox where all edge functions may be >= 0
// (widened by one pixel each side; the exact test still runs on every pixel of the span).
VS_HD bool row_span(const FaceSetup& s, double y, int32_t* xa, int32_t* xb) {
  double lo = (double)s.x0, hi = (double)s.x1;
  for (int i = 0; i < 3; ++i) {
    const double a = s.r[i][0];
    const double c = s.r[i][1] * y + s.r[i][2];
    if (a > 0.0) {
      const double x = -c / a - 1.0;
      lo = x > lo ? x : lo;
    } else if (a < 0.0) {
      const double x = -c / a + 1.0;
      hi = x < hi ? x : hi;
    } else if (c < 0.0) {
      // edge parallel to the rows: E_i = c on the whole row (exactly, see eval_pixel)
      return false;
    }
  }
  if (!(lo <= hi)) return false;
  *xa = clamp_int(vs_ceil(lo), s.x0, s.x1);
  *xb = clamp_int(vs_floor(hi), s.x0, s.x1);
  return *xa <= *xb;
}

// Key for atomicMin-style depth resolution: float32 depth bits (non-negative floats order
// like their bit patterns) above the face id, so equal depths resolve to the lower face id.
VS_HD uint64_t make_key(double z, int64_t face) {
  union { float f; uint32_t u; } bits;
  bits.f = (float)z;
  return ((uint64_t)bits.u << 32) | (uint64_t)(uint32_t)face;
}

}  // namespace vs2r

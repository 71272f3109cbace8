// resize.cu: F.interpolate (bilinear / bicubic, antialias off) for
// position-embedding grids stored channels-last, [H, W, C] row-major.
//
// The index and weight math follows PyTorch step by step, in fp32 ("opmath")
// for every dtype, because the pos-embed resize is where small differences
// show: the source coordinate scale * (d + 0.5) - 0.5 is one fmaf (PyTorch's
// result matches a single rounding; two roundings move bilinear weights by
// ~1e-5), and the cubic weights are formed from t + 1 and (1 - t) + 1 just
// as PyTorch forms them, not from 2 - t.
//
// The output is a top-left Hwin x Wwin window of the full Hout x Wout resize:
// RADIO resizes to a square max(h, w)^2 grid and keeps the top-left h x w,
// InternViT passes Hwin = Hout, Wwin = Wout. Requires Hwin <= Hout and
// Wwin <= Wout.
//
// Launch (both kernels): one thread per output element, channel fastest
// (coalesced on input and output), in a grid-stride loop over
// Hwin * Wwin * C elements; grid = (g, 1, 1), any g; block = (n, 1, 1), n a
// multiple of the wave size; no shared memory.
#include "vt_common.cuh"

// PyTorch's area_pixel_compute_scale for an explicit output size. Only the
// align_corners branch special-cases a 1-wide output (scale 0, the first
// pixel); without align_corners the scale stays in/out, so a 1-wide output
// samples the input's centre. Checked against F.interpolate on the GPU.
VT_DEVICE float resize_scale(int in, int out, int align_corners) {
  if (align_corners) return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
  return (float)in / (float)out;
}

// PyTorch's area_pixel_compute_source_index, without the linear-mode clamp.
VT_DEVICE float source_index(float scale, int d, int align_corners) {
  return align_corners ? scale * (float)d : vt_fmaf(scale, (float)d + 0.5f, -0.5f);
}

VT_DEVICE int clamp_index(int i, int n) { return min(max(i, 0), n - 1); }

// Two taps along one axis; the second repeats the first at the far edge.
struct LinearTaps {
  int i0, i1;
  float w0, w1;
};

VT_DEVICE LinearTaps linear_taps(int d, int in, float scale, int align_corners) {
  float s = source_index(scale, d, align_corners);
  if (s < 0.0f) s = 0.0f;
  LinearTaps t;
  t.i0 = min((int)vt_floorf(s), in - 1);
  t.w1 = fminf(fmaxf(s - (float)t.i0, 0.0f), 1.0f);
  t.w0 = 1.0f - t.w1;
  t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
  return t;
}

// Keys' cubic convolution with A = -0.75, the two branches PyTorch uses.
VT_DEVICE float keys_near(float x, float A) { return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f; }
VT_DEVICE float keys_far(float x, float A) {
  return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

// Four taps along one axis, indices clamped to the border (replicate).
struct CubicTaps {
  int i[4];
  float w[4];
};

VT_DEVICE CubicTaps cubic_taps(int d, int in, float scale, int align_corners) {
  const float A = -0.75f;
  const float s = source_index(scale, d, align_corners);  // no clamp: may be -0.5
  const int i = min((int)vt_floorf(s), in - 1);
  const float t = fminf(fmaxf(s - (float)i, 0.0f), 1.0f);
  const float u = 1.0f - t;
  CubicTaps c;
  c.w[0] = keys_far(t + 1.0f, A);
  c.w[1] = keys_near(t, A);
  c.w[2] = keys_near(u, A);
  c.w[3] = keys_far(u + 1.0f, A);
#pragma unroll
  for (int k = 0; k < 4; ++k) c.i[k] = clamp_index(i - 1 + k, in);
  return c;
}

template <typename T>
VT_DEVICE void resize_bilinear(const T* x, T* y, int C, int Hin, int Win, int Hout, int Wout,
                               int Hwin, int Wwin, int align_corners) {
  const float sy = resize_scale(Hin, Hout, align_corners);
  const float sx = resize_scale(Win, Wout, align_corners);
  const long n = (long)Hwin * Wwin * C;
  for (long e = (long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
    const int c = (int)(e % C);
    const long p = e / C;
    const int ox = (int)(p % Wwin), oy = (int)(p / Wwin);
    const LinearTaps ty = linear_taps(oy, Hin, sy, align_corners);
    const LinearTaps tx = linear_taps(ox, Win, sx, align_corners);
    const T* r0 = x + (long)ty.i0 * Win * C + c;
    const T* r1 = x + (long)ty.i1 * Win * C + c;
    const float top = tx.w0 * vt_to_f32(r0[(long)tx.i0 * C]) + tx.w1 * vt_to_f32(r0[(long)tx.i1 * C]);
    const float bot = tx.w0 * vt_to_f32(r1[(long)tx.i0 * C]) + tx.w1 * vt_to_f32(r1[(long)tx.i1 * C]);
    y[e] = vt_from_f32<T>(ty.w0 * top + ty.w1 * bot);
  }
}

// Separable in PyTorch's order: combine the 4 x taps of each of the 4 y-tap
// rows, then combine the 4 row results along y.
template <typename T>
VT_DEVICE void resize_bicubic(const T* x, T* y, int C, int Hin, int Win, int Hout, int Wout,
                              int Hwin, int Wwin, int align_corners) {
  const float sy = resize_scale(Hin, Hout, align_corners);
  const float sx = resize_scale(Win, Wout, align_corners);
  const long n = (long)Hwin * Wwin * C;
  for (long e = (long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
    const int c = (int)(e % C);
    const long p = e / C;
    const int ox = (int)(p % Wwin), oy = (int)(p / Wwin);
    const CubicTaps ty = cubic_taps(oy, Hin, sy, align_corners);
    const CubicTaps tx = cubic_taps(ox, Win, sx, align_corners);
    float rows[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const T* r = x + (long)ty.i[k] * Win * C + c;
      rows[k] = vt_to_f32(r[(long)tx.i[0] * C]) * tx.w[0] + vt_to_f32(r[(long)tx.i[1] * C]) * tx.w[1] +
                vt_to_f32(r[(long)tx.i[2] * C]) * tx.w[2] + vt_to_f32(r[(long)tx.i[3] * C]) * tx.w[3];
    }
    y[e] = vt_from_f32<T>(rows[0] * ty.w[0] + rows[1] * ty.w[1] + rows[2] * ty.w[2] + rows[3] * ty.w[3]);
  }
}

#define VT_RESIZE(sfx, T)                                                                       \
  VT_KERNEL vt_resize_bilinear_##sfx(const T* x, T* y, int C, int Hin, int Win, int Hout,       \
                                     int Wout, int Hwin, int Wwin, int align_corners) {         \
    resize_bilinear<T>(x, y, C, Hin, Win, Hout, Wout, Hwin, Wwin, align_corners);               \
  }                                                                                             \
  VT_KERNEL vt_resize_bicubic_##sfx(const T* x, T* y, int C, int Hin, int Win, int Hout,        \
                                    int Wout, int Hwin, int Wwin, int align_corners) {          \
    resize_bicubic<T>(x, y, C, Hin, Win, Hout, Wout, Hwin, Wwin, align_corners);                \
  }
VT_FOR_EACH_DTYPE(VT_RESIZE)

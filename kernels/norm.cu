// norm.cu: LayerNorm and RMSNorm over the last axis of row-major matrices.
//
// Statistics are two-pass in fp32 (mean first, then the centred sum of
// squares): LayerNorm eps is 1e-6 here, so cancellation in a one-pass
// E[x^2] - E[x]^2 would be visible against PyTorch. Rows are short (at most
// a few thousand elements) and are re-read from cache, so the extra pass is
// cheap next to the GEMMs around it.
//
// Both kernels accept a row stride for input and output, so they can work
// on column slices of a wider buffer (qk-norm on the q and k thirds of a
// fused qkv matrix). In-place use (y == x, ldy == ldx) is safe: each element
// is read and written by the same thread, and all reads of a row finish at
// the reductions' barriers before any write.
//
// Launch (both kernels):
//   grid  = (g, 1, 1), any g >= 1; block b handles rows b, b+g, b+2g, ...
//           (g = rows gives one block per row);
//   block = (n, 1, 1), n a multiple of the device wave size, n <= 1024;
//   shared memory: static only (one float per warp), pass 0 dynamic bytes.
#include "vt_common.cuh"

template <typename T>
VT_DEVICE void layer_norm_rows(const T* x, int ldx, const T* w, const T* b, T* y, int ldy,
                               int rows, int cols, float eps) {
  __shared__ float scratch[VT_MAX_WARPS];
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + (long)r * ldx;
    T* yr = y + (long)r * ldy;

    float s = 0.0f;
    for (int c = tid; c < cols; c += nt) s += vt_to_f32(xr[c]);
    const float mean = vt_block_sum(s, scratch) / (float)cols;

    float q = 0.0f;
    for (int c = tid; c < cols; c += nt) {
      const float d = vt_to_f32(xr[c]) - mean;
      q += d * d;
    }
    const float var = vt_block_sum(q, scratch) / (float)cols;
    const float rstd = vt_rsqrtf(var + eps);

    for (int c = tid; c < cols; c += nt) {
      const float g = w ? vt_to_f32(w[c]) : 1.0f;
      const float o = b ? vt_to_f32(b[c]) : 0.0f;
      yr[c] = vt_from_f32<T>((vt_to_f32(xr[c]) - mean) * rstd * g + o);
    }
  }
}

// HF RMSNorm (InternViT): the normalised value is rounded to T *before* the
// weight multiply, and the product is rounded again, exactly as
// `weight * hidden.to(input_dtype)` does. For f32 both roundings vanish.
template <typename T>
VT_DEVICE void rms_norm_rows(const T* x, int ldx, const T* w, T* y, int ldy, int rows, int cols,
                             float eps) {
  __shared__ float scratch[VT_MAX_WARPS];
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + (long)r * ldx;
    T* yr = y + (long)r * ldy;

    float q = 0.0f;
    for (int c = tid; c < cols; c += nt) {
      const float v = vt_to_f32(xr[c]);
      q += v * v;
    }
    const float rinv = vt_rsqrtf(vt_block_sum(q, scratch) / (float)cols + eps);

    for (int c = tid; c < cols; c += nt) {
      const float n = vt_round_through<T>(vt_to_f32(xr[c]) * rinv);
      const float g = w ? vt_to_f32(w[c]) : 1.0f;
      yr[c] = vt_from_f32<T>(n * g);
    }
  }
}

// w and b may be NULL (no scale / no shift).
// LayerNorm with one warp per row, for rows of up to VT_LN_PER_LANE ·
// wave-size columns: the row is read from memory once into registers, and
// the reductions are warp shuffles with no block barrier. Same arithmetic as
// layer_norm_rows (fp32 mean, then fp32 mean of squared deviations), summed
// in a different order. Rows whose start, stride and length allow it move
// in 16-byte packs (1.6× faster on an H100 at 1280 columns than element by
// element; the loads of a pack are what keep enough bytes in flight).
// Launch: block = n warps, grid-stride over rows with row = blockIdx.x · n +
// warp. (NULL w or b count as aligned.)
#define VT_LN_PER_LANE 48

template <typename T> struct alignas(16) Pack16 {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

// Loads one row's columns into v (zeros past cols), element-wise or in packs.
template <typename T, bool PACKED>
VT_DEVICE void ln_load_row(const T* xr, int cols, int lane, float (&v)[VT_LN_PER_LANE]) {
  if (PACKED) {
    constexpr int N = Pack16<T>::N;
    const int packs = cols / N;
#pragma unroll
    for (int k = 0; k < VT_LN_PER_LANE / N; ++k) {
      const int c = lane + k * VT_WARP_SIZE;
      Pack16<T> p;
      if (c < packs) p = ((const Pack16<T>*)xr)[c];
#pragma unroll
      for (int j = 0; j < N; ++j) v[k * N + j] = c < packs ? vt_to_f32(p.v[j]) : 0.0f;
    }
  } else {
#pragma unroll
    for (int k = 0; k < VT_LN_PER_LANE; ++k) {
      const int c = lane + k * VT_WARP_SIZE;
      v[k] = c < cols ? vt_to_f32(xr[c]) : 0.0f;
    }
  }
}

// Column of register slot i, matching ln_load_row's placement.
template <typename T, bool PACKED> VT_DEVICE int ln_col(int i, int lane) {
  constexpr int N = PACKED ? Pack16<T>::N : 1;
  return ((lane + (i / N) * VT_WARP_SIZE) * N) + i % N;
}

template <typename T, bool PACKED>
VT_DEVICE void layer_norm_warp_rows(const T* x, int ldx, const T* w, const T* b, T* y, int ldy,
                                    int rows, int cols, float eps) {
  const int lane = threadIdx.x % VT_WARP_SIZE;
  const int warps = blockDim.x / VT_WARP_SIZE;
  for (int r = blockIdx.x * warps + threadIdx.x / VT_WARP_SIZE; r < rows; r += gridDim.x * warps) {
    float v[VT_LN_PER_LANE];
    ln_load_row<T, PACKED>(x + (long)r * ldx, cols, lane, v);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < VT_LN_PER_LANE; ++i) s += v[i];
    const float mean = vt_warp_sum(s) / (float)cols;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < VT_LN_PER_LANE; ++i) {
      const float d = ln_col<T, PACKED>(i, lane) < cols ? v[i] - mean : 0.0f;
      q += d * d;
    }
    const float rstd = vt_rsqrtf(vt_warp_sum(q) / (float)cols + eps);
    T* yr = y + (long)r * ldy;
    if (PACKED) {
      constexpr int N = Pack16<T>::N;
#pragma unroll
      for (int k = 0; k < VT_LN_PER_LANE / N; ++k) {
        const int c0 = (lane + k * VT_WARP_SIZE) * N;
        if (c0 >= cols) continue;
        Pack16<T> out, pw, pb;
        if (w) pw = *(const Pack16<T>*)(w + c0);
        if (b) pb = *(const Pack16<T>*)(b + c0);
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const float g = w ? vt_to_f32(pw.v[j]) : 1.0f;
          const float o = b ? vt_to_f32(pb.v[j]) : 0.0f;
          out.v[j] = vt_from_f32<T>((v[k * N + j] - mean) * rstd * g + o);
        }
        *(Pack16<T>*)(yr + c0) = out;
      }
    } else {
#pragma unroll
      for (int i = 0; i < VT_LN_PER_LANE; ++i) {
        const int c = ln_col<T, PACKED>(i, lane);
        if (c < cols) {
          const float g = w ? vt_to_f32(w[c]) : 1.0f;
          const float o = b ? vt_to_f32(b[c]) : 0.0f;
          yr[c] = vt_from_f32<T>((v[i] - mean) * rstd * g + o);
        }
      }
    }
  }
}

template <typename T>
VT_DEVICE void layer_norm_warp(const T* x, int ldx, const T* w, const T* b, T* y, int ldy, int rows,
                               int cols, float eps) {
  constexpr int N = Pack16<T>::N;
  const bool packed = cols % N == 0 && ldx % N == 0 && ldy % N == 0 && (uintptr_t)x % 16 == 0 &&
                      (uintptr_t)y % 16 == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)b % 16 == 0;
  if (packed) {
    layer_norm_warp_rows<T, true>(x, ldx, w, b, y, ldy, rows, cols, eps);
  } else {
    layer_norm_warp_rows<T, false>(x, ldx, w, b, y, ldy, rows, cols, eps);
  }
}

#define VT_LAYER_NORM_WARP(sfx, T)                                                               \
  VT_KERNEL vt_layer_norm_warp_##sfx(const T* x, int ldx, const T* w, const T* b, T* y, int ldy, \
                                     int rows, int cols, float eps) {                            \
    layer_norm_warp<T>(x, ldx, w, b, y, ldy, rows, cols, eps);                                   \
  }
VT_FOR_EACH_DTYPE(VT_LAYER_NORM_WARP)

#define VT_LAYER_NORM(sfx, T)                                                               \
  VT_KERNEL vt_layer_norm_##sfx(const T* x, int ldx, const T* w, const T* b, T* y, int ldy, \
                                int rows, int cols, float eps) {                            \
    layer_norm_rows<T>(x, ldx, w, b, y, ldy, rows, cols, eps);                              \
  }
VT_FOR_EACH_DTYPE(VT_LAYER_NORM)

// w may be NULL (no scale).
#define VT_RMS_NORM(sfx, T)                                                                \
  VT_KERNEL vt_rms_norm_##sfx(const T* x, int ldx, const T* w, T* y, int ldy, int rows,    \
                              int cols, float eps) {                                       \
    rms_norm_rows<T>(x, ldx, w, y, ldy, rows, cols, eps);                                  \
  }
VT_FOR_EACH_DTYPE(VT_RMS_NORM)

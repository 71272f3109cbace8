// elementwise.cu: the small memory-bound ops around the GEMMs.
//
// All of them compute in fp32 and round once to the output type. That is
// what PyTorch does for GELU and casts; for the residual it is one rounding
// where PyTorch's `x + gamma * r` in half precision takes two, a deliberate
// choice so that every backend rounds the same way.
//
// Launch (every kernel here): a grid-stride loop over the elements, so any
// grid works; grid = (g, 1, 1) with g = min(ceil(n / block), a few per SM);
// block = (n, 1, 1), n a multiple of the wave size; no shared memory.
#include "vt_common.cuh"

// Flat index over the whole 1-D grid, and its stride.
#define VT_GRID_LOOP(i, n)                                                          \
  for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x, vt_step_ = (long)gridDim.x * blockDim.x; \
       i < (n); i += vt_step_)

// Exact (erf) GELU, as nn.GELU() / ACT2FN["gelu"]; not the tanh form.
template <typename T> VT_DEVICE T gelu_one(T x) {
  const float v = vt_to_f32(x);
  return vt_from_f32<T>(0.5f * v * (1.0f + vt_erff(v * 0.70710678118654752440f)));
}

// 16 bytes of elements per step when both pointers are 16-byte aligned (the
// usual case: whole allocations), one element at a time for the rest.
template <typename T> VT_DEVICE void gelu(const T* x, T* y, long n) {
  constexpr int N = 16 / sizeof(T);
  struct alignas(16) Pack { T v[N]; };
  long head = 0;
  if (((uintptr_t)x % 16) == 0 && ((uintptr_t)y % 16) == 0) {
    const long packs = n / N;
    VT_GRID_LOOP(i, packs) {
      Pack p = ((const Pack*)x)[i];
#pragma unroll
      for (int j = 0; j < N; ++j) p.v[j] = gelu_one(p.v[j]);
      ((Pack*)y)[i] = p;
    }
    head = packs * N;
  }
  VT_GRID_LOOP(i, n - head) y[head + i] = gelu_one(x[head + i]);
}
#define VT_GELU(sfx, T) \
  VT_KERNEL vt_gelu_##sfx(const T* x, T* y, long n) { gelu<T>(x, y, n); }
VT_FOR_EACH_DTYPE(VT_GELU)

// y = x + gamma[col] * r over a contiguous [rows, cols] matrix. gamma is a
// LayerScale vector or NULL (scale 1). y may alias x (the usual in-place
// residual update): each element is read and written by one thread.
template <typename T>
VT_DEVICE void residual(const T* x, const T* r, const T* gamma, T* y, int rows, int cols) {
  const long n = (long)rows * cols;
  VT_GRID_LOOP(i, n) {
    const float g = gamma ? vt_to_f32(gamma[i % cols]) : 1.0f;
    y[i] = vt_from_f32<T>(vt_to_f32(x[i]) + g * vt_to_f32(r[i]));
  }
}
#define VT_RESIDUAL(sfx, T)                                                                  \
  VT_KERNEL vt_residual_##sfx(const T* x, const T* r, const T* gamma, T* y, int rows, int cols) { \
    residual<T>(x, r, gamma, y, rows, cols);                                                \
  }
VT_FOR_EACH_DTYPE(VT_RESIDUAL)

// out[r, c] = bias[c]. Pre-fills a GEMM's C so that a beta = 1 GEMM adds the
// bias inside its own accumulation, one rounding in total like addmm.
template <typename T> VT_DEVICE void broadcast_rows(const T* bias, T* out, int rows, int cols) {
  const long n = (long)rows * cols;
  VT_GRID_LOOP(i, n) out[i] = bias[i % cols];
}
#define VT_BROADCAST_ROWS(sfx, T)                                                  \
  VT_KERNEL vt_broadcast_rows_##sfx(const T* bias, T* out, int rows, int cols) {   \
    broadcast_rows<T>(bias, out, rows, cols);                                      \
  }
VT_FOR_EACH_DTYPE(VT_BROADCAST_ROWS)

// Casts go through fp32, which holds every f16 and bf16 value exactly, so
// each cast is a single round-to-nearest-even, as in PyTorch.
template <typename A, typename B> VT_DEVICE void cast(const A* x, B* y, long n) {
  VT_GRID_LOOP(i, n) y[i] = vt_from_f32<B>(vt_to_f32(x[i]));
}
#define VT_CAST(a, A, b, B) \
  VT_KERNEL vt_cast_##a##_to_##b(const A* x, B* y, long n) { cast<A, B>(x, y, n); }
VT_CAST(f32, float, f16, vt_f16)
VT_CAST(f32, float, bf16, vt_bf16)
VT_CAST(f16, vt_f16, f32, float)
VT_CAST(f16, vt_f16, bf16, vt_bf16)
VT_CAST(bf16, vt_bf16, f32, float)
VT_CAST(bf16, vt_bf16, f16, vt_f16)

// Strided 2-D copy: gathers or scatters column slices (say, one head's or
// the patch tokens' columns) without a round trip through the host.
template <typename T>
VT_DEVICE void copy2d(const T* src, int ld_src, T* dst, int ld_dst, int rows, int cols) {
  const long n = (long)rows * cols;
  VT_GRID_LOOP(i, n) {
    const long r = i / cols, c = i % cols;
    dst[r * ld_dst + c] = src[r * ld_src + c];
  }
}
#define VT_COPY2D(sfx, T)                                                                 \
  VT_KERNEL vt_copy2d_##sfx(const T* src, int ld_src, T* dst, int ld_dst, int rows, int cols) { \
    copy2d<T>(src, ld_src, dst, ld_dst, rows, cols);                                      \
  }
VT_FOR_EACH_DTYPE(VT_COPY2D)

// vt_common.cuh: vendor-neutral helpers shared by every kernel file.
//
// Every kernel reads its element type T into fp32, does all arithmetic in
// fp32 and rounds exactly once when it stores. The overloads below are the
// only place where T meets fp32, so that policy is enforced in one spot.
#pragma once
#include "vt_compat.cuh"

// --- T -> fp32 --------------------------------------------------------------
VT_DEVICE float vt_to_f32(float x) { return x; }
VT_DEVICE float vt_to_f32(vt_f16 x) { return vt_f16_to_f32(x); }
VT_DEVICE float vt_to_f32(vt_bf16 x) { return vt_bf16_to_f32(x); }

// --- fp32 -> T (the single rounding) ---------------------------------------
template <typename T> VT_DEVICE T vt_from_f32(float x);
template <> VT_DEVICE float vt_from_f32<float>(float x) { return x; }
template <> VT_DEVICE vt_f16 vt_from_f32<vt_f16>(float x) { return vt_f32_to_f16(x); }
template <> VT_DEVICE vt_bf16 vt_from_f32<vt_bf16>(float x) { return vt_f32_to_bf16(x); }

// Rounds to T and back: for formulas whose reference rounds an intermediate
// to the storage type (HF RMSNorm rounds before multiplying by the weight).
template <typename T> VT_DEVICE float vt_round_through(float x) {
  return vt_to_f32(vt_from_f32<T>(x));
}

// --- Reductions -------------------------------------------------------------
// Butterfly all-reduce: every lane ends with the same sum, summed in the
// same order on every lane, so the result does not depend on the lane.
VT_DEVICE float vt_warp_sum(float v) {
#pragma unroll
  for (int m = VT_WARP_SIZE / 2; m > 0; m >>= 1) v += vt_shfl_xor(v, m);
  return v;
}

VT_DEVICE float vt_warp_max(float v) {
#pragma unroll
  for (int m = VT_WARP_SIZE / 2; m > 0; m >>= 1) v = fmaxf(v, vt_shfl_xor(v, m));
  return v;
}

// Scratch for vt_block_sum: one slot per warp of the largest block (1024
// threads), which covers both wave sizes.
#define VT_MAX_WARPS (1024 / 32)

// Block-wide all-reduce over a 1-D block whose size is a multiple of the
// wave size. Every thread returns the same value: the warp partials are added
// in warp order by every thread, so the sum is deterministic and needs no
// broadcast step. The leading barrier makes back-to-back calls with the same
// scratch safe.
VT_DEVICE float vt_block_sum(float v, float* scratch) {
  v = vt_warp_sum(v);
  const int lane = threadIdx.x % VT_WARP_SIZE;
  const int warp = threadIdx.x / VT_WARP_SIZE;
  const int nwarps = blockDim.x / VT_WARP_SIZE;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int w = 0; w < nwarps; ++w) s += scratch[w];
  return s;
}

// Instantiates one `extern "C"` entry per dtype suffix from a templated
// device body: VT_FOR_EACH_DTYPE(M) expands M(suffix, T) three times.
#define VT_FOR_EACH_DTYPE(M) \
  M(f32, float)              \
  M(f16, vt_f16)             \
  M(bf16, vt_bf16)

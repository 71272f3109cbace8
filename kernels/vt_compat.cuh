// vt_compat.cuh: the only file in kernels/ that knows which GPU vendor it is
// compiled for. Everything else is written once in the CUDA dialect against
// the names defined here, so the NVIDIA and AMD builds cannot drift apart.
//
// Rules this header enforces (see shared notes, "Rules for one kernel source"):
// - the wave size is a per-target compile-time constant, never a literal;
// - shuffles use the `_sync` forms on CUDA and the unmasked forms with an
//   explicit width on HIP (old HIP has no `_sync`, new HIP wants 64-bit masks);
// - bf16 is raw 16-bit storage converted by hand, identical on both vendors
//   and independent of whether the HIP install has hip_bf16.h;
// - no <math.h> / INFINITY (absent under NVRTC); infinities come from bits.
#pragma once

#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
#define VT_HIP 1
#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>
#else
#define VT_CUDA 1
#include <cuda_fp16.h>
#endif

#include <stdint.h>

// ---------------------------------------------------------------------------
// Wave size. AMD's CDNA (gfx9, and gfx8) runs 64-wide wavefronts; RDNA
// (gfx10+) runs 32-wide by default, as does every NVIDIA GPU. The device
// pass of each target sees its own family macro, so the value is right per
// object. The build script double-checks it against each object's metadata.
// ---------------------------------------------------------------------------
#if defined(VT_HIP) && (defined(__GFX9__) || defined(__GFX8__))
#define VT_WARP_SIZE 64
#else
#define VT_WARP_SIZE 32
#endif

// Kernel entry points: unmangled, so PTX, fatbins and AMD code objects all
// export the same names to the host.
#define VT_KERNEL extern "C" __global__ void

#define VT_DEVICE __device__ __forceinline__

// ---------------------------------------------------------------------------
// Element types.
// ---------------------------------------------------------------------------
typedef __half vt_f16;
// bf16 travels as its bit pattern (same layout as Rust's `half::bf16`).
typedef uint16_t vt_bf16;

VT_DEVICE float vt_bits_to_f32(uint32_t u) { return __uint_as_float(u); }
VT_DEVICE uint32_t vt_f32_to_bits(float f) { return __float_as_uint(f); }

VT_DEVICE float vt_pos_inf() { return vt_bits_to_f32(0x7f800000u); }
VT_DEVICE float vt_neg_inf() { return vt_bits_to_f32(0xff800000u); }

VT_DEVICE float vt_f16_to_f32(vt_f16 h) { return __half2float(h); }
VT_DEVICE vt_f16 vt_f32_to_f16(float f) { return __float2half_rn(f); }

// Exact: a bf16 is the top half of an f32.
VT_DEVICE float vt_bf16_to_f32(vt_bf16 b) { return vt_bits_to_f32((uint32_t)b << 16); }

// Round to nearest, ties to even, as PyTorch and `half` do. A NaN keeps its
// sign and gets the quiet bit, so it cannot collapse into an infinity.
VT_DEVICE vt_bf16 vt_f32_to_bf16(float f) {
  uint32_t u = vt_f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (vt_bf16)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (vt_bf16)(u >> 16);
}

// ---------------------------------------------------------------------------
// Math. Both vendors provide these names for device code; routing them
// through one place keeps a later switch (say, to a vendor intrinsic) local.
// ---------------------------------------------------------------------------
VT_DEVICE float vt_expf(float x) { return expf(x); }
VT_DEVICE float vt_erff(float x) { return erff(x); }
VT_DEVICE float vt_rsqrtf(float x) { return rsqrtf(x); }
VT_DEVICE float vt_floorf(float x) { return floorf(x); }
VT_DEVICE float vt_fmaf(float a, float b, float c) { return fmaf(a, b, c); }

// ---------------------------------------------------------------------------
// Warp shuffles over the full warp.
// ---------------------------------------------------------------------------
#if defined(VT_HIP)
VT_DEVICE float vt_shfl_xor(float v, int mask) { return __shfl_xor(v, mask, VT_WARP_SIZE); }
VT_DEVICE float vt_shfl(float v, int src) { return __shfl(v, src, VT_WARP_SIZE); }
#else
VT_DEVICE float vt_shfl_xor(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask, VT_WARP_SIZE);
}
VT_DEVICE float vt_shfl(float v, int src) { return __shfl_sync(0xffffffffu, v, src, VT_WARP_SIZE); }
#endif

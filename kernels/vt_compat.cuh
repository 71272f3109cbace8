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

// Round to nearest, ties to even, as PyTorch and `half` do; a NaN stays a
// NaN and never collapses into an infinity. On CUDA that is one instruction
// (sm_80+, the conversion PyTorch's own CUDA kernels use); elsewhere the
// same rounding on the bits, where a NaN keeps its sign and gets the quiet
// bit (CUDA's instruction returns the canonical NaN instead).
#if defined(VT_HIP)
VT_DEVICE vt_bf16 vt_f32_to_bf16(float f) {
  uint32_t u = vt_f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (vt_bf16)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (vt_bf16)(u >> 16);
}
#else
VT_DEVICE vt_bf16 vt_f32_to_bf16(float f) {
  uint16_t b;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
  return b;
}
#endif

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

// ---------------------------------------------------------------------------
// Tile MMA: D[16×8] += A[16×16] · B[16×8], fp32 accumulate, performed by one
// tile group of VT_MMA_GROUP lanes. This is a fragment layout contract, not
// the wave size: a 64-wide AMD wave holds two independent tile groups.
//
// Lane l of a group has g = l / 4 and t = l % 4. Each 32-bit register holds
// two 16-bit elements, the lower index in the low half:
//   a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1]  d[2..3] = D[g+8][2t..2t+1]
// That is NVIDIA's m16n8k16 layout: on CUDA one `mma.sync` instruction (the
// f16 and bf16 forms need sm_80+). On HIP the same contract is met with
// shuffles inside the group and fp32 FMAs: exact (every product of two
// 16-bit floats is exact in fp32) but without matrix cores; mapping it onto
// MFMA/WMMA is the AMD speed-up still to do.
// ---------------------------------------------------------------------------
#define VT_MMA_GROUP 32

VT_DEVICE float vt_f16_bits_to_f32(uint32_t bits) {
  return __half2float(__ushort_as_half((unsigned short)bits));
}

#if defined(VT_HIP)
template <bool BF16>
VT_DEVICE float vt_mma_unpack(uint32_t reg, int hi) {
  const uint32_t bits = hi ? (reg >> 16) : (reg & 0xffffu);
  return BF16 ? vt_bits_to_f32(bits << 16) : vt_f16_bits_to_f32(bits);
}

VT_DEVICE uint32_t vt_group_shfl(uint32_t v, int src) {
  return (uint32_t)__shfl((int)v, src, VT_MMA_GROUP);
}

template <bool BF16>
VT_DEVICE void vt_mma_emulated(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  const int lane = threadIdx.x % VT_MMA_GROUP;
  const int g = lane / 4, t = lane % 4;
  // Columns 2t and 2t+1 of B live in the lanes whose g is that column.
  for (int src_t = 0; src_t < 4; ++src_t) {
    const uint32_t a_lo0 = vt_group_shfl(a[0], 4 * g + src_t);
    const uint32_t a_hi0 = vt_group_shfl(a[1], 4 * g + src_t);
    const uint32_t a_lo2 = vt_group_shfl(a[2], 4 * g + src_t);
    const uint32_t a_hi2 = vt_group_shfl(a[3], 4 * g + src_t);
    for (int c = 0; c < 2; ++c) {
      const uint32_t b0 = vt_group_shfl(b[0], 4 * (2 * t + c) + src_t);
      const uint32_t b1 = vt_group_shfl(b[1], 4 * (2 * t + c) + src_t);
      for (int e = 0; e < 2; ++e) {
        // k = 2·src_t + e (from a[0]/a[1], b[0]) and k + 8 (a[2]/a[3], b[1]).
        const float bk = vt_mma_unpack<BF16>(b0, e), bk8 = vt_mma_unpack<BF16>(b1, e);
        d[c] = fmaf(vt_mma_unpack<BF16>(a_lo0, e), bk, d[c]);
        d[c] = fmaf(vt_mma_unpack<BF16>(a_lo2, e), bk8, d[c]);
        d[2 + c] = fmaf(vt_mma_unpack<BF16>(a_hi0, e), bk, d[2 + c]);
        d[2 + c] = fmaf(vt_mma_unpack<BF16>(a_hi2, e), bk8, d[2 + c]);
      }
    }
  }
}

VT_DEVICE void vt_mma_16x8x16_f16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  vt_mma_emulated<false>(d, a, b);
}
VT_DEVICE void vt_mma_16x8x16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  vt_mma_emulated<true>(d, a, b);
}
#else
VT_DEVICE void vt_mma_16x8x16_f16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
VT_DEVICE void vt_mma_16x8x16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// Shuffle inside a tile group (the quad reductions of the fused attention).
#if defined(VT_HIP)
VT_DEVICE float vt_group_shfl_xor(float v, int mask) { return __shfl_xor(v, mask, VT_MMA_GROUP); }
#else
VT_DEVICE float vt_group_shfl_xor(float v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask, VT_MMA_GROUP);
}
#endif

// ---------------------------------------------------------------------------
// B fragments (two adjacent 8-column n-tiles, one 16-deep k-chunk) read from a
// row-major 16-bit matrix in shared memory with row stride `ld` elements
// (ld·2 bytes and every `n0`/`k0` multiples of 16 bytes).
//   vt_frag_b_rows: B[k][n] = tile[n0 + n][k0 + k]   (a K tile for Q·Kᵀ)
//   vt_frag_b_cols: B[k][n] = tile[k0 + k][n0 + n]   (a V tile for P·V)
// b0 holds n-tile 0 (n0..n0+7), b1 n-tile 1 (n0+8..n0+15), laid out as the
// b operand of the tile MMA above. CUDA uses ldmatrix (.trans for the column
// form), four 8×8 matrices per instruction; HIP reads the halves directly.
// ---------------------------------------------------------------------------
#if defined(VT_HIP)
VT_DEVICE uint32_t vt_pair(const uint16_t* lo, const uint16_t* hi) {
  return (uint32_t)*lo | ((uint32_t)*hi << 16);
}

VT_DEVICE void vt_frag_b_rows(uint32_t b0[2], uint32_t b1[2], const uint16_t* tile, int ld, int n0,
                              int k0) {
  const int lane = threadIdx.x % VT_MMA_GROUP, g = lane / 4, t = lane % 4;
  const uint16_t* r0 = tile + (n0 + g) * ld + k0 + 2 * t;
  const uint16_t* r1 = r0 + 8 * ld;
  b0[0] = vt_pair(r0, r0 + 1);
  b0[1] = vt_pair(r0 + 8, r0 + 9);
  b1[0] = vt_pair(r1, r1 + 1);
  b1[1] = vt_pair(r1 + 8, r1 + 9);
}

VT_DEVICE void vt_frag_b_cols(uint32_t b0[2], uint32_t b1[2], const uint16_t* tile, int ld, int k0,
                              int n0) {
  const int lane = threadIdx.x % VT_MMA_GROUP, g = lane / 4, t = lane % 4;
  const uint16_t* c = tile + (k0 + 2 * t) * ld + n0 + g;
  b0[0] = vt_pair(c, c + ld);
  b0[1] = vt_pair(c + 8 * ld, c + 9 * ld);
  b1[0] = vt_pair(c + 8, c + ld + 8);
  b1[1] = vt_pair(c + 8 * ld + 8, c + 9 * ld + 8);
}
#else
VT_DEVICE void vt_frag_b_rows(uint32_t b0[2], uint32_t b1[2], const uint16_t* tile, int ld, int n0,
                              int k0) {
  // Lane l addresses row l % 8 of matrix l / 8: matrices are (n-tile, k-half)
  // = (0,0), (0,1), (1,0), (1,1).
  const int lane = threadIdx.x % VT_MMA_GROUP, i = lane / 8, r = lane % 8;
  const uint16_t* p = tile + (n0 + (i / 2) * 8 + r) * ld + k0 + (i % 2) * 8;
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b0[0]), "=r"(b0[1]), "=r"(b1[0]), "=r"(b1[1])
               : "r"(addr));
}

VT_DEVICE void vt_frag_b_cols(uint32_t b0[2], uint32_t b1[2], const uint16_t* tile, int ld, int k0,
                              int n0) {
  // Matrices are (k-half, n-tile) = (0,0), (1,0), (0,1), (1,1), transposed.
  const int lane = threadIdx.x % VT_MMA_GROUP, i = lane / 8, r = lane % 8;
  const uint16_t* p = tile + (k0 + (i % 2) * 8 + r) * ld + n0 + (i / 2) * 8;
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b0[0]), "=r"(b0[1]), "=r"(b1[0]), "=r"(b1[1])
               : "r"(addr));
}
#endif

// 2^x for softmax weights, which are rounded to 16 bits before they are used
// and summed in fp32 next to a maximum of 1: the hardware approximation
// (relative error ~2^-22) with subnormal results flushed to zero, which
// changes no weight that survives that rounding and saves the fix-up
// instructions around the exact-subnormal form (~5% of the fused
// attention's time on an H100).
#if defined(VT_HIP)
VT_DEVICE float vt_exp2f_softmax(float x) { return exp2f(x); }
#else
VT_DEVICE float vt_exp2f_softmax(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
#endif

// ---------------------------------------------------------------------------
// Asynchronous 16-byte global -> shared copies, so a block can fetch its next
// tile while it computes on the current one. On CUDA (sm_80+) these are
// cp.async with zero-fill; elsewhere a plain copy, and commit/wait do nothing.
//   vt_copy16_async(dst, src, valid): dst = valid ? *src : 0 (16 bytes)
//   vt_async_commit(): closes the group of copies issued so far
//   vt_async_wait<N>(): waits until at most N groups are in flight
// A __syncthreads() is still needed after the wait before other threads read.
// ---------------------------------------------------------------------------
#if defined(VT_HIP)
VT_DEVICE void vt_copy16_async(void* dst, const void* src, bool valid) {
  *(uint4*)dst = valid ? *(const uint4*)src : make_uint4(0, 0, 0, 0);
}
VT_DEVICE void vt_async_commit() {}
template <int N> VT_DEVICE void vt_async_wait() {}
#else
VT_DEVICE void vt_copy16_async(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
VT_DEVICE void vt_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> VT_DEVICE void vt_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

// A TMA tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned), passed
// by value. The type exists for every vendor so that every image exports the
// same kernel signatures; only sm_90a code reads it. VT_GRID_CONSTANT keeps
// the parameter in constant space, where TMA instructions can address it.
struct alignas(64) vt_tensor_map {
  unsigned long long opaque[16];
};
#if defined(VT_CUDA)
#define VT_GRID_CONSTANT __grid_constant__
#else
#define VT_GRID_CONSTANT
#endif

// ---------------------------------------------------------------------------
// Warpgroup MMA (NVIDIA Hopper, sm_90a only; VT_HAS_WGMMA is 0 everywhere
// else, including the sm_80/sm_90 SASS and the PTX of the same fatbin).
//
// vt_wgmma<N, BF16, TRANS_B>(d, a, b_desc, accumulate): the four warps of a
// warpgroup (128 consecutive threads) compute D[64×N] (+)= A[64×16]·B[16×N]
// with fp32 accumulation, asynchronously. A comes from registers in the tile
// MMA's A layout above, warp w of the group holding rows 16w..16w+15; D is
// laid out as N/8 tile-MMA accumulators per warp (d[4j..4j+3] is n-tile j).
// B is read from shared memory through a matrix descriptor (vt_wgmma_desc):
// tiles made of 8×8 "core matrices" of 16-bit elements, each core matrix
// 128 contiguous bytes (8 rows of 16 bytes), no swizzle. TRANS_B = 0 when the
// 16-byte rows of a core matrix run along k (B is "K-major": Kᵀ tiles),
// 1 when they run along n (a V tile read as B[key][dim]).
//   lbo: bytes between core matrices adjacent along k,
//   sbo: bytes between core matrices adjacent along n.
// Issue order: vt_wgmma_fence() once the A/D registers are final, the MMAs,
// vt_wgmma_commit(), vt_wgmma_wait<0>(), then vt_wgmma_hold(d) so the
// compiler reads D only after the wait. Shared memory written by ordinary or
// cp.async stores must pass vt_fence_async_smem() (by the writing thread,
// once its writes have landed) before a barrier that the MMA waits on.
// ---------------------------------------------------------------------------
#if defined(VT_CUDA) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define VT_HAS_WGMMA 1
#else
#define VT_HAS_WGMMA 0
#endif

#if VT_HAS_WGMMA
VT_DEVICE uint64_t vt_wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem);
  return (uint64_t)((addr & 0x3ffffu) >> 4) | ((uint64_t)((lbo >> 4) & 0x3fffu) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3fffu) << 32);
}
VT_DEVICE void vt_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
VT_DEVICE void vt_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> VT_DEVICE void vt_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int R> VT_DEVICE void vt_wgmma_hold(float* d) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
VT_DEVICE void vt_fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Warp specialisation (sm_90a, with the MMA above): a producer warpgroup
// fills shared-memory slots while the MMA warpgroups consume them, the two
// sides meeting at mbarriers (64-bit shared-memory barriers with a phase
// that flips each time the expected arrivals are in) instead of block
// barriers, so consumer warpgroups run at their own pace.
//   vt_mbar_init(bar, n): n arrivals complete a phase; vt_mbar_init_fence()
//     then a block barrier publish it. vt_mbar_arrive: one arrival (release:
//     this thread's earlier shared-memory writes are visible to whoever
//     waits). vt_mbar_wait(bar, parity): until the phase of that parity has
//     completed (acquire).
//   vt_bar_sync / vt_bar_arrive(id, threads): named barriers 1..15 over
//     `threads` threads, for turn-taking between warpgroups.
//   vt_regs_shrink / vt_regs_grow<R>: the calling warpgroup's register
//     budget (a multiple of 8, 24..256); the producer gives registers back
//     so MMA warpgroups can hold their accumulators. Needs launch bounds with
//     a minimum block count (ptxas ignores it otherwise), and the budgets of
//     all warpgroups must fit what the launch allotted, or vt_regs_grow
//     waits forever.
VT_DEVICE uint32_t vt_smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
VT_DEVICE void vt_mbar_init(uint64_t* bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(vt_smem_addr(bar)), "r"(arrivals) : "memory");
}
VT_DEVICE void vt_mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
VT_DEVICE void vt_mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(vt_smem_addr(bar)) : "memory");
}
VT_DEVICE void vt_mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(vt_smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
VT_DEVICE void vt_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
VT_DEVICE void vt_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Tensor-memory copies (TMA): one thread asks the copy engine for a whole
// box of a tensor described by a tensor map (built on the host with
// cuTensorMapEncodeTiled and passed by value as a VT_GRID_CONSTANT kernel
// parameter); the bytes land in shared memory and count down the mbarrier's
// transaction count, which vt_mbar_arrive_expect_tx set, so the waiting side
// needs no fence (the copies and wgmma are both in the async proxy).
VT_DEVICE void vt_mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(vt_smem_addr(bar)), "r"(bytes)
               : "memory");
}
VT_DEVICE void vt_tma_load_3d(void* dst, const vt_tensor_map* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          vt_smem_addr(dst)),
      "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(vt_smem_addr(bar))
      : "memory");
}
template <int R> VT_DEVICE void vt_regs_shrink() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R> VT_DEVICE void vt_regs_grow() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }

// Operand lists: N/2 accumulators, then the four A registers, the B
// descriptor and the accumulate flag (as predicate p).
#define VT_WG_REGS_N64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p"
#define VT_WG_PRED_N64 "setp.ne.b32 p, %37, 0;\n"
#define VT_WG_REGS_N80 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39}, {%40,%41,%42,%43}, %44, p"
#define VT_WG_PRED_N80 "setp.ne.b32 p, %45, 0;\n"
#define VT_WG_REGS_N128 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p"
#define VT_WG_PRED_N128 "setp.ne.b32 p, %69, 0;\n"
#define VT_WG_D8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
    "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define VT_WG_OUT_N64(d) VT_WG_D8(d, 0), VT_WG_D8(d, 8), VT_WG_D8(d, 16), VT_WG_D8(d, 24)
#define VT_WG_OUT_N80(d) VT_WG_OUT_N64(d), VT_WG_D8(d, 32)
#define VT_WG_OUT_N128(d) VT_WG_OUT_N64(d), VT_WG_D8(d, 32), VT_WG_D8(d, 40), VT_WG_D8(d, 48), VT_WG_D8(d, 56)

template <int N, bool BF16, int TRANS_B>
VT_DEVICE void vt_wgmma(float* d, const uint32_t a[4], uint64_t b_desc, int accumulate);
#define VT_WGMMA(N, BF16, TY, TRANS_B)                                                           \
  template <>                                                                                    \
  VT_DEVICE void vt_wgmma<N, BF16, TRANS_B>(float* d, const uint32_t a[4], uint64_t b_desc,     \
                                            int accumulate) {                                    \
    asm volatile("{\n.reg .pred p;\n" VT_WG_PRED_N##N "wgmma.mma_async.sync.aligned.m64n" #N     \
                 "k16.f32." TY "." TY " " VT_WG_REGS_N##N ", 1, 1, " #TRANS_B ";\n}\n"           \
                 : VT_WG_OUT_N##N(d)                                                             \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(accumulate));   \
  }
// vt_wgmma_ss<N, BF16>: the same with A also read from shared memory through
// a descriptor (core matrices as for B, K-major), so its registers are free.
template <int N, bool BF16>
VT_DEVICE void vt_wgmma_ss(float* d, uint64_t a_desc, uint64_t b_desc, int accumulate);
#define VT_WGMMA_SS(N, BF16, TY)                                                                 \
  template <>                                                                                    \
  VT_DEVICE void vt_wgmma_ss<N, BF16>(float* d, uint64_t a_desc, uint64_t b_desc, int accumulate) { \
    asm volatile("{\n.reg .pred p;\n" VT_WG_PRED_SS_N##N "wgmma.mma_async.sync.aligned.m64n" #N  \
                 "k16.f32." TY "." TY " " VT_WG_REGS_SS_N##N ", 1, 1, 0, 0;\n}\n"              \
                 : VT_WG_OUT_N##N(d)                                                             \
                 : "l"(a_desc), "l"(b_desc), "r"(accumulate));                                   \
  }
#define VT_WG_REGS_SS_N64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p"
#define VT_WG_PRED_SS_N64 "setp.ne.b32 p, %34, 0;\n"
// The shapes the attention uses: S over 64 keys (n64, K-major B) and P·V
// at head dims 64, 80 and 128 (n-major B).
#define VT_WGMMA_SHAPES(BF16, TY)                                                   \
  VT_WGMMA(64, BF16, TY, 0) VT_WGMMA(64, BF16, TY, 1) VT_WGMMA(80, BF16, TY, 1) \
  VT_WGMMA(128, BF16, TY, 1)
VT_WGMMA_SHAPES(false, "f16")
VT_WGMMA_SHAPES(true, "bf16")
VT_WGMMA_SS(64, false, "f16")
VT_WGMMA_SS(64, true, "bf16")
#endif

// Launch bounds: CUDA's second argument (minimum resident blocks per SM) has
// a different meaning on HIP, so only the thread count is passed there.
#if defined(VT_HIP)
#define VT_LAUNCH_BOUNDS(threads, min_blocks) __launch_bounds__(threads)
#else
#define VT_LAUNCH_BOUNDS(threads, min_blocks) __launch_bounds__(threads, min_blocks)
#endif

// attention.cu: reference multi-head attention over packed variable-length
// sequences (no mask inside a sequence, nothing across sequences).
//
// This is the correct-first kernel that a faster fused kernel will be
// checked against, so it favours plain fp32 arithmetic over speed: one warp
// owns one (query row, head) pair, walks the keys of that row's sequence in
// order, and keeps an online softmax (running max, running sum, rescaled
// accumulator) in fp32. The output is rounded once to T.
//
// Layout: the rows of all sequences are stacked; sequence s owns rows
// [cu_seqlens[s], cu_seqlens[s + 1]). Head h of a row is the column range
// [h * head_dim, (h + 1) * head_dim) of q, k, v and out, and each of them has
// its own row stride, so q, k and v may be column slices of one fused
// [T, 3D] qkv buffer and out may be a slice of a wider buffer.
//
// Launch: grid-stride over the (row, head) pairs, warp w of block b taking
// pair b * (blockDim.x / wave) + w; grid = (g, 1, 1) with g up to
// ceil(T * heads / (blockDim.x / wave)); block = (n, 1, 1), n a multiple of
// the wave size; no shared memory. cu_seqlens lives in device memory and has
// num_seqs + 1 entries. head_dim <= VT_ATT_MAX_HEAD_DIM; a larger head_dim
// writes NaN to every output element so the misuse cannot go unnoticed.
// max_seqlen is not needed here; it is part of the signature the fused
// kernel will share.
#include "vt_common.cuh"

#define VT_ATT_MAX_HEAD_DIM 256
#define VT_ATT_PER_LANE (VT_ATT_MAX_HEAD_DIM / VT_WARP_SIZE)

// Index of the sequence that contains `row`: the last s with cu[s] <= row.
VT_DEVICE int sequence_of(const int* cu, int num_seqs, int row) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= row) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <typename T>
VT_DEVICE void attention(const T* q, int ldq, const T* k, int ldk, const T* v, int ldv, T* out,
                         int ldo, const int* cu_seqlens, int num_seqs, int heads, int head_dim,
                         float scale) {
  const int lane = threadIdx.x % VT_WARP_SIZE;
  const int warps = blockDim.x / VT_WARP_SIZE;
  const long pairs = (long)cu_seqlens[num_seqs] * heads;
  const bool bad_dim = head_dim > VT_ATT_MAX_HEAD_DIM;

  for (long pi = (long)blockIdx.x * warps + threadIdx.x / VT_WARP_SIZE; pi < pairs;
       pi += (long)gridDim.x * warps) {
    const int row = (int)(pi / heads);
    const int col0 = (int)(pi % heads) * head_dim;
    T* orow = out + (long)row * ldo + col0;
    if (bad_dim) {
      for (int d = lane; d < head_dim; d += VT_WARP_SIZE) orow[d] = vt_from_f32<T>(vt_bits_to_f32(0x7fc00000u));
      continue;
    }
    const int s = sequence_of(cu_seqlens, num_seqs, row);
    const int j0 = cu_seqlens[s], j1 = cu_seqlens[s + 1];

    float qv[VT_ATT_PER_LANE], acc[VT_ATT_PER_LANE];
    const T* qrow = q + (long)row * ldq + col0;
#pragma unroll
    for (int i = 0; i < VT_ATT_PER_LANE; ++i) {
      const int d = lane + i * VT_WARP_SIZE;
      qv[i] = d < head_dim ? vt_to_f32(qrow[d]) : 0.0f;
      acc[i] = 0.0f;
    }

    float run_max = vt_neg_inf(), run_sum = 0.0f;
    for (int j = j0; j < j1; ++j) {
      const T* krow = k + (long)j * ldk + col0;
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < VT_ATT_PER_LANE; ++i) {
        const int d = lane + i * VT_WARP_SIZE;
        if (d < head_dim) dot += qv[i] * vt_to_f32(krow[d]);
      }
      const float score = vt_warp_sum(dot) * scale;
      const float new_max = fmaxf(run_max, score);
      const float rescale = vt_expf(run_max - new_max);  // 0 for the first key
      const float p = vt_expf(score - new_max);
      run_sum = run_sum * rescale + p;
      const T* vrow = v + (long)j * ldv + col0;
#pragma unroll
      for (int i = 0; i < VT_ATT_PER_LANE; ++i) {
        const int d = lane + i * VT_WARP_SIZE;
        if (d < head_dim) acc[i] = acc[i] * rescale + p * vt_to_f32(vrow[d]);
      }
      run_max = new_max;
    }

#pragma unroll
    for (int i = 0; i < VT_ATT_PER_LANE; ++i) {
      const int d = lane + i * VT_WARP_SIZE;
      if (d < head_dim) orow[d] = vt_from_f32<T>(acc[i] / run_sum);
    }
  }
}

#define VT_ATTENTION(sfx, T)                                                                    \
  VT_KERNEL vt_attention_##sfx(const T* q, int ldq, const T* k, int ldk, const T* v, int ldv,   \
                               T* out, int ldo, const int* cu_seqlens, int num_seqs,            \
                               int max_seqlen, int heads, int head_dim, float scale) {          \
    (void)max_seqlen;                                                                           \
    attention<T>(q, ldq, k, ldk, v, ldv, out, ldo, cu_seqlens, num_seqs, heads, head_dim, scale); \
  }
VT_FOR_EACH_DTYPE(VT_ATTENTION)

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

// ---------------------------------------------------------------------------
// Fused attention (f16 / bf16): the same packed variable-length contract and
// arguments as the reference kernel above, computed the FlashAttention-2 way.
//
// A block of GROUPS tile groups owns 16·MT·GROUPS query rows of one
// (sequence, head); group w owns MT m-tiles of 16 rows and keeps their Q
// fragments, running max and sum and output accumulators in registers. The block walks the
// sequence's keys in tiles of KEYS: K and V tiles are double-buffered in
// shared memory (the next tile is fetched asynchronously while the current
// one is used), S = Q·Kᵀ and O += P·V run on the tile MMA (fp32
// accumulate), the softmax statistics stay in fp32, and P is rounded to T
// for the second product exactly as FlashAttention does. HD is head_dim
// rounded up to a multiple of 16; the padding is zero in Q and K and never
// written to the output. `scale` must be positive (it is head_dim^-1/2): the
// row max is taken before scaling.
//
// Launch: block = 32·GROUPS threads (GROUPS tile groups of VT_MMA_GROUP
// lanes; nothing assumes a wave of that many lanes), grid = num_seqs · heads
// · ceil(max_seqlen / (16·MT·GROUPS)), block b taking query tile b % tiles
// of head (b / tiles) % heads of sequence b / (tiles · heads). Empty tiles
// return at once.
// ---------------------------------------------------------------------------

VT_DEVICE uint16_t vt_bits16(vt_f16 x) { return __half_as_ushort(x); }
VT_DEVICE uint16_t vt_bits16(vt_bf16 x) { return x; }

template <typename T> VT_DEVICE uint32_t vt_pack2(float lo, float hi) {
  return (uint32_t)vt_bits16(vt_from_f32<T>(lo)) | ((uint32_t)vt_bits16(vt_from_f32<T>(hi)) << 16);
}

template <typename T> VT_DEVICE void vt_mma(float d[4], const uint32_t a[4], const uint32_t b[2]);
template <> VT_DEVICE void vt_mma<vt_f16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  vt_mma_16x8x16_f16(d, a, b);
}
template <> VT_DEVICE void vt_mma<vt_bf16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  vt_mma_16x8x16_bf16(d, a, b);
}

// Two adjacent elements (row, col) and (row, col + 1) of a head's slice as
// one packed register; zero outside the sequence or past head_dim.
template <typename T>
VT_DEVICE uint32_t load_pair(const T* base, int ld, int row, int rows, int col, int head_dim) {
  if (row >= rows) return 0;
  const uint16_t* p = (const uint16_t*)(base + (long)row * ld);
  const uint32_t lo = col < head_dim ? p[col] : 0;
  const uint32_t hi = col + 1 < head_dim ? p[col + 1] : 0;
  return lo | (hi << 16);
}

// Keys per tile: 64 while two double-buffered K/V tiles fit the 48 KiB of
// static shared memory, 32 above that.
template <int HD> struct FaKeys { static constexpr int value = HD <= 80 ? 64 : 32; };

// Starts fetching rows [0, rows) of a head's [*, head_dim] slice into a
// KEYS × (HD + 8) shared tile, zero-filling the rest. Asynchronous 16-byte
// copies when every row start is 16-byte aligned, plain elements otherwise.
template <int HD, int KEYS>
VT_DEVICE void stage_tile(uint16_t (*tile)[HD + 8], const uint16_t* base, int ld, int rows,
                          int head_dim, bool vec) {
  if (vec) {
    constexpr int CHUNKS = HD / 8;
    for (int i = threadIdx.x; i < KEYS * CHUNKS; i += blockDim.x) {
      const int r = i / CHUNKS, c = (i % CHUNKS) * 8;
      const bool valid = r < rows && c < head_dim;
      vt_copy16_async(&tile[r][c], valid ? base + (long)r * ld + c : base, valid);
    }
  } else {
    for (int i = threadIdx.x; i < KEYS * HD; i += blockDim.x) {
      const int r = i / HD, c = i % HD;
      tile[r][c] = (r < rows && c < head_dim) ? base[(long)r * ld + c] : (uint16_t)0;
    }
  }
}

template <typename T, int HD, int GROUPS, int MT>
VT_DEVICE void flash_attention(const T* q, int ldq, const T* k, int ldk, const T* v, int ldv, T* out,
                               int ldo, const int* cu_seqlens, int num_seqs, int max_seqlen,
                               int heads, int head_dim, float scale) {
  constexpr int KEYS = FaKeys<HD>::value;
  constexpr int ROWS = 16 * MT * GROUPS;
  __shared__ __align__(16) uint16_t ks[2][KEYS][HD + 8];
  __shared__ __align__(16) uint16_t vs[2][KEYS][HD + 8];

  const int tiles = (max_seqlen + ROWS - 1) / ROWS;
  const int tile = blockIdx.x % tiles;
  const int head = (blockIdx.x / tiles) % heads;
  const int seq = blockIdx.x / (tiles * heads);
  if (seq >= num_seqs) return;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int q0 = tile * ROWS;
  if (q0 >= len) return;  // uniform across the block: no barrier is skipped by some only

  const int col0 = head * head_dim;
  const int group = threadIdx.x / VT_MMA_GROUP, lane = threadIdx.x % VT_MMA_GROUP;
  const int g = lane / 4, t = lane % 4;
  // The running max is kept in log2 units so the exponentials are exp2.
  const float scale_log2 = scale * 1.4426950408889634f;

  const uint16_t* kh = (const uint16_t*)(k + (long)start * ldk + col0);
  const uint16_t* vh = (const uint16_t*)(v + (long)start * ldv + col0);
  const bool vec = head_dim % 8 == 0 && ldk % 8 == 0 && ldv % 8 == 0 &&
                   ((uintptr_t)kh % 16) == 0 && ((uintptr_t)vh % 16) == 0;
  const int num_tiles = (len + KEYS - 1) / KEYS;
  stage_tile<HD, KEYS>(ks[0], kh, ldk, min(KEYS, len), head_dim, vec);
  stage_tile<HD, KEYS>(vs[0], vh, ldv, min(KEYS, len), head_dim, vec);
  vt_async_commit();

  // Q fragments of this group's MT m-tiles of 16 rows (rows relative to the
  // sequence), loaded while the first K/V tile is in flight. Row ra(mt) is
  // the lane's upper row of m-tile mt, ra(mt) + 8 its lower one.
  const T* qh = q + (long)start * ldq + col0;
  const int row0 = q0 + group * 16 * MT + g;
  uint32_t qf[MT][HD / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int ra = row0 + 16 * mt, rb = ra + 8;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      const int c = kk * 16 + 2 * t;
      qf[mt][kk][0] = load_pair(qh, ldq, ra, len, c, head_dim);
      qf[mt][kk][1] = load_pair(qh, ldq, rb, len, c, head_dim);
      qf[mt][kk][2] = load_pair(qh, ldq, ra, len, c + 8, head_dim);
      qf[mt][kk][3] = load_pair(qh, ldq, rb, len, c + 8, head_dim);
    }
  }

  float o[MT][HD / 8][4];
  float m[MT][2], l[MT][2];  // running max, and this lane's part of the running sum
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.0f;
    m[mt][0] = m[mt][1] = vt_neg_inf();
    l[mt][0] = l[mt][1] = 0.0f;
  }

  for (int it = 0; it < num_tiles; ++it) {
    const int j0 = it * KEYS, buf = it & 1;
    const int keys = min(KEYS, len - j0);
    if (it + 1 < num_tiles) {
      // The other buffer was last read in iteration it - 1, which ended
      // with a barrier.
      const int j1 = j0 + KEYS, rows = min(KEYS, len - j1);
      stage_tile<HD, KEYS>(ks[buf ^ 1], kh + (long)j1 * ldk, ldk, rows, head_dim, vec);
      stage_tile<HD, KEYS>(vs[buf ^ 1], vh + (long)j1 * ldv, ldv, rows, head_dim, vec);
      vt_async_commit();
      vt_async_wait<1>();
    } else {
      vt_async_wait<0>();
    }
    __syncthreads();

    // S = Q·Kᵀ for each m-tile × KEYS keys; every K fragment read from
    // shared memory serves all MT m-tiles.
    float s[MT][KEYS / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < KEYS / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < KEYS / 8; j += 2) {
        uint32_t b0[2], b1[2];
        vt_frag_b_rows(b0, b1, &ks[buf][0][0], HD + 8, j * 8, kk * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          vt_mma<T>(s[mt][j], qf[mt][kk], b0);
          vt_mma<T>(s[mt][j + 1], qf[mt][kk], b1);
        }
      }
    }

    uint32_t pa[MT][KEYS / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      // Mask keys past the sequence (last tile only) and take each row's
      // max of the raw scores; the scale (> 0) is applied afterwards, fused
      // into the exponent's FMA.
      if (keys < KEYS) {
#pragma unroll
        for (int j = 0; j < KEYS / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            if (j * 8 + 2 * t + e >= keys) s[mt][j][e] = s[mt][j][2 + e] = vt_neg_inf();
      }
      float mx[2] = {vt_neg_inf(), vt_neg_inf()};
#pragma unroll
      for (int j = 0; j < KEYS / 8; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        // A row's scores are spread over the 4 lanes of its quad.
        mx[h] = fmaxf(mx[h], vt_group_shfl_xor(mx[h], 1));
        mx[h] = fmaxf(mx[h], vt_group_shfl_xor(mx[h], 2));
        const float nm = fmaxf(m[mt][h], mx[h] * scale_log2);
        const float resc = vt_exp2f_softmax(m[mt][h] - nm);  // 0 at the first tile
        m[mt][h] = nm;
        l[mt][h] *= resc;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
          o[mt][d][2 * h] *= resc;
          o[mt][d][2 * h + 1] *= resc;
        }
      }
      // P = exp2(S - max), summed in fp32, then rounded to T as the A
      // operand of P·V: 16 keys per k-step are two adjacent n-tiles of S.
#pragma unroll
      for (int kk = 0; kk < KEYS / 16; ++kk) {
        float p[2][4];
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float* sj = s[mt][2 * kk + hh];
          p[hh][0] = vt_exp2f_softmax(vt_fmaf(sj[0], scale_log2, -m[mt][0]));
          p[hh][1] = vt_exp2f_softmax(vt_fmaf(sj[1], scale_log2, -m[mt][0]));
          p[hh][2] = vt_exp2f_softmax(vt_fmaf(sj[2], scale_log2, -m[mt][1]));
          p[hh][3] = vt_exp2f_softmax(vt_fmaf(sj[3], scale_log2, -m[mt][1]));
          l[mt][0] += p[hh][0] + p[hh][1];
          l[mt][1] += p[hh][2] + p[hh][3];
        }
        pa[mt][kk][0] = vt_pack2<T>(p[0][0], p[0][1]);
        pa[mt][kk][1] = vt_pack2<T>(p[0][2], p[0][3]);
        pa[mt][kk][2] = vt_pack2<T>(p[1][0], p[1][1]);
        pa[mt][kk][3] = vt_pack2<T>(p[1][2], p[1][3]);
      }
    }

    // O += P·V; every V fragment serves all MT m-tiles.
#pragma unroll
    for (int kk = 0; kk < KEYS / 16; ++kk) {
#pragma unroll
      for (int d = 0; d < HD / 8; d += 2) {
        uint32_t b0[2], b1[2];
        vt_frag_b_cols(b0, b1, &vs[buf][0][0], HD + 8, kk * 16, d * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          vt_mma<T>(o[mt][d], pa[mt][kk], b0);
          vt_mma<T>(o[mt][d + 1], pa[mt][kk], b1);
        }
      }
    }
    __syncthreads();  // this buffer is refilled in the next iteration
  }

  T* oh = out + (long)start * ldo + col0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[mt][h];
      sum += vt_group_shfl_xor(sum, 1);
      sum += vt_group_shfl_xor(sum, 2);
      inv[h] = 1.0f / sum;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row0 + 16 * mt + 8 * h;
      if (r >= len) continue;
#pragma unroll
      for (int d = 0; d < HD / 8; ++d) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int c = d * 8 + 2 * t + e;
          if (c < head_dim) oh[(long)r * ldo + c] = vt_from_f32<T>(o[mt][d][2 * h + e] * inv[h]);
        }
      }
    }
  }
}

// Entry points vt_flash_attention_<dtype>_d<HD>_m<ROWS>: 4 tile groups with
// one m-tile each (64 query rows) for short or few sequences, two each (128
// rows, every K/V fragment read once per two m-tiles) otherwise.
#define VT_FLASH_ATTENTION(sfx, T, HD, MT, MIN_BLOCKS)                                          \
  VT_KERNEL VT_LAUNCH_BOUNDS(128, MIN_BLOCKS) vt_flash_attention_##sfx##_d##HD##_m##MT(          \
      const T* q, int ldq, const T* k, int ldk, const T* v, int ldv, T* out, int ldo,           \
      const int* cu_seqlens, int num_seqs, int max_seqlen, int heads, int head_dim, float scale) { \
    flash_attention<T, HD, 4, MT>(q, ldq, k, ldk, v, ldv, out, ldo, cu_seqlens, num_seqs,       \
                                  max_seqlen, heads, head_dim, scale);                          \
  }
#define VT_FLASH_ATTENTION_TILES(sfx, T, HD) \
  VT_FLASH_ATTENTION(sfx, T, HD, 1, 4)       \
  VT_FLASH_ATTENTION(sfx, T, HD, 2, 2)
#define VT_FLASH_ATTENTION_DIMS(sfx, T)   \
  VT_FLASH_ATTENTION_TILES(sfx, T, 32)    \
  VT_FLASH_ATTENTION_TILES(sfx, T, 64)    \
  VT_FLASH_ATTENTION_TILES(sfx, T, 80)    \
  VT_FLASH_ATTENTION_TILES(sfx, T, 96)    \
  VT_FLASH_ATTENTION_TILES(sfx, T, 128)
VT_FLASH_ATTENTION_DIMS(f16, vt_f16)
VT_FLASH_ATTENTION_DIMS(bf16, vt_bf16)

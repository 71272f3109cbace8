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
// one packed register; zero outside the sequence or past head_dim. `pairs`:
// the slice's rows start 4-byte aligned (rows_aligned<4>) and col is even,
// so a whole pair is one 4-byte load.
template <typename T>
VT_DEVICE uint32_t load_pair(const T* base, int ld, int row, int rows, int col, int head_dim,
                             bool pairs) {
  if (row >= rows) return 0;
  const uint16_t* p = (const uint16_t*)(base + (long)row * ld);
  if (pairs && col + 1 < head_dim) return *(const uint32_t*)(p + col);
  const uint32_t lo = col < head_dim ? p[col] : 0;
  const uint32_t hi = col + 1 < head_dim ? p[col + 1] : 0;
  return lo | (hi << 16);
}

// Whether every row of a 16-bit slice starting at `base` with stride `ld`
// (elements) starts BYTES-aligned, so columns at multiples of BYTES / 2 can
// be read and written BYTES at a time (4: Q and output pairs; 16: K/V tiles).
template <int BYTES> VT_DEVICE bool rows_aligned(const void* base, int ld) {
  return ((uintptr_t)base % BYTES) == 0 && ld % (BYTES / 2) == 0;
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

// One online-softmax step of a tile group over one tile of KEYS keys, for the
// group's 16 rows: S (fp32 scores in tile-MMA accumulator layout, KEYS/8
// n-tiles) is masked past `keys`, the running max m and sum l (this lane's
// part) move on, the factors the output must be rescaled by (rescale_rows)
// are returned in resc, and S is replaced by P = exp2(S·scale - max) in
// fp32 (pack_p rounds it to T for P·V). The row max is taken of the raw
// scores, so the scale (> 0) is fused into the exponent's FMA.
template <int KEYS>
VT_DEVICE void softmax_tile(float (*s)[4], float m[2], float l[2], float resc[2], int keys, int t,
                            float scale_log2) {
  if (keys < KEYS) {
#pragma unroll
    for (int j = 0; j < KEYS / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (j * 8 + 2 * t + e >= keys) s[j][e] = s[j][2 + e] = vt_neg_inf();
  }
  float mx[2] = {vt_neg_inf(), vt_neg_inf()};
#pragma unroll
  for (int j = 0; j < KEYS / 8; ++j) {
    mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // A row's scores are spread over the 4 lanes of its quad.
    mx[h] = fmaxf(mx[h], vt_group_shfl_xor(mx[h], 1));
    mx[h] = fmaxf(mx[h], vt_group_shfl_xor(mx[h], 2));
    const float nm = fmaxf(m[h], mx[h] * scale_log2);
    resc[h] = vt_exp2f_softmax(m[h] - nm);  // 0 at the first tile
    m[h] = nm;
    l[h] *= resc[h];
  }
#pragma unroll
  for (int j = 0; j < KEYS / 8; ++j) {
    s[j][0] = vt_exp2f_softmax(vt_fmaf(s[j][0], scale_log2, -m[0]));
    s[j][1] = vt_exp2f_softmax(vt_fmaf(s[j][1], scale_log2, -m[0]));
    s[j][2] = vt_exp2f_softmax(vt_fmaf(s[j][2], scale_log2, -m[1]));
    s[j][3] = vt_exp2f_softmax(vt_fmaf(s[j][3], scale_log2, -m[1]));
    l[0] += s[j][0] + s[j][1];
    l[1] += s[j][2] + s[j][3];
  }
}

// P (fp32, tile-MMA accumulator layout) rounded to T as the A fragments of
// P·V: the 16 keys of k-step kk are the two adjacent n-tiles 2kk, 2kk + 1.
template <typename T, int KEYS> VT_DEVICE void pack_p(float (*p)[4], uint32_t (*pa)[4]) {
#pragma unroll
  for (int kk = 0; kk < KEYS / 16; ++kk) {
    pa[kk][0] = vt_pack2<T>(p[2 * kk][0], p[2 * kk][1]);
    pa[kk][1] = vt_pack2<T>(p[2 * kk][2], p[2 * kk][3]);
    pa[kk][2] = vt_pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    pa[kk][3] = vt_pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
  }
}

// O *= resc row-wise (resc[0] for the lane's upper row, resc[1] the lower).
template <int HD> VT_DEVICE void rescale_rows(float (*o)[4], const float resc[2]) {
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    o[d][0] *= resc[0];
    o[d][1] *= resc[0];
    o[d][2] *= resc[1];
    o[d][3] *= resc[1];
  }
}

// 1 / (a row's softmax denominator): each of the quad's four threads holds
// the partial sum over its columns; the same two shuffles and division for
// every way the output rows leave.
VT_DEVICE float inverse_row_sum(float l) {
  l += vt_group_shfl_xor(l, 1);
  l += vt_group_shfl_xor(l, 2);
  return 1.0f / l;
}

// Writes one group's 16 rows of normalised output (rows past the sequence
// and columns past head_dim are skipped).
template <typename T, int HD>
VT_DEVICE void store_rows(T* oh, int ldo, int ra, int len, int head_dim, int t, float (*o)[4],
                          const float l[2]) {
  const float inv[2] = {inverse_row_sum(l[0]), inverse_row_sum(l[1])};
  const bool pairs = rows_aligned<4>(oh, ldo);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = ra + 8 * h;
    if (r >= len) continue;
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) {
      const int c = d * 8 + 2 * t;
      const float lo = o[d][2 * h] * inv[h], hi = o[d][2 * h + 1] * inv[h];
      if (pairs && c + 1 < head_dim) {
        // The same two roundings as below, stored as one 4-byte word.
        *(uint32_t*)(oh + (long)r * ldo + c) = vt_pack2<T>(lo, hi);
      } else {
        if (c < head_dim) oh[(long)r * ldo + c] = vt_from_f32<T>(lo);
        if (c + 1 < head_dim) oh[(long)r * ldo + c + 1] = vt_from_f32<T>(hi);
      }
    }
  }
}

// Q fragments (tile-MMA A layout) of the 16 rows from `ra` of a head, zero
// past the sequence and past head_dim.
template <typename T, int HD>
VT_DEVICE void load_q(uint32_t (*qf)[4], const T* qh, int ldq, int ra, int len, int head_dim,
                      int t) {
  const int rb = ra + 8;
  const bool pairs = rows_aligned<4>(qh, ldq);
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const int c = kk * 16 + 2 * t;
    qf[kk][0] = load_pair(qh, ldq, ra, len, c, head_dim, pairs);
    qf[kk][1] = load_pair(qh, ldq, rb, len, c, head_dim, pairs);
    qf[kk][2] = load_pair(qh, ldq, ra, len, c + 8, head_dim, pairs);
    qf[kk][3] = load_pair(qh, ldq, rb, len, c + 8, head_dim, pairs);
  }
}

// The (sequence, head, query tile) of work item `item` of a fused kernel,
// with tiles of `rows` query rows: item i is tile i % tiles of head
// (i / tiles) % heads of sequence i / (tiles · heads). A one-item-per-block
// grid passes blockIdx.x; the persistent Hopper kernel walks its items.
// False when there is nothing to do (past the last sequence, or the tile
// starts past the end of its sequence); that is uniform across the block,
// so no barrier is then skipped by some threads only.
struct QueryTile {
  int head, start, len, q0;  // sequence rows [start, start + len), tile rows from q0
};
VT_DEVICE bool locate_query_tile(int item, int rows, const int* cu_seqlens, int num_seqs,
                                 int max_seqlen, int heads, QueryTile& qt) {
  const int tiles = (max_seqlen + rows - 1) / rows;
  const int seq = item / (tiles * heads);
  if (seq >= num_seqs) return false;
  qt.head = (item / tiles) % heads;
  qt.start = cu_seqlens[seq];
  qt.len = cu_seqlens[seq + 1] - qt.start;
  qt.q0 = (item % tiles) * rows;
  return qt.q0 < qt.len;
}

// Whether a head's K and V slices allow 16-byte copies (rows and starts
// aligned), else the tiles are fetched element by element.
VT_DEVICE bool kv_vectorizable(const uint16_t* kh, const uint16_t* vh, int ldk, int ldv,
                               int head_dim) {
  return head_dim % 8 == 0 && rows_aligned<16>(kh, ldk) && rows_aligned<16>(vh, ldv);
}

template <typename T, int HD, int GROUPS, int MT>
VT_DEVICE void flash_attention(const T* q, int ldq, const T* k, int ldk, const T* v, int ldv, T* out,
                               int ldo, const int* cu_seqlens, int num_seqs, int max_seqlen,
                               int heads, int head_dim, float scale) {
  constexpr int KEYS = FaKeys<HD>::value;
  constexpr int ROWS = 16 * MT * GROUPS;
  __shared__ __align__(16) uint16_t ks[2][KEYS][HD + 8];
  __shared__ __align__(16) uint16_t vs[2][KEYS][HD + 8];

  QueryTile qt;
  if (!locate_query_tile(blockIdx.x, ROWS, cu_seqlens, num_seqs, max_seqlen, heads, qt)) return;
  const int head = qt.head, start = qt.start, len = qt.len, q0 = qt.q0;

  const int col0 = head * head_dim;
  const int group = threadIdx.x / VT_MMA_GROUP, lane = threadIdx.x % VT_MMA_GROUP;
  const int g = lane / 4, t = lane % 4;
  // The running max is kept in log2 units so the exponentials are exp2.
  const float scale_log2 = scale * 1.4426950408889634f;

  const uint16_t* kh = (const uint16_t*)(k + (long)start * ldk + col0);
  const uint16_t* vh = (const uint16_t*)(v + (long)start * ldv + col0);
  const bool vec = kv_vectorizable(kh, vh, ldk, ldv, head_dim);
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
  for (int mt = 0; mt < MT; ++mt) load_q<T, HD>(qf[mt], qh, ldq, row0 + 16 * mt, len, head_dim, t);

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
      float resc[2];
      softmax_tile<KEYS>(s[mt], m[mt], l[mt], resc, keys, t, scale_log2);
      rescale_rows<HD>(o[mt], resc);
      pack_p<T, KEYS>(s[mt], pa[mt]);
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
  for (int mt = 0; mt < MT; ++mt)
    store_rows<T, HD>(oh, ldo, row0 + 16 * mt, len, head_dim, t, o[mt], l[mt]);
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

// ---------------------------------------------------------------------------
// Fused attention on Hopper's warpgroup MMA (sm_90a): the kernel above with
// its two products moved from per-warp `mma.sync` to `wgmma`, which reads K
// and V straight from shared memory, runs asynchronously, and is the only
// path to Hopper's full tensor throughput. The online softmax (softmax_tile)
// and the output rounding are shared, so the numerics are the same
// contract: fp32 scores and statistics, P rounded to T, fp32 accumulation of
// P·V.
//
// Warp-specialised, as FlashAttention-3: a block has WG consumer warpgroups
// and one producer warpgroup (the last 128 threads). The producer brings K/V
// tiles of KEYS keys into a ring of WG_STAGES slots of dynamic shared
// memory; each slot has a `full` mbarrier and an `empty` one (every consumer
// warp is done with the tile). A whole tile comes by TMA: one producer
// thread arms `full` with the tile's bytes and the copy engine counts them
// in. A sequence's partial last tile (and every tile of an unaligned slice)
// the producer threads copy and zero-fill themselves, each fences its own
// copies for the MMAs, and one announces the tile once all have. There is
// no block barrier after the start, so consumer warpgroups drift apart and
// one's softmax overlaps another's MMAs; with PINGPONG a token ring of named
// barriers makes them take turns to issue their MMAs, which pays at d64 and
// d80. The producer gives its registers to the consumers (WgRegs).
//
// Consumer warpgroup w owns 64 query rows, warp i of the block rows
// 16i..16i+15 (the tile-MMA rows of the kernel above). K and V tiles (and Q
// tiles with Q_SS) lie in shared memory column block after column block
// (WG_COLUMN_BLOCK): 8×8 core matrices of 128 bytes, which are Kᵀ's K-major
// B operand for S = Q·Kᵀ and V's n-major one for O += P·V (see vt_wgmma).
//
// Where Q lives: the producer brings each warpgroup's 64 Q rows into its Q
// tile in shared memory (by TMA where it can). Without Q_SS (d64, d80) the
// consumers copy their fragments to registers at once and hand the tile
// back, so the next work item's Q arrives while this one runs, and write
// their output straight from registers. At d128 the Q fragments (32
// registers) made the consumers spill and ptxas serialise their MMAs, so
// with Q_SS S reads both operands from shared memory and the Q tile then
// stages the output rows for 16-byte stores (InternViT-6B 448² batch 8
// −18 %; docs/performance.md row 40) before it is handed back.
//
// Work items are query tiles of 64·WG rows of one (sequence, head), in the
// order of the grid of one block per item; block b takes items b,
// b + gridDim.x, ..., and the K/V ring runs on across them. The host launches
// one block per multiprocessor (persistent, d64 and d80: the next item's Q
// and first K/V tiles arrive while this one finishes; rows 43–44) or one
// block per item (d128). Every barrier phase is waited for before it can
// complete twice (see producer_lockstep): a lapped parity wait never returns.
//
// Launch: block = 128·(WG + 1) threads, dynamic shared memory
// WG_STAGES · (2 · KEYS · HD · 2 + 16) + WG · 64 · (HD + 8) · 2 + 16 bytes,
// any grid. Only the sm_90a image has the body; elsewhere the entry points
// exist (every image exports the same names) and write NaN to the rows they
// own, so a launch that slipped past the host's device check cannot go
// unnoticed.
// ---------------------------------------------------------------------------

// K/V tiles in the ring: the producer runs up to this many tiles ahead of the
// slowest consumer warpgroup (ping-pong needs 3: warpgroups one turn apart).
#define WG_STAGES 4
// Named barrier of the producer warpgroup's own copies (ping-pong takes
// 1..3, the consumers' output staging 4..6).
#define WG_PRODUCER_BARRIER 7
// Register budgets after the split; three consumer warpgroups and the
// producer share the 128 per thread that a 512-thread block gets. With Q
// in registers the consumers need 160; with Q in shared memory 144 do, and
// the producer, which then also copies Q, gets 80 so it does not spill.
template <bool Q_SS> struct WgRegs {
  static constexpr int producer = Q_SS ? 80 : 32, consumer = Q_SS ? 144 : 160;
  static_assert(3 * consumer + producer == 512, "the budgets must fill the block's registers exactly");
};

// A 64-row tile (K, V or Q) in shared memory is column block after column
// block: the 8 columns cb·8..cb·8+7 of all 64 rows, 16 bytes a row, fill
// elements [cb·WG_COLUMN_BLOCK, (cb + 1)·WG_COLUMN_BLOCK). So core matrix
// (rows 8rb.., columns 8cb..) sits at byte cb·1024 + rb·128, and the layout
// is what a TMA box of {8 columns, 64 rows, HD/8 column blocks} writes.
#define WG_COLUMN_BLOCK (64 * 8)

// Producer thread tid (0..127) copies key row tid / 2 of a 64-key tile, the
// 16-byte chunks of parity tid % 2, so a warp reads 16 rows × 32 contiguous
// bytes per instruction; `row` points at that row in global memory. Rows
// past the sequence (row_ok false) and columns past head_dim are zeroed;
// their copies read nothing but still carry an address, `first` (the head's
// first row, always inside the buffer), as a row past the sequence may lie
// past the end of the allocation. Needs head_dim, the row stride and the
// base 16-byte aligned.
template <int HD>
VT_DEVICE void fetch_row_chunks(uint16_t* tile, const uint16_t* row, const uint16_t* first,
                                bool row_ok, int head_dim, int tid) {
  static_assert(HD % 16 == 0, "two threads per key row share its 16-byte chunks evenly");
  constexpr int CB = HD / 8;
  const int r = tid / 2, half = tid % 2;
  uint16_t* dst = tile + half * WG_COLUMN_BLOCK + r * 8;
#pragma unroll
  for (int i = 0; i < CB / 2; ++i) {
    const int c = 2 * i + half;
    const bool valid = row_ok && c * 8 < head_dim;
    vt_copy16_async(dst + 2 * i * WG_COLUMN_BLOCK, valid ? row + c * 8 : first, valid);
  }
}

// The same tile element by element, for unaligned slices.
template <int HD, int KEYS>
VT_DEVICE void fetch_tile_elements(uint16_t* tile, const uint16_t* base, int ld, int rows,
                                   int head_dim, int tid) {
  static_assert(KEYS == 64, "tiles of 64 rows (WG_COLUMN_BLOCK)");
  for (int i = tid; i < KEYS * HD; i += 128) {
    const int r = i / HD, c = i % HD;
    tile[(c / 8) * WG_COLUMN_BLOCK + r * 8 + c % 8] =
        (r < rows && c < head_dim) ? base[(long)r * ld + c] : (uint16_t)0;
  }
}

// Elements between output rows staged in a Q tile's shared memory: 8 more
// than the head so that a quad's rows fall in different banks.
#define WG_QPAD(HD) ((HD) + 8)

// A consumer warp's normalised output rows lr and lr + 8 (tile-local) into
// the row-major staging tile, rounded to T as store_rows rounds them.
template <typename T, int HD>
VT_DEVICE void stage_rows(uint16_t* stage, int lr, int t, float (*o)[4], const float l[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float inv = inverse_row_sum(l[h]);
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
      *(uint32_t*)(stage + (lr + 8 * h) * WG_QPAD(HD) + d * 8 + 2 * t) =
          vt_pack2<T>(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
  }
}

// A warpgroup's 64 staged rows (tile rows from global row r0 of the
// sequence) to the output: 16 bytes a thread where head_dim fills the tile
// and rows are 16-byte aligned, element by element otherwise; rows past the
// sequence are skipped.
template <int HD>
VT_DEVICE void store_staged(uint16_t* oh, int ldo, int r0, int len, int head_dim,
                            const uint16_t* stage, int tid) {
  constexpr int CB = HD / 8;
  if (head_dim == HD && rows_aligned<16>(oh, ldo)) {
#pragma unroll 1
    for (int i = tid; i < 64 * CB; i += 128) {
      const int r = i / CB, c = i % CB;
      if (r0 + r < len)
        *(uint4*)(oh + (long)(r0 + r) * ldo + c * 8) = *(const uint4*)(stage + r * WG_QPAD(HD) + c * 8);
    }
  } else {
    for (int i = tid; i < 64 * HD; i += 128) {
      const int r = i / HD, c = i % HD;
      if (r0 + r < len && c < head_dim) oh[(long)(r0 + r) * ldo + c] = stage[r * WG_QPAD(HD) + c];
    }
  }
}

// Warp wi (of its warpgroup)'s Q fragments (tile-MMA A layout, as load_q)
// from the warpgroup's Q tile in shared memory (column blocks).
template <int HD>
VT_DEVICE void q_fragments(uint32_t (*qf)[4], const uint16_t* q_tile, int wi, int g, int t) {
  const uint16_t* base = q_tile + (16 * wi + g) * 8 + 2 * t;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
    for (int i = 0; i < 4; ++i)  // i: +8 rows (bit 0), +8 columns (bit 1)
      qf[kk][i] = *(const uint32_t*)(base + (2 * kk + (i >> 1)) * WG_COLUMN_BLOCK + (i & 1) * 64);
}

template <typename T, int HD, int KEYS, int WG, bool PINGPONG, bool Q_SS>
VT_DEVICE void flash_attention_wg(const T* q, int ldq, const T* k, int ldk, const T* v, int ldv,
                                  T* out, int ldo, const int* cu_seqlens, int num_seqs,
                                  int max_seqlen, int heads, int head_dim, float scale, int use_tma,
                                  const vt_tensor_map* q_map, const vt_tensor_map* k_map,
                                  const vt_tensor_map* v_map) {
  static_assert(KEYS == 64, "the producer copies a 64-key tile with two threads per key");
  static_assert(WG == 3, "WgRegs budgets a 512-thread block");
  constexpr int ROWS = 64 * WG;
  // Persistent: block b takes items b, b + gridDim.x, ... (a grid of one
  // block per item gives each block one).
  const int items = num_seqs * heads * ((max_seqlen + ROWS - 1) / ROWS);
  const int wg = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
#if VT_HAS_WGMMA
  constexpr bool BF16 = !__is_same(T, vt_f16);
  constexpr int TILE = KEYS * HD, QTILE = 64 * WG_QPAD(HD);
  // wgmma descriptors: a k-step of S is two column blocks of K (and Q), one
  // of P·V two row blocks of V (8 rows, 128 bytes each); consecutive column
  // blocks are COLUMN_BLOCK_BYTES apart.
  constexpr uint32_t COLUMN_BLOCK_BYTES = WG_COLUMN_BLOCK * sizeof(uint16_t);
  // The ring: tile j's K at smem + (j mod WG_STAGES)·2·TILE, its V right
  // after; then each consumer warpgroup's Q tile (column blocks; with Q_SS
  // at the end also the staging area of its output rows, QPAD elements
  // apart); then the slots' full and empty barriers and the Q tiles' two.
  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t* q_tiles = smem + WG_STAGES * 2 * TILE;
  uint64_t* full = (uint64_t*)(q_tiles + WG * QTILE);
  uint64_t* empty = full + WG_STAGES;
  uint64_t* q_full = empty + WG_STAGES;
  uint64_t* q_empty = q_full + 1;
  if (threadIdx.x == 0) {
    for (int s = 0; s < WG_STAGES; ++s) {
      vt_mbar_init(&full[s], 1);        // one producer thread (and the TMA bytes)
      vt_mbar_init(&empty[s], 4 * WG);  // every consumer warp
    }
    vt_mbar_init(q_full, 1);
    vt_mbar_init(q_empty, 4 * WG);
    vt_mbar_init_fence();
  }
  __syncthreads();
  // K/V tiles are numbered across the block's items (n), so the ring and its
  // phases run on from one item to the next.
  auto k_tile = [&](int n) { return smem + (n % WG_STAGES) * 2 * TILE; };
  auto v_tile = [&](int n) { return smem + (n % WG_STAGES) * 2 * TILE + TILE; };

  if (wg == WG) {
    // Producer: an item's Q tiles once the consumers are done with the last
    // item's (with Q in registers: once they have read them, so the next
    // item's Q arrives while this one runs), then its K/V tiles, tile n into
    // its slot once the consumers have released tile n − WG_STAGES.
    vt_regs_shrink<WgRegs<Q_SS>::producer>();
    const int tid = threadIdx.x - 128 * WG;
    auto copies_landed = [&]() {
      vt_async_commit();
      vt_async_wait<0>();
      vt_fence_async_smem();
      vt_bar_sync(WG_PRODUCER_BARRIER, 128);
    };
    // Every producer thread waits for each free slot (and Q tile), but where
    // thread 0 alone refills it by TMA nothing else holds the others back:
    // the consumers could release the refilled slot again, completing the
    // barrier's next phase, before a lagging warp has polled the one it waits
    // for, and a parity wait that has been lapped waits forever (seen as a
    // hang on grids of many tiles per block, docs/performance.md row 44).
    // So the warpgroup meets after each such wait, before the refill; the
    // copies that all threads make meet in copies_landed anyway.
    auto producer_lockstep = [&]() { vt_bar_sync(WG_PRODUCER_BARRIER, 128); };
    int n = 0, items_done = 0;
#pragma unroll 1
    for (int it = blockIdx.x; it < items; it += gridDim.x) {
      QueryTile qt;
      if (!locate_query_tile(it, ROWS, cu_seqlens, num_seqs, max_seqlen, heads, qt)) continue;
      const int start = qt.start, len = qt.len, q0 = qt.q0, col0 = qt.head * head_dim;
      const uint16_t* qh = (const uint16_t*)(q + (long)start * ldq + col0);
      const uint16_t* kh = (const uint16_t*)(k + (long)start * ldk + col0);
      const uint16_t* vh = (const uint16_t*)(v + (long)start * ldv + col0);
      const bool vec = kv_vectorizable(kh, vh, ldk, ldv, head_dim) && rows_aligned<16>(qh, ldq);
      // Whole tiles of a head that fills HD come by TMA (where the host
      // built the maps: use_tma); the rest (a sequence's last, partial K/V
      // tile, where TMA would read the next sequence's keys, or unaligned
      // slices) the producer threads copy, zero-filled, fence and announce
      // together. Q rows past the sequence only feed output rows that are
      // never stored, so Q tiles always come whole.
      const bool tma = use_tma && vec && head_dim == HD;
      if (items_done > 0) {
        vt_mbar_wait(q_empty, (items_done - 1) & 1);
        producer_lockstep();
      }
      if (tma) {
        if (tid == 0) {
          vt_mbar_arrive_expect_tx(q_full, WG * 64 * HD * sizeof(T));
          for (int w = 0; w < WG; ++w)
            vt_tma_load_3d(q_tiles + w * QTILE, q_map, 0, start + q0 + 64 * w, col0 / 8, q_full);
        }
      } else {
        for (int w = 0; w < WG; ++w) {
          const int r = q0 + 64 * w;
          if (vec) fetch_row_chunks<HD>(q_tiles + w * QTILE, qh + (long)(r + tid / 2) * ldq, qh, r + tid / 2 < len, head_dim, tid);
          else fetch_tile_elements<HD, 64>(q_tiles + w * QTILE, qh + (long)r * ldq, ldq, len - r, head_dim, tid);
        }
        copies_landed();
        if (tid == 0) vt_mbar_arrive(q_full);
      }
      const int num_tiles = (len + KEYS - 1) / KEYS;
#pragma unroll 1
      for (int j = 0; j < num_tiles; ++j, ++n) {
        const int slot = n % WG_STAGES;
        if (n >= WG_STAGES) vt_mbar_wait(&empty[slot], ((n / WG_STAGES) + 1) & 1);
        const int rows = min(KEYS, len - j * KEYS);
        if (tma && rows == KEYS) {
          if (n >= WG_STAGES) producer_lockstep();
          if (tid == 0) {
            vt_mbar_arrive_expect_tx(&full[slot], 2 * TILE * sizeof(T));
            vt_tma_load_3d(k_tile(n), k_map, 0, start + j * KEYS, col0 / 8, &full[slot]);
            vt_tma_load_3d(v_tile(n), v_map, 0, start + j * KEYS, col0 / 8, &full[slot]);
          }
        } else {
          if (vec) {
            const long r = (long)j * KEYS + tid / 2;
            fetch_row_chunks<HD>(k_tile(n), kh + r * ldk, kh, tid / 2 < rows, head_dim, tid);
            fetch_row_chunks<HD>(v_tile(n), vh + r * ldv, vh, tid / 2 < rows, head_dim, tid);
          } else {
            fetch_tile_elements<HD, KEYS>(k_tile(n), kh + (long)j * KEYS * ldk, ldk, rows, head_dim, tid);
            fetch_tile_elements<HD, KEYS>(v_tile(n), vh + (long)j * KEYS * ldv, ldv, rows, head_dim, tid);
          }
          copies_landed();
          if (tid == 0) vt_mbar_arrive(&full[slot]);
        }
      }
      ++items_done;
    }
    return;
  }

  vt_regs_grow<WgRegs<Q_SS>::consumer>();
  const float scale_log2 = scale * 1.4426950408889634f;
  // Tile n is usable once its bytes have landed (TMA) or the producer has
  // announced its own copies.
  auto acquire = [&](int n) { vt_mbar_wait(&full[n % WG_STAGES], (n / WG_STAGES) & 1); };
  // Called once the warp's last MMA reading tile n has completed.
  auto release = [&](int n) {
    __syncwarp();
    if (lane == 0) vt_mbar_arrive(&empty[n % WG_STAGES]);
  };
  auto release_q = [&]() {
    __syncwarp();
    if (lane == 0) vt_mbar_arrive(q_empty);
  };
  // Ping-pong: warpgroup w issues after warpgroup w - 1 (mod WG) has. Each
  // warpgroup issues num_tiles + 1 times an item; warpgroup 0's first turn
  // is given by the last one up front, which therefore skips its final
  // hand-over.
  auto turn_begin = [&]() {
    if (PINGPONG) vt_bar_sync(1 + wg, 256);
  };
  auto turn_end = [&](bool last) {
    if (PINGPONG && !(last && wg == WG - 1)) vt_bar_arrive(1 + (wg + 1) % WG, 256);
  };
  uint16_t* q_tile = q_tiles + wg * QTILE;
  int n = 0, items_done = 0;
#pragma unroll 1
  for (int it = blockIdx.x; it < items; it += gridDim.x) {
    QueryTile qt;
    if (!locate_query_tile(it, ROWS, cu_seqlens, num_seqs, max_seqlen, heads, qt)) continue;
    const int start = qt.start, len = qt.len, q0 = qt.q0;
    T* oh = out + (long)start * ldo + qt.head * head_dim;
    // With Q in registers the Q tile is free again once read; with Q_SS
    // the MMAs read it until the item's end, and then it stages the output.
    uint32_t qf[Q_SS ? 1 : HD / 16][4];
    vt_mbar_wait(q_full, items_done & 1);
    if (!Q_SS) {
      q_fragments<HD>(qf, q_tile, warp % 4, g, t);
      release_q();
    }
    // S = Q·K_nᵀ: HD/16 k-steps over the whole tile, issued (not waited for).
    auto issue_scores = [&](float* s, int n) {
      vt_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const uint64_t kd = vt_wgmma_desc(k_tile(n) + 2 * kk * WG_COLUMN_BLOCK, COLUMN_BLOCK_BYTES, 128);
        if (Q_SS)
          vt_wgmma_ss<KEYS, BF16>(s, vt_wgmma_desc(q_tile + 2 * kk * WG_COLUMN_BLOCK, COLUMN_BLOCK_BYTES, 128),
                                  kd, kk > 0);
        else
          vt_wgmma<KEYS, BF16, 0>(s, qf[kk], kd, kk > 0);
      }
    };
    // O += P·V_n: KEYS/16 k-steps, each 16 keys (two row blocks) × HD.
    auto issue_values = [&](float* o, const uint32_t (*pa)[4], int n) {
      vt_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KEYS / 16; ++kk)
        vt_wgmma<HD, BF16, 1>(o, pa[kk], vt_wgmma_desc(v_tile(n) + kk * 128, 128, COLUMN_BLOCK_BYTES), 1);
    };

    const int num_tiles = (len + KEYS - 1) / KEYS;
    if (PINGPONG && wg == WG - 1) vt_bar_arrive(1, 256);
    float o[HD / 8][4], s[KEYS / 8][4];
    float m[2] = {vt_neg_inf(), vt_neg_inf()}, l[2] = {0.0f, 0.0f}, resc[2];
    uint32_t pa[KEYS / 16][4];
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;

    acquire(n);
    turn_begin();
    issue_scores(&s[0][0], n);
    vt_wgmma_commit();
    turn_end(false);
    vt_wgmma_wait<0>();
    vt_wgmma_hold<KEYS / 2>(&s[0][0]);
    softmax_tile<KEYS>(s, m, l, resc, min(KEYS, len), t, scale_log2);
    pack_p<T, KEYS>(s, pa);

    // Tile j of the item (n + j of the block): P_j is ready. Q·K_{j+1}ᵀ and
    // P_j·V_j run on the tensor cores while this warpgroup computes the
    // softmax of tile j + 1; O is rescaled once P_j·V_j has landed, which
    // also frees tile j's slot. The last tile's P·V is peeled off so that
    // every iteration commits the same two groups: ptxas proves from that
    // that the softmax never touches registers of an MMA in flight
    // (otherwise it serializes every wgmma).
    for (int j = 0; j + 1 < num_tiles; ++j) {
      acquire(n + j + 1);
      turn_begin();
      issue_scores(&s[0][0], n + j + 1);
      vt_wgmma_commit();
      issue_values(&o[0][0], pa, n + j);
      vt_wgmma_commit();
      turn_end(false);
      vt_wgmma_wait<1>();
      vt_wgmma_hold<KEYS / 2>(&s[0][0]);
      softmax_tile<KEYS>(s, m, l, resc, min(KEYS, len - (j + 1) * KEYS), t, scale_log2);
      vt_wgmma_wait<0>();
      vt_wgmma_hold<HD / 2>(&o[0][0]);
      release(n + j);
      rescale_rows<HD>(o, resc);
      pack_p<T, KEYS>(s, pa);  // P_j's registers are free once P_j·V_j has landed
    }
    turn_begin();
    issue_values(&o[0][0], pa, n + num_tiles - 1);
    vt_wgmma_commit();
    turn_end(true);
    vt_wgmma_wait<0>();
    vt_wgmma_hold<HD / 2>(&o[0][0]);
    release(n + num_tiles - 1);
    if (Q_SS) {
      // Every MMA reading the Q tile has completed: it stages the output
      // rows, and is the producer's again once they are out.
      stage_rows<T, HD>(q_tile, (warp % 4) * 16 + g, t, o, l);
      vt_bar_sync(1 + WG + wg, 128);
      store_staged<HD>((uint16_t*)oh, ldo, q0 + 64 * wg, len, head_dim, q_tile, threadIdx.x % 128);
      vt_bar_sync(1 + WG + wg, 128);
      release_q();
    } else {
      store_rows<T, HD>(oh, ldo, q0 + warp * 16 + g, len, head_dim, t, o, l);
    }
    n += num_tiles;
    ++items_done;
  }
#else
  (void)q, (void)ldq, (void)k, (void)ldk, (void)v, (void)ldv, (void)scale, (void)use_tma;
  (void)q_map, (void)k_map, (void)v_map, (void)t;
  if (wg == WG) return;  // the producer warpgroup owns no rows
  for (int it = blockIdx.x; it < items; it += gridDim.x) {
    QueryTile qt;
    if (!locate_query_tile(it, ROWS, cu_seqlens, num_seqs, max_seqlen, heads, qt)) continue;
    T* oh = out + (long)qt.start * ldo + qt.head * head_dim;
    for (int h = 0; h < 2; ++h) {
      const int r = qt.q0 + warp * 16 + g + 8 * h;
      if (r >= qt.len) continue;
      for (int c = lane % 4; c < head_dim; c += 4) oh[(long)r * ldo + c] = vt_from_f32<T>(vt_bits_to_f32(0x7fc00000u));
    }
  }
#endif
}

// Entry points vt_flash_attention_wg_<dtype>_d<HD>_w<WG> (WG consumer
// warpgroups, 192 rows a work item, one block per SM), chosen on an H100
// with scripts/kernel_bench.py and the lab (docs/performance.md rows 33–43):
// K/V tiles of 64 keys; ping-pong at d64 and, since K/V come by TMA, at d80
// (at d128 it was slower); S from Q in shared memory (Q_SS) at d128 only.
// At d128 three consumer warpgroups were faster than two with 240
// registers (InternViT-6B 448² batch 8, one lab run: 0.415 against 0.496
// ms, Q then in registers). Not built for d96 (unmeasured). Parameters
// after the shared ones: use_tma (the host built the maps: 3D {8 columns,
// rows, column blocks} over the Q, K and V slices, boxes {8, 64, HD/8}) and
// the three maps. The host mirrors this table (HOPPER_TILES in
// vitrine-gpu's attention.rs) to size the grid, the block and the shared
// memory.
#define VT_FLASH_ATTENTION_WG(sfx, T, HD, WG, PINGPONG, Q_SS)                                  \
  VT_KERNEL VT_LAUNCH_BOUNDS(128 * (WG + 1), 1) vt_flash_attention_wg_##sfx##_d##HD##_w##WG(      \
      const T* q, int ldq, const T* k, int ldk, const T* v, int ldv, T* out, int ldo,             \
      const int* cu_seqlens, int num_seqs, int max_seqlen, int heads, int head_dim, float scale,   \
      int use_tma, const VT_GRID_CONSTANT vt_tensor_map q_map,                                    \
      const VT_GRID_CONSTANT vt_tensor_map k_map, const VT_GRID_CONSTANT vt_tensor_map v_map) {   \
    flash_attention_wg<T, HD, 64, WG, PINGPONG, Q_SS>(q, ldq, k, ldk, v, ldv, out, ldo,           \
                                                      cu_seqlens, num_seqs, max_seqlen, heads,    \
                                                      head_dim, scale, use_tma, &q_map, &k_map,   \
                                                      &v_map);                                    \
  }
#define VT_FLASH_ATTENTION_WG_DIMS(sfx, T)   \
  VT_FLASH_ATTENTION_WG(sfx, T, 64, 3, true, false)  \
  VT_FLASH_ATTENTION_WG(sfx, T, 80, 3, true, false)  \
  VT_FLASH_ATTENTION_WG(sfx, T, 128, 3, false, true)
VT_FLASH_ATTENTION_WG_DIMS(f16, vt_f16)
VT_FLASH_ATTENTION_WG_DIMS(bf16, vt_bf16)

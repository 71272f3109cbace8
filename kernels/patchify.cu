// patchify.cu: image batch -> patch-token matrix, optionally normalising.
//
// Turning [B, C, H, W] pixels into [B * (H/p) * (W/p), C * p * p] rows lets
// the patch embedding (RADIO's Linear, InternViT's stride-p Conv2d) run as
// one GEMM. Tokens are row-major over patches within an image, and features
// are ordered (channel, row in patch, column in patch), matching the
// checkpoints' flattened weights.
//
// Normalisation, when both mean and std are given (NULL for a plain copy), is a true division like PyTorch's
// (x - mean) / std in fp32 (not a multiply by 1/std), rounded once to T.
// H and W must be multiples of p (the caller checks; RADIO also requires it).
//
// Launch: one thread per output element, feature fastest, in a grid-stride
// loop; grid = (g, 1, 1), any g; block = (n, 1, 1), n a multiple of the wave
// size; no shared memory.
#include "vt_common.cuh"

template <typename T>
VT_DEVICE void patchify(const T* pixels, T* out, const float* mean, const float* std, int B, int C,
                        int H, int W, int p) {
  const int gh = H / p, gw = W / p;
  const long feat = (long)C * p * p;
  const long n = (long)B * gh * gw * feat;
  for (long e = (long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (long)gridDim.x * blockDim.x) {
    const long tok = e / feat;
    const int f = (int)(e % feat);
    const int c = f / (p * p), py = (f / p) % p, px = f % p;
    const int pc = (int)(tok % gw);
    const long rest = tok / gw;
    const int pr = (int)(rest % gh);
    const long b = rest / gh;
    const long src = ((b * C + c) * H + (long)pr * p + py) * W + (long)pc * p + px;
    if (mean != nullptr && std != nullptr) {
      out[e] = vt_from_f32<T>((vt_to_f32(pixels[src]) - mean[c]) / std[c]);
    } else {
      out[e] = pixels[src];
    }
  }
}

#define VT_PATCHIFY(sfx, T)                                                                 \
  VT_KERNEL vt_patchify_##sfx(const T* pixels, T* out, const float* mean, const float* std, \
                              int B, int C, int H, int W, int p) {                          \
    patchify<T>(pixels, out, mean, std, B, C, H, W, p);                                     \
  }
VT_FOR_EACH_DTYPE(VT_PATCHIFY)
